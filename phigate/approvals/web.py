"""The admin HTTP app: a JSON API over the approval store and the approval page, as WSGI.

Every API call carries the approver's own token (`Authorization: Bearer <JWT>`); the app keeps
no session and sets no cookie, so cross-site requests cannot borrow a login, and with no CORS
headers other origins cannot call the API at all. A caller sees the approvals they requested or
may decide (their groups meet the approval's approver groups); the store enforces the decision
rules. Errors are OpenAI-shaped JSON, like the gateway's.

    GET  /approvals                         the page (static HTML + JS + CSS, strict CSP)
    GET  /api/me                            who the token says the caller is
    GET  /api/approvals?state=pending|all|<state>[,<state>]
    GET  /api/approvals/{id}
    POST /api/approvals/{id}/approve        body {"reason": "..."} (optional)
    POST /api/approvals/{id}/deny           body {"reason": "..."} (required)
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from importlib import resources
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from phigate.approvals.model import STATES, Approval, ApprovalError, Person, person, same_person
from phigate.approvals.notify import approval_link
from phigate.approvals.store import ApprovalStore
from phigate.errors import error_body

log = logging.getLogger(__name__)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
VerifyToken = Callable[[str], Person]

MAX_BODY_BYTES = 16 * 1024
MAX_LIST = 500
_API_ITEM = re.compile(r"^/api/approvals/(apr_[a-z2-7]{12})(?:/(approve|deny))?$")
_COMMON_HEADERS = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
]
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {
    "/approvals": ("approvals.html", "text/html; charset=utf-8"),
    "/approvals/app.js": ("approvals.js", "text/javascript; charset=utf-8"),
    "/approvals/app.css": ("approvals.css", "text/css; charset=utf-8"),
}


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


_REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            413: "Content Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


def make_admin_app(
    store: ApprovalStore,
    verify_token: VerifyToken,
    *,
    base_url: str,
    clock: Callable[[], float] = time.time,
) -> WSGIApp:
    """The WSGI app. `verify_token(token)` returns an identity (iss, sub, groups) or raises."""
    assets = {path: (_asset(name), kind) for path, (name, kind) in _STATIC.items()}

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
        try:
            if path in assets:
                _allow(method, "GET")
                body, kind = assets[path]
                headers = [("content-type", kind)]
                if kind.startswith("text/html"):
                    headers.append(("content-security-policy", _CSP))
                return _respond(start_response, 200, body, headers)
            if path == "/":
                return _respond(start_response, 302, b"", [("location", "/approvals")])
            if path.startswith("/api/"):
                return _json(start_response, 200, api(environ, method, path))
            raise _HttpError(404, "not_found", "no such page")
        except (_HttpError, ApprovalError) as error:
            return _error(start_response, error.status, error.code, error.message)
        except Exception as error:  # fail closed, and never echo a message that may hold data
            log.error("admin app failed on %s %s: %s", method, path, type(error).__name__)
            return _error(start_response, 500, "admin_failed", "the admin app failed")

    def api(environ: Environ, method: str, path: str) -> dict[str, Any]:
        caller = _authenticate(environ, verify_token)
        now = clock()
        if path == "/api/me":
            _allow(method, "GET")
            return caller
        if path == "/api/approvals":
            _allow(method, "GET")
            visible = [a for a in store.list(_states(environ), MAX_LIST) if _may_view(caller, a)]
            return {"object": "list", "data": [view(a, caller, now) for a in visible]}
        match = _API_ITEM.match(path)
        if match is None:
            raise _HttpError(404, "not_found", "no such endpoint")
        approval_id, action = match.groups()
        if action is None:
            _allow(method, "GET")
            approval = store.get(approval_id)
            if not _may_view(caller, approval):
                raise ApprovalError(
                    "not_an_approver", "the caller neither requested nor may decide this", 403
                )
            return view(approval, caller, now)
        _allow(method, "POST")
        reason = _reason(environ)
        decided = store.decide(approval_id, caller, action, reason, now)
        log.info("approval %s: %s by %s", approval_id, action, caller["sub"])
        return view(decided, caller, now)

    def view(approval: Approval, caller: dict[str, Any], now: float) -> dict[str, Any]:
        return {
            **approval.to_dict(),
            "object": "approval",
            "expires_in": max(0.0, approval.expires_at - now) if approval.state == "pending" else 0,
            "can_decide": approval.can_decide(caller, now),
            "url": approval_link(base_url, approval.id),
        }

    return app


SESSION_IDENTITY = "phigate.identity"


def _asset(name: str) -> bytes:
    return resources.files("phigate.approvals").joinpath("static", name).read_bytes()


def _authenticate(environ: Environ, verify_token: VerifyToken) -> dict[str, Any]:
    if "HTTP_AUTHORIZATION" not in environ and environ.get(SESSION_IDENTITY) is not None:
        # Signed in through SSO (phigate.sso's middleware sets this only from a valid session
        # cookie; a client cannot set a WSGI environ key directly).
        return person(environ[SESSION_IDENTITY])
    scheme, _, token = (environ.get("HTTP_AUTHORIZATION") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _HttpError(401, "token_missing", "send the approver's token as Authorization: Bearer")
    try:
        identity = verify_token(token.strip())
    except Exception as error:
        # Identity errors carry a safe status/code/message; anything else stays opaque.
        status, code = getattr(error, "status", None), getattr(error, "code", None)
        message = getattr(error, "message", None)
        if status in (401, 403, 503) and isinstance(code, str) and isinstance(message, str):
            raise _HttpError(status, code, message) from None
        raise _HttpError(401, "token_invalid", "the token could not be verified") from None
    return person(identity)


def _may_view(caller: dict[str, Any], approval: Approval) -> bool:
    return same_person(caller, approval.requester) or approval.is_approver(caller)


def _states(environ: Environ) -> tuple[str, ...] | None:
    wanted = parse_qs(environ.get("QUERY_STRING", "")).get("state", ["pending"])[-1]
    if wanted == "all":
        return None
    states = tuple(wanted.split(","))
    if not set(states) <= set(STATES):
        raise _HttpError(400, "invalid_state", f"state must be 'all' or among {', '.join(STATES)}")
    return states


def _reason(environ: Environ) -> str:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _HttpError(400, "invalid_body", "bad Content-Length") from None
    if length > MAX_BODY_BYTES:
        raise _HttpError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _HttpError(400, "invalid_json", "the body is not JSON") from None
    reason = body.get("reason", "") if isinstance(body, dict) else None
    if not isinstance(reason, str):
        raise _HttpError(400, "invalid_body", 'the body must be {"reason": "<text>"}')
    return reason


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise _HttpError(405, "method_not_allowed", f"use {allowed}")


def _json(start_response: StartResponse, status: int, payload: Any) -> Iterable[bytes]:
    body = json.dumps(payload).encode()
    return _respond(start_response, status, body, [("content-type", "application/json")])


def _error(start_response: StartResponse, status: int, code: str, message: str) -> Iterable[bytes]:
    headers = [("content-type", "application/json")]
    if status == 401:
        headers.append(("www-authenticate", "Bearer"))
    return _respond(start_response, status, error_body(status, code, message), headers)


def _respond(
    start_response: StartResponse, status: int, body: bytes, headers: list[tuple[str, str]]
) -> Iterable[bytes]:
    all_headers = [*headers, *_COMMON_HEADERS, ("content-length", str(len(body)))]
    start_response(f"{status} {_REASONS[status]}", all_headers)
    return [body]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _LoggingHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("admin %s", format % args)


def make_admin_server(app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> WSGIServer:
    """A threaded stdlib server for the app; run `serve_forever()` in a thread, then `shutdown()`."""
    return make_server(
        host, port, app, server_class=_ThreadingWSGIServer, handler_class=_LoggingHandler
    )
