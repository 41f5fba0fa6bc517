"""OpenAI wire shapes: response bodies and streamed event sequences built from a scripted turn.

Field names, nesting and event order follow what api.openai.com sends, so the SDKs' own models
parse them and a gateway sees the same places where text travels (deltas *and* the `.done` /
`completed` copies that repeat it).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct
from dataclasses import dataclass
from typing import Iterator

from phigate.localupstream.model import (
    ToolCall,
    Turn,
    count_tokens,
    split_arguments,
    split_deltas,
)


MODELS = (
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini",
    "gpt-3.5-turbo-instruct", "text-embedding-3-small", "text-embedding-3-large",
    "text-embedding-ada-002",
)
_MODELS_CREATED = 1_700_000_000
_EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072}
_DEFAULT_EMBEDDING_DIMENSIONS = 1536
_FINGERPRINT = "fp_localupstream"


@dataclass(frozen=True)
class StreamShape:
    """How a stream is cut, from the request: delta size (None: the model's defaults), whether
    a usage chunk ends it (`stream_options.include_usage`), and whether delta events carry an
    `obfuscation` field (OpenAI's default; off with `stream_options.include_obfuscation: false`).
    """

    delta_size: int | None = None
    include_usage: bool = False
    obfuscate: bool = True


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _obfuscation(delta: str, sequence: int) -> str:
    """Padding that evens out event sizes, like OpenAI's: here derived from the delta, so
    streams stay deterministic."""
    digest = hashlib.sha256(f"{sequence}\0{delta}".encode()).hexdigest()
    return digest[: 16 - len(delta) % 16]


# Chat Completions -------------------------------------------------------------------------


def _chat_usage(turn: Turn) -> dict:
    return {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(turn: Turn, model: str, completion_id: str, created: int) -> dict:
    message: dict = {"role": "assistant", "content": turn.text, "refusal": None, "annotations": []}
    if turn.tool_call is not None:
        call = turn.tool_call
        message["tool_calls"] = [
            {"id": call.call_id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0, "message": message, "logprobs": None,
            "finish_reason": "stop" if turn.tool_call is None else "tool_calls",
        }],
        "usage": _chat_usage(turn),
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }


def chat_chunks(
    turn: Turn, model: str, completion_id: str, created: int, shape: StreamShape
) -> Iterator[dict]:
    sequence = 0

    def chunk(delta: dict, finish_reason: str | None = None, padded: str | None = None) -> dict:
        nonlocal sequence
        body = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "service_tier": "default", "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}],
        }
        if shape.include_usage:
            body["usage"] = None
        if padded is not None and shape.obfuscate:
            body["obfuscation"] = _obfuscation(padded, sequence)
        sequence += 1
        return body

    call = turn.tool_call
    if call is None:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in split_deltas(turn.text or "", shape.delta_size):
            yield chunk({"content": piece}, padded=piece)
        yield chunk({}, "stop")
    else:
        yield chunk({
            "role": "assistant", "content": None, "refusal": None,
            "tool_calls": [{"index": 0, "id": call.call_id, "type": "function",
                            "function": {"name": call.name, "arguments": ""}}],
        })
        for piece in split_arguments(call.arguments, shape.delta_size):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                        padded=piece)
        yield chunk({}, "tool_calls")
    if shape.include_usage:
        final = chunk({})
        final["choices"] = []
        final["usage"] = _chat_usage(turn)
        yield final


# Legacy Completions -----------------------------------------------------------------------


def _completion_usage(turn: Turn) -> dict:
    return {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }


def text_completion(turn: Turn, model: str, completion_id: str, created: int) -> dict:
    return {
        "id": completion_id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"text": turn.text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": _completion_usage(turn),
    }


def text_completion_chunks(
    turn: Turn, model: str, completion_id: str, created: int, shape: StreamShape
) -> Iterator[dict]:
    def chunk(text: str, finish_reason: str | None = None) -> dict:
        body = {
            "id": completion_id, "object": "text_completion", "created": created,
            "choices": [{"text": text, "index": 0, "logprobs": None,
                         "finish_reason": finish_reason}],
            "model": model,
        }
        if shape.include_usage:
            body["usage"] = None
        return body

    for piece in split_deltas(turn.text or "", shape.delta_size):
        yield chunk(piece)
    yield chunk("", "stop")
    if shape.include_usage:
        final = chunk("")
        final["choices"] = []
        final["usage"] = _completion_usage(turn)
        yield final


# Responses --------------------------------------------------------------------------------


def _responses_usage(turn: Turn) -> dict:
    return {
        "input_tokens": turn.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": turn.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }


def _echo_tool(tool: object) -> object:
    # The API echoes declared tools with its defaults filled in.
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"description": None, "strict": True, **tool}
    return tool


def response_object(
    body: dict, response_id: str, created_at: int, status: str, output: list,
    usage: dict | None,
) -> dict:
    tools = body.get("tools")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [_echo_tool(t) for t in tools] if isinstance(tools, list) else [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _text_part(text: str) -> dict:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(item_id: str, status: str, content: list) -> dict:
    return {"id": item_id, "type": "message", "status": status, "content": content,
            "role": "assistant"}


def _function_call_item(item_id: str, status: str, call: ToolCall, arguments: str) -> dict:
    return {"id": item_id, "type": "function_call", "status": status, "arguments": arguments,
            "call_id": call.call_id, "name": call.name}


def _completed_item(turn: Turn, item_id: str) -> dict:
    if turn.tool_call is not None:
        return _function_call_item(item_id, "completed", turn.tool_call, turn.tool_call.arguments)
    return _message_item(item_id, "completed", [_text_part(turn.text or "")])


def _item_id(turn: Turn) -> str:
    return new_id("fc_" if turn.tool_call is not None else "msg_")


def response(turn: Turn, body: dict, response_id: str, created_at: int) -> dict:
    output = [_completed_item(turn, _item_id(turn))]
    return response_object(
        body, response_id, created_at, "completed", output, _responses_usage(turn)
    )


def response_events(
    turn: Turn, body: dict, response_id: str, created_at: int, shape: StreamShape
) -> Iterator[dict]:
    """The typed events of a streamed response, each with its `sequence_number`."""
    item_id = _item_id(turn)
    at = {"item_id": item_id, "output_index": 0}
    text_at = {**at, "content_index": 0}
    in_progress = response_object(body, response_id, created_at, "in_progress", [], None)
    events: list[dict] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
    ]
    if turn.tool_call is None:
        text = turn.text or ""
        events += [
            {"type": "response.output_item.added", "output_index": 0,
             "item": _message_item(item_id, "in_progress", [])},
            {"type": "response.content_part.added", **text_at, "part": _text_part("")},
            *({"type": "response.output_text.delta", **text_at, "delta": piece, "logprobs": []}
              for piece in split_deltas(text, shape.delta_size)),
            {"type": "response.output_text.done", **text_at, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **text_at, "part": _text_part(text)},
        ]
    else:
        arguments = turn.tool_call.arguments
        events += [
            {"type": "response.output_item.added", "output_index": 0,
             "item": _function_call_item(item_id, "in_progress", turn.tool_call, "")},
            *({"type": "response.function_call_arguments.delta", **at, "delta": piece}
              for piece in split_arguments(arguments, shape.delta_size)),
            {"type": "response.function_call_arguments.done", **at, "arguments": arguments},
        ]
    completed_item = _completed_item(turn, item_id)
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": completed_item},
        {"type": "response.completed", "response": response_object(
            body, response_id, created_at, "completed", [completed_item], _responses_usage(turn)
        )},
    ]
    for number, event in enumerate(events):
        if shape.obfuscate and event["type"].endswith(".delta"):
            event["obfuscation"] = _obfuscation(event["delta"], number)
        yield {**event, "sequence_number": number}


# Embeddings and models --------------------------------------------------------------------


def _embedding_inputs(value: object) -> list[str]:
    """Each input as text; token-id inputs are keyed by their decimal form."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    if isinstance(value, list) and value and all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, int) for i in v))
        for v in value
    ):
        return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    raise ValueError("input")


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A unit-length float32 vector derived from SHA-256 of the text (deterministic)."""
    raw = b""
    block = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{block}\0{text}".encode()).digest()
        block += 1
    ints = struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])
    values = [i / 0x7FFFFFFF - 1.0 for i in ints]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    # Round-trip through float32 so the float and base64 encodings carry the same numbers.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f",
                                                             *(v / norm for v in values))))


def embeddings(body: dict) -> dict:
    """The embeddings list; raises ValueError naming the bad field."""
    model = body.get("model")
    if not isinstance(model, str):
        raise ValueError("model")
    inputs = _embedding_inputs(body.get("input"))
    dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS.get(
        model, _DEFAULT_EMBEDDING_DIMENSIONS
    )
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 8192:
        raise ValueError("dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, dimensions)
        encoded: object = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = count_tokens(sum(len(t) for t in inputs))
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def model_entry(model_id: str) -> dict:
    owner = "openai-internal" if model_id.startswith("text-embedding-ada") else "system"
    return {"id": model_id, "object": "model", "created": _MODELS_CREATED, "owned_by": owner}


def model_list() -> dict:
    return {"object": "list", "data": [model_entry(m) for m in MODELS]}
