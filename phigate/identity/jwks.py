"""An issuer's signing keys: parsing a JWKS, and the per-issuer cache that refreshes it.

The cache loads the keys on first use and refreshes them when a token names an unknown `kid`
(key rotation) or the keys are older than `max_age`. Refreshes are rate-limited to one attempt
per `refresh_interval`, so a flood of tokens with made-up `kid`s cannot hammer the identity
provider. A failed refresh keeps the keys already held: tokens signed by them keep working
while the provider is down. A successful refresh replaces them: removed keys stop working.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from phigate.identity.errors import IdentityError, unauthorized
from phigate.identity.fetch import Fetch, check_url
from phigate.identity.issuers import (
    EC_ALGORITHMS_BY_CURVE,
    OKP_CURVES,
    RSA_ALGORITHMS,
    TrustedIssuer,
)

log = logging.getLogger(__name__)

MIN_RSA_BITS = 2048


class JwksError(ValueError):
    """A discovery document or JWKS is not usable."""


class SigningKey:
    """One public key from a JWKS and the algorithms a token signed with it may declare."""

    def __init__(self, jwk: dict[str, Any], algorithms: frozenset[str]) -> None:
        self.jwk = jwk
        self.kid: str | None = jwk.get("kid")
        self.algorithms = algorithms
        self._by_algorithm: dict[str, PyJWK] = {}

    def for_algorithm(self, algorithm: str) -> PyJWK:
        """The key bound to one algorithm (pyjwt verifies with the key's algorithm only)."""
        key = self._by_algorithm.get(algorithm)
        if key is None:
            key = self._by_algorithm[algorithm] = PyJWK(self.jwk, algorithm)
        return key


def key_algorithms(jwk: dict[str, Any]) -> frozenset[str]:
    """The algorithms a JWK may verify: by key type and curve, narrowed by its own `alg`.

    Empty for keys that must not be used: symmetric, unknown types, encryption keys.
    """
    kty, crv, use, declared = (jwk.get(name) for name in ("kty", "crv", "use", "alg"))
    if any(not isinstance(value, (str, type(None))) for value in (kty, crv, use, declared)):
        return frozenset()
    if kty == "RSA":
        fitting = RSA_ALGORITHMS
    elif kty == "EC" and crv in EC_ALGORITHMS_BY_CURVE:
        fitting = frozenset({EC_ALGORITHMS_BY_CURVE[crv]})
    elif kty == "OKP" and crv in OKP_CURVES:
        fitting = frozenset({"EdDSA"})
    else:
        return frozenset()
    if use not in (None, "sig"):
        return frozenset()
    if declared is not None:
        return fitting & {declared}
    return fitting


def parse_jwks(document: bytes) -> dict[str | None, SigningKey]:
    """The usable signing keys of a JWKS document, by `kid`; unusable keys are skipped."""
    try:
        parsed = json.loads(document)
    except (ValueError, RecursionError):
        raise JwksError("JWKS is not JSON") from None
    entries = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        raise JwksError("JWKS has no `keys` list")
    keys: dict[str | None, SigningKey] = {}
    for jwk in entries:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid", ""), str):
            continue
        algorithms = key_algorithms(jwk)
        if not algorithms:
            continue
        key = SigningKey(jwk, algorithms)
        try:
            material = key.for_algorithm(min(algorithms)).key
        except PyJWTError:
            continue
        if isinstance(material, RSAPublicKey) and material.key_size < MIN_RSA_BITS:
            continue
        if hasattr(material, "private_bytes"):
            continue  # a private key published by mistake is not a verification key
        keys.setdefault(key.kid, key)
    return keys


class KeyCache:
    """The keys of one issuer, fetched lazily and refreshed under a rate limit."""

    def __init__(
        self,
        issuer: TrustedIssuer,
        fetch: Fetch,
        clock: Callable[[], float],
        *,
        refresh_interval: float,
        max_age: float,
    ) -> None:
        self.issuer = issuer
        self._fetch = fetch
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._keys: dict[str | None, SigningKey] = {}
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._last_failed = False
        self._jwks_uri = issuer.jwks_uri
        self._lock = threading.Lock()

    def current(self, kid: str | None) -> SigningKey | None:
        """The key held for `kid` right now, without fetching (for the verified-token cache)."""
        return self._lookup(self._keys, kid)

    def find(self, kid: str | None) -> SigningKey:
        """The key for `kid`, refreshing the set if needed; raises IdentityError otherwise."""
        with self._lock:
            now = self._clock()
            stale = self._loaded_at is None or now - self._loaded_at >= self._max_age
            if stale and self._may_attempt(now):
                self._refresh(now)
            if self._loaded_at is None:
                raise _unavailable()
            key = self._lookup(self._keys, kid)
            if key is None and self._may_attempt(now):
                self._refresh(now)
                key = self._lookup(self._keys, kid)
            if key is not None:
                return key
            if self._last_failed:
                raise _unavailable()
            raise unauthorized(
                "key_unknown", "the token's signing key (kid) is not published by its issuer"
            )

    def _may_attempt(self, now: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= self._refresh_interval

    @staticmethod
    def _lookup(keys: dict[str | None, SigningKey], kid: str | None) -> SigningKey | None:
        if kid is not None:
            return keys.get(kid)
        # A token without `kid` is only accepted when the issuer publishes exactly one key.
        return next(iter(keys.values())) if len(keys) == 1 else None

    def _refresh(self, now: float) -> None:
        self._last_attempt = now
        try:
            fresh = parse_jwks(self._read_jwks())
        except (OSError, JwksError) as problem:
            self._last_failed = True
            log.warning(
                "cannot refresh the keys of issuer %s (%s); %d cached key(s) stay in use",
                self.issuer.issuer, type(problem).__name__, len(self._keys),
            )  # fmt: skip
            return
        # Keep the objects of unchanged keys so verified-token cache entries stay valid.
        self._keys = {
            kid: self._keys[kid] if kid in self._keys and self._keys[kid].jwk == key.jwk else key
            for kid, key in fresh.items()
        }
        self._loaded_at = now
        self._last_failed = False

    def _read_jwks(self) -> bytes:
        if self.issuer.jwks_file is not None:
            return self.issuer.jwks_file.read_bytes()
        if self._jwks_uri is None:
            self._jwks_uri = self._discover()
        return self._fetch(self._jwks_uri)

    def _discover(self) -> str:
        try:
            document = json.loads(self._fetch(self.issuer.discovery_url))
        except (ValueError, RecursionError):
            raise JwksError("discovery document is not JSON") from None
        if not isinstance(document, dict) or document.get("issuer") != self.issuer.issuer:
            raise JwksError("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise JwksError("discovery document has no jwks_uri")
        try:
            check_url(jwks_uri)
        except ValueError:
            raise JwksError("discovered jwks_uri is not an allowed URL") from None
        return jwks_uri


def _unavailable() -> IdentityError:
    return IdentityError(
        503,
        "jwks_unavailable",
        "the token issuer's signing keys cannot be fetched right now",
        retry=True,
    )
