"""Approvals: hold a risky request in flight until people decide, then continue or refuse.

The flow is intercepted (so mitmweb shows it live), a pending approval with a masked summary is
stored, approvers are notified, and the hook waits, polling the store, for a decision made
through any channel (CLI, admin page, another replica). It gives up when the policy's wait runs
out (403, no retry) or the caller goes away (abandoned). mitmweb's own Resume button is never a
silent bypass: by option it counts as an approval by a named operator, or it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from mitmproxy import ctx, exceptions, hooks, http

from phigate import context
from phigate.approvals import ApprovalError, SqliteApprovalStore, WebhookNotifier, masked_summary
from phigate.errors import Refusal
from phigate.policy import approval_rules, strictest

from . import flowstate
from .failclosed import guard, record_of, settled
from .settings import home

log = logging.getLogger("phigate")
STAGE = "approvals"
POLL_SECONDS = 0.25


class Approvals:
    def __init__(self) -> None:
        self.store: SqliteApprovalStore | None = None
        self.notifier: WebhookNotifier | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "approvals_webhook", str, "",
            "URL that receives a Slack-compatible JSON message when a request is held.",
        )
        loader.add_option(
            "approvals_page_url", str, "http://127.0.0.1:8082/approvals",
            "Link to the approval page, included in notifications.",
        )
        loader.add_option(
            "gateway_instance", str, socket.gethostname(),
            "This gateway instance's stable name (e.g. the pod name). Replicas sharing an "
            "approvals store must use different names: a restart aborts only its own holds.",
        )
        loader.add_option(
            "approvals_mitmweb_resume", str, "refuse",
            "What mitmweb's Resume on a held request means: 'refuse' (answer 403), or "
            "'approve-as:NAME' (an approval recorded for operator NAME).",
        )

    def configure(self, updated: set[str]) -> None:
        if "approvals_mitmweb_resume" in updated:
            value = ctx.options.approvals_mitmweb_resume
            if value != "refuse" and not (value.startswith("approve-as:") and value[11:]):
                raise exceptions.OptionsError(
                    "approvals_mitmweb_resume must be 'refuse' or 'approve-as:NAME'")
        path = home().root / "approvals.db"
        if self.store is None or self.store.path != path:
            if self.store:
                self.store.close()
            self.store = SqliteApprovalStore(path)
        if updated & {"approvals_webhook", "approvals_page_url"}:
            if self.notifier:
                self.notifier.close(1.0)
            url = ctx.options.approvals_webhook
            base = ctx.options.approvals_page_url.rsplit("/approvals", 1)[0]
            self.notifier = WebhookNotifier(url, base_url=base) if url else None

    def running(self) -> None:
        # Holds left pending by an earlier run on this host died with their connections.
        assert self.store is not None
        aborted = self.store.abort_pending("gateway restarted while the request was held",
                                           holder=ctx.options.gateway_instance)
        if aborted:
            log.warning("marked %d held request(s) from a previous run as aborted", len(aborted))

    def done(self) -> None:
        if self.notifier:
            self.notifier.close(1.0)
        if self.store:
            aborted = self.store.abort_pending("gateway stopped while the request was held",
                                               holder=ctx.options.gateway_instance)
            if aborted:
                log.warning("aborted %d held request(s) at shutdown", len(aborted))
            self.store.close()

    @guard(STAGE)
    async def request(self, flow: http.HTTPFlow) -> None:
        if settled(flow):
            return
        state = flowstate.of(flow)
        record = record_of(flow)
        rule = strictest(approval_rules(state.policy, state.view, state.phi_summary,
                                        list(state.identity.groups)))
        if rule is None:
            return
        if flow.is_replay == "request" and record.get("replay_of"):
            # `phigate replay` never goes upstream: note the hold it would need, ask no one.
            context.decide(record, STAGE, "hold", rule=rule.name, detail="replay: not requested")
            return
        assert self.store is not None
        approval = await asyncio.to_thread(
            self.store.create,
            request_id=record["request_id"],
            requester=state.identity,
            rule=rule.name,
            approvals_required=rule.approvals_required,
            approver_groups=list(state.policy.approver_groups),
            summary=summary(record, state),
            timeout=rule.timeout,
            holder=ctx.options.gateway_instance,
        )
        record["approval"] = approval.to_record()
        context.decide(record, STAGE, "hold", rule=rule.name)
        flow.intercept()
        ctx.master.addons.trigger(hooks.UpdateHook([flow]))
        if self.notifier:
            self.notifier.notify(approval)
        try:
            outcome = await self._wait(flow, approval.id)
        finally:
            flow.resume()
        record["approval"] = outcome.to_record()
        context.decide(record, STAGE, "approve" if outcome.state == "approved" else "deny",
                       rule=rule.name, detail=outcome.state)
        if outcome.state != "approved":
            raise Refusal(403, f"approval_{outcome.state}",
                          f"The request needed approval under rule '{rule.name}' and was "
                          f"{outcome.state}; it was not sent.")

    async def _wait(self, flow: http.HTTPFlow, approval_id: str):
        """Poll until decided, expired or abandoned; a decision made by any process shows up
        within one poll (the store's change counter makes an idle poll a few microseconds)."""
        assert self.store is not None
        seen = -1
        while True:
            version = await asyncio.to_thread(self.store.version)
            if version != seen:
                seen = version
                approval = await asyncio.to_thread(self.store.get, approval_id)
                if approval.state != "pending":
                    return approval
            if time.time() >= approval.expires_at:
                return await asyncio.to_thread(self.store.mark, approval_id, "expired")
            if flow.error or flow.client_conn.timestamp_end is not None:
                return await asyncio.to_thread(self.store.mark, approval_id, "abandoned")
            if not flow.intercepted:  # Resume pressed in mitmweb
                return await asyncio.to_thread(self._operator_resume, approval_id, flow)
            await asyncio.sleep(POLL_SECONDS)

    def _operator_resume(self, approval_id: str, flow: http.HTTPFlow):
        assert self.store is not None
        flow.intercept()  # keep holding until the decision below is stored
        setting = ctx.options.approvals_mitmweb_resume
        approval = self.store.get(approval_id)
        if setting.startswith("approve-as:"):
            operator = {"iss": "urn:phigate:mitmweb-operator", "sub": setting[11:],
                        "groups": list(approval.approver_groups)}
            try:
                return self.store.decide(approval_id, operator, "approve",
                                         "resumed in mitmweb by the configured operator")
            except ApprovalError as e:
                log.warning("mitmweb resume of %s not counted (%s)", approval_id, e.code)
        return self.store.mark(approval_id, "abandoned",
                               reason="resumed in mitmweb without an approval; refused")


def summary(record: dict, state) -> dict:
    """What approvers see: the shape of the request and PHI counts, never PHI values."""
    view = state.view
    return masked_summary(
        endpoint=record.get("endpoint") or "",
        model=getattr(view, "model", None),
        max_tokens=getattr(view, "max_output_tokens", None),
        tools=list(getattr(view, "tools_declared", ()) or ()),
        entities=dict(state.phi_summary or {}),
        excerpt=state.masked_excerpt or "",
    )
