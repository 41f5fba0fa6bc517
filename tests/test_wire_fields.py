"""Text fields of every endpoint, JSON inside strings, and refusal of what cannot be examined."""

from __future__ import annotations

import copy
import json

import pytest
from agents.tracing.span_data import FunctionSpanData, GenerationSpanData

from phigate.wire.fields import (JSON, KEY, apply, endpoint_kind, render, request_fields,
                                 response_fields)
from phigate.wire.types import UnsupportedContent

CHAT = "POST /v1/chat/completions"
RESPONSES = "POST /v1/responses"

# What the Agents SDK's chat-completions model sends on turn 2 of a tool-using agent.
CHAT_BODY = {
    "model": "gpt-4.1",
    "messages": [
        {"role": "system", "content": "You are a clinical assistant."},
        {"role": "user", "content": "Look up John Smith, MRN 7654321."},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "lookup_patient",
                         "arguments": '{"patientName": "John Smith", "mrn": "7654321"}'}}]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": '{"patient": {"birthDate": "1970-01-02", "ssn": "123-45-6789", "age": 54}}'},
        {"role": "user", "name": "dr_jones", "content": [
            {"type": "text", "text": "Email jane.doe@example.com the summary."}]},
    ],
    "tools": [{"type": "function", "function": {"name": "lookup_patient", "parameters": {}}}],
    "temperature": 0.2,
    "stream": True,
    "metadata": {"ticket": "Jane Doe"},
}

# What the Agents SDK's Responses model sends on turn 2 (history resent in full).
RESPONSES_BODY = {
    "model": "gpt-4.1",
    "instructions": "You are a clinical assistant.",
    "input": [
        {"content": "Look up John Smith.", "role": "user"},
        {"id": "rs_1", "type": "reasoning", "summary": [
            {"type": "summary_text", "text": "Need the chart of John Smith."}]},
        {"arguments": '{"patientName":"John Smith"}', "call_id": "call_1",
         "name": "lookup_patient", "type": "function_call", "id": "fc_1", "status": "completed"},
        {"call_id": "call_1", "output": '{"mrn": "7654321", "notes": ["seen 2024-03-04"]}',
         "type": "function_call_output"},
        {"call_id": "call_2", "type": "function_call_output",
         "output": [{"type": "input_text", "text": "SSN 123-45-6789"}]},
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Found John Smith.", "annotations": [],
                      "logprobs": []}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Email jane.doe@example.com"}]},
        {"type": "item_reference", "id": "msg_0"},
    ],
    "tools": [{"type": "function", "name": "lookup_patient", "parameters": {}, "strict": True}],
    "stream": True,
    "store": False,
}


def texts(fields):
    return {render(f.path): f.text for f in fields if f.kind != "key"}


def test_chat_request_fields_cover_every_text():
    fields = request_fields(CHAT, CHAT_BODY)
    found = texts(fields)
    assert found == {
        "messages[0].content": "You are a clinical assistant.",
        "messages[1].content": "Look up John Smith, MRN 7654321.",
        "messages[2].tool_calls[0].function.arguments{json}.patientName": "John Smith",
        "messages[2].tool_calls[0].function.arguments{json}.mrn": "7654321",
        "messages[3].content{json}.patient.birthDate": "1970-01-02",
        "messages[3].content{json}.patient.ssn": "123-45-6789",
        "messages[3].content{json}.patient.age": "54",
        "messages[4].content[0].text": "Email jane.doe@example.com the summary.",
        "messages[4].name": "dr_jones",
        "metadata.ticket": "Jane Doe",
    }
    by_path = {render(f.path): f for f in fields}
    assert by_path["messages[3].content{json}.patient.birthDate"].key == "birthDate"
    assert by_path["messages[3].content{json}.patient.age"].kind == "number"
    keys = {f.text for f in fields if f.kind == "key"}
    assert {"patientName", "mrn", "patient", "birthDate", "ssn", "age", "ticket"} <= keys


def test_responses_request_fields_cover_every_item_kind():
    found = texts(request_fields(RESPONSES, RESPONSES_BODY))
    assert found == {
        "input[0].content": "Look up John Smith.",
        "input[1].summary[0].text": "Need the chart of John Smith.",
        "input[2].arguments{json}.patientName": "John Smith",
        "input[3].output{json}.mrn": "7654321",
        "input[3].output{json}.notes[0]": "seen 2024-03-04",
        "input[4].output[0].text": "SSN 123-45-6789",
        "input[5].content[0].text": "Found John Smith.",
        "input[6].content[0].text": "Email jane.doe@example.com",
        "instructions": "You are a clinical assistant.",
    }


def test_responses_string_input_and_prompt_variables():
    body = {"model": "m", "input": "Hi, I am Jane Doe",
            "prompt": {"id": "pmpt_1", "variables": {"patient": "John Smith",
                                                      "note": {"type": "input_text", "text": "x"}}}}
    found = texts(request_fields(RESPONSES, body))
    assert found == {"input": "Hi, I am Jane Doe", "prompt.variables.patient": "John Smith",
                     "prompt.variables.note.text": "x"}


@pytest.mark.parametrize("body, expected", [
    ({"model": "e", "input": "John Smith"}, {"input": "John Smith"}),
    ({"model": "e", "input": ["a", "Jane Doe"], "encoding_format": "float"},
     {"input[0]": "a", "input[1]": "Jane Doe"}),
])
def test_embeddings_fields(body, expected):
    assert texts(request_fields("POST /v1/embeddings", body)) == expected


def test_completions_prompt_and_suffix():
    body = {"model": "i", "prompt": ["Dear Jane Doe"], "suffix": "Regards", "max_tokens": 5}
    assert texts(request_fields("POST /v1/completions", body)) == {
        "prompt[0]": "Dear Jane Doe", "suffix": "Regards"}


def test_agents_sdk_trace_export_masks_span_inputs_and_outputs():
    function = FunctionSpanData("lookup_patient", '{"patientName": "John Smith"}',
                                {"mrn": "7654321"}).export()
    generation = GenerationSpanData(
        input=[{"role": "user", "content": "Look up John Smith"}],
        output=[{"role": "assistant", "content": "SSN 123-45-6789"}],
        model="gpt-4.1", usage={"input_tokens": 10}).export()
    body = {"data": [
        {"object": "trace", "id": "trace_1", "workflow_name": "Jane Doe intake", "group_id": None},
        {"object": "trace.span", "id": "span_1", "trace_id": "trace_1", "parent_id": None,
         "started_at": "2026-11-24T09:00:00", "ended_at": "2026-11-24T09:00:01",
         "span_data": function, "error": None},
        {"object": "trace.span", "id": "span_2", "trace_id": "trace_1", "parent_id": "span_1",
         "started_at": "2026-11-24T09:00:00", "ended_at": None, "span_data": generation},
    ]}
    found = texts(request_fields("POST /v1/traces/ingest", body))
    assert found["data[0].workflow_name"] == "Jane Doe intake"
    assert found["data[1].span_data.input{json}.patientName"] == "John Smith"
    assert found["data[1].span_data.output"] == str({"mrn": "7654321"})
    assert found["data[2].span_data.input[0].content"] == "Look up John Smith"
    assert found["data[2].span_data.output[0].content"] == "SSN 123-45-6789"
    assert not any(path.endswith((".id", ".trace_id", ".started_at")) for path in found)


def test_response_fields_chat_and_responses():
    chat = {"id": "c", "object": "chat.completion", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "logprobs": None,
        "message": {"role": "assistant", "content": "Hello <PERSON_1>", "refusal": None,
                    "tool_calls": [{"id": "t", "type": "function", "function": {
                        "name": "f", "arguments": '{"dob": "1970-01-02"}'}}]}}]}
    assert texts(response_fields(CHAT, chat)) == {
        "choices[0].message.content": "Hello <PERSON_1>",
        "choices[0].message.tool_calls[0].function.arguments{json}.dob": "1970-01-02"}
    response = {"id": "resp_1", "object": "response", "instructions": "Be brief.", "output": [
        {"type": "reasoning", "id": "rs", "summary": []},
        {"type": "message", "id": "m", "role": "assistant", "status": "completed", "content": [
            {"type": "output_text", "text": "Dear <PERSON_1>", "annotations": []}]},
        {"type": "function_call", "id": "fc", "call_id": "c", "name": "f",
         "arguments": '{"to": "jane.doe@example.com"}', "status": "completed"}]}
    assert texts(response_fields("GET /v1/responses/resp_1", response)) == {
        "output[1].content[0].text": "Dear <PERSON_1>",
        "output[2].arguments{json}.to": "jane.doe@example.com",
        "instructions": "Be brief."}
    assert response_fields("POST /v1/embeddings", {"data": [{"embedding": [0.1]}]}) == []


def test_apply_rewrites_json_inside_strings_structurally():
    body = copy.deepcopy(CHAT_BODY)
    fields = {render(f.path): f.path for f in request_fields(CHAT, body)}
    new = apply(body, {
        fields["messages[2].tool_calls[0].function.arguments{json}.patientName"]: "<PERSON_1>",
        fields["messages[3].content{json}.patient.age"]: "<AGE>",
        fields["messages[1].content"]: "Look up <PERSON_1>, MRN <MRN_1>.",
    })
    assert body == CHAT_BODY  # the input is not mutated
    arguments = json.loads(new["messages"][2]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"patientName": "<PERSON_1>", "mrn": "7654321"}
    tool = json.loads(new["messages"][3]["content"])
    assert tool == {"patient": {"birthDate": "1970-01-02", "ssn": "123-45-6789", "age": "<AGE>"}}
    assert new["messages"][1]["content"] == "Look up <PERSON_1>, MRN <MRN_1>."
    assert new["messages"][4] is body["messages"][4]  # untouched parts are shared
    assert apply(body, {}) is body


def test_apply_refuses_key_rewrites_and_stale_paths():
    with pytest.raises(ValueError):
        apply({"a": "x"}, {("a", KEY): "y"})
    with pytest.raises(ValueError):
        apply({"a": "plain"}, {("a", JSON, "k"): "y"})


def test_json_with_duplicate_keys_is_examined_as_plain_text():
    body = {"model": "m", "messages": [
        {"role": "tool", "tool_call_id": "t", "content": '{"a": "John Smith", "a": "ok"}'}]}
    found = texts(request_fields(CHAT, body))
    assert found == {"messages[0].content": '{"a": "John Smith", "a": "ok"}'}


def test_field_reprs_hold_no_text():
    values = [f for f in request_fields(CHAT, CHAT_BODY) if f.kind != "key" and len(f.text) > 3]
    assert values and not any(field.text in repr(field) for field in values)


@pytest.mark.parametrize("endpoint, body, path, kind", [
    (CHAT, {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     "messages[0].content[0]", "image_url"),
    (CHAT, {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[0]", "input_audio"),
    (CHAT, {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "f"}}]}]}, "messages[0].content[0]", "file"),
    (CHAT, {"model": "m", "messages": [{"role": "narrator", "content": "x"}]},
     "messages[0]", "role"),
    (CHAT, {"model": "m", "messages": [], "surprise": "John Smith"}, "surprise", "parameter"),
    (RESPONSES, {"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "input[0].content[0]", "input_image"),
    (RESPONSES, {"model": "m", "input": [{"type": "computer_call_output", "call_id": "c",
                                          "output": {"type": "input_image"}}]},
     "input[0]", "computer_call_output"),
    (RESPONSES, {"model": "m", "input": [{"type": "function_call_output", "call_id": "c",
                                          "output": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].output[0]", "input_file"),
    ("POST /v1/embeddings", {"model": "e", "input": [[1, 2, 3]]}, "input[0]", "token_array"),
    ("POST /v1/completions", {"model": "i", "prompt": [15496, 11]}, "prompt[0]", "token_array"),
    ("POST /v1/audio/transcriptions", {}, "", "endpoint"),
    ("POST /v1/files", {}, "", "endpoint"),
])
def test_unexaminable_content_is_refused(endpoint, body, path, kind):
    with pytest.raises(UnsupportedContent) as caught:
        request_fields(endpoint, body)
    assert (caught.value.path, caught.value.kind) == (path, kind)


def test_unexaminable_response_content_is_refused():
    chat = {"choices": [{"index": 0, "logprobs": {"content": [{"token": "John"}]},
                         "message": {"role": "assistant", "content": "John"}}]}
    with pytest.raises(UnsupportedContent, match="logprobs"):
        response_fields(CHAT, chat)
    web = {"output": [{"type": "web_search_call", "id": "ws", "action": {"query": "John Smith"}}]}
    with pytest.raises(UnsupportedContent, match="web_search_call"):
        response_fields(RESPONSES, web)


def test_endpoint_kinds():
    assert endpoint_kind("POST /v1/responses") == "responses"
    assert endpoint_kind("POST /v1/responses/input_tokens") == "responses"
    assert endpoint_kind("GET /v1/chat/completions/chatcmpl-1") == "chat"
    with pytest.raises(UnsupportedContent):
        endpoint_kind("POST /v1/responses/resp_1/cancel")


@pytest.mark.parametrize("endpoint, extra", [
    (CHAT, {"logprobs": True}),
    (CHAT, {"top_logprobs": 3}),
    (CHAT, {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}),
    (RESPONSES, {"include": ["message.output_text.logprobs"]}),
    (RESPONSES, {"top_logprobs": 2}),
])
def test_requests_whose_responses_cannot_be_masked_are_refused_up_front(endpoint, extra):
    body = CHAT_BODY if endpoint == CHAT else RESPONSES_BODY
    with pytest.raises(UnsupportedContent):
        request_fields(endpoint, {**body, **extra})
    with pytest.raises(UnsupportedContent):
        request_fields("POST /v1/completions", {"model": "i", "prompt": "x", "logprobs": 2})
