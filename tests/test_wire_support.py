"""Helpers shared by the tests/test_wire*.py files (no tests here): a small deterministic regex
detector with the phigate.detect contract, and a masker factory."""

from __future__ import annotations

import re
from dataclasses import dataclass

from phigate.wire.engine import Masker
from phigate.wire.operators import Cipher, Operators
from phigate.wire.types import TextField
from phigate.wire.vault import Scope, Vault


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    entity_type: str
    score: float
    recognizer: str = "test"


NAMES = ("John Smith", "Jane Doe", "Maria Garcia")
PATTERNS = [
    ("PERSON", re.compile(r"\b(?:" + "|".join(NAMES) + r")\b"), 0.85),
    ("US_SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), 0.9),
    ("MEDICAL_RECORD_NUMBER", re.compile(r"(?<=MRN )\d{7}\b"), 0.8),
    ("EMAIL_ADDRESS", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), 1.0),
    ("DATE", re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), 0.6),
]
KEYED = {"birthDate": "DATE", "dob": "DATE", "patientName": "PERSON",
         "mrn": "MEDICAL_RECORD_NUMBER"}


class RegexDetector:
    """Known names, SSN, MRN, e-mail and ISO dates; a JSON key in KEYED marks the whole value."""

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def __call__(self, fields: list[TextField]) -> list[list[Hit]]:
        self.calls += 1
        self.texts += len(fields)
        results = []
        for field in fields:
            if field.key in KEYED and field.text.strip():
                results.append([Hit(0, len(field.text), KEYED[field.key], 1.0)])
                continue
            results.append([Hit(m.start(), m.end(), entity, score)
                            for entity, pattern, score in PATTERNS
                            for m in pattern.finditer(field.text)])
        return results


PHI = ("John Smith", "Jane Doe", "Maria Garcia", "123-45-6789", "7654321",
       "jane.doe@example.com", "1970-01-02")


def leaked(text: str) -> list[str]:
    return [value for value in PHI if value in text]


def make_masker(rules: dict | None = None, *, default: str = "pseudonym",
                vault: Vault | None = None, conversation: str = "c1", subject: str = "alice",
                scope: Scope | None = None, detect=None) -> Masker:
    vault = vault or Vault()
    operators = Operators(rules or {}, default=default, hash_key=b"k" * 32,
                          cipher=Cipher(b"e" * 64))
    scope = scope or vault.scope("https://idp.example", subject, conversation)
    return Masker(detect or RegexDetector(), operators, vault=vault.bind(scope))
