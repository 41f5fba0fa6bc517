"""Server-sent events: an incremental parser and the stream masker for mitmproxy's
`flow.response.stream`.

The masker rewrites the text channels of Chat Completions and Responses streams as they pass
(masking new PHI, re-identifying the scope's tokens) and makes every event that repeats a full
text (`.done`, `content_part.done`, `output_item.done`, `response.completed`) say exactly what
the deltas said. Each emitted event is a complete `event:`/`data:` block. Anything it does not
understand raises `UnsupportedContent`: the addon ends the stream with `error_event(...)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phigate.wire.channel import TextChannel
from phigate.wire.compression import StreamDecoder
from phigate.wire.engine import Masker
from phigate.wire.fields import endpoint_kind
from phigate.wire.operators import MaskAction
from phigate.wire.types import UnsupportedContent


@dataclass(slots=True)
class Event:
    event: str | None = None
    data_lines: list[str] = field(default_factory=list)
    id: str | None = None
    retry: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> str:
        return "\n".join(self.data_lines)

    def encode(self) -> bytes:
        lines = [f":{comment}" for comment in self.comments]
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.extend(f"data: {line}" for line in self.data_lines)
        return ("\n".join(lines) + "\n\n").encode()

    def with_json(self, value: Any) -> Event:
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return Event(self.event, [data], self.id, self.retry, list(self.comments))


class SSEParser:
    """Bytes in any chunking → events. Lines end in LF, CRLF or CR (a CR at the end of a chunk
    waits for the next one, which may start with LF)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = Event()
        self._started = False

    def feed(self, chunk: bytes, *, final: bool = False) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        position = 0
        buffer = self._buffer
        while True:
            lf = buffer.find(b"\n", position)
            cr = buffer.find(b"\r", position, lf if lf != -1 else len(buffer))
            if cr != -1:
                if cr + 1 == len(buffer) and not final:
                    break
                end, next_position = cr, cr + (2 if buffer[cr + 1:cr + 2] == b"\n" else 1)
            elif lf != -1:
                end, next_position = lf, lf + 1
            else:
                break
            self._line(buffer[position:end].decode("utf-8"), events)
            position = next_position
        self._buffer = buffer[position:]
        if final:
            if self._buffer:
                self._line(self._buffer.decode("utf-8"), events)
                self._buffer = b""
            self._line("", events)  # an unterminated last event still counts
        return events

    def _line(self, line: str, events: list[Event]) -> None:
        if not line:
            if self._started:
                events.append(self._event)
            self._event, self._started = Event(), False
            return
        self._started = True
        if line.startswith(":"):
            self._event.comments.append(line[1:])
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._event.data_lines.append(value)
        elif name == "event":
            self._event.event = value
        elif name == "id":
            self._event.id = value
        elif name == "retry":
            self._event.retry = value
        # other field names are ignored, as the SSE specification says


def error_event(endpoint: str, code: str, message: str) -> bytes:
    """A terminal error event the openai SDK raises on, for ending a stream the gateway
    cannot pass on. `message` must name the rule, never a value."""
    error = {"message": message, "type": "gateway_error", "code": code, "param": None}
    if endpoint_kind(endpoint) == "responses":
        # The typed error event, plus an `error` member the SDK's stream reader raises on.
        payload = {"type": "error", "code": code, "message": message, "param": None,
                   "sequence_number": 0, "error": error}
        return Event("error", [json.dumps(payload)]).encode()
    return Event(None, [json.dumps({"error": error})]).encode()


