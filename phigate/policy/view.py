"""RequestView: the facts about one request that the policy decides on, as plain data.

The gateway builds it from the flow (texts come from phigate.wire's field extraction);
`build_view` reads model, streaming, output-token cap and tools from Chat Completions,
Responses, Completions and Embeddings bodies. Malformed typed fields raise ViewError (the
gateway answers 400) rather than being skipped, so an odd type cannot slip past a rule.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

# Every spelling of "how many tokens may the answer have" across OpenAI endpoints.
_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_CALL_ITEM_TYPES = ("function_call", "custom_tool_call")


class ViewError(ValueError):
    """A request field has the wrong type. Names the field, never its value."""

    def __init__(self, field: str) -> None:
        super().__init__(f"malformed request field: {field}")
        self.field = field


@dataclass(frozen=True)
class RequestView:
    method: str
    path: str  # normalised (see normalize_path)
    model: str | None = None
    stream: bool = False
    max_output_tokens: int | None = None
    tools_declared: tuple[str, ...] = ()
    tools_called: tuple[str, ...] = ()
    texts: tuple[tuple[str, str], ...] = ()  # (field path, text)
    body_bytes: int = 0
    message_count: int = 0

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


def normalize_path(path: str) -> str:
    """The path the endpoint rules see: no query, percent-decoded (repeatedly, so `%2566`
    cannot hide `f`), `.`/`..` and repeated slashes resolved, no trailing slash.

    Rules match this form, so `/v1//files`, `/v1/chat/../files` and `/v1/%66iles` are all
    `/v1/files`. The gateway should forward the same normalised path upstream.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    for _ in range(5):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = posixpath.normpath("/" + path.replace("\\", "/"))
    return "/" + path.lstrip("/")


def build_view(
    method: str,
    path: str,
    body: dict[str, Any] | None,
    body_bytes: int,
    texts: Iterable[tuple[str, str]] = (),
) -> RequestView:
    """The view of one request; `body` is the parsed JSON body (None if there is none)."""
    body = body or {}
    if not isinstance(body, dict):
        raise ViewError("body")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ViewError("model")
    return RequestView(
        method=method.upper(),
        path=normalize_path(path),
        model=model,
        stream=body.get("stream") is True,
        max_output_tokens=_max_output_tokens(body),
        tools_declared=tuple(_declared_tools(body)),
        tools_called=tuple(_called_tools(body)),
        texts=tuple((str(where), str(text)) for where, text in texts),
        body_bytes=body_bytes,
        message_count=_message_count(body),
    )


def _max_output_tokens(body: dict) -> int | None:
    """The largest cap the body asks for (several spellings may be present)."""
    caps = []
    for key in _MAX_TOKEN_FIELDS:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ViewError(key)  # Python's json accepts Infinity and NaN
        caps.append(math.ceil(value))
    return max(caps) if caps else None


def _tool_name(tool: Any, field: str) -> str:
    """Function tools by name; hosted tools (web_search, file_search, ...) by type; MCP
    servers as `mcp:<server_label>`."""
    if not isinstance(tool, dict):
        raise ViewError(field)
    kind = tool.get("type", "function")
    # Chat Completions nests the name (`function: {name}`, `custom: {name}`); Responses does not.
    nested = tool.get(kind) if kind in ("function", "custom") else None
    name = nested.get("name") if isinstance(nested, dict) else tool.get("name")
    if kind == "mcp":
        label = tool.get("server_label")
        name = f"mcp:{label}" if isinstance(label, str) and label else None
    elif kind not in ("function", "custom"):
        name = kind
    if not isinstance(name, str) or not name:
        raise ViewError(field)
    return name


def _declared_tools(body: dict) -> list[str]:
    names = []
    for key in ("tools", "functions"):  # `functions` is Chat Completions' legacy spelling
        tools = body.get(key)
        if tools is None:
            continue
        if not isinstance(tools, list):
            raise ViewError(key)
        names += [_tool_name(tool, key) for tool in tools]
    return names


def _called_tools(body: dict) -> list[str]:
    """Tools the conversation history shows as called (the model asked, the app ran them)."""
    names = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        for call in message.get("tool_calls") or []:
            names.append(_tool_name(call, "messages.tool_calls"))
        if isinstance(message.get("function_call"), dict):
            names.append(_tool_name({"function": message["function_call"]}, "messages.function_call"))
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in _CALL_ITEM_TYPES:
            names.append(_tool_name({"name": item.get("name")}, "input.name"))
        elif kind == "mcp_call":
            names.append(_tool_name({"type": "mcp", "server_label": item.get("server_label")}, "input.server_label"))
        elif isinstance(kind, str) and kind.endswith("_call"):  # hosted: web_search_call -> web_search
            names.append(kind.removesuffix("_call"))
    return names


def _message_count(body: dict) -> int:
    for key in ("messages", "input", "prompt"):
        value = body.get(key)
        if isinstance(value, list):
            return len(value)
        if isinstance(value, str):
            return 1
    return 0
