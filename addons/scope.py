"""Scope: only OpenAI traffic is intercepted; tunnels to anything else are refused.

A forward proxy that tunnels arbitrary hosts would be an unaudited exit for PHI. CONNECT to a
host outside scope gets 403 unless it is listed in `passthrough_hosts`, in which case the
tunnel is passed through byte for byte (never intercepted, never decrypted).
"""

from __future__ import annotations

import fnmatch

from mitmproxy import ctx, http, tls

from phigate import context
from phigate.errors import Refusal

from .failclosed import contained, guard, record_of, settled
from .settings import intercepted_hosts

STAGE = "scope"


def matches_any(host: str, patterns) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, p.lower()) for p in patterns)


class Scope:
    @guard(STAGE)
    def http_connect(self, flow: http.HTTPFlow) -> None:
        host = flow.request.host.lower().rstrip(".")
        if host in intercepted_hosts() or matches_any(host, ctx.options.passthrough_hosts):
            return
        record = record_of(flow)
        record["endpoint"] = f"CONNECT {host}:{flow.request.port}"
        raise Refusal(403, "host_not_allowed",
                      "This gateway only carries OpenAI API traffic; the host is not allowed.")

    @contained(STAGE)
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        address = data.context.server.address
        host = (data.client_hello.sni or (address[0] if address else "")).lower()
        if host not in intercepted_hosts() and matches_any(host, ctx.options.passthrough_hosts):
            data.ignore_connection = True

    @guard(STAGE)
    def request(self, flow: http.HTTPFlow) -> None:
        if settled(flow):
            return
        record = record_of(flow)
        if flow.request.host.lower().rstrip(".") not in intercepted_hosts():
            raise Refusal(403, "host_not_allowed",
                          "This gateway only carries OpenAI API traffic; the host is not allowed.")
        context.decide(record, STAGE, "allow")

    @guard(STAGE)
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Every answer names its audit record, so a caller's support ticket can cite it."""
        record = context.get(flow.metadata)
        if record and flow.response:
            flow.response.headers["x-phigate-request-id"] = record["request_id"]

