"""The embedded development issuer: a local key pair that mints tokens for `make run` and demos.

Tokens carry `iss = urn:phigate:dev-issuer` and `aud = phigate`, are signed with ES256 (EC P-256)
and name their key by its RFC 7638 thumbprint. The gateway trusts this issuer only when told
to (`trusted_issuer()`); its public keys are read from a file, never over HTTP. Anyone who can
read the private key can mint any identity, so it is written 0600 and refused if others can
read it. Production deployments trust their hospital's OIDC provider instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from phigate.home import Home, write_private
from phigate.identity.issuers import TrustedIssuer

DEV_ISSUER = "urn:phigate:dev-issuer"
DEV_AUDIENCE = "phigate"
ALGORITHM = "ES256"
MAX_TTL_SECONDS = 3600
KEY_FILE = "dev-issuer-key.pem"
JWKS_FILE = "dev-issuer-jwks.json"
# Claims mint() sets itself; extra_claims may not replace them.
_REGISTERED = frozenset({"iss", "aud", "sub", "groups", "iat", "nbf", "exp", "jti"})


class DevIssuer:
    """A key pair in `directory` (usually `Home.issuer_dir`), created on first use."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.key_path = self.directory / KEY_FILE
        self.jwks_path = self.directory / JWKS_FILE
        self._clock = clock
        self.created = not self.key_path.exists()
        if self.created:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._key = ec.generate_private_key(ec.SECP256R1())
            write_private(self.key_path, _pem(self._key))
        else:
            self._key = _load_private_key(self.key_path)
        self._public_jwk = _public_jwk(self._key)
        self.kid = self._public_jwk["kid"]
        _write_if_changed(self.jwks_path, json.dumps(self.jwks(), indent=2).encode())

    @classmethod
    def in_home(cls, home: str | os.PathLike[str] | None = None) -> DevIssuer:
        """The dev issuer of a phigate home (the path, else $PHIGATE_HOME, else ~/.phigate)."""
        return cls(Home.open(home).issuer_dir)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self._public_jwk)]}

    def trusted_issuer(self) -> TrustedIssuer:
        return TrustedIssuer(
            issuer=DEV_ISSUER,
            audience=DEV_AUDIENCE,
            jwks_file=self.jwks_path,
            max_lifetime=MAX_TTL_SECONDS,
            algorithms=frozenset({ALGORITHM}),
        )

    def mint(
        self,
        sub: str,
        groups: Iterable[str] = (),
        ttl_seconds: int = 600,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        if not sub:
            raise ValueError("sub must be a non-empty string")
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl_seconds must be between 1 and {MAX_TTL_SECONDS}")
        extra = dict(extra_claims or {})
        reserved = extra.keys() & _REGISTERED
        if reserved:
            raise ValueError(f"extra_claims may not set {sorted(reserved)}")
        now = int(self._clock())
        claims = {
            **extra,
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": sub,
            "groups": list(groups),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path}: the dev issuer key must be readable by its owner only")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{path}: not an EC P-256 private key")
    return key


def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    # RFC 7638: the thumbprint hashes the required members, sorted, without whitespace.
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return {**required, "kid": kid, "use": "sig", "alg": ALGORITHM}


def _write_if_changed(path: Path, data: bytes) -> None:
    """Replace the file atomically, so a verifier never reads half a JWKS."""
    if path.exists() and path.read_bytes() == data:
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
