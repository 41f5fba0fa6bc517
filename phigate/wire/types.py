"""The small types shared by the wire modules and the detector contract.

`TextField` and `Finding` mirror the phigate.detect contract (docs/ARCHITECTURE.md); the wire
modules only rely on their attributes, so the detector's own classes work as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TextField:
    """One text handed to the detector; `key` is the JSON key it sits under (context)."""

    text: str
    key: str | None = None

    def __repr__(self) -> str:  # the text may be PHI
        return f"TextField(len={len(self.text)}, key={self.key!r})"


class Finding(Protocol):
    start: int
    end: int
    entity_type: str
    score: float


Detect = Callable[[list[TextField]], Sequence[Sequence[Finding]]]


class UnsupportedContent(Exception):
    """A body holds content the gateway cannot examine (an image, audio, a token array, an
    unknown item type or endpoint). The gateway refuses it unless the policy allows it."""

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(f"unsupported content {kind!r} at {path or '(body)'}")
        self.path = path
        self.kind = kind


class DetectionError(Exception):
    """The detect callable returned something unusable; never pass the text on unexamined."""
