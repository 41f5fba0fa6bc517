"""The text-bearing fields of OpenAI request and response bodies, with stable paths.

Each endpoint has an explicit map of where text lives. Everything else in a body is either known
configuration (model, temperature, tool schemas...) or refused with `UnsupportedContent`:
unknown parameters, item and part types (images, audio, files) and endpoints never pass
unexamined.

Strings that hold JSON (tool arguments and outputs) are parsed and walked structurally, so each
leaf reaches the detector with its JSON key as context (`birthDate`), and re-serialised only when
something in them changed. Object keys of free-form JSON become fields of kind "key": the
detector sees them, and a key holding PHI is refused (renaming keys could merge members).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from phigate.wire.types import UnsupportedContent


class _Marker:
    """A path segment that cannot collide with a JSON key or index."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


JSON = _Marker("json")  # "the string here is JSON; the rest of the path is inside it"
KEY = _Marker("key")  # "the name of this object member" (last segment)

Segment = str | int | _Marker
Path = tuple[Segment, ...]
# "name": a chat participant name; OpenAI accepts only [A-Za-z0-9_-]{1,64} there.
FieldKind = Literal["text", "number", "key", "name"]


@dataclass(frozen=True, slots=True)
class Field:
    path: Path
    text: str
    key: str | None = None
    kind: FieldKind = "text"

    def __repr__(self) -> str:  # the text may be PHI
        return f"Field({render(self.path)}, len={len(self.text)}, kind={self.kind})"


