"""A real OpenID Connect provider on 127.0.0.1 for tests, and a token forge.

It serves discovery (`/.well-known/openid-configuration`) and the JWKS (`/jwks`) over HTTP from
a ThreadingHTTPServer, rotates keys, goes down on request, counts fetches, and mints tokens,
including the malformed and malicious ones a verifier must refuse.

    with OidcProvider() as idp:
        verifier = TokenVerifier([idp.trusted_issuer()])
        verifier.verify(idp.mint(sub="alice", groups=["clinicians"]))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from phigate.identity import TrustedIssuer
from tests.support.loopback import LoopbackServer

_DEFAULT_ALGORITHM = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Any  # a cryptography private key
    algorithm: str

    @property
    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        jwk = get_default_algorithms()[self.algorithm].to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_key(kty: str = "RSA") -> SigningKey:
    """A fresh signing key: "RSA" (2048-bit, RS256), "EC" (P-256, ES256) or "OKP" (Ed25519)."""
    if kty == "RSA":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kty == "EC":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kty == "OKP":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported key type {kty}")
    return SigningKey(uuid.uuid4().hex[:16], private, _DEFAULT_ALGORITHM[kty])


class OidcProvider(LoopbackServer):
    def __init__(
        self,
        *,
        audience: str = "phigate",
        kty: str = "RSA",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self.clock = clock
        self.signing_key = new_key(kty)
        self.published: list[SigningKey] = [self.signing_key]
        # Extra documents to serve: path -> (status, headers, body).
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.discovery_issuer: str | None = None  # to make discovery name another issuer
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._down = False
        self._lock = threading.Lock()
        self._serve(_handler_for(self))

    # what it serves
    @property
    def issuer(self) -> str:
        return self.base

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk for key in self.published]}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.discovery_issuer or self.issuer,
            "jwks_uri": self.jwks_uri,
            "id_token_signing_alg_values_supported": sorted({k.algorithm for k in self.published}),
        }

    def trusted_issuer(self, **overrides: Any) -> TrustedIssuer:
        return TrustedIssuer(**{"issuer": self.issuer, "audience": self.audience, **overrides})

    # behaviour under test
    def rotate(self, *, keep_old: bool = True, kty: str | None = None) -> SigningKey:
        """Sign with a new key from now on; publish the old one too unless keep_old is False."""
        fresh = new_key(kty or _kty_of(self.signing_key))
        self.published = [fresh, *self.published] if keep_old else [fresh]
        self.signing_key = fresh
        return fresh

    def down(self) -> None:
        """Every request fails with 503 until up()."""
        self._down = True

    def up(self) -> None:
        self._down = False

    def _count(self, path: str) -> None:
        with self._lock:
            if path == "/jwks":
                self.jwks_fetches += 1
            elif path == "/.well-known/openid-configuration":
                self.discovery_fetches += 1

    def _respond(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self._count(path)
        if self._down:
            return 503, {}, b'{"error": "down"}'
        if path in self.routes:
            return self.routes[path]
        documents = {"/jwks": self.jwks, "/.well-known/openid-configuration": self.discovery}
        if path in documents:
            return 200, {"content-type": "application/json"}, json.dumps(documents[path]()).encode()
        return 404, {}, b""

    # the forge
    def mint(
        self,
        *,
        headers: dict[str, Any] | None = None,
        alg: str | None = None,
        key: Any = None,
        **claims: Any,
    ) -> str:
        """A token from this provider; override any claim or header (None removes it).

        `alg` "none" leaves the signature empty; HS* algorithms sign with `key` as the HMAC
        secret (bytes, e.g. `public_pem` for the classic key-confusion attack); other algorithms
        sign with `key` (a private key) or the current signing key.
        """
        now = int(self.clock())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "alice",
            "groups": ["clinicians"],
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        algorithm = alg or self.signing_key.algorithm
        header = {"alg": algorithm, "typ": "JWT", "kid": self.signing_key.kid, **(headers or {})}
        signing_input = b".".join(
            _b64url(json.dumps(_present(part)).encode()) for part in (header, payload)
        )
        return (signing_input + b"." + _b64url(self._sign(signing_input, algorithm, key))).decode()

    def _sign(self, message: bytes, algorithm: str, key: Any) -> bytes:
        if algorithm == "none":
            return b""
        if algorithm in _HMAC_HASHES:
            return hmac.new(key, message, _HMAC_HASHES[algorithm]).digest()
        signer = get_default_algorithms()[algorithm]
        return signer.sign(message, key if key is not None else self.signing_key.private)


def _handler_for(provider: OidcProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            status, headers, body = provider._respond(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

    return Handler


def _kty_of(key: SigningKey) -> str:
    return {v: k for k, v in _DEFAULT_ALGORITHM.items()}[key.algorithm]


def _present(part: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in part.items() if value is not None}


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")
