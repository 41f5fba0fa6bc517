"""Signed checkpoints: C2SP signed-note (Ed25519) carrying a C2SP tlog-checkpoint body.

A note is text ending in a newline, a blank line, then lines `— <name> <base64(key id || sig)>`.
The key id is SHA-256(name || 0x0A || 0x01 || public key)[:4]; verifiers share keys as
`<name>+<hex key id>+<base64(0x01 || public key)>` ("vkey") and the signer's file holds
`PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`, the same text forms as Go's
golang.org/x/mod/sumdb/note, so standard tooling can check our checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from phigate.home import write_private

ED25519 = 0x01
DASH = "\u2014 "
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A malformed, unsigned or wrongly signed note (the message names the problem only)."""


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise NoteError("key name must be non-empty without spaces or '+'")


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key is not name+keyid+key")
        name, kid_hex, blob = parts
        _check_name(name)
        try:
            kid, raw = bytes.fromhex(kid_hex), base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise NoteError("verifier key is not hex/base64") from exc
        if len(kid) != 4 or len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("verifier key is not an Ed25519 key")
        if key_id(name, raw[1:]) != kid:
            raise NoteError("verifier key id does not match its key")
        return cls(name, kid, raw[1:])

    @property
    def vkey(self) -> str:
        blob = base64.b64encode(bytes([ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    def check(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        _check_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("signer key is not PRIVATE+KEY+name+keyid+key")
        name, kid_hex, blob = parts[2:]
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error as exc:
            raise NoteError("signer key is not base64") from exc
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("signer key is not an Ed25519 key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier.key_id.hex() != kid_hex.lower():
            raise NoteError("signer key id does not match its key")
        return signer

    @classmethod
    def load_or_create(cls, path: Path, name: str) -> Signer:
        """The signing key kept at `path` (created 0600 on first use)."""
        if path.exists():
            return cls.from_skey(path.read_text())
        signer = cls.generate(name)
        write_private(path, signer.skey.encode() + b"\n")
        return signer

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, key_id(self.name, self.public_key), self.public_key)

    @property
    def skey(self) -> str:
        seed = self.private_key.private_bytes_raw()
        blob = base64.b64encode(bytes([ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{blob}"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise NoteError("note holds a control character")


def sign(text: str, signer: Signer) -> str:
    _check_text(text)
    if "\n\n" in text:
        # The text ends at the last blank line; we never sign texts that hold one.
        raise NoteError("note text must not hold a blank line")
    signature = signer.private_key.sign(text.encode())
    blob = base64.b64encode(signer.verifier.key_id + signature).decode()
    return f"{text}\n{DASH}{signer.name} {blob}\n"


def parse(note: str) -> Note:
    """Split a note into its text and signature lines (no signature is checked here)."""
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no signature block")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block.split("\n")[:-1]
    if not lines or len(lines) > MAX_SIGNATURES:
        raise NoteError("note has no or too many signatures")
    signatures = []
    for line in lines:
        if not line.startswith(DASH):
            raise NoteError("malformed signature line")
        name, _, blob = line[len(DASH) :].rpartition(" ")
        _check_name(name)
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error as exc:
            raise NoteError("signature is not base64") from exc
        if len(raw) < 5:
            raise NoteError("signature too short")
        signatures.append(Signature(name, raw[:4], raw[4:]))
    return Note(text, tuple(signatures))


def verify(note: str, verifier: Verifier) -> str:
    """The note's text if `verifier` signed it; raises NoteError otherwise.

    Signatures from other keys are ignored; a failing signature from our key rejects the note.
    """
    parsed = parse(note)
    known = [s for s in parsed.signatures if (s.name, s.key_id) == (verifier.name, verifier.key_id)]
    if not known:
        raise NoteError("note is not signed by the expected key")
    for s in known:
        if not verifier.check(parsed.text.encode(), s.signature):
            raise NoteError("note signature does not verify")
    return parsed.text


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size, root hash."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or not lines[0] or not lines[1].isdigit():
            raise NoteError("checkpoint body is not origin/size/root")
        if lines[1] != str(int(lines[1])):
            raise NoteError("checkpoint size has leading zeros")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except binascii.Error as exc:
            raise NoteError("checkpoint root is not base64") from exc
        if len(root) != 32:
            raise NoteError("checkpoint root is not a SHA-256 hash")
        return cls(lines[0], int(lines[1]), root)


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    return Checkpoint.from_text(verify(note, verifier))


def split_notes(text: str) -> list[str]:
    """Split a file of notes written one after another (each followed by a blank line)."""
    notes: list[str] = []
    current: list[str] = []
    in_signatures = False
    for line in text.split("\n"):
        if in_signatures and line.startswith(DASH):
            current.append(line)
            continue
        if in_signatures:
            notes.append("\n".join(current) + "\n")
            current, in_signatures = [], False
        if line == "":
            if current:
                current.append("")
                in_signatures = True
            continue
        current.append(line)
    if current:
        notes.append("\n".join(current) + "\n")
    return notes