def render(path: Path) -> str:
    """`messages[2].tool_calls[0].function.arguments{json}.patient.name` (for records)."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif segment is JSON:
            out += "{json}"
        elif segment is KEY:
            out += "{key}"
        else:
            out += f".{segment}" if out else str(segment)
    return out


# --- endpoints -------------------------------------------------------------------------------

_ENDPOINTS = [
    (re.compile(r"POST /v1/chat/completions"), "chat"),
    (re.compile(r"GET /v1/chat/completions/[^/]+"), "chat"),
    (re.compile(r"POST /v1/responses(/input_tokens)?"), "responses"),
    (re.compile(r"GET /v1/responses/[^/]+"), "responses"),
    (re.compile(r"POST /v1/embeddings"), "embeddings"),
    (re.compile(r"POST /v1/completions"), "completions"),
    (re.compile(r"POST /v1/traces/ingest"), "traces"),
]


def endpoint_kind(endpoint: str) -> str:
    """Map a normalised "METHOD /v1/path" onto the wire format it speaks, or refuse it."""
    for pattern, kind in _ENDPOINTS:
        if pattern.fullmatch(endpoint):
            return kind
    raise UnsupportedContent("", "endpoint")


# --- free-form JSON and strings that hold JSON ----------------------------------------------

_MAX_JSON_DEPTH = 8


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # json.loads would keep only the last value; the upstream may read another one.
        raise ValueError("duplicate key")
    return result


def parse_json_string(text: str) -> Any | None:
    """The JSON object or array a string holds, or None if it is plain text."""
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return None


def dump_json_string(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _Collector:
    def __init__(self) -> None:
        self.fields: list[Field] = []

    def text(self, path: Path, text: Any, key: str | None = None, depth: int = 0) -> None:
        """A string the upstream reads; parsed further when it holds JSON."""
        if text is None:
            return
        if not isinstance(text, str):
            raise UnsupportedContent(render(path), type(text).__name__)
        parsed = parse_json_string(text) if depth < _MAX_JSON_DEPTH else None
        if parsed is None:
            self.fields.append(Field(path, text, key))
        else:
            self.free(path + (JSON,), parsed, key, depth + 1)

    def free(self, path: Path, value: Any, key: str | None = None, depth: int = 0) -> None:
        """Free-form JSON: every string, number and object key is a field."""
        if isinstance(value, str):
            self.text(path, value, key, depth)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, (int, float)):
            self.fields.append(Field(path, json.dumps(value), key, "number"))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.free(path + (index,), item, key, depth)
        elif isinstance(value, dict):
            for name, item in value.items():
                self.fields.append(Field(path + (name, KEY), name, None, "key"))
                self.free(path + (name,), item, name, depth)
        else:
            raise UnsupportedContent(render(path), type(value).__name__)


def _items(value: Any, path: Path) -> list[tuple[Path, Any]]:
    if not isinstance(value, list):
        raise UnsupportedContent(render(path), type(value).__name__)
    return [(path + (index,), item) for index, item in enumerate(value)]


def _object(value: Any, path: Path) -> dict:
    if not isinstance(value, dict):
        raise UnsupportedContent(render(path), type(value).__name__)
    return value


def _check_params(body: dict, text: set[str], config: set[str]) -> None:
    for name in body:
        if name not in text and name not in config:
            raise UnsupportedContent(name, "parameter")


# --- Chat Completions ------------------------------------------------------------------------

_CHAT_TEXT = {"messages", "metadata", "prediction", "user", "safety_identifier",
              "prompt_cache_key", "stop", "web_search_options"}
_CHAT_CONFIG = {
    "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
    "logprobs", "max_completion_tokens", "max_tokens", "modalities", "moderation", "n",
    "parallel_tool_calls", "presence_penalty", "prompt_cache_options", "prompt_cache_retention",
    "reasoning_effort", "response_format", "seed", "service_tier", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p",
    "verbosity",
}
_CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def _chat_content(c: _Collector, path: Path, content: Any) -> None:
    if content is None or isinstance(content, str):
        c.text(path, content)
        return
    for part_path, part in _items(content, path):
        part = _object(part, part_path)
        kind = part.get("type")
        if kind == "text":
            c.text(part_path + ("text",), part.get("text"))
        elif kind == "refusal":
            c.text(part_path + ("refusal",), part.get("refusal"))
        else:
            raise UnsupportedContent(render(part_path), str(kind))


def _chat_tool_calls(c: _Collector, path: Path, calls: Any) -> None:
    for call_path, call in _items(calls, path):
        call = _object(call, call_path)
        if call.get("type", "function") != "function":
            raise UnsupportedContent(render(call_path), str(call.get("type")))
        function = _object(call.get("function"), call_path + ("function",))
        c.text(call_path + ("function", "arguments"), function.get("arguments"))


def _refuse_unmaskable_output(body: dict, include: Any = ()) -> None:
    """Refuse up front what would make the response unmaskable: token logprobs repeat the text
    token by token, and audio output cannot be examined."""
    if body.get("logprobs") or body.get("top_logprobs") or \
            "message.output_text.logprobs" in (include or ()):
        raise UnsupportedContent("logprobs", "logprobs")
    if "audio" in (body.get("modalities") or ()):
        raise UnsupportedContent("modalities", "audio")


def _chat_request(c: _Collector, body: dict) -> None:
    _check_params(body, _CHAT_TEXT, _CHAT_CONFIG)
    _refuse_unmaskable_output(body)
    for path, message in _items(body.get("messages"), ("messages",)):
        message = _object(message, path)
        if message.get("role") not in _CHAT_ROLES:
            raise UnsupportedContent(render(path), "role")
        if message.get("audio") is not None and message.get("role") != "assistant":
            raise UnsupportedContent(render(path + ("audio",)), "audio")
        _chat_content(c, path + ("content",), message.get("content"))
        c.text(path + ("refusal",), message.get("refusal"))
        if message.get("name") is not None:
            if not isinstance(message["name"], str):
                raise UnsupportedContent(render(path + ("name",)), "name")
            c.fields.append(Field(path + ("name",), message["name"], "name", "name"))
        if "tool_calls" in message and message["tool_calls"] is not None:
            _chat_tool_calls(c, path + ("tool_calls",), message["tool_calls"])
        if message.get("function_call") is not None:
            function = _object(message["function_call"], path + ("function_call",))
            c.text(path + ("function_call", "arguments"), function.get("arguments"))
    prediction = body.get("prediction")
    if prediction is not None:
        prediction = _object(prediction, ("prediction",))
        _chat_content(c, ("prediction", "content"), prediction.get("content"))
    for name in ("metadata", "user", "safety_identifier", "prompt_cache_key", "stop"):
        c.free((name,), body.get(name), name)
    options = body.get("web_search_options")
    if options is not None:
        c.free(("web_search_options", "user_location"),
               _object(options, ("web_search_options",)).get("user_location"))


def _chat_response(c: _Collector, body: dict) -> None:
    for path, choice in _items(body.get("choices", []), ("choices",)):
        choice = _object(choice, path)
        if choice.get("logprobs") is not None:
            # Token logprobs repeat the text token by token; they cannot be masked consistently.
            raise UnsupportedContent(render(path + ("logprobs",)), "logprobs")
        message = _object(choice.get("message"), path + ("message",))
        mpath = path + ("message",)
        if message.get("audio") is not None:
            raise UnsupportedContent(render(mpath + ("audio",)), "audio")
        c.text(mpath + ("content",), message.get("content"))
        c.text(mpath + ("refusal",), message.get("refusal"))
        if message.get("tool_calls") is not None:
            _chat_tool_calls(c, mpath + ("tool_calls",), message["tool_calls"])
        if message.get("function_call") is not None:
            function = _object(message["function_call"], mpath + ("function_call",))
            c.text(mpath + ("function_call", "arguments"), function.get("arguments"))
        for apath, annotation in _items(message.get("annotations") or [], mpath + ("annotations",)):
            _annotation(c, apath, annotation)


# --- Responses -------------------------------------------------------------------------------

_RESPONSES_TEXT = {"input", "instructions", "metadata", "prompt", "user", "safety_identifier",
                   "prompt_cache_key"}
_RESPONSES_CONFIG = {
    "model", "access_programs", "background", "background_options", "context_management",
    "conversation", "include", "max_output_tokens", "max_tool_calls", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "service_tier", "store", "stream", "stream_options",
    "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation",
}
_MESSAGE_ROLES = {"user", "assistant", "system", "developer"}


def _annotation(c: _Collector, path: Path, annotation: Any) -> None:
    annotation = _object(annotation, path)
    for name in ("title", "url", "filename"):
        c.text(path + (name,), annotation.get(name), name)


def _response_part(c: _Collector, path: Path, part: Any) -> None:
    part = _object(part, path)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
        c.text(path + ("text",), part.get("text"))
        if part.get("logprobs"):
            raise UnsupportedContent(render(path + ("logprobs",)), "logprobs")
        for apath, annotation in _items(part.get("annotations") or [], path + ("annotations",)):
            _annotation(c, apath, annotation)
    elif kind == "refusal":
        c.text(path + ("refusal",), part.get("refusal"))
    else:
        raise UnsupportedContent(render(path), str(kind))


def _response_parts(c: _Collector, path: Path, content: Any) -> None:
    if isinstance(content, str):
        c.text(path, content)
        return
    for part_path, part in _items(content, path):
        _response_part(c, part_path, part)


def _response_item(c: _Collector, path: Path, item: Any) -> None:
    item = _object(item, path)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        if item.get("role") not in _MESSAGE_ROLES:
            raise UnsupportedContent(render(path), "role")
        _response_parts(c, path + ("content",), item.get("content"))
    elif kind in ("function_call", "custom_tool_call"):
        field = "arguments" if kind == "function_call" else "input"
        c.text(path + (field,), item.get(field))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        _response_parts(c, path + ("output",), item.get("output"))
    elif kind == "reasoning":
        for part_path, part in _items(item.get("summary") or [], path + ("summary",)):
            _response_part(c, part_path, part)
        for part_path, part in _items(item.get("content") or [], path + ("content",)):
            _response_part(c, part_path, part)
        # encrypted_content was produced by the upstream from what it already saw.
    elif kind == "item_reference":
        return
    else:
        raise UnsupportedContent(render(path), str(kind))


def _responses_input(c: _Collector, path: Path, value: Any) -> None:
    if isinstance(value, str) or value is None:
        c.text(path, value)
        return
    for item_path, item in _items(value, path):
        _response_item(c, item_path, item)


def _responses_request(c: _Collector, body: dict) -> None:
    if body.get("image") is not None:
        raise UnsupportedContent("image", "image")
    _check_params(body, _RESPONSES_TEXT, _RESPONSES_CONFIG | {"image"})
    _refuse_unmaskable_output(body, body.get("include"))
    _responses_input(c, ("input",), body.get("input"))
    _responses_input(c, ("instructions",), body.get("instructions"))
    prompt = body.get("prompt")
    if prompt is not None:
        variables = _object(prompt, ("prompt",)).get("variables") or {}
        for name, value in _object(variables, ("prompt", "variables")).items():
            vpath = ("prompt", "variables", name)
            c.fields.append(Field(vpath + (KEY,), name, None, "key"))
            if isinstance(value, dict):
                _response_part(c, vpath, value)
            else:
                c.text(vpath, value, name)
    for name in ("metadata", "user", "safety_identifier", "prompt_cache_key"):
        c.free((name,), body.get(name), name)


def _responses_response(c: _Collector, body: dict) -> None:
    for path, item in _items(body.get("output") or [], ("output",)):
        item = _object(item, path)
        if item.get("type") == "message" and item.get("role") is None:
            raise UnsupportedContent(render(path), "role")
        _response_item(c, path, item)
    _responses_input(c, ("instructions",), body.get("instructions"))
    c.text(("output_text",), body.get("output_text"))


# --- Embeddings, legacy Completions, Agents SDK traces ---------------------------------------


def _prompt_like(c: _Collector, path: Path, value: Any) -> None:
    if isinstance(value, str):
        c.text(path, value)
        return
    for item_path, item in _items(value, path):
        if not isinstance(item, str):
            # Token ids cannot be examined without the model's tokenizer.
            raise UnsupportedContent(render(item_path), "token_array")
        c.text(item_path, item)


def _embeddings_request(c: _Collector, body: dict) -> None:
    _check_params(body, {"input", "user"}, {"model", "dimensions", "encoding_format"})
    _prompt_like(c, ("input",), body.get("input"))
    c.free(("user",), body.get("user"), "user")


_COMPLETIONS_CONFIG = {"model", "best_of", "echo", "frequency_penalty", "logit_bias",
                       "logprobs", "max_tokens", "n", "presence_penalty", "seed", "stream",
                       "stream_options", "temperature", "top_p"}


def _completions_request(c: _Collector, body: dict) -> None:
    _check_params(body, {"prompt", "suffix", "stop", "user"}, _COMPLETIONS_CONFIG)
    if body.get("logprobs") is not None:
        raise UnsupportedContent("logprobs", "logprobs")
    _prompt_like(c, ("prompt",), body.get("prompt"))
    for name in ("suffix", "stop", "user"):
        c.free((name,), body.get(name), name)


def _completions_response(c: _Collector, body: dict) -> None:
    for path, choice in _items(body.get("choices", []), ("choices",)):
        choice = _object(choice, path)
        if choice.get("logprobs") is not None:
            raise UnsupportedContent(render(path + ("logprobs",)), "logprobs")
        c.text(path + ("text",), choice.get("text"))


# Identifiers and timestamps the tracing backend needs intact; everything else is free-form.
_TRACE_STRUCTURE = {"object", "id", "trace_id", "parent_id", "started_at", "ended_at"}


def _traces_request(c: _Collector, body: dict) -> None:
    _check_params(body, {"data"}, set())
    for path, item in _items(body.get("data"), ("data",)):
        for name, value in _object(item, path).items():
            if name not in _TRACE_STRUCTURE:
                c.free(path + (name,), value, name)


_REQUEST = {"chat": _chat_request, "responses": _responses_request,
            "embeddings": _embeddings_request, "completions": _completions_request,
            "traces": _traces_request}
_RESPONSE = {"chat": _chat_response, "responses": _responses_response,
             "completions": _completions_response}


def value_fields(path: Path, value: Any) -> list[Field]:
    """The fields of a free-form JSON value (e.g. a streamed tool call's parsed arguments)."""
    collector = _Collector()
    collector.free(path, value)
    return collector.fields


def request_fields(endpoint: str, body: Any) -> list[Field]:
    """Every text field of a request body, or UnsupportedContent for anything unexamined."""
    collector = _Collector()
    _REQUEST[endpoint_kind(endpoint)](collector, _object(body, ()))
    return collector.fields


def response_fields(endpoint: str, body: Any) -> list[Field]:
    """Every text field of a non-streamed response body (embedding vectors carry none)."""
    kind = endpoint_kind(endpoint)
    if kind in ("embeddings", "traces"):
        return []
    collector = _Collector()
    _RESPONSE[kind](collector, _object(body, ()))
    return collector.fields


# --- writing replacements back ---------------------------------------------------------------


def apply(body: Any, replacements: dict[Path, str]) -> Any:
    """A copy of `body` with each field replaced; untouched parts are shared, not copied.

    A string holding JSON is re-serialised only when a field inside it changed. Number fields
    become strings (a masked number is no longer a number).
    """
    tree: dict = {}
    for path, text in replacements.items():
        if path and path[-1] is KEY:
            raise ValueError(f"object keys are not rewritten: {render(path)}")
        node = tree
        for segment in path:
            node = node.setdefault(segment, {})
        node[None] = text
    return _apply(body, tree) if tree else body


def _apply(value: Any, node: dict) -> Any:
    if None in node:
        return node[None]
    if JSON in node:
        parsed = parse_json_string(value) if isinstance(value, str) else None
        if parsed is None:
            raise ValueError("path expects a JSON string")
        return dump_json_string(_apply(parsed, node[JSON]))
    if isinstance(value, dict):
        copy = dict(value)
    elif isinstance(value, list):
        copy = list(value)
    else:
        raise ValueError("path does not match the body")
    for segment, child in node.items():
        copy[segment] = _apply(copy[segment], child)
    return copy


apply_request = apply
apply_response = apply
