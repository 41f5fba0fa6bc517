"""Options shared by several stages: where state lives, where traffic goes, what is in scope."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions

from phigate.home import Home

OPENAI_HOST = "api.openai.com"
SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"

DEFAULT_BODY_SIZE_LIMIT = "32m"

# mitmproxy options every deployment needs; `phigate run` sets them, as must any other launcher.
REQUIRED_OPTIONS = {
    # Open no connection before the pipeline has decided on (and routed) the request.
    "connection_strategy": "lazy",
    # Leaves carry only the requested name, so the CA's name constraint holds.
    "upstream_cert": False,
}


class Settings:
    def load(self, loader) -> None:
        loader.add_option(
            "phigate_home", str, "",
            "Folder for all gateway state (CA, keys, audit database). "
            "Empty: $PHIGATE_HOME, else ~/.phigate.",
        )
        loader.add_option(
            "policies", str, str(SHIPPED_POLICIES),
            "Folder of policy files (*.yaml) that bind caller groups to rules.",
        )
        loader.add_option(
            "upstream", str, f"https://{OPENAI_HOST}",
            "Where OpenAI traffic is sent (e.g. an Azure or regional endpoint, or a local "
            "stand-in for tests). Requests for api.openai.com are routed here.",
        )
        loader.add_option(
            "upstream_ca", str, "",
            "PEM file of CA certificates trusted for the upstream (in addition to none: when "
            "set, only these are trusted).",
        )
        loader.add_option(
            "upstream_key_file", str, "",
            "File holding the gateway's OpenAI API key. Empty: $OPENAI_API_KEY of the gateway.",
        )
        loader.add_option(
            "passthrough_hosts", Sequence[str], [],
            "Hosts other than api.openai.com that callers may tunnel to WITHOUT interception "
            "(CONNECT is passed through untouched). Every other host is refused with 403.",
        )

    def configure(self, updated: set[str]) -> None:
        if "upstream" in updated:
            parts = urlsplit(ctx.options.upstream)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise exceptions.OptionsError(
                    f"upstream must be an http(s) URL, got {ctx.options.upstream!r}")
            if parts.query or parts.fragment:
                raise exceptions.OptionsError("upstream must not carry a query or fragment")
        if "upstream_ca" in updated and ctx.options.upstream_ca:
            if not os.path.isfile(ctx.options.upstream_ca):
                raise exceptions.OptionsError(
                    f"upstream_ca: no such file {ctx.options.upstream_ca!r}")
            # mitmproxy's own option does the verification; ours is the documented name.
            ctx.options.update(ssl_verify_upstream_trusted_ca=ctx.options.upstream_ca)
        if "stream_large_bodies" in updated and ctx.options.stream_large_bodies:
            # A streamed request body is forwarded as it arrives, before any stage examined it.
            raise exceptions.OptionsError(
                "stream_large_bodies cannot be used with phigate: every body is examined whole")
        if "body_size_limit" in updated and not ctx.options.body_size_limit:
            # Bodies are buffered to be examined: bound them (bigger ones fail the flow).
            ctx.options.update(body_size_limit=DEFAULT_BODY_SIZE_LIMIT)
        if "policies" in updated and not os.path.isdir(ctx.options.policies):
            raise exceptions.OptionsError(f"policies: no such folder {ctx.options.policies!r}")


def home() -> Home:
    return Home.open(ctx.options.phigate_home or None)


def upstream_parts() -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of the configured upstream."""
    parts = urlsplit(ctx.options.upstream)
    scheme = parts.scheme
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname or "", port, parts.path.rstrip("/")


def intercepted_hosts() -> frozenset[str]:
    """Hosts whose traffic goes through the pipeline: OpenAI's and the upstream's."""
    return frozenset({OPENAI_HOST, upstream_parts()[1].lower()})
