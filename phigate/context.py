"""The per-flow record: one plain dict per request, stored in `flow.metadata["phigate"]`.

Every stage writes what it decided here; the recorder writes it to the audit log. It holds only
tnetstring-serializable values (mitmproxy must be able to save the flow) and never a PHI value,
a token or a key: masking actions name paths and entity types, identities name subjects.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

KEY = "phigate"


def start(metadata: dict, *, client: str, mode: str, method: str, path: str) -> dict[str, Any]:
    """Create the record for a new request (idempotent: a replayed flow keeps its record)."""
    record = metadata.get(KEY)
    if record is None:
        record = {
            "request_id": uuid.uuid4().hex,
            "started": time.time(),
            "client": client,
            "mode": mode,
            "endpoint": f"{method} {path.split('?', 1)[0]}",
            "decisions": [],
            "masking": [],
        }
        metadata[KEY] = record
    return record


def get(metadata: dict) -> dict[str, Any] | None:
    return metadata.get(KEY)


def decide(record: dict, stage: str, decision: str, rule: str = "", detail: str = "") -> None:
    record.setdefault("decisions", []).append(
        {"stage": stage, "decision": decision, "rule": rule, "detail": detail}
    )


def refuse(record: dict, stage: str, status: int, code: str) -> None:
    record["refusal"] = {"status": status, "code": code, "stage": stage}
    decide(record, stage, "refuse", rule=code)


def fail(record: dict, stage: str, exc: BaseException) -> None:
    """Note a stage failure by exception class only: messages may carry PHI."""
    record["error"] = {"stage": stage, "kind": type(exc).__name__}
