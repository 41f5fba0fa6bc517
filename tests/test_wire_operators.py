"""Masking operators: tokens, overlap resolution, keyed hashes and reversible encryption."""

from __future__ import annotations

import itertools
import re

import pytest

from phigate.wire.operators import TOKEN, Cipher, MaskAction, Operators, resolve_overlaps
from phigate.wire.types import DetectionError
from phigate.wire.vault import Vault
from tests.test_wire_support import Hit

TEXT = "Pt John Smith, SSN 123-45-6789, seen by Jane Doe; John Smith again."
HITS = [Hit(3, 13, "PERSON", 0.85), Hit(19, 30, "US_SSN", 0.9), Hit(40, 48, "PERSON", 0.8),
        Hit(50, 60, "PERSON", 0.85)]


def operators(default: str, **rules: str) -> Operators:
    return Operators(rules, default=default, hash_key=b"h" * 32, cipher=Cipher(b"c" * 64))


def test_placeholder_redact_keep_and_actions_hold_no_value():
    ops = operators("placeholder", US_SSN="redact", PERSON="keep")
    text, actions = ops.apply(TEXT, HITS, path="messages[0].content")
    assert text == "Pt John Smith, SSN [REDACTED], seen by Jane Doe; John Smith again."
    assert actions == [MaskAction("messages[0].content", "PERSON", "keep", 3, 0.85),
                       MaskAction("messages[0].content", "US_SSN", "redact", 1, 0.9)]
    ops = operators("placeholder")
    text, _ = ops.apply(TEXT, HITS, path="p")
    assert text == "Pt <PERSON>, SSN <US_SSN>, seen by <PERSON>; <PERSON> again."
    assert "John" not in repr(actions) and "123" not in repr(actions)


def test_pseudonyms_number_values_within_a_scope():
    vault = Vault()
    scope = vault.bind(vault.scope("iss", "alice", "c1"))
    text, actions = operators("pseudonym").apply(TEXT, HITS, path="p", pseudonyms=scope)
    assert text == "Pt <PERSON_1>, SSN <US_SSN_1>, seen by <PERSON_2>; <PERSON_1> again."
    assert {(a.entity, a.count) for a in actions} == {("PERSON", 3), ("US_SSN", 1)}
    # Case and spacing do not make a new person.
    again, _ = operators("pseudonym").apply("JOHN  smith", [Hit(0, 11, "PERSON", 1)], path="p",
                                            pseudonyms=scope)
    assert again == "<PERSON_1>"
    with pytest.raises(ValueError):
        operators("pseudonym").apply(TEXT, HITS, path="p")  # no scope, no pseudonyms


def test_hash_is_keyed_stable_and_short():
    text, _ = operators("hash").apply(TEXT, HITS, path="p")
    tokens = TOKEN.findall(text)
    assert len(tokens) == 4
    first, _ = operators("hash").apply("John Smith", [Hit(0, 10, "PERSON", 1)], path="p")
    assert re.fullmatch(r"<PERSON_h:[0-9a-f]{8}>", first)
    assert first in text and text.count(first) == 2  # same value, same token
    other_key = Operators({}, default="hash", hash_key=b"x" * 32)
    assert other_key.apply("John Smith", [Hit(0, 10, "PERSON", 1)], path="p")[0] != first


def test_encrypt_round_trips_only_in_its_scope():
    cipher = Cipher(b"c" * 64)
    ops = Operators({}, default="encrypt", hash_key=b"h" * 32, cipher=cipher)
    text, _ = ops.apply(TEXT, HITS, path="p", binding=b"scope-a")
    assert "John" not in text and "6789" not in text
    matches = list(TOKEN.finditer(text))
    assert [m["entity"] for m in matches] == ["PERSON", "US_SSN", "PERSON", "PERSON"]
    assert matches[0][0] == matches[3][0]  # deterministic within the scope
    assert cipher.open("PERSON", matches[0]["cipher"], b"scope-a") == "John Smith"
    assert cipher.open("US_SSN", matches[1]["cipher"], b"scope-a") == "123-45-6789"
    assert cipher.open("PERSON", matches[0]["cipher"], b"scope-b") is None
    assert cipher.open("US_SSN", matches[0]["cipher"], b"scope-a") is None  # entity bound too
    assert Cipher(b"d" * 64).open("PERSON", matches[0]["cipher"], b"scope-a") is None
    assert "c" * 8 not in repr(cipher)


def test_overlaps_resolve_the_same_way_in_any_order():
    hits = [Hit(0, 10, "PERSON", 0.6), Hit(5, 10, "LOCATION", 0.99), Hit(0, 4, "PERSON", 0.9),
            Hit(12, 20, "DATE", 0.5), Hit(12, 20, "OTHER_ID", 0.5), Hit(15, 22, "US_SSN", 0.9)]
    results = {tuple((f.start, f.end, f.entity_type) for f in resolve_overlaps(order, 30))
               for order in itertools.permutations(hits)}
    # longest wins, then the higher score, then the entity name
    assert results == {((0, 10, "PERSON"), (12, 20, "DATE"))}


def test_invalid_findings_and_configurations_raise():
    with pytest.raises(DetectionError):
        operators("placeholder").apply("short", [Hit(2, 9, "PERSON", 1)], path="p")
    with pytest.raises(ValueError):
        Operators({"PERSON": "scramble"}, hash_key=b"k")
    with pytest.raises(ValueError):
        Operators({}, default="encrypt", hash_key=b"k")  # encrypt without a key


def test_tokens_survive_text_around_them():
    tokens = ["<PERSON>", "<PERSON_12>", "<US_SSN_h:0a1b2c3d>",
              "<STREET_ADDRESS_e:" + "A" * 40 + ">"]
    found = [m[0] for m in TOKEN.finditer("x" + "), (".join(tokens) + ".")]
    assert found == tokens
    assert TOKEN.fullmatch("<US_SSN_3>")["entity"] == "US_SSN"
