"""Where a rule can match: literal starts derived from the rule's own regex (pure functions).

Python's `re` tries a pattern at every position of the text when it begins with a look-behind
or a case-insensitive alternation (most of our rules), about 0.25 µs per position per rule. A
rule whose every match starts with one of a few literals ("mrn", "member", "dr") needs trying
only where one of them occurs, which `str.find` or one trie-shaped pattern finds at C speed; a
text without any of them skips the rule, as does a text without a literal the rule requires
elsewhere ("@"). The literals are read from the regex's parse tree, never declared by hand, so
they cannot disagree with the pattern (tests/test_detect_rules_fast.py compares both ways).
"""

from __future__ import annotations

import re
import string
from bisect import bisect_left
from dataclasses import dataclass, field
from re import _constants as C  # noqa: N812 - sre opcodes
from re import _parser

MAX_LITERALS = 256  # more than this is no literal but a word list

# Characters that `re.IGNORECASE` matches to an ASCII character but `str.lower()` does not map
# to it (or maps to two characters: "İ".lower() == "i̇"). The tests check this over all of Unicode.
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def fold(text: str) -> str:
    """Lower case of the same length, in which a character that `re.IGNORECASE` matches to an
    ASCII character is that character in lower case: the text the start literals are found in."""
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


def start_literals(regex: str, flags: int) -> tuple[tuple[str, bool], ...] | None:
    """(literal, folded) pairs, one of which begins every match of the regex: a folded literal is
    found in `fold(text)`, another in the text itself (case-sensitive, so "IL" skips "il").
    None when some match may begin otherwise (a digit, any upper-case letter, an optional part)."""
    try:
        parsed = _parser.parse(regex, flags)
    except Exception:  # noqa: BLE001 - an unreadable pattern simply gets no shortcut
        return None
    prefixes = _sequence(list(parsed.data), parsed.state.flags)
    if prefixes is None:
        return None
    literals = {(text.lower(), True) if folded else (text, False) for text, folded, _ in prefixes}
    if not literals or any(not text for text, _ in literals):
        return None
    # A literal that starts with a shorter one adds no start position ("mrs" after "mr").
    minimal = tuple(sorted((text, folded) for text, folded in literals
                           if not any(o != text and text.startswith(o) for o, f in literals if f == folded)))
    return minimal if len(minimal) <= MAX_LITERALS and not any(_frequent(text) for text, _ in minimal) else None


def required_literals(regex: str, flags: int) -> tuple[tuple[str, bool], ...] | None:
    """(literal, folded) pairs, one of which occurs in any text the regex matches in (a look-ahead
    counts: it must match too): a text with none of them skips the rule ("@" for an e-mail
    address, ".com" and the like for a domain, ":" for IPv6). None when none can be read."""
    try:
        parsed = _parser.parse(regex, flags)
    except Exception:  # noqa: BLE001
        return None
    literals = _minimal(_factors(list(parsed.data), parsed.state.flags))
    if literals and any(_frequent(text) or (folded and len(text) == 2 and text.isalpha()) for text, folded in literals):
        return None  # nearly every text has "st" or "f" somewhere: the check would only cost
    return literals


_COMMON = frozenset(string.ascii_letters + string.digits + string.whitespace + "-./,")


def _frequent(literal: str) -> bool:
    """A character found in nearly every note ("1", "-", "f"): finding it skips nothing, and as a
    start it sends the pattern to almost every position anyway."""
    return len(literal) == 1 and literal in _COMMON


def _factors(items: list, flags: int) -> set[tuple[str, bool]] | None:
    """The most selective literal set of a sequence: from the starts of each of its tails, or
    from one of its required items."""
    best = None
    for index, (op, av) in enumerate(items):
        prefixes = _sequence(items[index:], flags)
        if prefixes is not None and all(text for text, _, _ in prefixes):
            best = _better(best, {(text.lower(), True) if folded else (text, False) for text, folded, _ in prefixes})
        best = _better(best, _item_factors(op, av, flags))
    return best


def _item_factors(op, av, flags: int) -> set[tuple[str, bool]] | None:
    if op is C.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        return _factors(list(sub.data), (flags | add_flags) & ~del_flags)
    if op is C.ATOMIC_GROUP:
        return _factors(list(av.data), flags)
    if op is C.ASSERT:  # a look-ahead or look-behind that must match: its text is in the text
        return _factors(list(av[1].data), flags)
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT) and av[0] >= 1:
        return _factors(list(av[2].data), flags)
    if op is C.BRANCH:
        union: set[tuple[str, bool]] = set()
        for sub in av[1]:
            each = _factors(list(sub.data), flags)
            if each is None:
                return None
            union |= each
        return union
    return None


def _better(one: set | None, other: set | None) -> set | None:
    """The set whose shortest literal is longer (rarer in text), then the smaller one."""
    if not other or len(other) > MAX_LITERALS:
        return one
    if not one:
        return other
    rank = lambda literals: (min(len(text) for text, _ in literals), -len(literals))  # noqa: E731
    return other if rank(other) > rank(one) else one


