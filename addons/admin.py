"""Admin listener: the approval page and its JSON API, on a separate loopback port.

Kept apart from the proxy listeners so that it can be firewalled on its own and never mixes
with OpenAI traffic. People authenticate with the same OIDC tokens the gateway verifies.
"""

from __future__ import annotations

import logging
import threading

from mitmproxy import ctx, exceptions

from phigate.approvals import make_admin_app, make_admin_server

from .approvals import Approvals
from .identity import Identity

log = logging.getLogger("phigate")


class Admin:
    def __init__(self, identity: Identity, approvals: Approvals) -> None:
        self.identity = identity
        self.approvals = approvals
        self.server = None
        self._thread: threading.Thread | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "admin_listen", str, "127.0.0.1:8082",
            "HOST:PORT of the admin listener (approval page and API). Empty disables it.",
        )

    def configure(self, updated: set[str]) -> None:
        if "admin_listen" in updated and ctx.options.admin_listen:
            host, sep, port = ctx.options.admin_listen.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise exceptions.OptionsError("admin_listen must be HOST:PORT")

    def running(self) -> None:
        if not ctx.options.admin_listen or self.server is not None:
            return
        host, _, port = ctx.options.admin_listen.rpartition(":")
        app = make_admin_app(self.approvals.store, self._verify,
                             base_url=ctx.options.approvals_page_url.rsplit("/approvals", 1)[0])
        self.server = make_admin_server(app, host, int(port))
        self._thread = threading.Thread(target=self.server.serve_forever, name="phigate-admin",
                                        daemon=True)
        self._thread.start()
        log.info("admin listener on http://%s:%d/approvals", *self.server.server_address[:2])

    def _verify(self, token: str):
        return self.identity.verifier.verify(token, "authorization")

    def done(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"
