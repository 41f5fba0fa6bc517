"""Routing of the local OpenAI API: one request in, one `Reply` out (no sockets here).

Test hooks, read from request headers (names are case-insensitive):
- `x-localupstream-fail: <status>`: answer that status (400-599) with an OpenAI-shaped error.
- `x-localupstream-reply: <text>` / `x-localupstream-tool-args: <json>`: see `model`.
- `x-localupstream-delta-size: <n>`: stream deltas of n characters (defaults: see `model`).
- `x-localupstream-delay-ms: <ms>`: pause between streamed events (default: `chunk_delay`).
- `x-localupstream-drop-after: <n>`: send n streamed events, then close the connection without
  ending the body, as a crashed upstream would.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator

from phigate.localupstream import payloads
from phigate.localupstream.model import (
    Overrides,
    chat_conversation,
    completions_conversation,
    next_turn,
    responses_conversation,
)

# OpenAI's error `type` and `code` for the statuses a test may force.
_ERROR_KINDS = {
    401: ("invalid_request_error", "invalid_api_key"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    frames: Iterator[bytes] | None = None  # a stream: sent chunked, one frame per event
    delay: float = 0.0  # seconds between streamed frames
    drop_after: int | None = None  # close the connection after this many frames


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        default_kind, default_code = _ERROR_KINDS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        self.kind = kind or default_kind
        self.code = code if code is not None else default_code

    def reply(self) -> Reply:
        error = {"message": self.message, "type": self.kind, "param": self.param,
                 "code": self.code}
        return Reply(self.status, _dumps({"error": error}))


def _dumps(value: object) -> bytes:
    # Compact, as OpenAI serialises its bodies and events.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _json_reply(value: object, status: int = 200) -> Reply:
    return Reply(status, _dumps(value))


def _sse_data(value: object) -> bytes:
    return b"data: " + _dumps(value) + b"\n\n"


def _sse_event(event: dict) -> bytes:
    return f"event: {event['type']}\n".encode() + _sse_data(event)


def _data_stream(chunks: Iterator[dict]) -> Iterator[bytes]:
    """Chat and legacy Completions streams: `data:` lines, then the `[DONE]` sentinel."""
    for chunk in chunks:
        yield _sse_data(chunk)
    yield b"data: [DONE]\n\n"


def _int_header(headers: dict[str, str], name: str, low: int, high: int) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, f"header {name} must be an integer from {low} to {high}")
    return value


class OpenAIApi:
    """The endpoints; `api_key`, when set, must arrive as `Authorization: Bearer <key>`."""

    def __init__(self, *, api_key: str | None = None, chunk_delay: float = 0.0) -> None:
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self._posts: dict[str, Callable[[dict, dict[str, str]], Reply]] = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
            # The Agents SDK's trace exporter; OpenAI answers 204 No Content.
            "/v1/traces/ingest": lambda _body, _headers: Reply(204, content_type=None),
        }

    def respond(
        self, method: str, path: str, body: object | None, headers: dict[str, str]
    ) -> Reply:
        """Answer one request; `body` is the parsed JSON body, None when absent or not JSON."""
        try:
            return self._route(method, path.rstrip("/"), body, headers)
        except ApiError as error:
            return error.reply()
        except Exception as error:  # a bug here must still answer, as OpenAI's 500s do
            frame = traceback.extract_tb(error.__traceback__)[-1]
            # The type and place only: the message could quote the request body.
            print(f"localupstream: {type(error).__name__} at {frame.filename}:{frame.lineno}",
                  file=sys.stderr)
            return ApiError(500, "The server had an error while processing your request.").reply()

    def _route(self, method: str, path: str, body: object | None,
               headers: dict[str, str]) -> Reply:
        forced = _int_header(headers, "x-localupstream-fail", 400, 599)
        if forced is not None:
            raise ApiError(forced, f"Forced failure with status {forced} (x-localupstream-fail).")
        self._check_key(headers.get("authorization"))
        if method == "POST" and path in self._posts:
            return self._posts[path](_object_body(body), headers)
        if method == "GET" and path == "/v1/models":
            return _json_reply(payloads.model_list())
        if method == "GET" and path.startswith("/v1/models/"):
            model_id = path.removeprefix("/v1/models/")
            if model_id not in payloads.MODELS:
                raise ApiError(404, f"The model '{model_id}' does not exist", param="model",
                               code="model_not_found")
            return _json_reply(payloads.model_entry(model_id))
        raise ApiError(404, f"Invalid URL ({method} {path})")

    def _check_key(self, authorization: str | None) -> None:
        if self.api_key is None:
            return
        if not authorization:
            raise ApiError(401, "You didn't provide an API key. Send it as "
                                "'Authorization: Bearer YOUR_KEY'.", code="missing_api_key")
        if not secrets.compare_digest(authorization.encode(), f"Bearer {self.api_key}".encode()):
            raise ApiError(401, "Incorrect API key provided.")

    def _stream(self, frames: Iterator[bytes], headers: dict[str, str]) -> Reply:
        delay_ms = _int_header(headers, "x-localupstream-delay-ms", 0, 60_000)
        return Reply(
            200, content_type="text/event-stream; charset=utf-8", frames=frames,
            delay=self.chunk_delay if delay_ms is None else delay_ms / 1000,
            drop_after=_int_header(headers, "x-localupstream-drop-after", 0, 1_000_000),
        )

    def _chat(self, body: dict, headers: dict[str, str]) -> Reply:
        model = _require_model(body)
        if not isinstance(body.get("messages"), list):
            raise ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                           code="missing_required_parameter")
        turn = next_turn(chat_conversation(body), _overrides(headers))
        completion_id, created = payloads.new_id("chatcmpl-"), int(time.time())
        if body.get("stream") is True:
            chunks = payloads.chat_chunks(
                turn, model, completion_id, created, _stream_shape(body, headers)
            )
            return self._stream(_data_stream(chunks), headers)
        return _json_reply(payloads.chat_completion(turn, model, completion_id, created))

    def _responses(self, body: dict, headers: dict[str, str]) -> Reply:
        _require_model(body)
        turn = next_turn(responses_conversation(body), _overrides(headers))
        response_id, created = payloads.new_id("resp_"), int(time.time())
        if body.get("stream") is True:
            events = payloads.response_events(
                turn, body, response_id, created, _stream_shape(body, headers)
            )
            return self._stream((_sse_event(e) for e in events), headers)
        return _json_reply(payloads.response(turn, body, response_id, created))

    def _completions(self, body: dict, headers: dict[str, str]) -> Reply:
        model = _require_model(body)
        turn = next_turn(completions_conversation(body), _overrides(headers))
        completion_id, created = payloads.new_id("cmpl-"), int(time.time())
        if body.get("stream") is True:
            chunks = payloads.text_completion_chunks(
                turn, model, completion_id, created, _stream_shape(body, headers)
            )
            return self._stream(_data_stream(chunks), headers)
        return _json_reply(payloads.text_completion(turn, model, completion_id, created))

    def _embeddings(self, body: dict, _headers: dict[str, str]) -> Reply:
        _require_model(body)
        try:
            return _json_reply(payloads.embeddings(body))
        except ValueError as error:
            field = str(error)
            raise ApiError(400, f"Invalid value for '{field}'.", param=field) from None


def _object_body(body: object | None) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "We could not parse the JSON body of your request. The API "
                            "expects a JSON object.")
    return body


def _require_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    return model


def _stream_shape(body: dict, headers: dict[str, str]) -> payloads.StreamShape:
    options = body.get("stream_options")
    options = options if isinstance(options, dict) else {}
    return payloads.StreamShape(
        delta_size=_int_header(headers, "x-localupstream-delta-size", 1, 1_000_000),
        include_usage=options.get("include_usage") is True,
        obfuscate=options.get("include_obfuscation") is not False,
    )


def _overrides(headers: dict[str, str]) -> Overrides:
    return Overrides(
        headers.get("x-localupstream-reply"), headers.get("x-localupstream-tool-args")
    )