def _minimal(literals: set[tuple[str, bool]] | None) -> tuple[tuple[str, bool], ...] | None:
    """Drop literals that contain a shorter one of the same kind ("mrs" beside "mr")."""
    if not literals or any(not text for text, _ in literals):
        return None
    return tuple(sorted((text, folded) for text, folded in literals
                        if not any(o != text and o in text for o, f in literals if f == folded)))


# A prefix is (text, folded, complete): folded when a case-insensitive character is in it (it is
# then found in lower case in the folded text); complete when it is the whole match of the node
# so far, so what follows may extend it; otherwise the rest of the match is unknown.
Prefixes = list[tuple[str, bool, bool]]


def _sequence(items: list, flags: int) -> Prefixes | None:
    prefixes: Prefixes = [("", False, True)]
    for op, av in items:
        if not any(complete for _, _, complete in prefixes):
            break
        node = _node(op, av, flags)
        if node is None:
            return None
        extended: Prefixes = []
        for text, folded, complete in prefixes:
            if complete:
                extended.extend((text + more, folded or more_folded, whole) for more, more_folded, whole in node)
            else:
                extended.append((text, folded, False))
        prefixes = list(dict.fromkeys(extended))
        if len(prefixes) > 4 * MAX_LITERALS:
            return None
    return prefixes


def _node(op, av, flags: int) -> Prefixes | None:
    ignore_case = bool(flags & re.IGNORECASE)
    if op is C.LITERAL:
        return [(char, ignore_case, True)] if (char := chr(av)).isascii() else None
    if op is C.IN:
        chars = _small_set(av)
        return [(char, ignore_case, True) for char in chars] if chars else [("", False, False)]
    if op in (C.AT, C.ASSERT, C.ASSERT_NOT):  # zero width: the match goes on at the same place
        return [("", False, True)]
    if op is C.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        return _sequence(list(sub.data), (flags | add_flags) & ~del_flags)
    if op is C.ATOMIC_GROUP:
        return _sequence(list(av.data), flags)
    if op is C.BRANCH:
        alternatives: Prefixes = []
        for sub in av[1]:
            each = _sequence(list(sub.data), flags)
            if each is None:
                return None
            alternatives.extend(each)
        return alternatives
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        low, _high, sub = av
        inner = _sequence(list(sub.data), flags)
        if inner is None:
            return None
        once = [(text, folded, False) for text, folded, _ in inner]
        return [("", False, True), *once] if low == 0 else once
    return [("", False, False)]


def _small_set(items: list) -> list[str] | None:
    """The ASCII characters of a short, non-negated character class ([sc], not [a-z] or \\s)."""
    chars: list[str] = []
    for op, av in items:
        if op is C.LITERAL:
            chars.append(chr(av))
        elif op is C.RANGE and av[1] - av[0] < 4:
            chars.extend(map(chr, range(av[0], av[1] + 1)))
        else:
            return None
    return chars if len(chars) <= 4 and all(c.isascii() for c in chars) else None


@dataclass(frozen=True)
class Finder:
    """Literals to find in the folded text and in the text. Two or fewer are found with
    `str.find`; more with their alternation laid out as a trie, which `re` scans fast (it
    skips to a possible first character)."""
    in_folded: tuple[str, ...]
    in_text: tuple[str, ...]
    patterns: tuple[re.Pattern | None, re.Pattern | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", (_trie_pattern(self.in_folded), _trie_pattern(self.in_text)))


def finder(literals: tuple[tuple[str, bool], ...] | None) -> Finder | None:
    if not literals:
        return None
    return Finder(tuple(text for text, folded in literals if folded),
                  tuple(text for text, folded in literals if not folded))


def _trie_pattern(words: tuple[str, ...]) -> re.Pattern | None:
    if len(words) <= 2:
        return None
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return re.compile(_trie_regex(trie))


def _trie_regex(node: dict) -> str:
    options = [re.escape(char) + _trie_regex(child) if char else "" for char, child in sorted(node.items())]
    return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"


def occurs(text: str, folded: str, find: Finder) -> bool:
    """Whether one of the literals occurs."""
    for words, pattern, where in zip((find.in_folded, find.in_text), find.patterns, (folded, text)):
        if pattern is not None:
            if pattern.search(where):
                return True
        elif any(word in where for word in words):
            return True
    return False


def positions(text: str, folded: str, find: Finder) -> list[int]:
    """Sorted positions where one of the literals begins (searched again from the next
    character, so overlapping literals all count)."""
    found: list[int] = []
    for words, pattern, where in zip((find.in_folded, find.in_text), find.patterns, (folded, text)):
        if pattern is not None:
            match = pattern.search(where)
            while match:
                found.append(start := match.start())
                match = pattern.search(where, start + 1)
        else:
            for word in words:
                start = where.find(word)
                while start >= 0:
                    found.append(start)
                    start = where.find(word, start + 1)
    if len(find.in_folded) + len(find.in_text) > 1:
        found.sort()
    return found


def search_from(pattern: re.Pattern, text: str, position: int, starts: list[int]) -> re.Match | None:
    """`pattern.search(text, position)` when every match begins at one of `starts`: the first
    start at or after `position` where the pattern matches (`match` sees the text before it too,
    so look-behinds and \\b read the same characters as in `search`)."""
    for start in starts[bisect_left(starts, position):]:
        if match := pattern.match(text, start):
            return match
    return None
