"""One streamed text channel (a message's text, a tool call's arguments) with hold-back.

Deltas arrive in any size, down to one character. The channel releases at once everything that
can no longer be part of an entity or a token, and holds back the shortest tail that still could:
- an open `<…` that may become a gateway token (so `<PER` + `SON_1>` is re-identified whole);
- a trailing run of entity-like words (capitalised, with digits, `@`, or joiners such as `-`,
  `/`, `(`) separated by spaces or tabs, ending in a possibly partial word: "John Smi",
  "SSN 123-45-", "jane.doe@exa", "March 3, 20". A lower-case word followed by a space, or a
  line break, ends the run and releases it.
Detection runs only when something becomes releasable, on the held text plus a window of
already released text, so an entity that straddles the release point (forced by the hold limit)
is still seen and its remainder masked.

Tool-call arguments (JSON) are held whole up to `JSON_LIMIT` and masked structurally when the
call ends, exactly like a non-streamed body, so each value reaches the detector with its JSON key
as context. Clients cannot run a tool call before its arguments are complete anyway; arguments
longer than the limit, or not JSON, are streamed as text.
"""

from __future__ import annotations

import re

from phigate.wire.engine import Masker, json_escape
from phigate.wire.fields import JSON, apply, parse_json_string, value_fields
from phigate.wire.operators import TOKEN, MaskAction, resolve_overlaps
from phigate.wire.types import TextField

HOLD_LIMIT = 160  # longest run of entity-like words held back (long enough for an address)
TOKEN_LIMIT = 2200  # longest gateway token (a ciphertext) held back while open
CONTEXT = 64  # released text shown to the detector again as left context
JSON_LIMIT = 64 * 1024  # tool-call arguments held whole for structural masking

_OPEN_TOKEN = re.compile(r"<[A-Za-z0-9_:-]*\Z")
# Possessive matching: a word is taken whole or not at all, so the search stays linear per
# start position (nested free quantifiers here backtrack exponentially on "MRN SSN MRN ...").
_ENTITY_WORD = r"(?:(?=[^\s<]*[A-Z0-9@])[^\s<]++|[-–/.,:()#+&']++)"
_RUN = rf"(?:{_ENTITY_WORD}[ \t]++)*+[^\s<]*+\Z"
# A held run starts where a word starts: after a space, or after "<" / ">" (a word glued to a
# token or to markup may still be an entity: "<b>jane.doe@…").
_TAIL = re.compile(rf"(?<![^\s<>]){_RUN}")
_WHOLE_WINDOW = re.compile(_RUN)


def hold_start(text: str) -> int:
    """Where the held-back tail of `text` starts (len(text) when nothing is held)."""
    # A run longer than the limit is released up to the limit anyway (never hold a whole
    # response); the detector's left context still sees an entity cut there.
    window_start = max(0, len(text) - HOLD_LIMIT)
    if window_start and _WHOLE_WINDOW.match(text, window_start):
        start = window_start
    else:
        found = _TAIL.search(text, window_start)
        start = found.start() if found else len(text)
    opened = text.rfind("<", max(0, len(text) - TOKEN_LIMIT))
    if opened != -1 and _OPEN_TOKEN.match(text, opened):
        start = min(start, opened)
    # Never release part of a complete token ("<" + "PERSON_1>" would not be re-identified).
    before = text.rfind("<", max(0, start - TOKEN_LIMIT), start)
    if before != -1:
        token = TOKEN.match(text, before)
        if token and token.end() > start:
            start = before
    return start


class TextChannel:
    def __init__(self, masker: Masker, path: str, *, mask: bool, reidentify: bool,
                 json_text: bool = False) -> None:
        self._masker = masker
        self.path = path
        self._mask = mask
        self._reidentify = reidentify
        self._escape = json_escape if json_text else (lambda value: value)
        self._whole: str | None = "" if json_text else None
        self._pending = ""
        self._context = ""
        self._emitted: list[str] = []
        self.actions: list[MaskAction] = []

    def __repr__(self) -> str:
        return f"TextChannel({self.path}, held={len(self._pending)})"

    @property
    def emitted(self) -> str:
        return "".join(self._emitted)

    def feed(self, delta: str) -> str:
        """Take a delta; return the text to send now (maybe empty)."""
        if self._whole is not None:
            self._whole += delta
            if len(self._whole) <= JSON_LIMIT:
                return ""
            delta, self._whole = self._whole, None  # too long to hold: stream it as text
        self._pending += delta
        cut = hold_start(self._pending)
        if cut == 0:
            return ""
        return self._release(cut, final=False)

    def finish(self) -> str:
        """The end of the channel: release everything still held."""
        if self._whole:
            whole, self._whole = self._whole, None
            parsed = parse_json_string(whole)
            if parsed is not None:
                return self._structural(whole, parsed)
            self._pending = whole
        return self._release(len(self._pending), final=True) if self._pending else ""

    def _structural(self, whole: str, parsed) -> str:
        path = (self.path, JSON)
        replacements, actions = self._masker.mask_fields(
            value_fields(path, parsed), reidentify=self._reidentify, mask=self._mask)
        masked = apply({self.path: whole}, replacements)[self.path]
        self.actions.extend(actions)
        self._emitted.append(masked)
        return masked

    def _release(self, cut: int, *, final: bool) -> str:
        offset = len(self._context)
        text = self._context + self._pending
        spans: list[tuple[int, int, object]] = []
        if self._mask:
            findings = resolve_overlaps(self._masker.detect([TextField(text)])[0], len(text))
            # Move the release point out of any entity it would cut through (unless final);
            # the findings do not overlap, so each moves it at most once.
            moved = True
            while moved and not final:
                moved = False
                for f in findings:
                    if f.start < offset + cut < f.end:
                        if f.start > offset:
                            cut, moved = f.start - offset, True
                        else:
                            cut, moved = f.end - offset, True
            spans = [(max(f.start, offset) - offset, f.end - offset, f) for f in findings
                     if f.end > offset and max(f.start, offset) < offset + cut]
        released = self._pending[:cut]
        findings = [_Shifted(start, min(end, cut), f) for start, end, f in spans]
        masked, actions = self._masker.mask_text(
            released, findings, path=self.path, reidentify=self._reidentify,
            escape=self._escape)
        self.actions.extend(actions)
        self._context = (self._context + released)[-CONTEXT:]
        self._pending = self._pending[cut:]
        self._emitted.append(masked)
        return masked


class _Shifted:
    """A finding moved into the coordinates of the released text."""

    __slots__ = ("start", "end", "entity_type", "score")

    def __init__(self, start: int, end: int, finding) -> None:
        self.start = start
        self.end = end
        self.entity_type = finding.entity_type
        self.score = finding.score
