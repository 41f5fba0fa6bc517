"""Metrics, readiness endpoints and structured logs of a running gateway (in-process)."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from phigate.addons.embedded import RunningGateway
from phigate.addons.gateway import pipeline
from phigate.addons.observability import Observability, StageClock
from phigate.addons.recorder import Recorder
from phigate.identity import DevIssuer
from phigate.ops.metrics import endpoint_template

from .test_pipeline import MODEL, client, record_for

PHI_PROMPT = ("Patient Margaret Whitfield, MRN 4452817, born 1948-03-17, phone 413-555-0142, "
              "lives at 12 Elm Street, Springfield. Summarise her HbA1c trend.")
PHI_VALUES = ["Margaret", "Whitfield", "4452817", "1948-03-17", "555-0142", "Elm Street"]


def observed_pipeline() -> list:
    """The shipped pipeline with the stage clock and observability placed as gateway.py
    should place them (identity..approvals marks, the recording mark, Observability after the
    recorder); a no-op once gateway.py does so itself."""
    addons = pipeline()
    if any(isinstance(a, Observability) for a in addons):
        return addons
    clock = StageClock()
    names = {"Identity": "identity", "Guardrails": "guardrails", "Masking": "masking",
             "Approvals": "approvals"}
    placed = []
    for addon in addons:
        if isinstance(addon, Recorder):
            placed += [clock.before_recording(), addon, Observability(clock)]
            continue
        placed.append(addon)
        if type(addon).__name__ in names:
            placed.append(clock.after(names[type(addon).__name__]))
    return placed


@pytest.fixture(scope="module")
def observed(tmp_path_factory, upstream):
    with RunningGateway(tmp_path_factory.mktemp("home"), upstream=upstream.url,
                        upstream_ca=str(upstream.tls.ca_cert), addons=observed_pipeline(),
                        options={"admin_listen": "127.0.0.1:0"}) as running:
        yield running


@pytest.fixture(scope="module")
def admin(observed):
    return observed.master.addons.get("admin").url()


def scrape(admin: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}, via Prometheus' own parser."""
    response = httpx.get(admin + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def token(gateway, sub: str, group: str) -> str:
    return DevIssuer(gateway.home.issuer_dir).mint(sub, [group])


def test_endpoint_templates_hide_ids_and_arbitrary_paths():
    assert endpoint_template("POST /v1/chat/completions") == "POST /v1/chat/completions"
    assert (endpoint_template("GET /v1/responses/resp_9f3a/input_items")
            == "GET /v1/responses/{id}/input_items")
    assert endpoint_template("GET /v1/files/Margaret-Whitfield.pdf/content") == (
        "GET /v1/files/{id}/content")
    assert endpoint_template("CONNECT evil.example:443") == "CONNECT"
    assert endpoint_template("BREW /coffee") == "other"


def test_metrics_count_requests_refusals_masking_and_stage_latency(observed, admin,
                                                                   fresh_upstream):
    before = scrape(admin)
    good = client(observed, token(observed, "dr-metrics", "clinicians"), "reverse")
    for _ in range(3):
        good.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PHI_PROMPT}])
    with pytest.raises(openai.AuthenticationError):
        client(observed, "not-a-token", "reverse").models.list()
    with pytest.raises(openai.PermissionDeniedError):  # approvers may only list models
        client(observed, token(observed, "boss", "phi-approvers"), "reverse").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])

    after = scrape(admin)
    delta = {key: v - before.get(key, 0.0) for key, v in after.items()}
    assert value(delta, "phigate_requests_total", endpoint="POST /v1/chat/completions",
                 status="200", policy="clinicians") == 3
    assert value(delta, "phigate_refusals_total", stage="identity", code="token_missing") == 1
    assert sum(v for (name, labels), v in delta.items()
               if name == "phigate_refusals_total" and ("stage", "guardrails") in labels) == 1
    assert value(delta, "phigate_masking_actions_total", entity="PERSON", direction="request") >= 3
    for stage in ("identity", "guardrails", "masking", "upstream"):
        assert value(delta, "phigate_stage_duration_seconds_count", stage=stage) >= 3, stage
    assert value(delta, "phigate_audit_append_seconds_count") == 5
    assert value(after, "phigate_flows_in_flight") == 0
    # No label anywhere carries a subject, a token or a PHI value.
    labels = json.dumps([dict(labels) for _, labels in after])
    for secret in ["dr-metrics", "boss", "not-a-token", *PHI_VALUES]:
        assert secret not in labels


