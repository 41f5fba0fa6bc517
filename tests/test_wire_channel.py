"""Hold-back on one streamed text channel: what is held, and equivalence with whole-text masking
under random texts and random delta sizes."""

from __future__ import annotations

import random
import time

import pytest

from phigate.wire.channel import HOLD_LIMIT, TextChannel, hold_start
from tests.test_wire_support import make_masker


@pytest.mark.parametrize("text, held", [
    ("the patient is ", ""),
    ("the patient is sta", "sta"),
    ("seen by John Smi", "John Smi"),
    ("seen by John ", "John "),
    ("SSN 123-45-", "SSN 123-45-"),
    ("write to jane.doe@exa", "jane.doe@exa"),
    ("born March 3, 20", "March 3, 20"),
    ("line one John\n", ""),
    ("Dear <PERS", "<PERS"),
    ("Dear <PERSON_1", "<PERSON_1"),
    ("Dear <PERSON_1>, how", "<PERSON_1>, how"),
    ("Dear x<PERSON_1>", "<PERSON_1>"),
    ("Dear <PERSON_1>Smi", "<PERSON_1>Smi"),
    ("if a < b then ", ""),
])
def test_hold_back_keeps_only_what_could_still_grow(text, held):
    assert text[hold_start(text):] == held


def test_hold_back_is_bounded_and_fast_on_pathological_runs():
    text = "MRN SSN 12 " * 400
    started = time.perf_counter()
    for end in range(len(text) - 200, len(text)):
        assert end - hold_start(text[:end]) <= HOLD_LIMIT
    assert time.perf_counter() - started < 1.0


WORDS = ["the", "patient", "John Smith", "Jane Doe", "Maria Garcia", "SSN", "123-45-6789",
         "MRN", "MRN 7654321", "jane.doe@example.com", "1970-01-02", "was", "seen", "on", "Dr.",
         "(", ")", ",", ".", "\n", "A1c", "7.1%", "<PERSON_1>", "x<y", "<b>", "JOHN", "Smith",
         "2024", "-", "MRN:"]


def test_streamed_masking_equals_whole_text_masking_for_random_streams():
    for seed in range(300):
        rng = random.Random(seed)
        text = "".join(rng.choice(WORDS) + rng.choice([" ", " ", "", "\t", ", "])
                       for _ in range(rng.randint(1, 60)))
        whole = make_masker()
        expected = whole.mask_text(text, whole.detect_one(text), path="x")[0]
        channel = TextChannel(make_masker(), "x", mask=True, reidentify=False)
        out, position = [], 0
        while position < len(text):
            size = rng.randint(1, 6)
            out.append(channel.feed(text[position:position + size]))
            position += size
        out.append(channel.finish())
        assert "".join(out) == expected == channel.emitted, seed
