"""Audit records as HTTP exchanges, and the comparison of a replay with its original.

Plain data only (no mitmproxy): `phigate flows export` turns an `Exchange` into a mitmproxy
flow, and `phigate replay` compares the records the original and its replay left in the log.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from phigate.audit.store import AuditError, AuditStore

OPENAI_URL = "https://api.openai.com"
BodyChoice = Literal["forwarded", "received"]


@dataclass(frozen=True)
class Exchange:
    """One recorded request and the answer the caller got, ready to become a flow."""

    record_id: str
    method: str
    path: str
    started: float
    finished: float
    request_body: bytes
    status: int | None
    response_body: bytes
    record: dict  # the PHI-free audit record


def endpoint_parts(record: dict) -> tuple[str, str] | None:
    """(method, path) of a recorded HTTP request; None for CONNECT and other non-requests."""
    method, _, path = (record.get("endpoint") or "").partition(" ")
    return (method, path) if method and path.startswith("/") else None


def exchange(entry: dict, bodies: dict[str, bytes],
             body: BodyChoice = "forwarded") -> Exchange | None:
    """The exchange of one log entry (`AuditStore.get`) with its decrypted bodies.

    `forwarded` gives the request as it went to OpenAI (masked); a request that was never
    forwarded then has no body, so a shared file holds no more PHI than OpenAI saw.
    `received` gives the request as the caller sent it."""
    record = entry["record"]
    parts = endpoint_parts(record)
    if parts is None:
        return None
    started = float(record.get("started") or entry["logged"])
    kind = "upstream_request" if body == "forwarded" else "client_request"
    return Exchange(
        record_id=entry["id"],
        method=parts[0],
        path=parts[1],
        started=started,
        finished=float(record.get("finished") or entry["logged"]),
        request_body=bodies.get(kind, b""),
        status=record.get("status"),
        response_body=bodies.get("client_response", b""),
        record=record,
    )


def selected_entries(store: AuditStore, ids: Sequence[str] = (),
                     **filters: Any) -> Iterator[dict]:
    """Log entries matching the search filters (`AuditStore.search` names) and, when given,
    whose record id is one of `ids`, in log order. An unknown id raises AuditError."""
    wanted = set()
    for record_id in ids:
        seq = store.lookup(record_id)
        if seq is None:
            raise AuditError(f"no record {record_id}")
        wanted.add(seq)
    for row in store.iter_summaries(**filters):
        if not ids or row["seq"] in wanted:
            yield store.get(row["seq"])


def content_encoding(body: bytes) -> str | None:
    """The content-encoding a stored body still carries (bodies are kept as sent)."""
    if body[:2] == b"\x1f\x8b":
        return "gzip"
    if body[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


def _json_or_bytes(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        if content_encoding(body) == "gzip":
            body = gzip.decompress(body)
        return json.loads(body)
    except (ValueError, OSError, EOFError, zlib.error):
        return body


def differing_paths(a: Any, b: Any, path: str = "") -> list[str]:
    """JSON paths where two documents differ (paths name keys and indexes, never values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for key in sorted(a.keys() | b.keys(), key=str)
                for p in differing_paths(a.get(key), b.get(key), f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b))
                for p in differing_paths(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "$"]


def decisions(record: dict) -> list[dict]:
    """The decisions that must agree: stage, decision and rule (details carry counts only)."""
    return [{"stage": d.get("stage"), "decision": d.get("decision"), "rule": d.get("rule")}
            for d in record.get("decisions") or [] if isinstance(d, dict)]


@dataclass
class ReplayResult:
    record_id: str
    replay_id: str | None
    recorded_decisions: list[dict]
    replayed_decisions: list[dict]
    differences: list[str] = field(default_factory=list)

    @property
    def match(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict:
        return {"id": self.record_id, "replay_id": self.replay_id, "match": self.match,
                "differences": self.differences, "recorded_decisions": self.recorded_decisions,
                "replayed_decisions": self.replayed_decisions}


def compare(original: dict, original_bodies: dict[str, bytes],
            replay: dict, replay_bodies: dict[str, bytes]) -> list[str]:
    """What differs between a record and its replay's: decisions, and the request body that
    went (or would have gone) upstream, compared as JSON. Descriptions hold no values."""
    differences = []
    if decisions(original) != decisions(replay):
        differences.append("decisions")
    before = _json_or_bytes(original_bodies.get("upstream_request"))
    after = _json_or_bytes(replay_bodies.get("upstream_request"))
    if (before is None) != (after is None):
        differences.append("upstream_request: not forwarded "
                           + ("by the replay" if after is None else "originally"))
    elif isinstance(before, bytes) or isinstance(after, bytes):
        if before != after:
            differences.append("upstream_request: body differs")
    else:
        differences.extend(f"upstream_request: {p}" for p in differing_paths(before, after))
    return differences
