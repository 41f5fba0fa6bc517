"""Fetching an issuer's discovery document and JWKS over HTTP, carefully.

Keys are only taken from `https://` URLs (or plain `http://` on the loopback interface, for
tests and a local identity provider). Requests have a short timeout and a size cap, ignore
proxy environment variables (the gateway's own clients may point HTTPS_PROXY at the gateway)
and follow redirects only to URLs that pass the same check.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 3.0
MAX_RESPONSE_BYTES = 512 * 1024

Fetch = Callable[[str], bytes]


class FetchError(OSError):
    """The document could not be fetched, or was refused (bad URL, too large)."""


def check_url(url: str) -> None:
    """Raise ValueError unless keys may be fetched from `url`."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise ValueError("must be an https:// URL (http:// is allowed on loopback only)")


def is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def fetch_url(url: str) -> bytes:
    """GET `url` and return the body; raises FetchError (an OSError) on any failure."""
    try:
        check_url(url)
    except ValueError as refused:
        raise FetchError(f"refused URL: {refused}") from None
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "phigate"}
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # never the proxies named in the environment
        urllib.request.HTTPSHandler(context=_tls_context()),
        _CheckedRedirects(),
    )
    with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
        body = response.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise FetchError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
    return body


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system trust store (SSL_CERT_FILE applies), loaded once: loading takes ~50 ms."""
    return ssl.create_default_context()


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        try:
            check_url(newurl)
        except ValueError as refused:
            raise FetchError(f"refused redirect: {refused}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)

