"""SSE parsing under any chunking, and stream masking that leaks nothing and stays consistent.

The masked streams are read back with the openai SDK itself (over an in-process httpx transport,
no socket), so framing and event shapes are checked by the parser that clients run.
"""

from __future__ import annotations

import itertools
import json
import zlib

import httpx
import openai
import pytest

from phigate.wire.sse import SSEParser, StreamMasker, error_event
from phigate.wire.types import DetectionError, UnsupportedContent
from phigate.wire.vault import Vault
from tests.test_wire_support import RegexDetector, leaked, make_masker

CHAT = "POST /v1/chat/completions"
RESPONSES = "POST /v1/responses"
TEXT = ("Patient John Smith (MRN 7654321) has SSN 123-45-6789; write to jane.doe@example.com "
        "before 1970-01-02.\nNo other identifiers.")
ARGS = '{"patientName": "Jane Doe", "dob": "1970-01-02", "note": "SSN 123-45-6789"}'


def pieces(text: str, size: int = 1) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def rechunk(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def run(masker: StreamMasker, upstream: bytes, chunk: int = 7) -> bytes:
    return b"".join(masker(part) for part in rechunk(upstream, chunk)) + masker(b"")


def reference(text: str, **kwargs) -> str:
    """What masking the whole text at once gives (a fresh vault numbers the same way)."""
    masker = make_masker(**kwargs)
    return masker.mask_text(text, masker.detect_one(text), path="x")[0]


# --- the parser ------------------------------------------------------------------------------

SAMPLE = (b": keep-alive\r\n\r\nevent: one\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"
          b"data: plain\n\nevent: two\rdata:no-space\r\rid: 7\nretry: 10\ndata\n\n"
          b"data: caf\xc3\xa9 \xe2\x82\xac\n\n")


def parse(chunks) -> list[tuple]:
    parser = SSEParser()
    events = [e for c in chunks for e in parser.feed(c)] + parser.feed(b"", final=True)
    return [(e.event, e.data, e.id, e.retry, tuple(e.comments)) for e in events]


def test_parser_reads_every_line_ending_multiline_data_and_comments():
    assert parse([SAMPLE]) == [
        (None, "", None, None, (" keep-alive",)),
        ("one", '{"a":\n1}', None, None, ()),
        (None, "plain", None, None, ()),
        ("two", "no-space", None, None, ()),
        (None, "", "7", "10", ()),
        (None, "café €", None, None, ()),
    ]


def test_parser_gives_the_same_events_for_every_split_position():
    whole = parse([SAMPLE])
    for cut in range(len(SAMPLE) + 1):
        assert parse([SAMPLE[:cut], SAMPLE[cut:]]) == whole, cut
    for first, second in itertools.combinations(range(0, len(SAMPLE), 3), 2):
        assert parse([SAMPLE[:first], SAMPLE[first:second], SAMPLE[second:]]) == whole
    assert parse(rechunk(SAMPLE, 1)) == whole


def test_an_unterminated_last_event_is_still_delivered():
    assert parse([b"data: x"]) == [(None, "x", None, None, ())]


# --- Chat Completions ------------------------------------------------------------------------

def chat_upstream(deltas: list[str], arg_deltas: list[str] = ()) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4.1", "system_fingerprint": "fp_1"}

    def chunk(delta, finish=None):
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": d}) for d in deltas]
    if arg_deltas:
        chunks.append(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                             "function": {"name": "lookup", "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": d}}]})
                   for d in arg_deltas]
    chunks.append(chunk({}, "tool_calls" if arg_deltas else "stop"))
    chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9,
                                                   "total_tokens": 14}})
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + \
        b"data: [DONE]\n\n"


def sdk_client(body: bytes) -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(api_key="test", base_url="http://127.0.0.1:9/v1", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(answer)))


def chat_final(body: bytes):
    client = sdk_client(body)
    with client.chat.completions.stream(model="gpt-4.1", messages=[]) as stream:
        return stream.get_final_completion().choices[0].message


def test_chat_stream_one_character_deltas_leak_nothing():
    upstream = chat_upstream(pieces(TEXT), pieces(ARGS))
    masker = make_masker()
    out = run(StreamMasker(CHAT, masker), upstream)
    assert leaked(out.decode()) == []
    message = chat_final(out)
    assert message.content == reference(TEXT)
    assert json.loads(message.tool_calls[0].function.arguments) == {
        "patientName": "<PERSON_2>", "dob": "<DATE_1>", "note": "SSN <US_SSN_1>"}


def test_chat_stream_entities_split_at_every_position():
    expected = reference(TEXT)
    for cut in range(1, len(TEXT)):
        out = run(StreamMasker(CHAT, make_masker()), chat_upstream([TEXT[:cut], TEXT[cut:]]), 64)
        assert leaked(out.decode()) == [], cut
        assert chat_final(out).content == expected, cut


def test_chat_stream_releases_text_before_the_end():
    """No whole-response buffering: text after a finished word goes out with its own chunk."""
    masker = StreamMasker(CHAT, make_masker())
    parser = SSEParser()
    head = chat_upstream(["the patient ", "is stable ", "John"]).split(b"data: [DONE]")[0]
    chunks = head.split(b"\n\n")[:-1]
    released = []
    for chunk in chunks[:4]:
        for event in parser.feed(masker(chunk + b"\n\n")):
            choices = json.loads(event.data)["choices"]
            released.append(choices[0]["delta"].get("content") if choices else None)
    assert released == ["", "the patient ", "is stable ", ""]  # "John" may still grow


def test_chat_stream_reidentifies_placeholders_split_across_events():
    vault = Vault()
    masker = make_masker(vault=vault)
    masker.mask_request(CHAT, {"model": "m", "messages": [
        {"role": "user", "content": "John Smith, SSN 123-45-6789"}]})
    text = "Dear <PERSON_1>, your SSN <US_SSN_1> is on file. <PERSON_7> is unknown."
    for size in (1, 2, 3, 5):
        out = run(StreamMasker(CHAT, masker, reidentify=True), chat_upstream(pieces(text, size)))
        assert chat_final(out).content == \
            "Dear John Smith, your SSN 123-45-6789 is on file. <PERSON_7> is unknown."
    other = make_masker(vault=vault, conversation="c2")
    out = run(StreamMasker(CHAT, other, reidentify=True), chat_upstream(pieces(text)))
    assert leaked(out.decode()) == []


# --- Responses -------------------------------------------------------------------------------

def responses_upstream(deltas: list[str], arg_deltas: list[str], text: str, args: str) -> bytes:
    counter = itertools.count()

    def event(kind, **fields):
        return {"type": kind, "sequence_number": next(counter), **fields}

    response = {"id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress",
                "model": "gpt-4.1", "output": [], "instructions": "Be brief about <PERSON_1>.",
                "tools": [], "parallel_tool_calls": True, "tool_choice": "auto"}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress",
               "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    call = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "lookup",
            "arguments": "", "status": "in_progress"}
    done_message = {**message, "status": "completed", "content": [part]}
    done_call = {**call, "arguments": args, "status": "completed"}
    events = [
        event("response.created", response=response),
        event("response.in_progress", response=response),
        event("response.output_item.added", output_index=0, item=message),
        event("response.content_part.added", **where, part={**part, "text": ""}),
        *[event("response.output_text.delta", **where, delta=d, logprobs=[]) for d in deltas],
        event("response.output_text.done", **where, text=text, logprobs=[]),
        event("response.content_part.done", **where, part=part),
        event("response.output_item.done", output_index=0, item=done_message),
        event("response.output_item.added", output_index=1, item=call),
        *[event("response.function_call_arguments.delta", item_id="fc_1", output_index=1,
                delta=d) for d in arg_deltas],
        event("response.function_call_arguments.done", item_id="fc_1", output_index=1,
              arguments=args, name="lookup"),
        event("response.output_item.done", output_index=1, item=done_call),
        event("response.completed", response={**response, "status": "completed",
                                              "output": [done_message, done_call]}),
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def copies(out: bytes) -> dict[str, list[str]]:
    """Every place a Responses stream states the message text and the arguments."""
    parser = SSEParser()
    events = [json.loads(e.data) for e in parser.feed(out) + parser.feed(b"", final=True)]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    args = "".join(e["delta"] for e in events
                   if e["type"] == "response.function_call_arguments.delta")
    found = {"text": [text], "args": [args]}
    for e in events:
        if e["type"] == "response.output_text.done":
            found["text"].append(e["text"])
        elif e["type"] == "response.content_part.done":
            found["text"].append(e["part"]["text"])
        elif e["type"] == "response.function_call_arguments.done":
            found["args"].append(e["arguments"])
        elif e["type"] == "response.output_item.done":
            item = e["item"]
            if item["type"] == "message":
                found["text"].append(item["content"][0]["text"])
            else:
                found["args"].append(item["arguments"])
        elif e["type"] == "response.completed":
            found["text"].append(e["response"]["output"][0]["content"][0]["text"])
            found["args"].append(e["response"]["output"][1]["arguments"])
            found["instructions"] = [e["response"]["instructions"]]
    return found


def responses_final(body: bytes):
    client = sdk_client(body)
    with client.responses.stream(model="gpt-4.1", input="x") as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        return deltas, stream.get_final_response()


def test_responses_stream_done_and_completed_copies_match_the_deltas():
    upstream = responses_upstream(pieces(TEXT), pieces(ARGS), TEXT, ARGS)
    out = run(StreamMasker(RESPONSES, make_masker()), upstream, 11)
    assert leaked(out.decode()) == []
    found = copies(out)
    expected = reference(TEXT)
    assert found["text"] == [expected] * 5
    assert len(set(found["args"])) == 1 and len(found["args"]) == 4
    assert json.loads(found["args"][0]) == {
        "patientName": "<PERSON_2>", "dob": "<DATE_1>", "note": "SSN <US_SSN_1>"}
    deltas, final = responses_final(out)
    assert deltas == final.output_text == expected
    assert final.output[1].arguments == found["args"][0]


def test_responses_stream_split_at_every_position_leaks_nothing():
    for cut in range(1, len(TEXT)):
        upstream = responses_upstream([TEXT[:cut], TEXT[cut:]], [ARGS[:cut], ARGS[cut:]],
                                      TEXT, ARGS)
        out = run(StreamMasker(RESPONSES, make_masker()), upstream, 256)
        assert leaked(out.decode()) == [], cut
        found = copies(out)
        assert len(set(found["text"])) == 1 and len(set(found["args"])) == 1, cut


def test_responses_stream_reidentifies_every_copy():
    vault = Vault()
    masker = make_masker(vault=vault)
    masker.mask_request(RESPONSES, {"model": "m", "input": "John Smith, SSN 123-45-6789"})
    text = "Dear <PERSON_1>: SSN <US_SSN_1> confirmed."
    args = '{"name": "<PERSON_1>"}'
    for size in (1, 4):
        upstream = responses_upstream(pieces(text, size), pieces(args, size), text, args)
        found = copies(run(StreamMasker(RESPONSES, masker, reidentify=True), upstream))
        assert found["text"] == ["Dear John Smith: SSN 123-45-6789 confirmed."] * 5
        assert found["args"] == ['{"name": "John Smith"}'] * 4
        assert found["instructions"] == ["Be brief about John Smith."]


def test_reidentified_values_are_escaped_inside_streamed_json():
    vault = Vault()
    masker = make_masker({"PERSON": "pseudonym"}, vault=vault)
    vault.pseudonym(masker.vault.scope, "PERSON", 'John "Jack" Smith\\')
    args = '{"name": "<PERSON_1>"}'
    upstream = responses_upstream(["ok"], pieces(args), "ok", args)
    found = copies(run(StreamMasker(RESPONSES, masker, mask=False, reidentify=True), upstream))
    assert json.loads(found["args"][0]) == {"name": 'John "Jack" Smith\\'}
    # Arguments that are not (yet) valid JSON are streamed as text, still escaped.
    broken = '{"name": "<PERSON_1>", '
    upstream = responses_upstream(["ok"], pieces(broken), "ok", broken)
    found = copies(run(StreamMasker(RESPONSES, masker, mask=False, reidentify=True), upstream))
    assert found["args"] == ['{"name": "John \\"Jack\\" Smith\\\\", '] * 4


def test_long_arguments_are_streamed_as_text_without_leaking(monkeypatch):
    monkeypatch.setattr("phigate.wire.channel.JSON_LIMIT", 20)
    upstream = responses_upstream(["ok"], pieces(ARGS), "ok", ARGS)
    masker = StreamMasker(RESPONSES, make_masker())
    parser = SSEParser()
    streamed = []
    for part in rechunk(upstream, 40):
        for event in parser.feed(masker(part)):
            data = json.loads(event.data)
            if data["type"] == "response.function_call_arguments.delta" and data["delta"]:
                streamed.append(data["delta"])
    assert len(streamed) > 1  # released while the call was still arriving
    out = "".join(streamed) + "".join(
        json.loads(e.data).get("delta", "") for e in parser.feed(masker(b""), final=True))
    assert leaked(out) == []
    assert json.loads(out) == {"patientName": "<PERSON_1>", "dob": "<DATE_1>",
                               "note": "SSN <US_SSN_1>"}


# --- failure is loud -------------------------------------------------------------------------

def test_a_detector_fault_in_a_stream_raises():
    def broken(fields):
        raise RuntimeError("analyzer crashed")

    masker = StreamMasker(CHAT, make_masker(detect=broken))
    with pytest.raises(RuntimeError):
        run(masker, chat_upstream(["Hello there ", "John Smith"]))
    short = StreamMasker(CHAT, make_masker(detect=lambda fields: [[] for _ in fields[1:]]))
    with pytest.raises(DetectionError):
        run(short, chat_upstream(["Hello there ", "John Smith"]))


@pytest.mark.parametrize("event", [
    {"type": "response.output_text.annotation.added", "annotation": {"url": "https://x"}},
    {"type": "response.audio.delta", "delta": "AAAA"},
    {"type": "response.output_item.added", "output_index": 0,
     "item": {"type": "web_search_call", "id": "ws"}},
    {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "J",
     "logprobs": [{"token": "J", "logprob": -0.1}]},
])
def test_unknown_or_unexaminable_events_raise(event):
    masker = StreamMasker(RESPONSES, make_masker())
    with pytest.raises(UnsupportedContent):
        masker(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())


def test_chat_delta_fields_it_cannot_examine_raise():
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"audio": {"data": "AAAA"}}}]}
    with pytest.raises(UnsupportedContent):
        StreamMasker(CHAT, make_masker())(b"data: " + json.dumps(chunk).encode() + b"\n\n")


def test_nothing_passes_after_the_end_or_after_a_failure():
    masker = StreamMasker(CHAT, make_masker())
    masker(b"")
    with pytest.raises(UnsupportedContent):
        masker(b"data: {}\n\n")
    failed = StreamMasker(CHAT, make_masker())
    chunk = {"choices": [{"index": 0, "delta": {"content": "Jane"}}]}
    failed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    with pytest.raises(UnsupportedContent):
        failed(b"data: not json\n\n")
    with pytest.raises(UnsupportedContent):
        failed(b"")  # the held "Jane" is never released


def test_compressed_streams_are_decoded_first():
    upstream = chat_upstream(pieces(TEXT, 3))
    packer = zlib.compressobj(wbits=31)
    compressed = packer.compress(upstream) + packer.flush()
    masker = StreamMasker(CHAT, make_masker(), content_encoding="gzip")
    out = run(masker, compressed, 5)
    assert chat_final(out).content == reference(TEXT)


def test_error_events_are_read_by_the_sdk_as_errors():
    for endpoint in (CHAT, RESPONSES):
        body = error_event(endpoint, "phi_unsupported_content", "response content refused")
        client = sdk_client(body)
        with pytest.raises(openai.APIError, match="response content refused"):
            if endpoint == CHAT:
                list(client.chat.completions.create(model="m", messages=[], stream=True))
            else:
                list(client.responses.create(model="m", input="x", stream=True))


def test_detection_runs_per_release_not_per_character():
    detector = RegexDetector()
    masker = StreamMasker(CHAT, make_masker(detect=detector))
    run(masker, chat_upstream(pieces(TEXT)))
    assert detector.calls < len(TEXT) / 3
    assert {a.entity for a in masker.actions} == {"PERSON", "MEDICAL_RECORD_NUMBER", "US_SSN",
                                                  "EMAIL_ADDRESS", "DATE"}


