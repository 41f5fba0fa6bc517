"""The scripted model: a deterministic function from a request body to one assistant turn.

Rules (the same for Chat Completions, Responses and legacy Completions):

1. The *user text* is the text of the last user message (Chat: the last `role: "user"`
   message; Responses: `input` when it is a string, else the last item with `role: "user"`;
   Completions: `prompt`). Text parts of a list-shaped content are joined with a space.
2. The *tool results* are the tool outputs that come after that user message (Chat:
   `role: "tool"` messages; Responses: `function_call_output` items).
3. If the request declares function tools, `tool_choice` is not `"none"` and there are no tool
   results yet, the turn calls one tool: the one `tool_choice` names, else the first function
   tool. Its arguments are built from the tool's JSON-schema `properties`:
   - a property with an `enum` gets the first enum value;
   - a string gets the value written as `name: value` or `name=value` in the user text (the
     value ends at whitespace, `,` or `;`, or is `"quoted"`), else the whole user text, so
     whatever the user text held (PHI or placeholders) comes back in the arguments;
   - an integer or number gets such a named value if it parses, else 1;
   - a boolean gets true, an array one element built from `items`, an object its own
     properties by the same rules (`$ref` into `$defs` is followed), null gets null.
   The call id is derived from a hash of the tool name, the arguments and the user text.
4. Otherwise the turn replies with text: `Received: <user text>`, followed by
   ` | Tool result: <last tool result>` when there are tool results. When the request asks
   for structured output (Chat `response_format`, Responses `text.format`), the reply is
   instead a JSON object: for `json_schema`, built from the schema by rule 3's rules with
   that text in place of the user text; for `json_object`, `{"reply": <that text>}`.
5. Overrides, from request headers: `x-localupstream-reply: <text>` replaces the reply text;
   `x-localupstream-tool-args: <json object>` replaces the arguments of a tool call.
6. Streaming: text deltas of three words each (whitespace kept), tool-call argument fragments
   of 6 characters; the header `x-localupstream-delta-size: <n>` makes both n characters.
7. Token counts: prompt tokens = ceil(characters of every string in the body / 4), completion
   tokens = ceil(characters of the reply text or arguments / 4), each at least 1. Tool-call
   arguments are compact JSON (no spaces), as OpenAI sends them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class FunctionTool:
    name: str
    parameters: dict


@dataclass(frozen=True)
class Conversation:
    """What the scripted model looks at, extracted from one request body."""

    user_text: str
    tool_results: tuple[str, ...]
    tools: tuple[FunctionTool, ...]
    tool_choice: object
    prompt_tokens: int
    output_format: dict | None = None  # a `json_schema` / `json_object` format, else None


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str  # a JSON object, serialised as OpenAI sends it


@dataclass(frozen=True)
class Turn:
    """One assistant turn: either `text` or `tool_call` is set."""

    text: str | None
    tool_call: ToolCall | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Overrides:
    reply: str | None = None
    tool_args: str | None = None


def count_tokens(characters: int) -> int:
    return max(1, math.ceil(characters / 4))


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _prompt_tokens(body: dict) -> int:
    return count_tokens(sum(len(s) for s in _strings(body)))


def content_text(content: object) -> str:
    """Text of a message content: a string, or a list of text parts (any API's part types)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _function_tools(tools: object) -> tuple[FunctionTool, ...]:
    found = []
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        spec = tool.get("function", tool)  # Chat nests the function, Responses does not
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            params = spec.get("parameters")
            found.append(FunctionTool(spec["name"], params if isinstance(params, dict) else {}))
    return tuple(found)


def chat_conversation(body: dict) -> Conversation:
    messages = body.get("messages")
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    user_at = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    user_text = content_text(messages[user_at].get("content")) if user_at >= 0 else ""
    results = tuple(
        content_text(m.get("content")) for m in messages[user_at + 1 :] if m.get("role") == "tool"
    )
    response_format = body.get("response_format")
    output_format = None
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        output_format = {"type": "json_schema", "schema": schema}
    elif isinstance(response_format, dict) and response_format.get("type") == "json_object":
        output_format = {"type": "json_object"}
    return Conversation(
        user_text, results, _function_tools(body.get("tools")), body.get("tool_choice"),
        _prompt_tokens(body), output_format,
    )


def _tool_output_text(output: object) -> str:
    return output if isinstance(output, str) else content_text(output)


def responses_conversation(body: dict) -> Conversation:
    items = body.get("input")
    if isinstance(items, str):
        user_text, results = items, ()
    else:
        items = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        user_at = max(
            (
                i for i, item in enumerate(items)
                if item.get("role") == "user" and item.get("type", "message") == "message"
            ),
            default=-1,
        )
        user_text = content_text(items[user_at].get("content")) if user_at >= 0 else ""
        results = tuple(
            _tool_output_text(item.get("output"))
            for item in items[user_at + 1 :]
            if item.get("type") == "function_call_output"
        )
    text = body.get("text")
    output_format = text.get("format") if isinstance(text, dict) else None
    if not isinstance(output_format, dict) or output_format.get("type") == "text":
        output_format = None
    return Conversation(
        user_text, results, _function_tools(body.get("tools")), body.get("tool_choice"),
        _prompt_tokens(body), output_format,
    )


def completions_conversation(body: dict) -> Conversation:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    text = prompt if isinstance(prompt, str) else ""
    return Conversation(text, (), (), "none", _prompt_tokens(body))


def _chosen_tool(conversation: Conversation) -> FunctionTool | None:
    choice = conversation.tool_choice
    if not conversation.tools or choice == "none" or conversation.tool_results:
        return None
    if isinstance(choice, dict):
        spec = choice.get("function", choice)  # Chat nests the name, Responses does not
        named = spec.get("name") if isinstance(spec, dict) else None
        for tool in conversation.tools:
            if tool.name == named:
                return tool
    return conversation.tools[0]


def _named_value(name: str, text: str) -> str | None:
    match = re.search(rf"\b{re.escape(name)}\s*[:=]\s*(?:\"([^\"]*)\"|([^\s,;]+))", text)
    if match is None:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)


