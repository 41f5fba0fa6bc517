"""Request/response bodies, sealed with AES-256-GCM before they touch the audit database.

Each body is encrypted under the current body key with a fresh 96-bit random nonce; the AAD binds
the ciphertext to its record id and body kind, so a ciphertext moved to another record or kind
fails to open. Stored form: nonce || ciphertext+tag. Keys live in `home.keys_dir` as
`body-<key id>.key` (0600); `body.current` names the key new bodies use. Deleting a key file
makes the bodies it sealed unreadable without touching the tamper-evident log.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from phigate.home import write_private

NONCE_BYTES = 12


class BodyError(Exception):
    """A body cannot be sealed or opened (missing key, wrong record, altered bytes)."""


def _aad(record_id: str, kind: str) -> bytes:
    return b"phigate-audit-body\x00" + record_id.encode() + b"\x00" + kind.encode()


@dataclass(frozen=True)
class Sealed:
    key_id: str
    blob: bytes  # nonce || ciphertext || tag


class BodyKeyring:
    """Body keys in a folder; the current one seals, any present one opens."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self._keys: dict[str, AESGCM] = {}
        current = keys_dir / "body.current"
        self.current_id = current.read_text().strip() if current.exists() else self.rotate()

    def rotate(self) -> str:
        """Create a new current key (old keys stay to open old bodies)."""
        key_id = secrets.token_hex(8)
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self._path(key_id), AESGCM.generate_key(bit_length=256))
        write_private(self.keys_dir / "body.current", key_id.encode())
        self.current_id = key_id
        return key_id

    def _path(self, key_id: str) -> Path:
        if not key_id.isalnum():
            raise BodyError("malformed body key id")
        return self.keys_dir / f"body-{key_id}.key"

    def _cipher(self, key_id: str) -> AESGCM:
        if key_id not in self._keys:
            path = self._path(key_id)
            if not path.exists():
                raise BodyError(f"body key {key_id} is not present")
            self._keys[key_id] = AESGCM(path.read_bytes())
        return self._keys[key_id]

    def has_key(self, key_id: str) -> bool:
        return key_id in self._keys or self._path(key_id).exists()

    def seal(self, record_id: str, kind: str, plaintext: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._cipher(self.current_id).encrypt(nonce, plaintext, _aad(record_id, kind))
        return Sealed(self.current_id, nonce + ciphertext)

    def open(self, record_id: str, kind: str, sealed: Sealed) -> bytes:
        nonce, ciphertext = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            return self._cipher(sealed.key_id).decrypt(nonce, ciphertext, _aad(record_id, kind))
        except InvalidTag as exc:
            raise BodyError(f"body {kind} does not open for this record") from exc
