"""Masking operators: what a detected entity becomes.

Tokens are built so a model repeats them verbatim and the gateway recognises them in responses:
`<PERSON>` (placeholder), `<PERSON_1>` (pseudonym, numbered per vault scope),
`<PERSON_h:3fa2c1d4>` (keyed HMAC-SHA256, first 8 hex), `<PERSON_e:…>` (AES-SIV, base64url,
deterministic and bound to the vault scope as associated data). Entity names are upper-case
letters and underscores, so `<`, `_`, `:` and `>` delimit them without ambiguity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from phigate.wire.types import DetectionError, Finding

OPERATORS = ("redact", "placeholder", "pseudonym", "hash", "encrypt", "keep")
REDACTED = "[REDACTED]"

_ENTITY = r"[A-Z][A-Z0-9_]{0,63}?"  # entity names may hold digits (AGE_OVER_89)
TOKEN = re.compile(
    rf"<(?P<entity>{_ENTITY})(?:_(?P<number>[1-9][0-9]{{0,8}})"
    r"|_h:(?P<hash>[0-9a-f]{8})|_e:(?P<cipher>[A-Za-z0-9_-]{22,2048}))?>"
)


@dataclass(frozen=True, slots=True)
class MaskAction:
    """What was done to one field: never the value."""

    path: str
    entity: str
    operator: str
    count: int
    score: float

    def to_record(self, direction: str) -> dict:
        return {"direction": direction, "path": self.path, "entity": self.entity,
                "operator": self.operator, "count": self.count, "score": round(self.score, 4)}


def normalise(value: str) -> str:
    """Values that differ only in case, width or spacing are the same entity."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


class Pseudonyms(Protocol):
    """What the pseudonym operator needs from a vault scope."""

    def pseudonym(self, entity: str, value: str) -> str: ...


class Cipher:
    """Reversible tokens: AES-SIV is deterministic, so a value gets the same token on every
    turn, and the associated data binds a token to its scope (another scope cannot open it)."""

    def __init__(self, key: bytes) -> None:
        if len(key) not in (32, 48, 64):
            raise ValueError("AES-SIV needs a 32, 48 or 64 byte key")
        self._siv = AESSIV(key)

    def __repr__(self) -> str:
        return "Cipher(<key>)"

    def seal(self, entity: str, value: str, binding: bytes) -> str:
        sealed = self._siv.encrypt(value.encode(), [entity.encode(), binding])
        return f"<{entity}_e:{base64.urlsafe_b64encode(sealed).rstrip(b'=').decode()}>"

    def open(self, entity: str, token: str, binding: bytes) -> str | None:
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            return self._siv.decrypt(sealed, [entity.encode(), binding]).decode()
        except (InvalidTag, ValueError):
            return None


def resolve_overlaps(findings: Iterable[Finding], length: int) -> list[Finding]:
    """Non-overlapping findings in text order: the longest span wins, then the higher score,
    then the entity name, so the same findings always give the same result."""
    chosen: list[Finding] = []
    ranked = sorted(findings, key=lambda f: (-(f.end - f.start), -f.score, f.entity_type, f.start))
    for finding in ranked:
        if not (0 <= finding.start < finding.end <= length):
            raise DetectionError("finding outside its text")
        if all(finding.end <= c.start or finding.start >= c.end for c in chosen):
            chosen.append(finding)
    return sorted(chosen, key=lambda f: f.start)


class Operators:
    """Per-entity operator choice and the keys the operators use."""

    def __init__(
        self,
        rules: Mapping[str, str],
        *,
        default: str = "placeholder",
        hash_key: bytes,
        cipher: Cipher | None = None,
    ) -> None:
        for operator in (*rules.values(), default):
            if operator not in OPERATORS:
                raise ValueError(f"unknown operator {operator!r}")
        if cipher is None and "encrypt" in (*rules.values(), default):
            raise ValueError("the encrypt operator needs a key")
        self.rules = dict(rules)
        self.default = default
        self._hash_key = hash_key
        self.cipher = cipher

    def __repr__(self) -> str:
        return f"Operators(rules={self.rules!r}, default={self.default!r})"

    def operator(self, entity: str) -> str:
        return self.rules.get(entity, self.default)

    def token(self, entity: str, value: str, *, pseudonyms: Pseudonyms | None,
              binding: bytes) -> str:
        operator = self.operator(entity)
        if operator == "keep":
            return value
        if operator == "redact":
            return REDACTED
        if operator == "placeholder":
            return f"<{entity}>"
        if operator == "hash":
            digest = hmac.new(self._hash_key, f"{entity}\0{normalise(value)}".encode(),
                              hashlib.sha256).hexdigest()
            return f"<{entity}_h:{digest[:8]}>"
        if operator == "pseudonym":
            if pseudonyms is None:
                raise ValueError("the pseudonym operator needs a vault scope")
            return pseudonyms.pseudonym(entity, value)
        assert self.cipher is not None  # checked in __init__
        return self.cipher.seal(entity, value, binding)

    def apply(
        self,
        text: str,
        findings: Sequence[Finding],
        *,
        path: str,
        pseudonyms: Pseudonyms | None = None,
        binding: bytes = b"",
        between=lambda segment: segment,
    ) -> tuple[str, list[MaskAction]]:
        """Replace each finding; `between` transforms the text outside findings (the stream
        masker re-identifies there, so tokens minted here are never re-identified)."""
        kept = resolve_overlaps(findings, len(text))
        out: list[str] = []
        tally: dict[tuple[str, str], tuple[int, float]] = {}
        position = 0
        for finding in kept:
            out.append(between(text[position:finding.start]))
            entity = finding.entity_type
            out.append(self.token(entity, text[finding.start:finding.end],
                                  pseudonyms=pseudonyms, binding=binding))
            position = finding.end
            key = (entity, self.operator(entity))
            count, score = tally.get(key, (0, 0.0))
            tally[key] = (count + 1, max(score, float(finding.score)))
        out.append(between(text[position:]))
        actions = [MaskAction(path, entity, operator, count, score)
                   for (entity, operator), (count, score) in sorted(tally.items())]
        return "".join(out), actions
