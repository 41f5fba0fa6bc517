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
from phigate.home import write_private
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
        self._approvals_app: WSGIApp | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "admin_listen", str, "127.0.0.1:8082",
            "HOST:PORT of the admin listener (approval page and API, /healthz, /readyz, "
            "/metrics). Empty disables it.",
        )
        loader.add_option(
            "admin_public_url", str, "",
            "The admin listener's URL as browsers and the identity provider reach it (e.g. "
            "https://phigate-admin.hospital.org behind a TLS proxy). Empty: http://admin_listen. "
            "Session cookies are marked Secure when it is https.",
        )
        loader.add_option(
            "sso_saml_idp_metadata", str, "",
            "SAML IdP metadata XML file: enables SAML sign-in for the admin pages "
            "(SP metadata is served at /saml/metadata).",
        )
        loader.add_option(
            "sso_saml_groups_attribute", str, "groups",
            "SAML attribute holding the user's groups (mapped to the same policy groups).",
        )
        loader.add_option(
            "sso_oidc_issuer", str, "",
            "OIDC issuer for browser sign-in (authorization code + PKCE). Empty: off.",
        )
        loader.add_option("sso_oidc_client_id", str, "", "OIDC client id for browser sign-in.")
        loader.add_option(
            "sso_oidc_client_secret_file", str, "",
            "File holding the OIDC client secret (empty for a public client using PKCE only).",
        )
        loader.add_option(
            "sso_oidc_groups_claim", str, "groups",
            "ID-token claim holding the user's groups (dotted paths allowed).",
        )

    def configure(self, updated: set[str]) -> None:
        if "admin_listen" in updated and ctx.options.admin_listen:
            host, sep, port = ctx.options.admin_listen.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise exceptions.OptionsError("admin_listen must be HOST:PORT")
        metadata = ctx.options.sso_saml_idp_metadata
        if "sso_saml_idp_metadata" in updated and metadata and not Path(metadata).is_file():
            raise exceptions.OptionsError(f"sso_saml_idp_metadata: no such file {metadata!r}")
        if ctx.options.sso_oidc_issuer and not ctx.options.sso_oidc_client_id:
            raise exceptions.OptionsError("sso_oidc_issuer needs sso_oidc_client_id")

    def running(self) -> None:
        if not ctx.options.admin_listen or self.server is not None:
            return
        addons = ctx.master.addons
        self.recorder, self.masking, self.upstream = (
            addons.get("recorder"), addons.get("masking"), addons.get("upstream"))
        self.observability = addons.get("observability")
        host, _, port = ctx.options.admin_listen.rpartition(":")
        self.server = make_admin_server(self._dispatch(), host, int(port))
        # Sign-in URLs need the bound address (the port may have been 0).
        base = (ctx.options.admin_public_url or self.url()).rstrip("/")
        approvals = make_admin_app(self.approvals.store, self._verify, base_url=base)
        self._approvals_app = sso_wrapped(approvals, base)
        self._thread = threading.Thread(target=self.server.serve_forever, name="phigate-admin",
                                        daemon=True)
        self._thread.start()
        log.info("admin listener on http://%s:%d (/approvals, /healthz, /readyz, /metrics)",
                 *self.server.server_address[:2])

    def _dispatch(self) -> WSGIApp:
        """The operations routes in front of the approvals app (a path prefix is not needed:
        the approvals app owns `/`, `/approvals*` and `/api/*`; sign-in adds `/login`,
        `/logout`, `/saml/*`, `/oidc/*`)."""
        routes = {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics}

        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            route = routes.get(environ.get("PATH_INFO") or "/")
            if route is None:
                return self._approvals_app(environ, start_response)
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


def sso_wrapped(app: WSGIApp, base: str) -> WSGIApp:
    """The approvals app behind SAML and/or OIDC sign-in when configured; tokens still work."""
    saml = oidc = None
    if ctx.options.sso_saml_idp_metadata:
        from phigate.sso import SamlConfig, SamlServiceProvider, load_idp_metadata

        saml = SamlServiceProvider(SamlConfig(
            entity_id=base + "/saml/metadata", acs_url=base + "/saml/acs",
            idp=load_idp_metadata(ctx.options.sso_saml_idp_metadata),
            groups_attribute=ctx.options.sso_saml_groups_attribute))
    if ctx.options.sso_oidc_issuer:
        from phigate.sso import OidcLogin, OidcLoginConfig

        secret_file = ctx.options.sso_oidc_client_secret_file
        oidc = OidcLogin(OidcLoginConfig(
            issuer=ctx.options.sso_oidc_issuer, client_id=ctx.options.sso_oidc_client_id,
            redirect_uri=base + "/oidc/callback",
            client_secret=Path(secret_file).read_text().strip() if secret_file else None,
            groups_claim=ctx.options.sso_oidc_groups_claim))
    if saml is None and oidc is None:
        return app
    from phigate.sso import make_sso_app

    return make_sso_app(app, saml=saml, oidc=oidc, session_key=session_key(),
                        secure=base.startswith("https://"))


def session_key() -> bytes:
    """Kept in the home folder so a restart does not sign everyone out."""
    from .settings import home

    path = home().keys_dir / "sso-session.key"
    if not path.exists():
        import os

        write_private(path, os.urandom(32))
    return path.read_bytes()


def _reply(start_response: Callable, status: int, body: bytes, kind: str) -> list[bytes]:
    reasons = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    start_response(f"{status} {reasons[status]}", [
        ("content-type", kind), ("content-length", str(len(body))), ("cache-control", "no-store")])
    return [body]
