"""Upstream: swap the caller's credentials for the gateway's key and route to `--upstream`.

Runs last among the request stages, so a request refused earlier never has a key attached.
Caller-supplied OpenAI account headers are dropped too: the gateway, not the application,
decides which OpenAI organisation and project the traffic bills to. Requests that
`phigate replay` injected are answered here, after every other request stage ran, and never leave.
"""

from __future__ import annotations

import json

from mitmproxy import ctx, http

from phigate import context
from phigate.upstream_keys import DEFAULT, UpstreamKeys

from . import flowstate
from .failclosed import contained, guard, record_of, settled
from .settings import home, upstream_parts

STAGE = "upstream"

# Headers that carry the caller's credentials or account choice; never forwarded.
CALLER_HEADERS = (
    "authorization",
    "proxy-authorization",
    "openai-organization",
    "openai-project",
    "cookie",
)


class Upstream:
    def __init__(self) -> None:
        self.keys: UpstreamKeys | None = None

    def configure(self, updated: set[str]) -> None:
        if updated & {"upstream_key_file", "phigate_home"}:
            self.keys = UpstreamKeys(ctx.options.upstream_key_file or None,
                                     home().keys_dir / "upstream")

    @guard(STAGE)
    def request(self, flow: http.HTTPFlow) -> None:
        if settled(flow):
            return
        record = record_of(flow)
        key_name = (record.get("policy") or {}).get("upstream_key") or DEFAULT
        if flow.is_replay == "request" and record.get("replay_of"):
            answer_replay(flow, record, key_name)
            return
        assert self.keys is not None
        key = self.keys.get(key_name)

        for name in CALLER_HEADERS:
            flow.request.headers.pop(name, None)
        # Bodies must arrive uncompressed so response masking can read streamed chunks.
        flow.request.headers["accept-encoding"] = "identity"

        scheme, host, port, prefix = upstream_parts()
        flow.request.scheme, flow.request.host, flow.request.port = scheme, host, port
        flow.request.host_header = host if port in (80, 443) else f"{host}:{port}"
        if prefix and not flow.request.path.startswith(prefix + "/"):
            flow.request.path = prefix + flow.request.path
        flow.request.headers["authorization"] = f"Bearer {key}"
        context.decide(record, STAGE, "allow", rule=key_name)
        record["upstream"] = {"started": flow.request.timestamp_start}

    @guard(STAGE)
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        redact_key(flow)

    @contained(STAGE)
    def error(self, flow: http.HTTPFlow) -> None:
        redact_key(flow)


def answer_replay(flow: http.HTTPFlow, record: dict, key_name: str) -> None:
    """`phigate replay` re-runs the request stages only: what would have gone upstream is kept
    for the audit record, and the gateway answers itself (the identity stage marked the flow,
    which only an in-process replay can make it do)."""
    context.decide(record, STAGE, "allow", rule=key_name)
    if flow.request.raw_content:
        flowstate.of(flow).bodies["upstream_request"] = flow.request.raw_content
    record["local_response"] = True
    body = {"object": "phigate.replay", "replay_of": record["replay_of"]}
    flow.response = http.Response.make(200, json.dumps(body).encode(), {
        "content-type": "application/json", "x-phigate-request-id": record["request_id"]})


def redact_key(flow: http.HTTPFlow) -> None:
    """Once the request has left, the key is taken off the flow again, so mitmweb, the dumper,
    saved flow files and the recorder never see it."""
    if "authorization" in flow.request.headers:
        flow.request.headers["authorization"] = "Bearer [gateway key redacted]"
