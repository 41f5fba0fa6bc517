"""Verifying a caller's token: select the issuer, check the signature, then the claims.

Order matters: before the signature is checked only the header (`alg`, `kid`) and the claimed
`iss` are read, to choose the issuer and key; every other claim is judged on verified data.
A small cache of already-verified tokens (keyed by their SHA-256) keeps the hot path cheap;
each hit re-checks expiry and that the signing key is still published.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import jwt
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    PyJWTError,
)

from phigate.identity.claims import Identity, identity_from_claims
from phigate.identity.errors import IdentityError, unauthorized
from phigate.identity.fetch import Fetch, fetch_url
from phigate.identity.headers import AUTHORIZATION, MAX_TOKEN_BYTES, check_token_size, looks_like_jwt
from phigate.identity.issuers import ALLOWED_ALGORITHMS, TrustedIssuer
from phigate.identity.jwks import KeyCache, SigningKey

# Claims are checked by identity_from_claims (with the injected clock and precise error codes);
# pyjwt only checks the signature.
_SIGNATURE_ONLY = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


class TokenVerifier:
    """Verifies tokens from several trusted issuers. Thread-safe; `verify` may block on I/O."""

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        fetch: Fetch = fetch_url,
        clock: Callable[[], float] = time.time,
        refresh_interval: float = 30.0,
        max_key_age: float = 300.0,
        cache_size: int = 4096,
    ) -> None:
        self._clock = clock
        self._keys: dict[str, KeyCache] = {}
        for issuer in issuers:
            if issuer.issuer in self._keys:
                raise ValueError("the same issuer is trusted twice")
            self._keys[issuer.issuer] = KeyCache(
                issuer, fetch, clock, refresh_interval=refresh_interval, max_age=max_key_age
            )
        self._verified = _VerifiedTokens(cache_size)

    def verify(self, token: str, source: str = AUTHORIZATION) -> Identity:
        """The caller's identity; raises IdentityError (never leaking token or claims)."""
        if not isinstance(token, str) or not token:
            raise unauthorized("token_missing", "no identity token")
        check_token_size(token)
        known = self.cached(token, source)
        if known is not None:
            return known
        identity, keys, key = self._verify(token, self._clock(), source)
        self._verified.put(hashlib.sha256(token.encode()).digest(), (identity, keys, key))
        return identity

    def cached(self, token: str, source: str = AUTHORIZATION) -> Identity | None:
        """The identity of a token this verifier already verified, while it is still valid and
        its key still current; None when it must be verified. No I/O, so callers may use it on
        an event loop and go to a thread for `verify` only on a miss."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if hit is None:
            return None
        identity, keys, key = hit
        if identity.exp > self._clock() - keys.issuer.leeway and keys.current(key.kid) is key:
            return replace(identity, source=source)
        self._verified.drop(digest)
        return None

    def _verify(self, token: str, now: float, source: str) -> tuple[Identity, KeyCache, SigningKey]:
        header, unverified = _unverified_parts(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:
            raise _alg_not_allowed()
        claimed_issuer = unverified.get("iss")
        keys = self._keys.get(claimed_issuer) if isinstance(claimed_issuer, str) else None
        if keys is None:
            raise unauthorized("issuer_unknown", "the token's issuer (iss) is not trusted")
        if algorithm not in keys.issuer.algorithms:
            raise _alg_not_allowed()
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _malformed()
        key = keys.find(kid)
        if algorithm not in key.algorithms:
            raise _alg_not_allowed()
        try:
            claims = jwt.decode(
                token, key=key.for_algorithm(algorithm), algorithms=[algorithm],
                options=_SIGNATURE_ONLY,
            )  # fmt: skip
        except InvalidSignatureError:
            raise unauthorized("signature_invalid", "the token's signature is invalid") from None
        except InvalidAlgorithmError:
            raise _alg_not_allowed() from None
        except InvalidKeyError:
            raise unauthorized("key_unknown", "the token's signing key is unusable") from None
        except PyJWTError:
            raise _malformed() from None
        return identity_from_claims(claims, keys.issuer, now, source), keys, key


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, read only to pick the issuer and key (pyjwt re-parses strictly)."""
    if not looks_like_jwt(token):
        raise _malformed()
    try:
        header, claims = (
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            for part in token.split(".")[:2]
        )
    except (ValueError, RecursionError):  # binascii.Error and JSON errors are ValueErrors
        raise _malformed() from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _malformed()
    return header, claims


def _malformed() -> IdentityError:
    return unauthorized("token_malformed", "the token is not a well-formed JWT")


def _alg_not_allowed() -> IdentityError:
    return unauthorized(
        "alg_not_allowed", "the token's algorithm (alg) is not allowed for its issuer's key"
    )


class _VerifiedTokens:
    """A bounded LRU map from token digest to what verifying it established."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, tuple[Identity, KeyCache, SigningKey]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> tuple[Identity, KeyCache, SigningKey] | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries.move_to_end(digest)
            return entry

    def put(self, digest: bytes, entry: tuple[Identity, KeyCache, SigningKey]) -> None:
        with self._lock:
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def drop(self, digest: bytes) -> None:
        with self._lock:
            self._entries.pop(digest, None)
