"""Synthetic request material, built from the labeled evaluation set in scripts/eval/.

Social Security numbers are replaced by "[on file]": the default policy refuses them
(`forbidden_entities: [US_SSN]`), which would time a refusal instead of masking."""

from __future__ import annotations

import json
from pathlib import Path

from bench_detect import NOTE_250  # the ~250-character note scripts/bench_detect.py times

EVAL_DATA = Path(__file__).parents[1] / "eval" / "phi_eval.jsonl"
MODEL = "gpt-4o-mini"
REPLACEMENTS = {"US_SSN": lambda _: "[on file]"}
SMALL_PROMPT = "What is the usual adult starting dose of metformin? Question {i}."
# A streamed answer (no PHI) of 390 characters; its pacing comes from the upstream's headers.
STREAM_REPLY = ("Heart failure with reduced ejection fraction is managed with four drug classes: "
                "an ARNI or ACE inhibitor, a beta blocker such as metoprolol succinate, a "
                "mineralocorticoid antagonist and an SGLT2 inhibitor. Titrate every two weeks as "
                "blood pressure and potassium allow, recheck renal function after each change, "
                "and use loop diuretics for congestion. Review the plan at each follow-up visit.")


def _neutralised(record: dict) -> list[dict]:
    """The record's fields with the spans the bench cannot send replaced (see above)."""
    fields = [dict(f) for f in record["fields"]]
    for index, start, end, entity in sorted(record["spans"], key=lambda s: -s[1]):
        if entity in REPLACEMENTS:
            text = fields[index]["text"]
            fields[index]["text"] = text[:start] + REPLACEMENTS[entity](text[start:end]) + text[end:]
    return fields


def _raw(kind: str) -> list[dict]:
    with EVAL_DATA.open() as source:
        return [r for r in map(json.loads, filter(str.strip, source)) if r["kind"] == kind]


def _records(kind: str) -> list[list[dict]]:
    return [_neutralised(r) for r in _raw(kind)]


def note_variant(i: int) -> str:
    """The ~250-character note, never seen before by any cache (a visit number differs)."""
    return f"{NOTE_250} Visit {i}."


def clinical_prompts(count: int, size: int = 2048) -> list[str]:
    """`count` distinct ~2 KB clinical prompts with PHI: synthetic notes joined end to end."""
    notes = [fields[0]["text"] for fields in _records("note")]
    prompts = []
    for i in range(count):
        parts, length, j = [f"Case {i}: summarise and suggest next steps."], 0, i
        while length < size:
            parts.append(notes[j % len(notes)])
            length += len(parts[-1]) + 1
            j += 7
        prompts.append("\n".join(parts)[:size])
    return prompts


def _span_fields(record: dict) -> tuple[list[dict], list[dict]]:
    """A FHIR record's leaves split into identifiers (labeled spans) and the rest."""
    fields = _neutralised(record)
    labeled = {span[0] for span in record["spans"]}
    return ([f for i, f in enumerate(fields) if i in labeled],
            [f for i, f in enumerate(fields) if i not in labeled])


AGENT_TOOL = {"type": "function", "name": "get_patient_record",
              "description": "Fetch one FHIR resource of the patient by chart number.",
              "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                             "required": ["query"]}}


def agent_conversation(seed: int, turns: int) -> list[list[dict]]:
    """The Responses API `input` of each turn of one agent conversation about one patient: every
    turn resends all earlier items plus a new user message, a function call and its FHIR output
    (the patient's identifiers with another resource's clinical leaves each turn)."""
    records = _raw("fhir")
    patient, _ = _span_fields(records[seed % len(records)])
    opening = _records("query")[seed % 300][0]["text"]
    follow_ups = [fields[0]["text"] for fields in _records("negative")]
    history: list[dict] = [{"role": "system", "content": "You are a careful clinical assistant."}]
    inputs = []
    for turn in range(turns):
        _, clinical = _span_fields(records[(seed * turns + turn + 1) % len(records)])
        resource = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
            "resourceType": "Patient", "id": f"pt-{seed}",
            "element": [{f["key"]: f["text"]} for f in patient + clinical]}}]}
        call_id = f"call_{seed}_{turn}"
        question = opening if turn == 0 else follow_ups[(seed * turns + turn) % len(follow_ups)]
        history += [
            {"role": "user", "content": question},
            {"type": "function_call", "call_id": call_id, "name": "get_patient_record",
             "arguments": json.dumps({"query": f"chart {seed}, resource {turn}"})},
            {"type": "function_call_output", "call_id": call_id, "output": json.dumps(resource)},
        ]
        inputs.append([dict(item) for item in history])
        history.append({"role": "assistant",
                        "content": f"Reviewed resource {turn} of the record; continuing."})
    return inputs


def texts_of(items: list[dict]) -> list[str]:
    """The text a gateway without caching re-analyses on one turn (each item's text)."""
    texts = []
    for item in items:
        for name in ("content", "arguments", "output"):
            if isinstance(item.get(name), str):
                texts.append(item[name])
    return texts
