"""Score PHI detection on the labeled set: per-type recall, precision, hard-negative alteration.

    python scripts/eval/evaluate.py [--data FILE] [--slice N] [--json] [--stock]

Recall: a labeled element counts as leaked if ANY of its alphanumeric tokens is not fully
covered by findings. Precision: share of findings that overlap a labeled element (by the
finding's type). Over-redaction: share of hard-negative records (no PHI) with any finding.
``--stock`` adds stock Presidio (AnalyzerEngine defaults, en_core_web_sm) side by side.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from phigate.detect import Detector, TextField, bundled_model_path

DEFAULT_DATA = Path(__file__).with_name("phi_eval.jsonl")
Spans = list[tuple[int, int, str]]
Analyze = Callable[[list[dict]], list[Spans]]


def load(path: Path, limit: int | None) -> list[dict]:
    with path.open() as source:
        records = [json.loads(line) for line in source if line.strip()]
    return records[:limit] if limit else records


def ours(detector: Detector) -> Analyze:
    def analyze(fields: list[dict]) -> list[Spans]:
        found = detector.analyze([TextField(f["text"], f.get("key")) for f in fields])
        return [[(f.start, f.end, f.entity_type) for f in per_field] for per_field in found]
    return analyze


def stock() -> Analyze:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    engine = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": bundled_model_path()}]}
    ).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=engine)

    def analyze(fields: list[dict]) -> list[Spans]:
        return [[(r.start, r.end, r.entity_type) for r in analyzer.analyze(f["text"], language="en")]
                for f in fields]
    return analyze


def leaked(text: str, start: int, end: int, found: Spans) -> bool:
    covered = bytearray(len(text))
    for s, e, _ in found:
        covered[s:e] = b"\x01" * (e - s)
    return any(not all(covered[start + m.start():start + m.end()])
               for m in re.finditer(r"[A-Za-z0-9]+", text[start:end]))


def score(records: list[dict], analyze: Analyze) -> dict:
    total, missed = defaultdict(int), defaultdict(int)
    predicted, correct = defaultdict(int), defaultdict(int)
    negatives = altered = 0
    started = time.perf_counter()
    characters = 0
    for record in records:
        fields = record["fields"]
        found = analyze(fields)
        characters += sum(len(f["text"]) for f in fields)
        gold: dict[int, Spans] = defaultdict(list)
        for index, start, end, entity in record["spans"]:
            gold[index].append((start, end, entity))
            total[entity] += 1
            if leaked(fields[index]["text"], start, end, found[index]):
                missed[entity] += 1
        for index, per_field in enumerate(found):
            for start, end, entity in per_field:
                predicted[entity] += 1
                if any(start < g_end and g_start < end for g_start, g_end, _ in gold[index]):
                    correct[entity] += 1
        if record["kind"] == "negative":
            negatives += 1
            altered += any(found)
    elements = sum(total.values())
    return {
        "recall": {e: 1 - missed[e] / total[e] for e in sorted(total)},
        "elements": dict(sorted(total.items())),
        "recall_overall": 1 - sum(missed.values()) / elements if elements else 1.0,
        "precision": {e: correct[e] / predicted[e] for e in sorted(predicted)},
        "precision_overall": sum(correct.values()) / max(1, sum(predicted.values())),
        "negatives": negatives,
        "negatives_altered": altered / negatives if negatives else 0.0,
        "seconds": round(time.perf_counter() - started, 2),
        "characters": characters,
    }


def table(results: dict[str, dict]) -> str:
    names = list(results)
    first = results[names[0]]
    lines = ["| type | n | " + " | ".join(f"recall {n}" for n in names) + " | "
             + " | ".join(f"precision {n}" for n in names) + " |",
             "|---|---:|" + "---:|" * (2 * len(names))]
    types = sorted(set(first["elements"]) | {t for r in results.values() for t in r["precision"]})
    for entity in types:
        recalls = [f"{r['recall'][entity]:.1%}" if entity in r["recall"] else "" for r in results.values()]
        precisions = [f"{r['precision'][entity]:.1%}" if entity in r["precision"] else ""
                      for r in results.values()]
        lines.append(f"| {entity} | {first['elements'].get(entity, '')} | " + " | ".join(recalls) + " | "
                     + " | ".join(precisions) + " |")
    lines.append("| **overall** | " + str(sum(first["elements"].values())) + " | "
                 + " | ".join(f"**{r['recall_overall']:.2%}**" for r in results.values()) + " | "
                 + " | ".join(f"{r['precision_overall']:.1%}" for r in results.values()) + " |")
    lines.append("")
    for name, r in results.items():
        lines.append(f"{name}: hard negatives altered {r['negatives_altered']:.1%} of {r['negatives']}; "
                     f"{r['characters']} characters in {r['seconds']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--slice", type=int, default=None, help="only the first N records")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--stock", action="store_true", help="also score stock Presidio")
    args = parser.parse_args(argv)
    records = load(args.data, args.slice)
    results = {"phigate": score(records, ours(Detector.from_config(None)))}
    if args.stock:
        results["stock"] = score(records, stock())
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
