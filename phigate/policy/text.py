"""Prompt text as the guardrails see it: normalised so that look-alike spellings match.

Deny rules are written once in plain lowercase Latin; callers may write the same words in
fullwidth forms, with zero-width characters inside, with Cyrillic or Greek look-alike letters,
with combining accents, in any case, or base64-encoded. `normalize` maps all of those onto the
same string, and `TextRule` matches regexes and keywords against it.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

# Cyrillic and Greek letters that render like Latin ones (after NFKC, before casefolding;
# both cases are listed because casefolding a Cyrillic letter keeps it Cyrillic).
_HOMOGLYPHS = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ӏ": "l", "ү": "y",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O",
    "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I",
    "Ј": "J", "Ԁ": "D", "Һ": "H", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I", "Ү": "Y",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin look-alikes outside ASCII that NFKC keeps
    "ı": "i", "ȷ": "j", "ɑ": "a",
}
_SPACES = re.compile(r"\s+")
_TAG_OFFSET, _TAG_FIRST, _TAG_LAST = 0xE0000, 0xE0020, 0xE007E  # tag space .. tag tilde

# A base64 run long enough to hide a phrase (12 chars = 9 bytes); standard or URL-safe alphabet.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
# Stretches of decoded text worth matching: no control characters, no U+FFFD (bytes that were
# not UTF-8).
_READABLE = re.compile(r"[^\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]{6,}")


def normalize(text: str) -> str:
    """Fold `text` to the canonical form deny rules are matched against."""
    text = unicodedata.normalize("NFKC", text)  # fullwidth and styled letters -> ASCII
    text = unicodedata.normalize("NFKD", text)  # accents become separate combining marks
    text = _translate(text, _fold_char).casefold()
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text))


def _translate(text: str, fold: Callable[[str], str]) -> str:
    # One table per text, over its distinct non-ASCII characters only: cheap for any length,
    # and no start-up cost of a table over all of Unicode.
    return text.translate({ord(ch): fold(ch) for ch in set(text) if not ch.isascii()})


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """Map look-alike letters to Latin; drop invisible characters: format characters (Cf:
    zero-width space/joiner, soft hyphen, bidi controls) and combining marks (Mn, so accents
    cannot split a keyword). Unicode tag characters are invisible too, but models read them
    as the ASCII they shadow ("ASCII smuggling"), so they become that ASCII."""
    if _TAG_FIRST <= ord(ch) <= _TAG_LAST:
        return chr(ord(ch) - _TAG_OFFSET)
    if unicodedata.category(ch) in ("Cf", "Mn"):
        return ""
    return _HOMOGLYPHS.get(ch, ch)


@lru_cache(maxsize=8192)
def _drop_format(ch: str) -> str:
    return "" if unicodedata.category(ch) == "Cf" else ch


def _decode_base64_runs(text: str) -> list[str]:
    """Text hidden as base64 runs inside `text`. Each run is decoded from each of its first four
    offsets, so base64 glued to a word ("seeaWdub3Jl...") still decodes from the right one.
    Only readable stretches are kept: decoding at a wrong offset, or a run that is not base64
    at all (long words, hashes, binary data), yields noise that would only cost time later.
    The work stays linear in the length of the text."""
    found = []
    for match in _BASE64_RUN.finditer(text):
        run = match.group().rstrip("=")
        altchars = b"-_" if ("-" in run or "_" in run) else None
        for offset in range(4):
            part = run[offset:]
            part = part[: len(part) - 1] if len(part) % 4 == 1 else part  # a lone char is no byte
            try:
                raw = base64.b64decode(part + "=" * (-len(part) % 4), altchars=altchars, validate=True)
            except (binascii.Error, ValueError):
                continue
            found += _READABLE.findall(raw.decode("utf-8", errors="replace"))
    return found


@dataclass
class Scan:
    """The texts of one request, normalised once and shared by every rule that reads them.

    The texts are joined with newlines so that a phrase split across two messages or fields
    still matches.
    """

    texts: Sequence[str]

    @cached_property
    def normal(self) -> str:
        return normalize("\n".join(self.texts))

    @cached_property
    def decoded(self) -> str:
        """Normalised readable text decoded from the base64 runs in the texts."""
        # Runs are found before casefolding (which would corrupt them) but after NFKC and
        # format-character removal (so fullwidth or zero-width-split base64 still decodes).
        visible = _translate(unicodedata.normalize("NFKC", "\n".join(self.texts)), _drop_format)
        return normalize("\n".join(_decode_base64_runs(visible)))


def keywords_pattern(keywords: Iterable[str]) -> str:
    """One regex for all keywords: whole words, with any run of non-letters (or none) where a
    keyword has a space."""
    alternatives = (r"[\W_]*".join(map(re.escape, normalize(keyword).split())) for keyword in keywords)
    return r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)"


@dataclass(frozen=True)
class TextRule:
    """Regexes and keywords matched against normalised text (and decoded base64 on request)."""

    patterns: tuple[re.Pattern[str], ...]
    decode_base64: bool = False

    @classmethod
    def build(
        cls, regexes: Iterable[str] = (), keywords: Iterable[str] = (), decode_base64: bool = False
    ) -> TextRule:
        """Compile a rule; raises re.error for an invalid regex."""
        compiled = [re.compile(regex, re.IGNORECASE) for regex in regexes]
        keywords = [keyword for keyword in keywords if keyword.strip()]
        if keywords:
            compiled.append(re.compile(keywords_pattern(keywords)))
        return cls(tuple(compiled), decode_base64)

    def matches(self, scan: Scan) -> bool:
        if any(pattern.search(scan.normal) for pattern in self.patterns):
            return True
        return self.decode_base64 and any(pattern.search(scan.decoded) for pattern in self.patterns)
