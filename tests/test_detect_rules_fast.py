"""The rule shortcuts (phigate/detect/scan.py) change no span: every rule, with and without them,
over the evaluation texts and generated edge cases; the shortcuts are taken; a wrong one is caught."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import sys
from pathlib import Path

import pytest

from phigate.detect import recognizers
from phigate.detect.recognizers import PACK, Rule
from phigate.detect.scan import Finder, fold, positions

ROOT = Path(__file__).resolve().parents[1]
RULES = [(f"{entity}/{rule.name}", rule) for entity, rules in PACK.items() for rule in rules]

VALUES = ["88123456", "00451234", "John Smith", "Maria Lopez", "O'Brien, Ann", "03/14/2024", "14.03.2024",
          "2024-03-14", "March 3", "3rd of May", "617-555-0142", "(614) 555-0199 ext 12", "+44 20 7946 0958",
          "XJH123456789", "1EG4-TE5-MK73", "AB1234563", "1234567893", "1HGCM82633A004352", "SN-1234",
          "00:1A:2B:3C:4D:5E", "2001:db8::1", "fe80::1:2:3", "192.168.0.1/24", "j.doe+x@mercy-health.org",
          "www.mercy.org/a", "https://x.io/p?q=1", "mercy.com", "12 Oak St, Springfield, IL 62704",
          "4410 Birchwood Lane Apt 3B", "PO Box 12", "Springfield 01105", "Franklin County", "St. Jude's",
          "Mercy General Hospital", "95 yo", "ninety-two-year-old", "91F", "aged 101", "in her 90s",
          "SNOMED 44054006", "ABC123456", "XK-449-2210", "(01)00884521000011(17)250101", "+H123ABCD1234",
          "Christmas Day 2020", "dob 19500203", "ssn 987654321", "zip 02139", "fax 614-555-0100", "vin 1HGCM8",
          "plate 7ABC123", "is a 67-year", "67F", "4821", "1950", "7.2", "v1.2.3", "42", "Ana", "ANA", "x",
          "Smith, John", "2024/03/14", "14-Mar-2024", "95 years of age", "92y, male", "95", "101",
          "MRN12345678", "02139-1234", "123-45-6789", "123 45 6789", "42 Elm Street, Springfield 01105",
          "Oak Ave., Boston 02139-1234"]
CORE_VALUES = ["95", "88123456", "John Smith", "03/14", "XJH-123456", "Springfield"]
SEPARATORS = ["", " ", "  ", ": ", " # ", "#", "-", ".", ". ", ",", ", ", "\n", "\t", "(", ")", "/", "'s ", " is ",
              " no. ", " number ", "=", "_"]
GLUE = ["", "", "", "a", "Z", "9", ".", "-", "é", "'", "@", "/"]
# Characters `re.IGNORECASE` matches to ASCII letters although they are not ASCII.
LOOKALIKES = {"s": "\u017f", "S": "\u017f", "k": "\u212a", "K": "\u212a", "i": "\u0131", "I": "\u0130"}


def literals_of(rule: Rule) -> list[str]:
    finder = rule.starts or rule.needs
    return list(finder.in_folded + finder.in_text) if finder else []


def case_variant(word: str, rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return word.upper()
    if kind == 1:
        return word.title()
    if kind == 2:
        return word.swapcase()
    if kind == 3:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in word)
    if kind == 4:
        return "".join(LOOKALIKES.get(c, c) if rng.random() < 0.5 else c for c in word)
    return word


def generated_texts(count: int = 3000, seed: int = 20240314) -> list[str]:
    """Rule keywords (read from every rule) in other cases and look-alike letters, glued to
    letters, digits and punctuation, at the start and end of a text, before typical values."""
    rng = random.Random(seed)
    words = sorted({w for _, rule in RULES for w in literals_of(rule)} | {"MRN", "Pt", "Dr.", "DOB", "member ID"})
    texts = []
    for index in range(count):
        own = literals_of(RULES[index % len(RULES)][1]) or words  # each rule's keywords in turn
        pieces = []
        for number in range(rng.randint(1, 4)):
            word = rng.choice(own if number == 0 else words)
            piece = rng.choice(GLUE) + case_variant(word, rng) + rng.choice(SEPARATORS)
            piece += case_variant(rng.choice(VALUES), rng) if rng.random() < 0.3 else rng.choice(VALUES)
            pieces.append(piece + rng.choice(GLUE))
        text = rng.choice(["", " ", ", ", "\n"]).join(pieces)
        if index % 5 == 0:  # a keyword alone at the very end, or a value alone at the start
            text = text + rng.choice(["", " "]) + case_variant(rng.choice(words), rng)
        if index % 7 == 0:
            text = rng.choice(VALUES) + " " + text
        texts.append(text)
    # Every keyword once before each kind of value, as written in a note.
    return texts + [f"{word} {value}" for word in words for value in CORE_VALUES]


def eval_texts() -> list[str]:
    lines = (ROOT / "scripts" / "eval" / "phi_eval.jsonl").read_text().splitlines()
    return [field["text"] for line in lines for field in json.loads(line)["fields"]]


def mutated(texts: list[str], seed: int = 7) -> list[str]:
    """Evaluation texts in upper case, with look-alike letters, and cut at random places."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        out.append(text.upper() if rng.random() < 0.5 else text.swapcase())
        out.append("".join(LOOKALIKES.get(c, c) if rng.random() < 0.3 else c for c in text))
        cut = rng.randrange(len(text) + 1)
        out.append(text[cut:] + " " + text[:cut])
    return out


