"""Prometheus metrics of the gateway, fed from the PHI-free flow record (phigate.context).

Every label value comes from a closed set: policy names, endpoint templates (`endpoint_template`),
status codes, refusal codes, stage names, entity types. Subjects, request ids, paths as sent,
PHI and tokens never become labels: a label is stored and shipped to the monitoring system in
the clear, and an unbounded label is also a memory leak.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
STAGES = ("identity", "guardrails", "masking", "approvals")  # request stages, pipeline order
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT"})
# Path words of the OpenAI API; any other segment (an object id, a caller's typo) is `{id}`.
API_WORDS = frozenset("""
    v1 chat completions responses input_items input_tokens compact embeddings models files content
    batches traces ingest moderations audio speech transcriptions translations images
    generations edits variations assistants threads messages runs steps submit_tool_outputs
    vector_stores file_batches uploads parts complete cancel fine_tuning jobs checkpoints
    events realtime sessions client_secrets conversations items evals containers
""".split())
MAX_SEGMENTS = 6
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


def endpoint_template(endpoint: str) -> str:
    """'POST /v1/responses/resp_123/input_items' -> 'POST /v1/responses/{id}/input_items'."""
    method, _, path = (endpoint or "").partition(" ")
    if method == "CONNECT":
        return "CONNECT"  # the target host is the caller's choice
    if method not in METHODS or not path.startswith("/"):
        return "other"
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if len(segments) > MAX_SEGMENTS:
        return f"{method} other"
    return method + " /" + "/".join(s if s in API_WORDS else "{id}" for s in segments)


def safe_code(value: object) -> str:
    """A code or name as a label; anything not shaped like one becomes 'other'."""
    text = str(value or "")
    return text if _SAFE_CODE.fullmatch(text) else "other"


class GatewayMetrics:
    """The gateway's metrics in their own registry (never the process-global one, so two
    gateways in one test process, or a library that registers its own, cannot collide)."""

    def __init__(self, checkpoint_time: Callable[[], float | None] = lambda: None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("phigate_requests", "Finished flows.",
                                ["endpoint", "status", "policy"], registry=r)
        self.refusals = Counter("phigate_refusals", "Requests the gateway answered itself.",
                                ["stage", "code"], registry=r)
        self.masking = Counter("phigate_masking_actions",
                               "Identifiers masked or re-identified, by entity type.",
                               ["entity", "direction"], registry=r)
        self.approvals = Counter("phigate_approvals", "Held requests by outcome.", ["outcome"],
                                 registry=r)
        self.approval_wait = Histogram("phigate_approval_wait_seconds",
                                       "Time a held request waited for its decision.",
                                       buckets=WAIT_BUCKETS, registry=r)
        self.stage_latency = Histogram("phigate_stage_duration_seconds",
                                       "Time spent in each stage of a request.", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.request_latency = Histogram("phigate_request_duration_seconds",
                                         "From request arrival to the flow's end.",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.audit_append = Histogram("phigate_audit_append_seconds",
                                      "Time to commit one audit record (queue wait included).",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("phigate_flows_in_flight", "Requests being handled.", registry=r)
        checkpoint_age = Gauge("phigate_audit_checkpoint_age_seconds",
                               "Seconds since the newest signed audit checkpoint (-1: none).",
                               registry=r)
        checkpoint_age.set_function(lambda: _age(checkpoint_time()))

    def observe_flow(self, record: dict, status: int | None, stages: dict[str, float],
                     duration: float | None) -> None:
        """Count one finished flow. `stages`: seconds per stage that ran (incl. "upstream")."""
        policy = safe_code((record.get("policy") or {}).get("name") or "none")
        self.requests.labels(endpoint_template(record.get("endpoint", "")),
                             str(status) if status else "none", policy).inc()
        refusal = record.get("refusal")
        if refusal:
            self.refusals.labels(safe_code(refusal.get("stage")), safe_code(refusal.get("code"))).inc()
        for action in record.get("masking") or []:
            self.masking.labels(safe_code(action.get("entity")),
                                safe_code(action.get("direction"))).inc(action.get("count") or 1)
        approval = record.get("approval")
        if approval:
            self.approvals.labels(safe_code(approval.get("state"))).inc()
            if "approvals" in stages:
                self.approval_wait.observe(stages["approvals"])
        for stage, seconds in stages.items():
            self.stage_latency.labels(stage).observe(seconds)
        if duration is not None:
            self.request_latency.observe(duration)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def _age(moment: float | None) -> float:
    return -1.0 if moment is None else max(0.0, time.time() - moment)