def test_logs_of_a_run_that_masked_phi_hold_no_phi_or_token(observed, fresh_upstream, capfd,
                                                             caplog):
    caplog.set_level(logging.DEBUG)  # every logger, mitmproxy's included
    caller = token(observed, "dr-logs", "clinicians")
    raw = client(observed, caller, "forward").chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": PHI_PROMPT}])
    request_id = raw.headers["x-phigate-request-id"]
    assert "Whitfield" not in fresh_upstream.received[0].body.decode()  # it really was masked
    record_for(observed, request_id)

    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    flow = [e for e in lines if e["event"] == "flow" and e["request_id"] == request_id]
    assert len(flow) == 1 and flow[0]["status"] == 200 and flow[0]["policy"] == "clinicians"
    assert flow[0]["masked"].get("request:PERSON", 0) >= 1
    assert {d["stage"] for d in flow[0]["decisions"]} >= {"identity", "guardrails", "masking",
                                                          "upstream"}
    assert not [e for e in lines if e["event"] != "flow"]  # one line per flow, nothing else
    assert [v for v in [*PHI_VALUES, caller, "dr-logs"] if v in logged] == []


def test_log_json_option_turns_the_lines_off(observed, capfd):
    observed.call(lambda: observed.master.options.update(log_json=False))
    try:
        client(observed, token(observed, "dr-quiet", "clinicians"), "reverse").models.list()
        assert '"event"' not in capfd.readouterr().err
    finally:
        observed.call(lambda: observed.master.options.update(log_json=True))


def test_healthz_and_readyz_report_each_check(observed, admin):
    assert httpx.get(admin + "/healthz").json() == {"ok": True}
    ready = httpx.get(admin + "/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"accepting", "policies", "detector", "audit",
                                           "upstream_key"}
    assert httpx.post(admin + "/metrics").status_code == 405
    assert httpx.get(admin + "/approvals").status_code == 200  # the approvals app still answers


def test_readyz_fails_without_an_upstream_key(observed, admin, tmp_path):
    options = observed.master.options
    key_file = options.upstream_key_file
    observed.call(lambda: options.update(upstream_key_file=str(tmp_path / "no-such-key")))
    try:
        ready = httpx.get(admin + "/readyz")
    finally:
        observed.call(lambda: options.update(upstream_key_file=key_file))
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["upstream_key"] == {"ok": False, "reason": "no upstream key for default"}
    assert all(c["ok"] for name, c in checks.items() if name != "upstream_key")
    assert httpx.get(admin + "/readyz").status_code == 200


def test_approval_outcome_and_wait_time_are_measured(observed, admin, fresh_upstream):
    before = scrape(admin)
    store = observed.master.addons.get("approvals").store
    answer: list[httpx.Response] = []
    caller = client(observed, token(observed, "dr-held-metrics", "clinicians"), "reverse")
    held = threading.Thread(target=lambda: answer.append(
        caller.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=5000, messages=[{"role": "user", "content": "Long summary"}])))
    held.start()
    deadline = time.time() + 10
    while not (pending := store.list()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a measurable wait
    store.decide(pending[0].id, {"iss": "urn:test", "sub": "officer-ann",
                                 "groups": ["phi-approvers"]}, "approve", "fine")
    held.join(10)
    assert answer[0].status_code == 200

    after = scrape(admin)
    assert value(after, "phigate_approvals_total", outcome="approved") - value(
        before, "phigate_approvals_total", outcome="approved") == 1
    waits = value(after, "phigate_approval_wait_seconds_count") - value(
        before, "phigate_approval_wait_seconds_count")
    waited = value(after, "phigate_approval_wait_seconds_sum") - value(
        before, "phigate_approval_wait_seconds_sum")
    assert waits == 1 and 0.5 <= waited < 10
    assert value(after, "phigate_approval_wait_seconds_bucket", le="1.0") - value(
        before, "phigate_approval_wait_seconds_bucket", le="1.0") == 1


def test_checkpoint_age_follows_the_newest_signed_checkpoint(observed, admin):
    recorder = observed.master.addons.get("recorder")
    recorder.writer.call(recorder.store.checkpoint).result(10)  # the recorder's own thread
    age = value(scrape(admin), "phigate_audit_checkpoint_age_seconds")
    assert 0 <= age < 5
    time.sleep(1.1)
    assert value(scrape(admin), "phigate_audit_checkpoint_age_seconds") >= age + 1