def _schema_type(schema: dict) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return kind if isinstance(kind, str) else None


def _resolve(schema: object, root: dict) -> dict:
    """Follow `$ref` into `$defs` and pick the first non-null branch of `anyOf`/`oneOf`."""
    for _ in range(32):  # bounded: a cyclic $ref must not hang the server
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            schema = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
            continue
        branches = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(branches, list) and branches:
            schema = next(
                (b for b in branches if isinstance(b, dict) and b.get("type") != "null"), {}
            )
            continue
        return schema
    return {}


def _value_for(name: str, schema: object, text: str, root: dict, depth: int) -> object:
    schema = _resolve(schema, root)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = _schema_type(schema) or ("object" if "properties" in schema else "string")
    named = _named_value(name, text)
    if kind == "string":
        return named if named is not None else text
    if kind in ("integer", "number"):
        try:
            number = (int if kind == "integer" else float)(named)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return 1
        return number if math.isfinite(number) else 1  # JSON has no NaN or infinity
    if kind == "boolean":
        return True
    if kind == "array":
        return [_value_for(name, schema.get("items", {}), text, root, depth + 1)]
    if kind == "object":
        return _object_for(schema, text, root, depth + 1)
    return None


def _object_for(schema: dict, text: str, root: dict, depth: int) -> dict:
    properties = schema.get("properties")
    if depth > 8 or not isinstance(properties, dict):
        return {}
    return {key: _value_for(key, prop, text, root, depth) for key, prop in properties.items()}


def tool_arguments(parameters: dict, user_text: str) -> dict:
    """Arguments for a call of a tool with these JSON-schema parameters (rule 3)."""
    return _object_for(parameters, user_text, parameters, 0)


def _call_id(name: str, arguments: str, user_text: str) -> str:
    digest = hashlib.sha256(f"{name}\0{arguments}\0{user_text}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def next_turn(conversation: Conversation, overrides: Overrides = Overrides()) -> Turn:
    tool = _chosen_tool(conversation)
    if tool is not None:
        if overrides.tool_args is not None:
            arguments = overrides.tool_args
        else:
            arguments = json.dumps(
                tool_arguments(tool.parameters, conversation.user_text),
                ensure_ascii=False, separators=(",", ":"),
            )
        call_id = _call_id(tool.name, arguments, conversation.user_text)
        call = ToolCall(call_id, tool.name, arguments)
        return Turn(None, call, conversation.prompt_tokens, count_tokens(len(arguments)))
    if overrides.reply is not None:
        text = overrides.reply
    else:
        text = f"Received: {conversation.user_text}"
        if conversation.tool_results:
            text += f" | Tool result: {conversation.tool_results[-1]}"
        text = _structured(conversation.output_format, text)
    return Turn(text, None, conversation.prompt_tokens, count_tokens(len(text)))


def _structured(output_format: dict | None, text: str) -> str:
    if output_format is None:
        return text
    if output_format.get("type") == "json_schema":
        schema = output_format.get("schema")
        value = tool_arguments(schema if isinstance(schema, dict) else {}, text)
    else:
        value = {"reply": text}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def split_deltas(text: str, size: int | None) -> list[str]:
    """Streamed text pieces: `size` characters each, or (None) three words with their spacing."""
    if not text:
        return []
    if size is not None:
        return [text[i : i + size] for i in range(0, len(text), size)]
    words = re.findall(r"\s*\S+\s*", text) or [text]
    return ["".join(words[i : i + 3]) for i in range(0, len(words), 3)]


def split_arguments(arguments: str, size: int | None) -> list[str]:
    """Streamed tool-call argument fragments: `size` characters each, or (None) 6, so that
    even short arguments arrive in several pieces as OpenAI sends them."""
    step = size or 6
    return [arguments[i : i + step] for i in range(0, len(arguments), step)]