def test_reasoning_summaries_and_texts_without_deltas_are_masked_and_consistent():
    counter = itertools.count()

    def event(kind, **fields):
        payload = {"type": kind, "sequence_number": next(counter), **fields}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

    summary = "Looking up John Smith by SSN 123-45-6789."
    reasoning = {"id": "rs_1", "type": "reasoning", "summary": []}
    part = {"type": "summary_text", "text": summary}
    where = {"item_id": "rs_1", "output_index": 0, "summary_index": 0}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}
    done_reasoning = {**reasoning, "summary": [part]}
    upstream = b"".join([
        event("response.output_item.added", output_index=0, item=reasoning),
        event("response.reasoning_summary_part.added", **where, part={**part, "text": ""}),
        *[event("response.reasoning_summary_text.delta", **where, delta=d)
          for d in pieces(summary, 2)],
        event("response.reasoning_summary_text.done", **where, text=summary),
        event("response.reasoning_summary_part.done", **where, part=part),
        event("response.output_item.done", output_index=0, item=done_reasoning),
        # a message whose text arrives only in full copies, never as deltas
        event("response.output_text.done", item_id="msg_1", output_index=1, content_index=0,
              text=TEXT),
        event("response.output_item.done", output_index=1, item=message),
        event("response.completed", response={"id": "resp_1", "object": "response",
                                              "output": [done_reasoning, message]}),
    ])
    out = run(StreamMasker(RESPONSES, make_masker()), upstream, 13)
    assert leaked(out.decode()) == []
    parser = SSEParser()
    events = [json.loads(e.data) for e in parser.feed(out, final=True)]
    summaries = ["".join(e["delta"] for e in events
                         if e["type"] == "response.reasoning_summary_text.delta")]
    summaries += [e["text"] for e in events if e["type"] == "response.reasoning_summary_text.done"]
    summaries += [e["part"]["text"] for e in events
                  if e["type"] == "response.reasoning_summary_part.done"]
    completed = events[-1]["response"]["output"]
    summaries.append(completed[0]["summary"][0]["text"])
    assert summaries == ["Looking up <PERSON_1> by SSN <US_SSN_1>."] * 4
    texts = [e["text"] for e in events if e["type"] == "response.output_text.done"]
    texts.append(completed[1]["content"][0]["text"])
    assert texts == [reference(TEXT)] * 2


def test_chat_stream_with_interleaved_choices_keeps_them_apart():
    first, second = "John Smith is here.", "SSN 123-45-6789 on file."
    chunks = []
    for a, b in itertools.zip_longest(first, second):
        for index, char in ((0, a), (1, b)):
            if char is not None:
                chunks.append({"id": "c", "object": "chat.completion.chunk", "created": 1,
                               "model": "m", "choices": [{"index": index,
                                                           "delta": {"content": char},
                                                           "finish_reason": None}]})
    chunks += [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]} for i in (0, 1)]
    upstream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    out = run(StreamMasker(CHAT, make_masker()), upstream + b"data: [DONE]\n\n")
    client = sdk_client(out)
    with client.chat.completions.stream(model="m", messages=[], n=2) as stream:
        choices = stream.get_final_completion().choices
    assert [c.message.content for c in choices] == [
        "<PERSON_1> is here.", "SSN <US_SSN_1> on file."]


def test_held_text_follows_the_final_chunks_own_text():
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"content": "Call Jane"},
                                    "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {"content": " Doe now, Dr. John"},
                                    "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {"content": " Smith"},
                                    "finish_reason": "stop"}]}]
    upstream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    out = run(StreamMasker(CHAT, make_masker()), upstream + b"data: [DONE]\n\n", 1000)
    assert chat_final(out).content == "Call <PERSON_1> now, Dr. <PERSON_2>"
    # and without a finish_reason, the end of the stream releases it
    out = run(StreamMasker(CHAT, make_masker()), upstream.replace(b'"stop"', b"null"), 1000)
    parser = SSEParser()
    deltas = [json.loads(e.data)["choices"][0]["delta"].get("content", "")
              for e in parser.feed(out, final=True)]
    assert "".join(deltas) == "Call <PERSON_1> now, Dr. <PERSON_2>"
