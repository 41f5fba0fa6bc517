"""The local OpenAI upstream against the real openai and openai-agents SDKs, over verified TLS."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import json
import math
import ssl
import struct
import subprocess
import sys
import time

import agents
import httpx
import httpx2
import openai
import pydantic
import pytest
from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool
from agents.tracing.processors import BackendSpanExporter
from agents.tracing.traces import TraceImpl
from cryptography import x509

from phigate.localupstream import (
    ADMIN_PATH,
    LocalUpstream,
    ReceivedRequest,
    credential_fingerprint,
    make_test_tls,
)
from phigate.localupstream.model import tool_arguments
from phigate.localupstream.testing import running_upstream

LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_patient",
        "description": "Find a patient record",
        "parameters": {
            "type": "object",
            "properties": {"mrn": {"type": "string"}, "visits": {"type": "integer"}},
            "required": ["mrn", "visits"],
        },
    },
}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    with running_upstream(tmp_path_factory.mktemp("upstream")) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_record(request):
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").clear()


@pytest.fixture(autouse=True, scope="module")
def _no_trace_export():
    # The Agents SDK would otherwise export traces to api.openai.com in the background. Left
    # disabled afterwards: turning it back on could let a later test reach the real host.
    agents.set_tracing_disabled(True)


def ca_file(upstream: LocalUpstream) -> str:
    assert upstream.tls is not None
    return str(upstream.tls.ca_cert)


def verify(upstream: LocalUpstream) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file(upstream))


def sync_client(upstream: LocalUpstream, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.url + "/v1", api_key="test", max_retries=0,
                         http_client=httpx.Client(verify=verify(upstream)), **options)


def async_client(upstream: LocalUpstream) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="test", max_retries=0,
                              http_client=httpx.AsyncClient(verify=verify(upstream)))


# Chat Completions ---------------------------------------------------------------------------


def test_chat_non_streamed_echoes_the_last_user_message(upstream):
    client = sync_client(upstream)
    reply = client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "Patient John Smith,"},
                                     {"type": "text", "text": "DOB 04/12/1961"}]},
    ])
    assert reply.choices[0].message.content == "Received: Patient John Smith, DOB 04/12/1961"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == (
        reply.usage.prompt_tokens + reply.usage.completion_tokens
    )
    [received] = upstream.received
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == "Bearer test"
    assert received.json["messages"][3]["content"][1]["text"] == "DOB 04/12/1961"
    assert json.loads(received.body) == received.json


def test_chat_streamed_with_usage(upstream):
    client = sync_client(upstream)
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
        messages=[{"role": "user", "content": "one two three four five six seven"}],
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks
              if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == "Received: one two three four five six seven"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == math.ceil(
        len("Received: one two three four five six seven") / 4
    )
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.obfuscation is None for c in chunks)


def test_chat_tool_call_round_trip_async(upstream):
    async def conversation():
        client = async_client(upstream)
        messages = [{"role": "user", "content": "Open the chart of mrn: MRN-0042 please"}]
        first = await client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=[LOOKUP_TOOL]
        )
        call = first.choices[0].message.tool_calls[0]
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "chart of MRN-0042: stable"},
        ]
        second = await client.chat.completions.create(
            model="gpt-4o", messages=messages, tools=[LOOKUP_TOOL]
        )
        return first, second

    first, second = asyncio.run(conversation())
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup_patient"
    assert json.loads(call.function.arguments) == {"mrn": "MRN-0042", "visits": 1}
    assert second.choices[0].message.content == (
        "Received: Open the chart of mrn: MRN-0042 please | Tool result: chart of MRN-0042: stable"
    )
    sent = upstream.received[1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2]["role"] == "tool"


def test_chat_streamed_tool_call_arrives_in_fragments(upstream):
    async def stream():
        client = async_client(upstream)
        response = await client.chat.completions.create(
            model="gpt-4o", stream=True, tools=[LOOKUP_TOOL],
            messages=[{"role": "user", "content": "mrn=A17 visits=3"}],
        )
        return [chunk async for chunk in response]

    chunks = asyncio.run(stream())
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "lookup_patient"
    fragments = [d.function.arguments for d in deltas if d.function.arguments]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"mrn": "A17", "visits": 3}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_forced_reply_and_tool_arguments(upstream):
    client = sync_client(upstream)
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-localupstream-reply": "Jane Doe, SSN 123-45-6789"},
    )
    assert reply.choices[0].message.content == "Jane Doe, SSN 123-45-6789"
    call = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], tools=[LOOKUP_TOOL],
        extra_headers={"x-localupstream-tool-args": '{"mrn": "12345678", "visits": 2}'},
    ).choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"mrn": "12345678", "visits": 2}


def test_one_character_deltas_paced_by_delay(upstream):
    client = sync_client(upstream)
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "abc"}],
        extra_headers={"x-localupstream-delta-size": "1", "x-localupstream-delay-ms": "20"},
    )
    arrivals, pieces, padded = [], [], []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            pieces.append(chunk.choices[0].delta.content)
            padded.append(chunk)
    assert pieces == list("Received: abc")
    assert all(chunk.obfuscation for chunk in padded)  # OpenAI pads deltas by default
    # Events are paced, not buffered: the last delta arrives well after the first.
    assert arrivals[-1] - arrivals[0] >= 0.02 * (len(pieces) - 1) * 0.9


# Responses ----------------------------------------------------------------------------------


def test_responses_non_streamed(upstream):
    client = sync_client(upstream)
    response = client.responses.create(
        model="gpt-4.1", instructions="Be brief.", input="Summarise the visit of Mr Brown"
    )
    assert response.status == "completed"
    assert response.output_text == "Received: Summarise the visit of Mr Brown"
    assert response.instructions == "Be brief."
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert upstream.received[0].json["instructions"] == "Be brief."


RESPONSE_TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.content_part.added", "response.output_text.delta", "response.output_text.done",
    "response.content_part.done", "response.output_item.done", "response.completed",
]


def test_responses_streamed_text_events(upstream):
    client = sync_client(upstream)
    events = list(client.responses.create(
        model="gpt-4.1", stream=True,
        input=[{"role": "user",
                "content": [{"type": "input_text", "text": "call Dr Who at 555-0100"}]}],
    ))
    kinds = [e.type for e in events]
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert collapsed == RESPONSE_TEXT_EVENTS
    assert kinds.count("response.output_text.delta") > 1
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "Received: call Dr Who at 555-0100"
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in deltas) == text
    assert all(isinstance(e.obfuscation, str) and e.obfuscation for e in deltas)
    done = {e.type: e for e in events}
    assert done["response.output_text.done"].text == text
    assert done["response.content_part.done"].part.text == text
    assert done["response.output_item.done"].item.content[0].text == text
    assert done["response.completed"].response.output_text == text
    assert done["response.completed"].response.usage.output_tokens > 0
    assert done["response.created"].response.status == "in_progress"


def test_responses_streamed_function_call_round_trip_async(upstream):
    tool = {"type": "function", "name": "lookup_patient", "strict": True,
            "parameters": LOOKUP_TOOL["function"]["parameters"]}

    async def conversation():
        client = async_client(upstream)
        user = {"role": "user", "content": "find mrn: Z-981"}
        stream = await client.responses.create(model="gpt-4.1", input=[user], tools=[tool],
                                               stream=True)
        events = [event async for event in stream]
        call = events[-1].response.output[0]
        follow_up = await client.responses.create(model="gpt-4.1", tools=[tool], input=[
            user,
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id,
             "output": "Z-981: discharged"},
        ])
        return events, follow_up

    events, follow_up = asyncio.run(conversation())
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        *["response.function_call_arguments.delta"] * (len(events) - 6),
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    assert len(events) > 7  # the arguments arrived in several fragments
    added = events[2].item
    assert (added.type, added.arguments, added.name) == ("function_call", "", "lookup_patient")
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert json.loads(arguments) == {"mrn": "Z-981", "visits": 1}
    assert events[-3].arguments == arguments == events[-1].response.output[0].arguments
    assert follow_up.output_text == "Received: find mrn: Z-981 | Tool result: Z-981: discharged"


class Chart(pydantic.BaseModel):
    mrn: str
    summary: str


def test_structured_output_follows_the_schema(upstream):
    client = sync_client(upstream)
    parsed = client.chat.completions.parse(
        model="gpt-4o", response_format=Chart,
        messages=[{"role": "user", "content": "mrn: Q-5 needs a summary"}],
    ).choices[0].message.parsed
    assert parsed == Chart(mrn="Q-5", summary="Received: mrn: Q-5 needs a summary")
    response = client.responses.parse(model="gpt-4.1", input="mrn=R-6", text_format=Chart)
    assert response.output_parsed == Chart(mrn="R-6", summary="Received: mrn=R-6")


# Embeddings, models, legacy completions -------------------------------------------------------


def test_embeddings_float_and_base64_agree(upstream):
    client = sync_client(upstream)
    default = client.embeddings.create(model="text-embedding-3-small", input=["aspirin", "MRN 42"])
    floats = client.embeddings.create(model="text-embedding-3-small", input=["aspirin", "MRN 42"],
                                      encoding_format="float")
    assert upstream.received[0].json["encoding_format"] == "base64"  # the SDK's default
    assert upstream.received[1].json["encoding_format"] == "float"
    assert [len(d.embedding) for d in default.data] == [1536, 1536]
    for coded, plain in zip(default.data, floats.data):
        assert coded.embedding == pytest.approx(plain.embedding)
    assert math.isclose(sum(v * v for v in plain.embedding), 1.0, rel_tol=1e-5)
    assert default.data[0].embedding != default.data[1].embedding
    again = client.embeddings.create(model="text-embedding-3-small", input="aspirin",
                                     dimensions=8, encoding_format="float")
    assert len(again.data[0].embedding) == 8


def test_embeddings_base64_wire_format(upstream):
    raw = httpx.post(upstream.url + "/v1/embeddings", verify=verify(upstream), json={
        "model": "text-embedding-3-small", "input": "x", "dimensions": 4,
        "encoding_format": "base64",
    }).json()
    vector = struct.unpack("<4f", base64.b64decode(raw["data"][0]["embedding"]))
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)


def test_models_list_and_retrieve(upstream):
    client = sync_client(upstream)
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids and "text-embedding-3-small" in ids
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert raised.value.code == "model_not_found"


def test_legacy_completions(upstream):
    client = sync_client(upstream)
    plain = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert plain.choices[0].text == "Received: Say hi"
    streamed = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi",
                                              stream=True))
    assert "".join(c.choices[0].text for c in streamed) == "Received: Say hi"


# Errors, hooks and transport ------------------------------------------------------------------


def test_forced_failure_is_openai_shaped(upstream):
    client = sync_client(upstream)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-localupstream-fail": "429"})
    assert raised.value.status_code == 429 and raised.value.code == "rate_limit_exceeded"
    retrying = sync_client(upstream).with_options(max_retries=1)
    with pytest.raises(openai.InternalServerError):
        retrying.models.list(extra_headers={"x-localupstream-fail": "503"})
    assert len(upstream.received) == 3  # one 429, then a 503 and its retry


def test_bad_json_and_unknown_path(upstream):
    with httpx.Client(verify=verify(upstream)) as client:
        bad = client.post(upstream.url + "/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
        unknown = client.post(upstream.url + "/v1/nothing-here", json={})
        missing = client.post(upstream.url + "/v1/chat/completions", json={"model": "gpt-4o"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404 and "/v1/nothing-here" in unknown.json()["error"]["message"]
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    assert upstream.received[0].json is None and upstream.received[0].body == b"{not json"


def test_api_key_is_enforced_when_configured(tmp_path):
    with running_upstream(tmp_path, api_key="sk-upstream") as keyed:
        with pytest.raises(openai.AuthenticationError):
            sync_client(keyed).models.list()
        good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-upstream",
                             http_client=httpx.Client(verify=verify(keyed)))
        assert good.models.list().data


def test_tls_is_verified_against_the_test_ca(upstream, tmp_path):
    other = make_test_tls(tmp_path / "other", extra_names=["api.openai.com"])
    assert other.key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == [
        "ca.pem", "cert.pem", "key.pem"]  # the CA's key is never written
    with pytest.raises(httpx.ConnectError):
        httpx.get(upstream.url + "/v1/models",
                  verify=ssl.create_default_context(cafile=other.ca_cert))
    leaf = x509.load_pem_x509_certificate(other.cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "api.openai.com"]
    # httpx2 (the openai SDK's default transport) verifies against the same CA file.
    assert httpx2.get(upstream.url + "/v1/models", verify=verify(upstream)).status_code == 200


def test_dropped_stream_ends_without_terminator(upstream):
    client = sync_client(upstream)
    stream = client.responses.create(model="gpt-4.1", input="hello", stream=True,
                                     extra_headers={"x-localupstream-drop-after": "3"})
    seen = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for event in stream:
            seen.append(event.type)
    assert seen == RESPONSE_TEXT_EVENTS[:3]


def test_gzip_when_enabled_and_accepted(tmp_path):
    with running_upstream(tmp_path, compress=True) as compressing:
        with httpx.Client(verify=verify(compressing)) as client:
            zipped = client.get(compressing.url + "/v1/models")
            plain = client.get(compressing.url + "/v1/models",
                               headers={"accept-encoding": "identity"})
        streamed = sync_client(compressing).chat.completions.with_raw_response.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "x"}])
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content)
    assert zipped.json() == plain.json() and "content-encoding" not in plain.headers
    assert "content-encoding" not in streamed.headers  # streams go uncompressed


def test_chunked_request_body_and_wait_for(upstream):
    connection = http.client.HTTPSConnection("127.0.0.1", upstream.port, context=verify(upstream))
    parts = [b'{"model": "gpt-4o", ', b'"messages": [{"role": "user", "content": "split"}]}']
    connection.request("POST", "/v1/chat/completions", iter(parts),
                       {"content-type": "application/json"}, encode_chunked=True)
    reply = json.loads(connection.getresponse().read())
    connection.close()
    assert reply["choices"][0]["message"]["content"] == "Received: split"
    [received] = upstream.wait_for(1)
    assert received.body == b"".join(parts)
    with pytest.raises(TimeoutError):
        upstream.wait_for(2, timeout=0.05)


def test_stop_closes_idle_keep_alive_connections(tmp_path):
    with running_upstream(tmp_path) as short_lived:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", short_lived.port, context=verify(short_lived)
        )
        connection.request("GET", "/v1/models")
        connection.getresponse().read()
        started = time.monotonic()
    assert time.monotonic() - started < 2
    connection.sock.settimeout(2)
    assert connection.sock.recv(1) == b""  # the server closed its end
    connection.close()


def test_keep_alive_and_chunked_streams_on_one_connection(upstream):
    connection = http.client.HTTPSConnection("127.0.0.1", upstream.port, context=verify(upstream))
    body = json.dumps({"model": "gpt-4o", "stream": True,
                       "messages": [{"role": "user", "content": "ping"}]})
    for _ in range(2):
        connection.request("POST", "/v1/chat/completions", body,
                           {"content-type": "application/json"})
        response = connection.getresponse()
        assert response.getheader("transfer-encoding") == "chunked"
        assert response.read().endswith(b"data: [DONE]\n\n")
    sockets = connection.sock
    connection.request("GET", "/v1/models")
    assert json.loads(connection.getresponse().read())["object"] == "list"
    assert connection.sock is sockets  # the same connection served all three
    connection.close()


def test_record_over_http_and_jsonl(tmp_path):
    record = tmp_path / "received.jsonl"
    with running_upstream(tmp_path, record_to=record) as recording:
        sync_client(recording).embeddings.create(model="text-embedding-3-small", input="x")
        [in_process] = recording.received
        with httpx.Client(verify=verify(recording)) as client:
            listed = client.get(recording.url + ADMIN_PATH).json()
            assert client.delete(recording.url + ADMIN_PATH).status_code == 204
            assert client.get(recording.url + ADMIN_PATH).json() == []
        assert recording.received == []
    assert in_process.json["input"] == "x" and in_process.headers["authorization"] == "Bearer test"
    written_out = dataclasses.replace(in_process, headers={
        **in_process.headers, "authorization": credential_fingerprint("Bearer test")
    })
    assert [ReceivedRequest.from_dict(r) for r in listed] == [written_out]
    assert "test" not in listed[0]["headers"]["authorization"]
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [ReceivedRequest.from_dict(r) for r in lines] == [written_out]


def test_command_line_serves_and_records(tmp_path):
    record = tmp_path / "record.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "phigate.localupstream", "--tls-dir", str(tmp_path / "tls"),
         "--record", str(record)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        reply = httpx.post(url + "/v1/traces/ingest", json={"data": []},
                           verify=ssl.create_default_context(cafile=tmp_path / "tls" / "ca.pem"))
        assert reply.status_code == 204
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert json.loads(record.read_text())["path"] == "/v1/traces/ingest"


# The scripted model ---------------------------------------------------------------------------


def test_tool_arguments_follow_the_schema():
    schema = {
        "type": "object",
        "$defs": {"Ref": {"type": "object", "properties": {"code": {"type": "string"}}}},
        "properties": {
            "unit": {"type": "string", "enum": ["mg", "ml"]},
            "dose": {"type": "number"},
            "urgent": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "ref": {"$ref": "#/$defs/Ref"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        },
    }
    text = 'dose: 2.5 code="A 1" rest'
    assert tool_arguments(schema, text) == {
        "unit": "mg", "dose": 2.5, "urgent": True, "tags": [text], "ref": {"code": "A 1"},
        "note": text,
    }


# The Agents SDK -------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [OpenAIResponsesModel, OpenAIChatCompletionsModel])
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agent_with_function_tool(upstream, model_class, streamed):
    looked_up: list[str] = []

    @function_tool
    def lookup_patient(mrn: str) -> str:
        """Look up a patient's chart by medical record number."""
        looked_up.append(mrn)
        return f"chart {mrn}: BP 120/80"

    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=upstream.url + "/v1", api_key="test",
                                    http_client=httpx.AsyncClient(verify=verify(upstream)))
        agent = Agent(name="clinic", instructions="Use the tool.", tools=[lookup_patient],
                      model=model_class(model="gpt-4.1", openai_client=client))
        question = "Pull up mrn: 7781 for me"
        if not streamed:
            return (await Runner.run(agent, question)).final_output
        result = Runner.run_streamed(agent, question)
        async for _event in result.stream_events():
            pass
        return result.final_output

    final = asyncio.run(run())
    assert looked_up == ["7781"]
    assert final == "Received: Pull up mrn: 7781 for me | Tool result: chart 7781: BP 120/80"
    path = "/v1/responses" if model_class is OpenAIResponsesModel else "/v1/chat/completions"
    assert [r.path for r in upstream.received] == [path, path]
    assert all(r.json.get("stream", False) is streamed for r in upstream.received)
    assert "chart 7781: BP 120/80" in upstream.received[1].body.decode()


def test_agents_trace_exporter_posts_to_the_upstream(upstream, monkeypatch):
    # httpx2 (the exporter's own client) trusts SSL_CERT_FILE, read when the client is built.
    monkeypatch.setenv("SSL_CERT_FILE", ca_file(upstream))
    exporter = BackendSpanExporter(api_key="test", endpoint=upstream.url + "/v1/traces/ingest",
                                   max_retries=0)
    exporter.export([TraceImpl("clinic run", None, None, None, processor=None)])
    [received] = upstream.received
    assert received.path == "/v1/traces/ingest" and received.headers["openai-beta"] == "traces=v1"
    assert received.json["data"][0]["workflow_name"] == "clinic run"
