"""Structured log lines: one JSON object per finished flow, its decisions inside.

Built only from the PHI-free flow record, and only from the parts of it that are safe to ship
to a log system with wider access than the audit log: no subject, no body, no token, no key.
The request id ties each line to its audit record and to the `x-phigate-request-id` header.
One line per flow, not one per decision: a flow's story stays in one event, and the gateway
makes one write per request instead of five.
"""

from __future__ import annotations

import json
import logging
import sys

from phigate.ops.metrics import endpoint_template, safe_code

LOGGER = "phigate.events"


def flow_event(record: dict, status: int | None, stages: dict[str, float],
               duration: float | None) -> dict:
    refusal = record.get("refusal") or {}
    error = record.get("error") or {}
    masked: dict[str, int] = {}
    for action in record.get("masking") or []:
        key = f"{action.get('direction')}:{safe_code(action.get('entity'))}"
        masked[key] = masked.get(key, 0) + int(action.get("count") or 1)
    event = {
        "event": "flow",
        "request_id": record.get("request_id"),
        "mode": record.get("mode"),
        "endpoint": endpoint_template(record.get("endpoint", "")),
        "status": status,
        "policy": (record.get("policy") or {}).get("name"),
        "groups": list((record.get("identity") or {}).get("groups") or []),
        "refusal": {"stage": refusal.get("stage"), "code": refusal.get("code")} if refusal else None,
        "error": {"stage": error.get("stage"), "kind": safe_code(error.get("kind"))} if error else None,
        "masked": masked,
        "approval": (record.get("approval") or {}).get("state"),
        "decisions": decisions(record),
        "upstream_status": (record.get("upstream") or {}).get("status"),
        "stages_ms": {stage: round(seconds * 1000, 2) for stage, seconds in stages.items()},
        "duration_ms": round(duration * 1000, 2) if duration is not None else None,
    }
    return {k: v for k, v in event.items() if v not in (None, {}, [])}


def decisions(record: dict) -> list[dict]:
    """Each stage's decision, rule and detail (rule names and counts, never values)."""
    listed = []
    for d in record.get("decisions") or []:
        entry = {"stage": d.get("stage"), "decision": d.get("decision"),
                 "rule": d.get("rule") or None, "detail": d.get("detail") or None}
        listed.append({k: v for k, v in entry.items() if v is not None})
    return listed


class JsonFormatter(logging.Formatter):
    """The event dict (the log call's only argument) as one JSON line, with time and level."""

    def format(self, entry: logging.LogRecord) -> str:
        event = entry.args if isinstance(entry.args, dict) else {"message": entry.getMessage()}
        line = {"time": round(entry.created, 3), "level": entry.levelname.lower(), **event}
        return json.dumps({k: v for k, v in line.items() if v is not None},
                          separators=(",", ":"), default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged (not when the handler was made),
    so redirections made later (a test's capture, a supervisor) see the lines."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass
