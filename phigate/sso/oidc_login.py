"""Browser sign-in with OpenID Connect: the authorization-code flow with PKCE (S256).

`start_login` returns the authorization URL (state, nonce and code challenge are fresh each
time and kept in memory for `login_ttl` seconds) and the state to bind to the browser;
`finish_login` checks the callback's state against that binding (each state works once),
exchanges the code at the token endpoint and verifies the ID token with the gateway's own
`TokenVerifier` (issuer, audience = client id, signature, lifetime), then its nonce.
The endpoints come from the issuer's discovery document; like the JWKS, they must be https://
(plain http only on loopback), and no proxy from the environment is used.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt

from phigate.identity import IdentityError, TokenVerifier, TrustedIssuer
from phigate.identity.fetch import MAX_RESPONSE_BYTES, TIMEOUT_SECONDS, Fetch, check_url, fetch_url
from phigate.sso.expiring import ExpiringMap, Full
from phigate.sso.session import Login

PostForm = Callable[[str, dict[str, str], dict[str, str]], bytes]


@dataclass(frozen=True)
class OidcLoginConfig:
    issuer: str
    client_id: str
    redirect_uri: str  # ours: .../oidc/callback, registered with the IdP
    client_secret: str | None = None  # None: a public client (PKCE alone)
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    groups_claim: str = "groups"
    max_lifetime: int = 3600
    leeway: int = 60
    login_ttl: int = 300
    max_pending: int = 10_000

    def __post_init__(self) -> None:
        if not self.issuer or not self.client_id:
            raise ValueError("issuer and client_id must be non-empty")
        check_url(self.redirect_uri)
        if "openid" not in self.scopes:
            raise ValueError("scopes must include openid")


@dataclass(frozen=True)
class _Pending:
    nonce: str
    code_verifier: str
    return_to: str


@dataclass(frozen=True)
class _Provider:
    authorization_endpoint: str
    token_endpoint: str
    verifier: TokenVerifier


class OidcLogin:
    """Thread-safe; discovery happens on first use and is kept."""

    def __init__(
        self,
        config: OidcLoginConfig,
        *,
        fetch: Fetch = fetch_url,
        post: PostForm | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._fetch = fetch
        self._post = post or post_form
        self._clock = clock
        self._pending = ExpiringMap(config.max_pending, clock)
        self._provider: _Provider | None = None
        self._lock = threading.Lock()

    def start_login(self, return_to: str) -> tuple[str, str]:
        """The authorization URL to redirect the browser to, and the state to bind to it."""
        provider = self._discovered()
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        code_verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43..128
        try:
            self._pending.add(
                state,
                _Pending(nonce, code_verifier, return_to),
                self._clock() + self.config.login_ttl,
            )
        except Full:
            raise IdentityError(
                503, "oidc_busy", "too many logins in progress", retry=True
            ) from None
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": " ".join(self.config.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": _s256(code_verifier),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in provider.authorization_endpoint else "?"
        return provider.authorization_endpoint + separator + query, state

    def finish_login(self, params: Mapping[str, str], bound_state: str | None) -> Login:
        """Handle the callback's query parameters; `bound_state` is what this browser started."""
        if params.get("error"):
            raise IdentityError(
                401, "oidc_denied", "the identity provider did not sign the user in"
            )
        state = params.get("state") or ""
        if not bound_state or not hmac.compare_digest(state.encode(), bound_state.encode()):
            raise _state_invalid()
        pending = self._pending.pop(state)
        if pending is None:
            raise _state_invalid()
        if "iss" in params and params["iss"] != self.config.issuer:  # RFC 9207 mix-up defence
            raise IdentityError(401, "oidc_issuer_invalid", "the callback names another issuer")
        code = params.get("code")
        if not code:
            raise IdentityError(401, "oidc_code_missing", "the callback carries no code")
        provider = self._discovered()
        id_token = self._exchange(provider, code, pending.code_verifier)
        identity = provider.verifier.verify(id_token, source="oidc")
        # The same bytes just passed signature and claim checks; read the claims they left out.
        claims = jwt.decode(id_token, options={"verify_signature": False})
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), pending.nonce.encode()
        ):
            raise IdentityError(
                401, "oidc_nonce_invalid", "the ID token's nonce does not match the login"
            )
        audiences = claims.get("aud")
        if (
            isinstance(audiences, list)
            and len(audiences) > 1
            and claims.get("azp") != self.config.client_id
        ):
            raise IdentityError(
                401, "oidc_azp_invalid", "the ID token was issued to another client (azp)"
            )
        return Login(identity, pending.return_to)

    def _exchange(self, provider: _Provider, code: str, code_verifier: str) -> str:
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"Accept": "application/json"}
        if self.config.client_secret is None:
            fields["client_id"] = self.config.client_id
        else:  # client_secret_basic: both parts form-encoded first (RFC 6749 2.3.1)
            pair = f"{_form(self.config.client_id)}:{_form(self.config.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            body = self._post(provider.token_endpoint, fields, headers)
        except urllib.error.HTTPError as refused:
            if 400 <= refused.code < 500:
                raise IdentityError(
                    401, "oidc_code_rejected", "the token endpoint refused the code"
                ) from None
            raise _unavailable() from None
        except OSError:
            raise _unavailable() from None
        try:
            id_token = json.loads(body).get("id_token")
        except (ValueError, AttributeError, RecursionError):
            id_token = None
        if not isinstance(id_token, str):
            raise IdentityError(
                401, "oidc_token_response_invalid", "the token endpoint sent no ID token"
            )
        return id_token

    def _discovered(self) -> _Provider:
        with self._lock:
            if self._provider is None:
                self._provider = self._discover()
            return self._provider

    def _discover(self) -> _Provider:
        issuer = self.config.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            document = json.loads(self._fetch(url))
        except (OSError, ValueError, RecursionError):
            raise _unavailable() from None
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise _unavailable()
        endpoints = [
            document.get(name) for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
        ]
        try:
            for endpoint in endpoints:
                check_url(endpoint if isinstance(endpoint, str) else "")
        except ValueError:
            raise _unavailable() from None
        authorization, token, jwks_uri = endpoints
        trusted = TrustedIssuer(
            issuer=issuer,
            audience=self.config.client_id,
            jwks_uri=jwks_uri,
            groups_claim=self.config.groups_claim,
            max_lifetime=self.config.max_lifetime,
            leeway=self.config.leeway,
        )
        return _Provider(
            authorization, token, TokenVerifier([trusted], fetch=self._fetch, clock=self._clock)
        )


def post_form(url: str, fields: dict[str, str], headers: dict[str, str]) -> bytes:
    """POST a form; https:// only (http on loopback), no environment proxies, no redirects."""
    check_url(url)
    request = urllib.request.Request(
        url,
        data=urlencode(fields).encode(),
        method="POST",
        headers={
            **headers,
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "phigate",
        },
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=_tls_context()),
        _NoRedirects(),
    )
    with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
        body = response.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise OSError("token response too large")
    return body


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None  # the code must only ever go to the configured token endpoint


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _s256(code_verifier: str) -> str:
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _form(value: str) -> str:
    return urlencode({"": value})[1:]


def _state_invalid() -> IdentityError:
    return IdentityError(
        401, "oidc_state_invalid", "the callback answers no login started in this browser"
    )


def _unavailable() -> IdentityError:
    return IdentityError(
        503, "oidc_unavailable", "the identity provider cannot be reached right now", retry=True
    )
