"""Recorder: one append-only, tamper-evident audit record per flow, refused and failed included.

The record is the flow's PHI-free record (phigate.context) plus the upstream outcome; bodies go
in encrypted. Appends are group-committed on one writer thread, off mitmproxy's event loop
(phigate.audit.batch): records of concurrent flows share one transaction. The response is held
until its record is committed, so no answer reaches a caller unaudited; if the log cannot be
written, the response is replaced by an error and new requests are refused until it can.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable

from mitmproxy import ctx, exceptions, http

from phigate.audit import AuditStore, open_store
from phigate.audit.batch import GroupCommitter
from phigate.audit.sinks import AppendOnlyFile, Webhook
from phigate.errors import Refusal, error_body, error_headers

from . import flowstate
from .failclosed import CONTAINED, guard, record_of, settled
from .identity import REPLAY_OF
from .masking import int_fields
from .settings import home

log = logging.getLogger("phigate")
STAGE = "recording"
RECORDED = "phigate.recorded"


def unrecorded_on_fault(hook: Callable) -> Callable:
    """Contain a recorder flow hook: mitmproxy passes a response on when a hook raises (fail
    open), and the stages after the recorder would miss the event. A fault is logged by class
    name only (the message may quote PHI) and the flow is treated as unrecorded."""

    @functools.wraps(hook)
    async def run(self: Recorder, flow: http.HTTPFlow) -> None:
        try:
            await hook(self, flow)
        except Exception as exc:
            self.healthy = False
            log.error("recording hook %s failed (%s); the flow is treated as unrecorded",
                      hook.__name__, type(exc).__name__)
            if hook.__name__ == "response":
                withhold_or_kill(flow)

    setattr(run, CONTAINED, True)
    return run


class Recorder:
    def __init__(self) -> None:
        # The writer thread: group-commits appends and runs open/checkpoint/close in order.
        self.writer = GroupCommitter(name="phigate-audit")
        self.healthy = True
        self._settings: tuple | None = None
        self._checkpoints: asyncio.Task | None = None

    @property
    def store(self) -> AuditStore | None:
        """The open store (written only on the writer thread)."""
        return self.writer.store

    def load(self, loader) -> None:
        loader.add_option(
            "audit_db", str, "",
            "Audit database file. Empty: audit.db in the home folder.",
        )
        loader.add_option(
            "audit_durability", str, "normal",
            "'normal' survives a killed process; 'full' also survives power loss (an fsync per "
            "commit; concurrent records share one commit).",
        )
        loader.add_option(
            # int, not float: mitmproxy's `--set` cannot parse float options.
            "audit_checkpoint_interval", int, 60,
            "Seconds between signed checkpoints of the audit log (one is also written at shutdown).",
        )
        loader.add_option(
            "audit_checkpoint_file", str, "",
            "Append-only file that receives every signed checkpoint; keep it where the gateway "
            "cannot rewrite it (another host, chattr +a). Empty: none.",
        )
        loader.add_option(
            "audit_checkpoint_webhook", str, "",
            "URL that receives every signed checkpoint (text/plain POST). Empty: none.",
        )
        loader.add_option(
            "audit_bodies", bool, True,
            "Keep encrypted copies of request and response bodies with each record.",
        )

    def configure(self, updated: set[str]) -> None:
        if "audit_durability" in updated and ctx.options.audit_durability not in ("normal", "full"):
            raise exceptions.OptionsError("audit_durability must be 'normal' or 'full'")
        if "audit_checkpoint_interval" in updated and ctx.options.audit_checkpoint_interval <= 0:
            raise exceptions.OptionsError("audit_checkpoint_interval must be > 0")
        settings = (ctx.options.phigate_home, ctx.options.audit_db, ctx.options.audit_durability,
                    ctx.options.audit_checkpoint_file, ctx.options.audit_checkpoint_webhook)
        if settings != self._settings:
            self._settings = settings
            sinks = []
            if ctx.options.audit_checkpoint_file:
                sinks.append(AppendOnlyFile(ctx.options.audit_checkpoint_file))
            if ctx.options.audit_checkpoint_webhook:
                sinks.append(Webhook(ctx.options.audit_checkpoint_webhook))
            # After every record already queued for the old store, before any new one.
            self.writer.replace(functools.partial(
                open_store, home(), ctx.options.audit_db or None,
                sinks=sinks, durability=ctx.options.audit_durability)).result()

    def running(self) -> None:
        if self._checkpoints is None:
            self._checkpoints = asyncio.get_running_loop().create_task(self._checkpoint_forever())

    async def _checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(ctx.options.audit_checkpoint_interval)
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        """Sign the tree head on the writer thread: it covers every record queued before it."""
        try:
            await asyncio.wrap_future(self.writer.call(lambda: self.store.checkpoint()))
        except Exception as exc:
            log.error("audit checkpoint failed (%s)", type(exc).__name__)

    async def done(self) -> None:
        if self._checkpoints:
            self._checkpoints.cancel()
        if self.store:
            await self._checkpoint()
            await asyncio.wrap_future(self.writer.call(lambda: self.store.close()))
        self.writer.close()  # drains whatever was still queued

    @guard(STAGE)
    def request(self, flow: http.HTTPFlow) -> None:
        """Refuse new work while the log cannot be written: unaudited access is not allowed."""
        if settled(flow):
            return
        if not self.healthy:
            raise Refusal(503, "audit_unavailable",
                          "The gateway cannot write its audit log; the request was not sent.",
                          retry=True)

    @unrecorded_on_fault
    async def http_connect_error(self, flow: http.HTTPFlow) -> None:
        await self._record(flow)

    @unrecorded_on_fault
    async def response(self, flow: http.HTTPFlow) -> None:
        if not flow.live or flow.is_replay == "response":
            return
        if not await self._record(flow):
            withhold(flow)

    @unrecorded_on_fault
    async def error(self, flow: http.HTTPFlow) -> None:
        await self._record(flow)

    async def _record(self, flow: http.HTTPFlow) -> bool:
        if flow.metadata.get(RECORDED):  # e.g. the client left after its response was recorded
            return True
        flow.metadata[RECORDED] = True
        try:
            record = outcome(flow)
            bodies = bodies_of(flow, record) if ctx.options.audit_bodies else None
            flowstate.release(flow)
            await asyncio.wrap_future(self.writer.submit(record, bodies))
        except Exception as exc:
            self.healthy = False
            log.error("audit append failed (%s); refusing new requests until it works",
                      type(exc).__name__)
            return False
        self.healthy = True
        return True


def withhold(flow: http.HTTPFlow) -> None:
    """Replace an unrecorded upstream answer by the 500 audit_write_failed error.

    The gateway's own refusals carry no upstream content and keep their status (a 503
    audit_unavailable tells the caller to retry); a streamed answer has already left."""
    record = record_of(flow)
    if record.get("local_response") or flow.response is None or flow.response.stream:
        return
    record["local_response"] = True
    flow.response = http.Response.make(
        500,
        error_body(500, "audit_write_failed",
                   "The gateway could not write the audit record; the response was withheld."),
        error_headers(record["request_id"], retry=False))


def withhold_or_kill(flow: http.HTTPFlow) -> None:
    """Withhold; if even that fails, kill the flow rather than pass an unaudited answer on."""
    try:
        withhold(flow)
        return
    except Exception as exc:
        log.error("recorder could not withhold a response (%s); killing the flow",
                  type(exc).__name__)
    try:
        if flow.killable:
            flow.kill()
    except Exception as exc:
        log.error("recorder could not kill a flow (%s)", type(exc).__name__)


def outcome(flow: http.HTTPFlow) -> dict:
    """The flow's record completed with what happened upstream (or did not)."""
    record = dict(record_of(flow))
    record["finished"] = time.time()
    if flow.is_replay:
        record["replay"] = True
        if flow.metadata.get(REPLAY_OF):  # a `phigate replay` copy, not a primary record
            record["replay_of"] = flow.metadata[REPLAY_OF]
    if flow.response is not None:
        record["status"] = flow.response.status_code
        if not record.get("local_response"):
            upstream = dict(record.get("upstream") or {})
            upstream["status"] = flow.response.status_code
            if flow.response.timestamp_start and flow.request.timestamp_end:
                upstream["latency_ms"] = round(
                    (flow.response.timestamp_start - flow.request.timestamp_end) * 1000, 2)
            usage = usage_of(flow)
            if usage:
                upstream["usage"] = usage
            record["upstream"] = upstream
    if flow.error is not None and "error" not in record:
        # mitmproxy's error messages are about connections, not content.
        record["error"] = {"stage": "transport", "kind": flow.error.msg[:200]}
    return record


def usage_of(flow: http.HTTPFlow) -> dict | None:
    """Token usage of a JSON response: as the masking stage noted it when it parsed the body,
    else parsed here (streamed usage is not collected yet)."""
    state = flowstate.of(flow)
    if state.usage is not None:
        return state.usage
    if flow.response.stream or "json" not in flow.response.headers.get("content-type", ""):
        return None
    try:
        return int_fields(json.loads(flow.response.get_content(strict=False) or b"{}").get("usage"))
    except (ValueError, AttributeError):
        return None


def bodies_of(flow: http.HTTPFlow, record: dict) -> dict[str, bytes]:
    """What the client sent and got, and what went to OpenAI (after masking).

    The masking stage adds the original request and the upstream's raw response where they
    differ from what was forwarded and returned."""
    bodies = dict(flowstate.of(flow).bodies)
    request = flow.request.raw_content
    if request:
        bodies.setdefault("client_request", request)
        if "upstream" in record:  # the request was forwarded
            bodies.setdefault("upstream_request", request)
    if flow.response is not None and flow.response.raw_content:
        bodies.setdefault("client_response", flow.response.raw_content)
    return bodies
