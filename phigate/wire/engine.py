"""The masking engine for one flow: detection, operators and the vault scope put together.

Request direction: detect and mask every field. Response direction: detect and mask what the
model wrote, and (when re-identifying) replace the scope's tokens by their values in the text
*between* findings, so a token minted for new PHI in the response is never turned back into it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from phigate.wire import fields as wire_fields
from phigate.wire.fields import Field, Path, render
from phigate.wire.operators import TOKEN, MaskAction, Operators
from phigate.wire.types import Detect, DetectionError, Finding, TextField, UnsupportedContent
from phigate.wire.vault import ScopedVault

# Entity names the gateway itself emits; a token of another name is just text to examine.
KNOWN_ENTITIES = frozenset({
    # phigate.detect's HIPAA pack
    "PERSON", "STREET_ADDRESS", "LOCATION", "ZIP_CODE", "DATE", "AGE_OVER_89", "PHONE_NUMBER",
    "FAX_NUMBER", "EMAIL_ADDRESS", "US_SSN", "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_ID",
    "ACCOUNT_NUMBER", "LICENSE_NUMBER", "VEHICLE_ID", "DEVICE_ID", "URL", "IP_ADDRESS",
    "ORGANIZATION", "OTHER_ID",
    # Presidio's own names, for detectors configured with its recognizers
    "DATE_TIME", "CREDIT_CARD", "IBAN_CODE", "US_BANK_NUMBER", "US_DRIVER_LICENSE",
    "US_PASSPORT", "US_ITIN", "NRP",
})


def json_escape(value: str) -> str:
    """A value written inside a JSON string literal (streamed tool arguments)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


class Masker:
    def __init__(self, detect: Detect, operators: Operators, *,
                 vault: ScopedVault | None = None) -> None:
        self._detect = detect
        self.operators = operators
        self.vault = vault
        self._binding = vault.scope.digest if vault else b""
        self._known = KNOWN_ENTITIES | set(operators.rules)

    def __repr__(self) -> str:
        return f"Masker({self.operators!r}, scoped={self.vault is not None})"

    # --- detection ---------------------------------------------------------------------------

    def detect(self, texts: Sequence[TextField]) -> list[list[Finding]]:
        """Run the detector; its faults propagate, and a malformed answer raises."""
        if not texts:
            return []
        results = self._detect(list(texts))
        if results is None or len(results) != len(texts):
            raise DetectionError("detector returned a result per field mismatch")
        checked = []
        for text, findings in zip(texts, results):
            for finding in findings:
                if not (isinstance(finding.start, int) and isinstance(finding.end, int)
                        and 0 <= finding.start < finding.end <= len(text.text)
                        and re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", finding.entity_type)):
                    raise DetectionError("detector returned an invalid finding")
            checked.append(list(findings))
        return checked

    def detect_one(self, text: str, key: str | None = None) -> list[Finding]:
        return self.detect([TextField(text, key)])[0]

    # --- tokens already in the text ----------------------------------------------------------

    def _resolve(self, match: re.Match) -> str | None:
        """The value behind a pseudonym or ciphertext token of this scope, else None."""
        entity = match["entity"]
        if match["number"] is not None and self.vault is not None:
            return self.vault.resolve(entity, int(match["number"]))
        if match["cipher"] is not None and self.operators.cipher is not None:
            return self.operators.cipher.open(entity, match["cipher"], self._binding)
        return None

    def _ours(self, match: re.Match) -> bool:
        """A token this gateway could have minted: pseudonyms and ciphertexts must resolve in
        this scope (a look-alike must not shield what it holds from detection)."""
        if match["entity"] not in self._known:
            return False
        if match["number"] is None and match["cipher"] is None:
            return True  # placeholder or 8-hex hash: too short to hide a value in
        return self._resolve(match) is not None

    def protected(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in TOKEN.finditer(text) if self._ours(m)] if "<" in text else []

    def reidentify(self, text: str, *, escape=lambda value: value) -> tuple[str, int]:
        """Replace this scope's pseudonyms and ciphertexts by their values."""
        if "<" not in text:
            return text, 0
        count = 0

        def value(match: re.Match) -> str:
            nonlocal count
            found = self._resolve(match)
            if found is None:
                return match[0]
            count += 1
            return escape(found)

        return TOKEN.sub(value, text), count

    # --- one text ----------------------------------------------------------------------------

    def mask_text(self, text: str, findings: Sequence[Finding], *, path: str,
                  reidentify: bool = False, escape=lambda value: value
                  ) -> tuple[str, list[MaskAction]]:
        shields = self.protected(text)
        findings = [f for f in findings
                    if all(f.end <= start or f.start >= end for start, end in shields)]
        restored = 0

        def between(segment: str) -> str:
            nonlocal restored
            if not reidentify:
                return segment
            segment, count = self.reidentify(segment, escape=escape)
            restored += count
            return segment

        masked, actions = self.operators.apply(
            text, findings, path=path, pseudonyms=self.vault, binding=self._binding,
            between=between)
        if restored:
            actions.append(MaskAction(path, "TOKEN", "reidentify", restored, 1.0))
        return masked, actions

    # --- bodies ------------------------------------------------------------------------------

    def mask_fields(self, fields: Sequence[Field], *, reidentify: bool = False,
                    mask: bool = True) -> tuple[dict[Path, str], list[MaskAction]]:
        if mask:
            results = self.detect([TextField(f.text, f.key) for f in fields])
        else:
            results = [[] for _ in fields]
        replacements: dict[Path, str] = {}
        actions: list[MaskAction] = []
        for field, findings in zip(fields, results):
            if field.kind == "key":
                if any(self.operators.operator(f.entity_type) != "keep" for f in findings):
                    # Renaming object members could merge them; refuse instead.
                    raise UnsupportedContent(render(field.path[:-2]), "identifier_in_key")
                continue
            masked, done = self.mask_text(field.text, findings, path=render(field.path),
                                          reidentify=reidentify)
            if field.kind == "name" and masked != field.text:
                # Keep the token readable within the characters the upstream accepts.
                masked = re.sub(r"[^A-Za-z0-9_-]", "", masked)[:64] or "masked"
            actions.extend(done)
            if masked != field.text:
                replacements[field.path] = masked
        return replacements, actions

    def mask_request(self, endpoint: str, body: Any) -> tuple[Any, list[MaskAction]]:
        replacements, actions = self.mask_fields(wire_fields.request_fields(endpoint, body))
        return wire_fields.apply(body, replacements), actions

    def mask_response(self, endpoint: str, body: Any, *, reidentify: bool = True
                      ) -> tuple[Any, list[MaskAction]]:
        replacements, actions = self.mask_fields(
            wire_fields.response_fields(endpoint, body), reidentify=reidentify)
        return wire_fields.apply(body, replacements), actions

