"""Admin listener: health, readiness, metrics, and the approval page with its JSON API, on a
separate loopback port.

Kept apart from the proxy listeners so that it can be firewalled on its own and never mixes
with OpenAI traffic. People authenticate to the approval API with the same OIDC tokens the
gateway verifies; `/healthz`, `/readyz` and `/metrics` carry no PHI, subjects or secrets and
need no token (probes and scrapers have none).

The admin addon also carries the process lifecycle (`Lifecycle`: SIGTERM drain, SIGHUP reload)
as a child addon, since both are about operating the process rather than a flow.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from mitmproxy import ctx, exceptions

from phigate.approvals import make_admin_app, make_admin_server
from phigate.ops import health
from phigate.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from phigate.upstream_keys import DEFAULT

from .approvals import Approvals
from .identity import Identity
from .lifecycle import Lifecycle

log = logging.getLogger("phigate")
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class Admin:
    def __init__(self, identity: Identity, approvals: Approvals) -> None:
        self.identity = identity
        self.approvals = approvals
        self.lifecycle = Lifecycle(identity.policies)
        self.addons = [self.lifecycle]  # mitmproxy runs a child's hooks right after ours
        self.server = None
        self._thread: threading.Thread | None = None
        self.recorder = self.masking = self.upstream = self.observability = None

    def load(self, loader) -> None:
        loader.add_option(
            "admin_listen", str, "127.0.0.1:8082",
            "HOST:PORT of the admin listener (approval page and API, /healthz, /readyz, "
            "/metrics). Empty disables it.",
        )

    def configure(self, updated: set[str]) -> None:
        if "admin_listen" in updated and ctx.options.admin_listen:
            host, sep, port = ctx.options.admin_listen.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise exceptions.OptionsError("admin_listen must be HOST:PORT")

    def running(self) -> None:
        if not ctx.options.admin_listen or self.server is not None:
            return
        addons = ctx.master.addons
        self.recorder, self.masking, self.upstream = (
            addons.get("recorder"), addons.get("masking"), addons.get("upstream"))
        self.observability = addons.get("observability")
        host, _, port = ctx.options.admin_listen.rpartition(":")
        approvals = make_admin_app(self.approvals.store, self._verify,
                                   base_url=ctx.options.approvals_page_url.rsplit("/approvals", 1)[0])
        self.server = make_admin_server(self._dispatch(approvals), host, int(port))
        self._thread = threading.Thread(target=self.server.serve_forever, name="phigate-admin",
                                        daemon=True)
        self._thread.start()
        log.info("admin listener on http://%s:%d (/approvals, /healthz, /readyz, /metrics)",
                 *self.server.server_address[:2])

    def _dispatch(self, approvals: WSGIApp) -> WSGIApp:
        """The operations routes in front of the approvals app (a path prefix is not needed:
        the approvals app owns `/`, `/approvals*` and `/api/*`)."""
        routes = {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics}

        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            route = routes.get(environ.get("PATH_INFO") or "/")
            if route is None:
                return approvals(environ, start_response)
            if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
                return _reply(start_response, 405, b"method not allowed\n", "text/plain")
            status, body, kind = route()
            return _reply(start_response, status, body, kind)

        return app

    def _healthz(self) -> tuple[int, bytes, str]:
        return 200, b'{"ok":true}\n', "application/json"

    def _readyz(self) -> tuple[int, bytes, str]:
        ready, body = health.readiness(self.checks())
        return (200 if ready else 503), json.dumps(body).encode() + b"\n", "application/json"

    def _metrics(self) -> tuple[int, bytes, str]:
        if self.observability is None:
            return 404, b"metrics are off (no observability addon)\n", "text/plain"
        return 200, self.observability.metrics.render(), METRICS_CONTENT_TYPE

    def checks(self) -> dict[str, health.Check]:
        """Readiness, check by check; each reason names the problem, never a value."""
        policies = self.identity.policies.store
        policy_ok = policies is not None and policies.error is None
        store = getattr(self.recorder, "store", None)
        db = getattr(store, "path", None)
        keys = getattr(self.upstream, "keys", None)
        names = sorted({p.upstream_key or DEFAULT for p in policies.current.policies}
                       if policies else {DEFAULT})
        missing = [name for name in names if keys is None or not keys.has(name)]
        return {
            "accepting": ((False, "shutting down") if self.lifecycle.stopping else (True, "ok")),
            "policies": (policy_ok, "ok" if policy_ok else "the policy files on disk are rejected"),
            "detector": ((True, "ok") if getattr(self.masking, "detector", None)
                         else (False, "PHI detector not loaded")),
            "audit": (health.audit_writable(Path(db), healthy=self.recorder.healthy) if db
                      else (False, "no audit store")),
            "upstream_key": ((False, f"no upstream key for {', '.join(missing)}") if missing
                             else (True, "ok")),
        }

    def _verify(self, token: str):
        return self.identity.verifier.verify(token, "authorization")

    def done(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


def _reply(start_response: Callable, status: int, body: bytes, kind: str) -> list[bytes]:
    reasons = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    start_response(f"{status} {reasons[status]}", [
        ("content-type", kind), ("content-length", str(len(body))), ("cache-control", "no-store")])
    return [body]
