"""SSO in front of a WSGI app: login routes, a sealed session cookie, and CSRF protection.

    GET  /login?next=/path        choose SAML or OIDC (redirects at once if only one is set up)
    GET  /login/saml?next=/path   AuthnRequest (HTTP-Redirect) to the IdP
    POST /saml/acs                the IdP's HTTP-POST Response -> session cookie
    GET  /saml/metadata           our SP metadata
    GET  /login/oidc?next=/path   authorization request (code + PKCE) to the IdP
    GET  /oidc/callback           code exchange -> session cookie
    GET  /logout                  a sign-out button;  POST /logout  clears the session
    GET  /api/csrf                {"csrf_token": "...", "header": "X-CSRF-Token"} for the session

Everything else goes to the inner app. A request WITHOUT an Authorization header that carries
a valid session cookie reaches it with `environ["phigate.identity"]` (a phigate Identity,
source "saml" or "oidc", jti = session id) and `environ["phigate.csrf_token"]` (for a meta tag);
a request with an Authorization header never gets a session identity, so the inner app checks
its token as before. Requests other than GET/HEAD/OPTIONS that use the session must send
`X-CSRF-Token: <csrf_token>`, or they are refused here with 403 `csrf_failed`: cookies are
sent by the browser on its own, a custom header is not. The session cookie is HttpOnly,
SameSite=Strict, Secure (`__Host-` prefixed) and lives `ttl` seconds; `secure=False` is
refused for any Host that is not loopback.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, quote

from phigate.errors import error_body
from phigate.identity import IdentityError
from phigate.identity.fetch import is_loopback
from phigate.sso.oidc_login import OidcLogin
from phigate.sso.saml import SamlServiceProvider
from phigate.sso.session import Login, Sealer, SessionCodec, SessionTooLarge

log = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

IDENTITY_KEY = "phigate.identity"
CSRF_KEY = "phigate.csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_TTL = 300
MAX_FORM_BYTES = 512 * 1024
_HEADERS = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),  # the callback URL carries a code and a state
    ("x-frame-options", "DENY"),
]
_CSP = "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
_REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _Stop(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


def make_sso_app(
    inner_app: WSGIApp,
    *,
    saml: SamlServiceProvider | None = None,
    oidc: OidcLogin | None = None,
    session_key: bytes,
    secure: bool = True,
    ttl: int = 900,
    clock: Callable[[], float] = time.time,
) -> WSGIApp:
    if saml is None and oidc is None:
        raise ValueError("configure SAML, OIDC or both")
    codec = SessionCodec(session_key, ttl=ttl, clock=clock)
    binding = Sealer(session_key, "login")
    prefix = "__Host-" if secure else ""
    session_cookie, login_cookie = prefix + "phigate_session", prefix + "phigate_login"

    def cookie(name: str, value: str, max_age: int, same_site: str) -> tuple[str, str]:
        attributes = f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}"
        return ("set-cookie", attributes + ("; Secure" if secure else ""))

    def bind(kind: str, reference: str) -> tuple[str, str]:
        value = binding.seal({"kind": kind, "ref": reference, "exp": int(clock()) + LOGIN_TTL})
        # The IdP posts or redirects back cross-site: Strict (and for POST, Lax) would drop it.
        return cookie(login_cookie, value, LOGIN_TTL, "None" if secure else "Lax")

    def bound(environ: Environ, kind: str) -> str | None:
        payload = binding.open(_cookies(environ).get(login_cookie))
        if not payload or payload.get("kind") != kind or not isinstance(payload.get("ref"), str):
            return None
        return payload["ref"] if int(payload.get("exp", 0)) > clock() else None

    def signed_in(login: Login, start_response: StartResponse) -> Iterable[bytes]:
        value, session = codec.issue(login)
        log.info("sso: %s signed in through %s", session.sub, session.source)
        headers = [
            cookie(session_cookie, value, session.exp - session.iat, "Strict"),
            cookie(login_cookie, "", 0, "Lax"),
        ]
        # A page, not a redirect: navigating on from our own page is same-site, so the
        # SameSite=Strict cookie is sent; a redirect would continue the IdP's cross-site chain.
        target = html.escape(login.return_to, quote=True)
        return _page(
            start_response,
            200,
            "Signed in",
            f'<meta http-equiv="refresh" content="0;url={target}">',
            f'<p>Signed in. <a href="{target}">Continue</a></p>',
            headers,
        )

    def routes(environ: Environ, start_response: StartResponse, method: str, path: str):  # noqa: ANN202
        query = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=20)
        if path == "/login":
            _allow(method, "GET")
            target = quote(safe_next(_first(query, "next")), safe="")
            methods = [
                (name, f"/login/{name}?next={target}")
                for name, handler in (("saml", saml), ("oidc", oidc))
                if handler
            ]
            if len(methods) == 1:
                return _redirect(start_response, methods[0][1], [])
            links = "".join(
                f'<li><a href="{html.escape(url)}">Sign in with {name.upper()}</a></li>'
                for name, url in methods
            )
            return _page(start_response, 200, "Sign in", "", f"<ul>{links}</ul>")
        if path == "/login/saml" and saml:
            _allow(method, "GET")
            url, request_id = saml.start_login(safe_next(_first(query, "next")))
            return _redirect(start_response, url, [bind("saml", request_id)])
        if path == "/saml/acs" and saml:
            _allow(method, "POST")
            form = _form(environ)
            login = saml.finish_login(_first(form, "SAMLResponse") or "", bound(environ, "saml"))
            return signed_in(login, start_response)
        if path == "/saml/metadata" and saml:
            _allow(method, "GET")
            body = saml.metadata_xml()
            return _respond(
                start_response, 200, body, [("content-type", "application/samlmetadata+xml")]
            )
        if path == "/login/oidc" and oidc:
            _allow(method, "GET")
            url, state = oidc.start_login(safe_next(_first(query, "next")))
            return _redirect(start_response, url, [bind("oidc", state)])
        if path == "/oidc/callback" and oidc:
            _allow(method, "GET")
            params = {name: values[0] for name, values in query.items() if len(values) == 1}
            return signed_in(oidc.finish_login(params, bound(environ, "oidc")), start_response)
        if path == "/logout":
            return logout(environ, start_response, method)
        if path == "/api/csrf":
            _allow(method, "GET")
            session = codec.read(_cookies(environ).get(session_cookie))
            if session is None:
                raise _Stop(401, "session_missing", "not signed in")
            payload = {"csrf_token": codec.csrf_token(session), "header": CSRF_HEADER}
            return _respond(
                start_response,
                200,
                json.dumps(payload).encode(),
                [("content-type", "application/json")],
            )
        return None

    def logout(environ: Environ, start_response: StartResponse, method: str) -> Iterable[bytes]:
        session = codec.read(_cookies(environ).get(session_cookie))
        if method == "GET":
            token = html.escape(codec.csrf_token(session)) if session else ""
            form = (
                f'<form method="post" action="/logout"><input type="hidden" name="csrf_token" '
                f'value="{token}"><button type="submit">Sign out</button></form>'
            )
            return _page(start_response, 200, "Sign out", "", form)
        _allow(method, "POST")
        if session is not None:
            presented = environ.get("HTTP_X_CSRF_TOKEN") or _first(_form(environ), "csrf_token")
            if not codec.csrf_valid(session, presented):
                raise _Stop(
                    403, "csrf_failed", "the sign-out request lacks this session's CSRF token"
                )
            log.info("sso: %s signed out", session.sub)
        headers = [cookie(session_cookie, "", 0, "Strict"), cookie(login_cookie, "", 0, "Lax")]
        return _page(
            start_response,
            200,
            "Signed out",
            "",
            '<p>Signed out. <a href="/login">Sign in again</a></p>',
            headers,
        )

    def inner(environ: Environ, start_response: StartResponse, method: str) -> Iterable[bytes]:
        environ.pop(IDENTITY_KEY, None)
        environ.pop(CSRF_KEY, None)
        if not environ.get("HTTP_AUTHORIZATION"):
            session = codec.read(_cookies(environ).get(session_cookie))
            if session is not None:
                if method not in SAFE_METHODS and not codec.csrf_valid(
                    session, environ.get("HTTP_X_CSRF_TOKEN")
                ):
                    body = error_body(
                        403, "csrf_failed", f"send the session's {CSRF_HEADER} header"
                    )
                    return _respond(
                        start_response, 403, body, [("content-type", "application/json")]
                    )
                environ[IDENTITY_KEY] = session.identity()
                environ[CSRF_KEY] = codec.csrf_token(session)
        return inner_app(environ, start_response)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
        try:
            if not secure and not is_loopback(_host(environ)):
                raise _Stop(403, "insecure_cookies", "secure=False is only allowed on loopback")
            answered = routes(environ, start_response, method, path)
            if answered is not None:
                return answered
        except _Stop as stop:
            return _error(start_response, stop.status, stop.code, stop.message, path)
        except IdentityError as refused:
            log.info("sso: %s refused: %s", path, refused.code)
            return _error(start_response, refused.status, refused.code, refused.message, path)
        except SessionTooLarge:
            return _error(
                start_response,
                500,
                "session_too_large",
                "the sign-in carries too many groups for a session cookie",
                path,
            )
        except Exception as error:  # fail closed; the message may hold request data
            log.error("sso: %s %s failed: %s", method, path, type(error).__name__)
            return _error(start_response, 500, "sso_failed", "sign-in failed", path)
        return inner(environ, start_response, method)

    return app


def safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else (other sites, //host) becomes "/"."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or len(value) > 1024
        or any(ord(c) < 0x21 or c == "\\" for c in value)
    ):
        return "/"
    return value


def _host(environ: Environ) -> str:
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or ""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _cookies(environ: Environ) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in (environ.get("HTTP_COOKIE") or "").split(";"):
        name, separator, value = part.strip().partition("=")
        if separator and name not in jar:  # the first of two same-named cookies wins
            jar[name] = value.strip()
    return jar


def _form(environ: Environ) -> dict[str, list[str]]:
    if not (environ.get("CONTENT_TYPE") or "").startswith("application/x-www-form-urlencoded"):
        raise _Stop(400, "form_expected", "expected an HTML form post")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Stop(400, "invalid_body", "bad Content-Length") from None
    if length > MAX_FORM_BYTES:
        raise _Stop(413, "body_too_large", f"the form exceeds {MAX_FORM_BYTES} bytes")
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    return parse_qs(body.decode("latin-1"), max_num_fields=20)


def _first(values: dict[str, list[str]], name: str) -> str | None:
    found = values.get(name)
    return found[0] if found and len(found) == 1 else None


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise _Stop(405, "method_not_allowed", f"use {allowed}")


def _redirect(
    start_response: StartResponse, url: str, headers: list[tuple[str, str]]
) -> Iterable[bytes]:
    return _respond(start_response, 303, b"", [("location", url), *headers])


def _error(
    start_response: StartResponse, status: int, code: str, message: str, path: str
) -> Iterable[bytes]:
    if path.startswith("/api/"):
        return _respond(
            start_response,
            status,
            error_body(status, code, message),
            [("content-type", "application/json")],
        )
    body = (
        f"<p>Sign-in failed: {html.escape(message)} (<code>{html.escape(code)}</code>).</p>"
        '<p><a href="/login">Try again</a></p>'
    )
    return _page(start_response, status, "Sign-in failed", "", body)


def _page(
    start_response: StartResponse,
    status: int,
    title: str,
    head: str,
    body: str,
    headers: list[tuple[str, str]] | None = None,
) -> Iterable[bytes]:
    document = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"{head}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    page_headers = [("content-type", "text/html; charset=utf-8"), ("content-security-policy", _CSP)]
    return _respond(start_response, status, document.encode(), [*page_headers, *(headers or [])])


def _respond(
    start_response: StartResponse, status: int, body: bytes, headers: list[tuple[str, str]]
) -> Iterable[bytes]:
    start_response(
        f"{status} {_REASONS.get(status, 'Error')}",
        [*headers, *_HEADERS, ("content-length", str(len(body)))],
    )
    return [body]
