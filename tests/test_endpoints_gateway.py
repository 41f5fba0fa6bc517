"""The other text-bearing endpoints through the gateway: embeddings, legacy completions, and
the Agents SDK's trace export (inputs and outputs of every step)."""

from __future__ import annotations

import httpx

from .test_pipeline import MODEL, client
from .test_masking_gateway import PHI, leaked


def test_embeddings_input_is_masked(gateway, fresh_upstream, mint):
    result = client(gateway, mint("svc-embed", "clinicians"), "reverse").embeddings.create(
        model="text-embedding-3-small",
        input=["Margaret Whitfield, MRN 4452817, chest pain", "no PHI here"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    (sent,) = fresh_upstream.received
    assert leaked(sent.body.decode()) == [] and "chest pain" in sent.body.decode()


def test_legacy_completions_prompt_is_masked(gateway, fresh_upstream, mint):
    result = client(gateway, mint("svc-legacy", "clinicians"), "reverse").completions.create(
        model="gpt-4o-mini", prompt="Discharge note for Margaret Whitfield (DOB 1948-03-17):")
    assert result.choices[0].text
    assert leaked(fresh_upstream.received[0].body.decode()) == []
    assert leaked(result.choices[0].text) == []


def test_agents_trace_export_is_masked(gateway, fresh_upstream, mint):
    span = {"object": "trace.span", "id": "span_1", "trace_id": "trace_1", "span_data": {
        "type": "function", "name": "get_patient_record",
        "input": '{"patient_name": "Margaret Whitfield"}',
        "output": '{"name": "Margaret Whitfield", "phone": "(617) 555-0142"}'}}
    response = httpx.post(f"{gateway.reverse_url}/v1/traces/ingest",
                          headers={"authorization": f"Bearer {mint('svc-trace', 'clinicians')}"},
                          json={"data": [{"object": "trace", "id": "trace_1",
                                          "workflow_name": "chart"}, span]})
    assert response.status_code in (200, 204), response.text
    (sent,) = fresh_upstream.received
    assert leaked(sent.body.decode()) == []
    assert "get_patient_record" in sent.body.decode()
    assert PHI  # the shared list of test values
