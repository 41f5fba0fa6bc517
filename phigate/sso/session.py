"""Sealed browser cookies: the signed-in session and the short-lived login binding.

Cookie values are AES-256-GCM sealed (confidential and authenticated) with keys derived from
the application's `session_key` by HKDF, one key per purpose, so a login-binding cookie can
never be replayed as a session. A session carries iss, sub, groups, source, a random session id
(`sid`) and its expiry; nothing is stored on the server, so logout clears the cookie and a
copied cookie stays valid until it expires (keep `ttl` short).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from phigate.identity import Identity

MIN_KEY_BYTES = 32
MAX_COOKIE_BYTES = 3800  # browsers drop cookies over ~4096 bytes including name and attributes
_VERSION = "v1"
_NONCE_BYTES = 12


@dataclass(frozen=True)
class Login:
    """What a finished SSO login established, before it becomes a session."""

    identity: Identity
    return_to: str
    not_after: int | None = None  # the IdP's own limit on the session (SAML SessionNotOnOrAfter)


@dataclass(frozen=True)
class Session:
    iss: str
    sub: str
    groups: tuple[str, ...]
    source: str
    sid: str
    iat: int
    exp: int

    def identity(self) -> Identity:
        """The signed-in person as the gateway's Identity; `jti` is the session id."""
        return Identity(
            iss=self.iss,
            sub=self.sub,
            groups=self.groups,
            jti=self.sid,
            exp=self.exp,
            iat=self.iat,
            source=self.source,
        )


class SessionTooLarge(ValueError):
    """The session does not fit in a cookie (usually: too many groups; filter them)."""


class Sealer:
    """Seals and opens small JSON payloads for one purpose (AES-GCM, key from HKDF)."""

    def __init__(self, session_key: bytes, purpose: str) -> None:
        if not isinstance(session_key, bytes) or len(session_key) < MIN_KEY_BYTES:
            raise ValueError(f"session_key must be at least {MIN_KEY_BYTES} random bytes")
        self._aad = f"phigate-sso {_VERSION} {purpose}".encode()
        self._aead = AESGCM(_derive(session_key, self._aad))

    def seal(self, payload: dict[str, Any]) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(payload, separators=(",", ":")).encode()
        sealed = nonce + self._aead.encrypt(nonce, plain, self._aad)
        return _VERSION + "." + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, value: str | None) -> dict[str, Any] | None:
        """The payload, or None for anything not sealed by this key and purpose."""
        if not value or len(value) > MAX_COOKIE_BYTES or not value.startswith(_VERSION + "."):
            return None
        encoded = value[len(_VERSION) + 1 :]
        try:
            sealed = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            plain = self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], self._aad)
            payload = json.loads(plain)
        except (binascii.Error, ValueError, InvalidTag):
            return None
        return payload if isinstance(payload, dict) else None


class SessionCodec:
    """Issues and reads session cookies, and derives each session's CSRF token."""

    def __init__(
        self, session_key: bytes, *, ttl: int = 900, clock: Callable[[], float] = time.time
    ) -> None:
        if not 0 < ttl <= 12 * 3600:
            raise ValueError("ttl must be between 1 second and 12 hours")
        self._sealer = Sealer(session_key, "session")
        self._csrf_key = _derive(session_key, b"phigate-sso csrf")
        self.ttl = ttl
        self._clock = clock

    def issue(self, login: Login) -> tuple[str, Session]:
        now = int(self._clock())
        exp = now + self.ttl
        if login.not_after is not None:
            exp = min(exp, login.not_after)
        if exp <= now:
            raise ValueError("the identity provider's session has already ended")
        who = login.identity
        session = Session(
            iss=who.iss,
            sub=who.sub,
            groups=tuple(who.groups),
            source=who.source,
            sid=secrets.token_urlsafe(16),
            iat=now,
            exp=exp,
        )
        value = self._sealer.seal(
            {
                "iss": session.iss,
                "sub": session.sub,
                "groups": list(session.groups),
                "src": session.source,
                "sid": session.sid,
                "iat": session.iat,
                "exp": session.exp,
            }
        )
        if len(value) > MAX_COOKIE_BYTES:
            raise SessionTooLarge("the session is too large for a cookie (too many groups?)")
        return value, session

    def read(self, value: str | None) -> Session | None:
        """The session in a cookie value, or None if it is absent, forged or expired."""
        payload = self._sealer.open(value)
        if payload is None:
            return None
        try:
            session = Session(
                iss=_text(payload["iss"]),
                sub=_text(payload["sub"]),
                groups=tuple(_text(group) for group in payload["groups"]),
                source=_text(payload["src"]),
                sid=_text(payload["sid"]),
                iat=int(payload["iat"]),
                exp=int(payload["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return session if session.exp > self._clock() else None

    def csrf_token(self, session: Session) -> str:
        digest = hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def csrf_valid(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token(session), presented or "")


def _derive(session_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(session_key)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value
