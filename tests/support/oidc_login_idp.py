"""A real OpenID Connect provider for browser logins on 127.0.0.1, for tests.

It serves discovery, the JWKS, an authorization endpoint that approves `user` at once
(redirecting back with a code) and a token endpoint that checks the client, the redirect URI
and PKCE (S256) and accepts each code once. Knobs make it misbehave: `nonce_override`,
`claim_overrides`.

    with OidcLoginProvider(client_id="phigate-admin", redirect_uris=[...]) as idp:
        ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt

from tests.support.loopback import LoopbackServer
from tests.support.oidc import new_key


@dataclass
class LoginUser:
    sub: str = "dr-alice"
    groups: Iterable[str] = ("approvers",)


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    user: LoginUser


class OidcLoginProvider(LoopbackServer):
    def __init__(
        self, *, client_id: str, redirect_uris: Iterable[str] = (), client_secret: str | None = None
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = set(redirect_uris)
        self.key = new_key("RSA")
        self.user = LoginUser()
        self.nonce_override: str | None = None
        self.claim_overrides: dict[str, Any] = {}
        self.token_requests = 0
        self.refused: list[str] = []  # why token requests were refused (error codes)
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._serve(_handler_for(self))

    @property
    def issuer(self) -> str:
        return self.base

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "code_challenge_methods_supported": ["S256"],
        }

    # endpoints: (status, headers, body)
    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or redirect_uri not in self.redirect_uris:
            return 400, {}, b"unknown client or redirect_uri"
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return 400, {}, b"only the code flow with PKCE S256"
        if "openid" not in query.get("scope", "").split():
            return 400, {}, b"openid scope required"
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._grants[code] = _Grant(
                self.client_id,
                redirect_uri,
                query.get("code_challenge", ""),
                query.get("nonce"),
                self.user,
            )
        back = {"code": code, "state": query.get("state", ""), "iss": self.issuer}
        return 302, {"location": redirect_uri + "?" + urlencode(back)}, b""

    def token(
        self, form: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        self.token_requests += 1
        client_id = form.get("client_id")
        if self.client_secret is not None:
            scheme, _, encoded = (authorization or "").partition(" ")
            user, _, secret = base64.b64decode(encoded or "").decode().partition(":")
            if scheme != "Basic" or unquote_plus(secret) != self.client_secret:
                return self._refuse("invalid_client", 401)
            client_id = unquote_plus(user)
        with self._lock:
            grant = self._grants.pop(form.get("code", ""), None)  # each code works once
        if grant is None or form.get("grant_type") != "authorization_code":
            return self._refuse("invalid_grant")
        if client_id != grant.client_id or form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse("invalid_grant")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(
            b"="
        )
        if challenge.decode() != grant.code_challenge:
            return self._refuse("invalid_grant")
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": grant.user.sub,
            "groups": list(grant.user.groups),
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "nonce": self.nonce_override or grant.nonce,
            **self.claim_overrides,
        }
        id_token = jwt.encode(
            claims, self.key.private, algorithm=self.key.algorithm, headers={"kid": self.key.kid}
        )
        body = {
            "id_token": id_token,
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
        }
        return 200, {"content-type": "application/json"}, json.dumps(body).encode()

    def _refuse(self, error: str, status: int = 400) -> tuple[int, dict[str, str], bytes]:
        self.refused.append(error)
        return status, {"content-type": "application/json"}, json.dumps({"error": error}).encode()


def _handler_for(idp: OidcLoginProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            if parts.path == "/.well-known/openid-configuration":
                self._send(
                    200, {"content-type": "application/json"}, json.dumps(idp.discovery()).encode()
                )
            elif parts.path == "/jwks":
                jwks = {"keys": [idp.key.public_jwk]}
                self._send(200, {"content-type": "application/json"}, json.dumps(jwks).encode())
            elif parts.path == "/authorize":
                self._send(*idp.authorize(_single(parse_qs(parts.query))))
            else:
                self._send(404, {}, b"")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            form = _single(parse_qs(self.rfile.read(length).decode()))
            if urlsplit(self.path).path == "/token":
                self._send(*idp.token(form, self.headers.get("authorization")))
            else:
                self._send(404, {}, b"")

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


def _single(values: dict[str, list[str]]) -> dict[str, str]:
    return {name: found[0] for name, found in values.items()}
