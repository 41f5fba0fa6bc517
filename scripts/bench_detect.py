"""Detection speed: phigate's Detector vs stock Presidio (en_core_web_sm), same texts, same run.

    python scripts/bench_detect.py [--records 300] [--rounds 3] [--detect-config FILE]

--detect-config: a detector YAML for phigate's side, e.g. `fused_ner_encoder: false` to time
spaCy's own NER encoder layers instead of phigate's fused one.

cold = never-seen text (each text analysed once); warm = the same fields again (cache hits).
FHIR fields go in with their JSON keys, as the gateway sends them (many never reach the NLP).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "eval"))

from evaluate import DEFAULT_DATA, load, stock  # noqa: E402

from phigate.detect import Detector, TextField  # noqa: E402

NOTE_250 = ("Pt Maria Lopez, 67F, MRN 88123456, seen 03/14/2024 at Mercy General for CHF exacerbation. "
            "On metoprolol 25 mg bid and Lasix 40 mg. HbA1c 7.2, K 4.1. Daughter Ana at 617-555-0142. "
            "Lives at 12 Oak St, Springfield, IL 62704. F/u 2 wks.")


def texts_from(records: list[dict]) -> list[str]:
    return [f["text"] for r in records if r["kind"] != "fhir" for f in r["fields"]]


def fhir_fields_from(records: list[dict]) -> list[TextField]:
    return [TextField(f["text"], f.get("key")) for r in records if r["kind"] == "fhir" for f in r["fields"]]


def run(analyze, texts: list) -> dict:
    per_text = []
    for text in texts:
        started = time.perf_counter()
        analyze(text)
        per_text.append(time.perf_counter() - started)
    characters = sum(len(getattr(text, "text", text)) for text in texts)
    return {"chars_per_s": characters / sum(per_text), "ms_median": statistics.median(per_text) * 1e3}


def suffixed(text: str, round_: int) -> str:
    return f"{text} [{round_}]"


def padded(field: TextField, round_: int) -> TextField:
    """A FHIR value with trailing spaces: new to the cache, same key and same meaning."""
    return TextField(field.text + " " * (round_ + 1), field.key)


def compare(ours, theirs, texts: list, rounds: int, vary=suffixed) -> tuple[dict, dict]:
    """Alternate the two engines over fresh variants of the texts (never seen by the cache) and
    keep each engine's best round: the machine may be shared, the best round is the least disturbed."""
    best_ours, best_theirs = None, None
    for round_ in range(rounds):
        variant = [vary(text, round_) for text in texts]
        mine, stock_ = run(ours, variant), run(theirs, variant)
        best_ours = max(best_ours or mine, mine, key=lambda r: r["chars_per_s"])
        best_theirs = max(best_theirs or stock_, stock_, key=lambda r: r["chars_per_s"])
    return best_ours, best_theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--detect-config", default=None, help="detector YAML for phigate's side")
    args = parser.parse_args()
    records = load(DEFAULT_DATA, args.records)
    texts, fhir = texts_from(records), fhir_fields_from(records)
    notes = [f"{NOTE_250} Visit {i}." for i in range(60)]  # distinct texts, ~250 characters each

    detector = Detector.from_config(args.detect_config)
    stock_analyze = stock()
    ours = lambda text: detector.analyze([TextField(text)])  # noqa: E731
    theirs = lambda text: stock_analyze([{"text": text}])  # noqa: E731
    ours("warm up the pipeline"), theirs("warm up the pipeline")

    ours_field = lambda field: detector.analyze([field])  # noqa: E731
    theirs_field = lambda field: stock_analyze([{"text": field.text}])  # noqa: E731
    rows = [("eval texts, cold", *compare(ours, theirs, texts, args.rounds)),
            ("~250-char note, cold", *compare(ours, theirs, notes, args.rounds)),
            ("eval FHIR fields with keys, cold", *compare(ours_field, theirs_field, fhir, args.rounds, padded))]
    fields = [TextField(t) for t in texts]
    detector.analyze(fields)
    rounds, started = 20, time.perf_counter()
    for _ in range(rounds):
        detector.analyze(fields)
    warm_ms_per_field = (time.perf_counter() - started) / (rounds * len(fields)) * 1e3

    print(f"{len(texts)} eval texts ({sum(map(len, texts))} characters), {len(notes)} notes of {len(notes[0])} "
          f"characters, {len(fhir)} FHIR fields ({sum(len(f.text) for f in fhir)} characters)\n")
    print("| case | phigate chars/s | stock chars/s | phigate ms/text (median) | stock ms/text (median) | "
          "phigate time / stock time |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, ours_row, stock_row in rows:
        print(f"| {case} | {ours_row['chars_per_s']:,.0f} | {stock_row['chars_per_s']:,.0f} | "
              f"{ours_row['ms_median']:.2f} | {stock_row['ms_median']:.2f} | "
              f"{stock_row['chars_per_s'] / ours_row['chars_per_s']:.2f} |")
    print(f"| warm (repeated fields, one request of {len(fields)}) | | | {warm_ms_per_field:.4f} per field | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