def mismatches(rules, texts: list[str]) -> list[tuple[str, str]]:
    return [(name, text) for name, rule in rules for text in texts
            if list(rule.spans(text)) != list(rule.spans_by_search(text))
            or list(rule.spans(text, fold(text))) != list(rule.spans_by_search(text))]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    base = eval_texts()
    return base + mutated(base[::4]) + generated_texts()


def test_every_rule_finds_the_same_spans_on_the_evaluation_texts():
    assert mismatches(RULES, eval_texts()) == []


def test_every_rule_finds_the_same_spans_on_generated_edge_cases():
    generated = generated_texts() + mutated(eval_texts()[::4])
    assert len(generated) > 6000
    assert mismatches(RULES, generated) == []


def test_the_generated_texts_make_every_rule_match_somewhere(texts):
    """Not vacuous: each rule finds spans in the compared texts."""
    silent = [name for name, rule in RULES if not any(True for text in texts for _ in rule.spans_by_search(text))]
    assert silent == []


def test_fold_matches_what_ignorecase_matches():
    """`fold` keeps every position and maps every character that `re.IGNORECASE` matches to an
    ASCII character onto that character in lower case (the start literals are ASCII)."""
    any_ascii = re.compile(r"[\x00-\x7f]", re.IGNORECASE)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert len(fold(char)) == 1, hex(code)
        if code >= 0x80 and any_ascii.fullmatch(char):
            matched = [a for a in map(chr, range(0x80)) if re.fullmatch(re.escape(a), char, re.IGNORECASE)]
            assert {fold(char)} == {a.lower() for a in matched}, hex(code)
    sample = "".join(map(chr, range(0x30000)))
    assert len(fold(sample)) == len(sample)
    assert fold("ſſn İd Kg ıd MRN") == "ssn id kg id mrn"


def test_the_shortcuts_are_taken(texts):
    """Most rules get literals from their regex, and on the evaluation texts most rule runs never
    call the pattern, or call it at few positions."""
    assert sum(rule.starts is not None for _, rule in RULES) >= 40
    assert sum(rule.needs is not None for _, rule in RULES) >= 10
    assert dict(RULES)["EMAIL_ADDRESS/address"].needs.in_folded == ("@",)
    assert "mrn" not in dict(RULES)["MEDICAL_RECORD_NUMBER/in-context"].starts.in_folded  # "mr" covers it
    assert "mr" in dict(RULES)["MEDICAL_RECORD_NUMBER/in-context"].starts.in_folded

    calls = {"fast": 0, "plain": 0}
    skipped = runs = 0
    for _, rule in RULES:
        counted = _Counting(rule.compiled)
        rule = _with_pattern(rule, counted)
        for text in eval_texts():
            for way, spans in (("fast", Rule.spans), ("plain", Rule.spans_by_search)):
                before = counted.calls
                list(spans(rule, text))
                calls[way] += counted.calls - before
                if way == "fast":
                    runs += 1
                    skipped += counted.calls == before
    assert skipped > 0.6 * runs, (skipped, runs)
    assert calls["fast"] < 0.5 * calls["plain"], calls


class _Counting:
    """A compiled pattern that counts the calls made to it."""

    def __init__(self, pattern: re.Pattern):
        self.pattern, self.calls, self.groupindex = pattern, 0, pattern.groupindex

    def search(self, *args):
        self.calls += 1
        return self.pattern.search(*args)

    def match(self, *args):
        self.calls += 1
        return self.pattern.match(*args)


def _with_pattern(rule: Rule, pattern) -> Rule:
    copy = dataclasses.replace(rule)
    object.__setattr__(copy, "compiled", pattern)
    return copy


def _without(finder: Finder, literal: str) -> Finder:
    return Finder(tuple(w for w in finder.in_folded if w != literal), tuple(w for w in finder.in_text if w != literal))


def test_a_wrong_start_literal_is_caught(texts):
    """Dropping one start literal ("pt") loses matches: the comparison sees it."""
    rule = dataclasses.replace(dict(RULES)["PERSON/clinical-context"])
    object.__setattr__(rule, "starts", _without(rule.starts, "pt"))
    assert mismatches([("wrong", rule)], texts)


def test_a_wrong_required_literal_is_caught(texts):
    rule = dataclasses.replace(dict(RULES)["IP_ADDRESS/ipv6"])
    object.__setattr__(rule, "needs", Finder(("::",), ()))  # ":" is required, "::" is not
    assert mismatches([("wrong", rule)], texts)


def test_a_fold_unlike_ignorecase_is_caught(monkeypatch, texts):
    """`str.lower` alone misses "ſſn" and shifts positions after "İ": the look-alike texts catch it."""
    monkeypatch.setattr(recognizers, "fold", str.lower)
    ssn = [("ssn", dict(RULES)["US_SSN/in-context"]), ("mrn", dict(RULES)["MEDICAL_RECORD_NUMBER/in-context"])]
    found = [(name, text) for name, rule in ssn for text in texts
             if list(rule.spans(text)) != list(rule.spans_by_search(text))]
    assert found


def test_positions_find_overlapping_literals():
    finder = Finder(("aba", "ba", "abab"), ())
    assert positions("ababab", "ababab", finder) == [0, 1, 2, 3]
    assert positions("ababab", "ababab", Finder(("aba", "bab"), ())) == [0, 1, 2, 3]