class StreamMasker:
    """`(bytes) -> bytes` for `flow.response.stream`: called per chunk, then once with b"".

    `mask` runs the detector over the model's text; `reidentify` turns the scope's tokens back
    into values (never tokens minted for new PHI in this response). `content_encoding` is the
    upstream's: chunks are decoded here and the output is not encoded, so the caller drops the
    `content-encoding` (and `content-length`) response headers. After an exception every later
    call raises too.
    """

    def __init__(self, endpoint: str, masker: Masker, *, mask: bool = True,
                 reidentify: bool = False, content_encoding: str | None = None) -> None:
        kind = endpoint_kind(endpoint)
        if kind not in ("chat", "responses"):
            raise UnsupportedContent("", "stream")
        self._rewrite: Callable[[Event], list[Event]] = (
            self._chat_event if kind == "chat" else self._responses_event)
        self._masker = masker
        self._mask = mask
        self._reidentify = reidentify
        self._decoder = StreamDecoder(content_encoding)
        self._parser = SSEParser()
        self._channels: dict[tuple, TextChannel] = {}
        self._closed = False
        self._template: dict[tuple, Event] = {}  # the last delta event of each channel
        self._chat_template: Event | None = None

    def __repr__(self) -> str:
        return f"StreamMasker(channels={len(self._channels)})"

    def __call__(self, chunk: bytes) -> bytes:
        if self._closed:
            raise UnsupportedContent("", "stream_ended")
        final = chunk == b""
        try:
            data = self._decoder.decode(chunk, final=final)
            out: list[Event] = []
            for event in self._parser.feed(data, final=final):
                out.extend(self._rewrite(event))
            if final:
                out.extend(self._flush_all())
                self._closed = True
        except BaseException:
            self._closed = True  # after a failure nothing more passes, not even held text
            raise
        return b"".join(event.encode() for event in out)

    @property
    def actions(self) -> list[MaskAction]:
        """Everything done so far, summed per (path, entity, operator)."""
        totals: dict[tuple[str, str, str], tuple[int, float]] = {}
        for action in (a for c in self._channels.values() for a in c.actions):
            key = (action.path, action.entity, action.operator)
            count, score = totals.get(key, (0, 0.0))
            totals[key] = (count + action.count, max(score, action.score))
        return [MaskAction(p, e, o, c, s) for (p, e, o), (c, s) in sorted(totals.items())]

    # --- channels ----------------------------------------------------------------------------

    def _channel(self, key: tuple, path: str, json_text: bool = False) -> TextChannel:
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = TextChannel(
                self._masker, path, mask=self._mask, reidentify=self._reidentify,
                json_text=json_text)
        return channel

    def _full_text(self, key: tuple, text: Any, path: str, json_text: bool = False) -> str:
        """What a `.done`-style copy must say: what the client got through the deltas."""
        if not isinstance(text, str):
            raise UnsupportedContent(path, type(text).__name__)
        channel = self._channels.get(key)
        if channel is None:  # a full text that came without deltas: mask it whole
            channel = self._channel(key, path, json_text)
            channel.feed(text)
            channel.finish()
        elif channel.finish():  # every caller flushes (and emits the rest) first
            raise AssertionError("full copy before the channel was flushed")
        return channel.emitted

    def _flush_all(self) -> list[Event]:
        return [event for key in list(self._channels) for event in self._flush(key)]

    def _flush(self, key: tuple) -> list[Event]:
        rest = self._channels[key].finish() if key in self._channels else ""
        if not rest:
            return []
        if key[0] == "chat":
            return [self._chat_flush_event(key, rest)]
        template = self._template[key]
        payload = json.loads(template.data)
        payload["delta"] = rest
        return [template.with_json(payload)]

    # --- Chat Completions --------------------------------------------------------------------

    def _chat_event(self, event: Event) -> list[Event]:
        if event.data == "[DONE]":
            return [*self._flush_all(), event]
        if not event.data_lines:
            return [event]
        chunk = _json_object(event.data)
        if "error" in chunk:
            return [event]
        self._chat_template = event
        for position, choice in enumerate(chunk.get("choices") or []):
            index = choice.get("index", position)
            path = f"choices[{index}].delta"
            if choice.get("logprobs"):
                raise UnsupportedContent(f"choices[{index}].logprobs", "logprobs")
            delta = choice.get("delta") or {}
            for name in delta:
                if name not in ("role", "content", "refusal", "tool_calls", "function_call"):
                    raise UnsupportedContent(f"{path}.{name}", name)
            for name in ("content", "refusal"):
                if isinstance(delta.get(name), str):
                    channel = self._channel(("chat", index, name), f"{path}.{name}")
                    delta[name] = channel.feed(delta[name])
            for call in delta.get("tool_calls") or []:
                arguments = (call.get("function") or {}).get("arguments")
                if isinstance(arguments, str):
                    number = call.get("index", 0)
                    channel = self._channel(("chat", index, "tool_calls", number),
                                            f"{path}.tool_calls[{number}].function.arguments",
                                            json_text=True)
                    call["function"]["arguments"] = channel.feed(arguments)
            function_call = delta.get("function_call") or {}
            if isinstance(function_call.get("arguments"), str):
                channel = self._channel(("chat", index, "function_call"),
                                        f"{path}.function_call.arguments", json_text=True)
                function_call["arguments"] = channel.feed(function_call["arguments"])
            if choice.get("finish_reason") is not None:
                # The last chunk of a choice carries what was still held back, after its own.
                for key in [k for k in self._channels if k[:2] == ("chat", index)]:
                    _append(delta, key, self._channels[key].finish())
                choice["delta"] = delta
        return [event.with_json(chunk)]

    def _chat_flush_event(self, key: tuple, rest: str) -> Event:
        """A chunk for text still held when the stream ends without a finish_reason."""
        template = self._chat_template
        assert template is not None  # a channel exists only after a chunk was seen
        chunk = json.loads(template.data)
        delta: dict[str, Any] = {}
        _append(delta, key, rest)
        chunk["choices"] = [{"index": key[1], "delta": delta, "finish_reason": None}]
        chunk.pop("usage", None)
        return template.with_json(chunk)

    # --- Responses ---------------------------------------------------------------------------

    def _responses_event(self, event: Event) -> list[Event]:
        if not event.data_lines:
            return [event]
        payload = _json_object(event.data)
        kind = payload.get("type")
        if kind in _DELTAS:
            return [self._responses_delta(event, payload, kind)]
        if kind in _DONES:
            name, key = _DONES[kind], _channel_key(kind, payload)
            flushed = self._flush(key)
            payload[name] = self._full_text(key, payload.get(name), _key_path(key),
                                            json_text=key[0] == "args")
            return [*flushed, event.with_json(payload)]
        if kind in _PARTS:
            key = _part_key(kind, payload)
            flushed = self._flush(key)
            payload["part"] = self._part(key, payload.get("part"))
            return [*flushed, event.with_json(payload)]
        if kind in ("response.output_item.added", "response.output_item.done"):
            index = payload.get("output_index")
            flushed = [e for k in list(self._channels) if k[1] == index for e in self._flush(k)]
            payload["item"] = self._item(index, payload.get("item"))
            return [*flushed, event.with_json(payload)]
        if kind in _RESPONSE_OBJECTS:
            terminal = kind not in ("response.created", "response.in_progress", "response.queued")
            flushed = self._flush_all() if terminal else []
            payload["response"] = self._response(payload.get("response"))
            return [*flushed, event.with_json(payload)]
        if kind == "error":
            return [event]
        raise UnsupportedContent("", f"event:{kind}")

    def _responses_delta(self, event: Event, payload: dict, kind: str) -> Event:
        if payload.get("logprobs"):
            raise UnsupportedContent(kind, "logprobs")
        key = _channel_key(kind, payload)
        channel = self._channel(key, _key_path(key), json_text=key[0] == "args")
        if not isinstance(payload.get("delta"), str):
            raise UnsupportedContent(kind, "delta")
        payload["delta"] = channel.feed(payload["delta"])
        self._template[key] = event
        return event.with_json(payload)

    def _part(self, key: tuple, part: Any) -> dict:
        part = _as_object(part, _key_path(key))
        name = "refusal" if part.get("type") == "refusal" else "text"
        if part.get("type") not in _PART_TYPES or part.get("annotations") or part.get("logprobs"):
            raise UnsupportedContent(_key_path(key), str(part.get("type")))
        if key[0] == "text" and name == "refusal":
            key = ("refusal", *key[1:])
        if isinstance(part.get(name), str):
            part[name] = self._full_text(key, part[name], _key_path(key))
        return part

    def _item(self, index: Any, item: Any) -> dict:
        item = _as_object(item, f"output[{index}]")
        kind = item.get("type")
        if kind == "message":
            for position, part in enumerate(item.get("content") or []):
                item["content"][position] = self._part(("text", index, position), part)
        elif kind in ("function_call", "custom_tool_call"):
            name, channel = ("arguments", "args") if kind == "function_call" else ("input", "input")
            key = (channel, index)
            if isinstance(item.get(name), str):
                item[name] = self._full_text(key, item[name], _key_path(key), channel == "args")
        elif kind == "reasoning":
            for position, part in enumerate(item.get("summary") or []):
                item["summary"][position] = self._part(("summary", index, position), part)
            for position, part in enumerate(item.get("content") or []):
                item["content"][position] = self._part(("reasoning", index, position), part)
        else:
            raise UnsupportedContent(f"output[{index}]", str(kind))
        return item

    def _response(self, response: Any) -> dict:
        response = _as_object(response, "response")
        for index, item in enumerate(response.get("output") or []):
            response["output"][index] = self._item(index, item)
        for name in ("instructions", "output_text"):
            value = response.get(name)
            if isinstance(value, str) and value and self._reidentify:
                # The echo of what the gateway sent upstream: restore tokens, no detection.
                response[name] = self._masker.reidentify(value)[0]
            elif value is not None and not isinstance(value, str):
                raise UnsupportedContent(f"response.{name}", type(value).__name__)
        return response


def _append(delta: dict, key: tuple, rest: str) -> None:
    """Add held-back text of a chat channel to a delta, after what the delta already says."""
    if not rest:
        return
    if key[2] in ("content", "refusal"):
        delta[key[2]] = (delta.get(key[2]) or "") + rest
        return
    if key[2] == "function_call":
        call = delta.setdefault("function_call", {})
    else:
        calls = delta.setdefault("tool_calls", [])
        call = next((c for c in calls if c.get("index", 0) == key[3]), None)
        if call is None:
            call = {"index": key[3]}
            calls.append(call)
        call = call.setdefault("function", {})
    call["arguments"] = (call.get("arguments") or "") + rest


_DELTAS = {
    "response.output_text.delta", "response.refusal.delta",
    "response.function_call_arguments.delta", "response.custom_tool_call_input.delta",
    "response.reasoning_summary_text.delta", "response.reasoning_text.delta",
}
_DONES = {
    "response.output_text.done": "text", "response.refusal.done": "refusal",
    "response.function_call_arguments.done": "arguments",
    "response.custom_tool_call_input.done": "input",
    "response.reasoning_summary_text.done": "text", "response.reasoning_text.done": "text",
}
_PARTS = {"response.content_part.added", "response.content_part.done",
          "response.reasoning_summary_part.added", "response.reasoning_summary_part.done"}
_PART_TYPES = {"output_text", "refusal", "summary_text", "reasoning_text"}
_RESPONSE_OBJECTS = {"response.created", "response.in_progress", "response.queued",
                     "response.completed", "response.incomplete", "response.failed"}


def _channel_key(kind: str, payload: dict) -> tuple:
    index = payload.get("output_index")
    if kind.startswith("response.output_text."):
        return ("text", index, payload.get("content_index"))
    if kind.startswith("response.refusal."):
        return ("refusal", index, payload.get("content_index"))
    if kind.startswith("response.function_call_arguments."):
        return ("args", index)
    if kind.startswith("response.custom_tool_call_input."):
        return ("input", index)
    if kind.startswith("response.reasoning_summary_text."):
        return ("summary", index, payload.get("summary_index"))
    return ("reasoning", index, payload.get("content_index"))


def _part_key(kind: str, payload: dict) -> tuple:
    index = payload.get("output_index")
    if kind.startswith("response.reasoning_summary_part."):
        return ("summary", index, payload.get("summary_index"))
    part = payload.get("part") or {}
    name = "refusal" if isinstance(part, dict) and part.get("type") == "refusal" else "text"
    if isinstance(part, dict) and part.get("type") == "reasoning_text":
        name = "reasoning"
    return (name, index, payload.get("content_index"))


def _key_path(key: tuple) -> str:
    kind, index, *rest = key
    if kind == "args":
        return f"output[{index}].arguments"
    if kind == "input":
        return f"output[{index}].input"
    if kind == "summary":
        return f"output[{index}].summary[{rest[0]}].text"
    name = "refusal" if kind == "refusal" else "text"
    return f"output[{index}].content[{rest[0]}].{name}"


def _json_object(data: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        raise UnsupportedContent("", "event_data") from None
    return _as_object(value, "")


def _as_object(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise UnsupportedContent(path, type(value).__name__)
    return value
