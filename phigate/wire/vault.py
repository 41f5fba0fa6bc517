"""The pseudonym vault: `<PERSON_1>` ↔ value, scoped to one caller and one conversation.

A scope is (issuer, subject, conversation). A pseudonym only resolves in the scope that minted
it, so one caller's values never reach another caller or another conversation. Scopes live in
memory, expire `ttl_seconds` after their last use and are evicted least-recently-used beyond
`max_scopes`; a scope refuses new values beyond `max_values` rather than forget old ones
(renumbering inside a live conversation would point old pseudonyms at other people).

How a conversation is identified (`Vault.scope_for`), first match wins:
1. the `x-phigate-conversation` request header, when the client sets one;
2. Responses `conversation` (an id or `{"id": …}`);
3. Responses `previous_response_id`: the scope of that response when this vault minted it
   (`remember_response`), else the id itself;
4. otherwise the text of the first user message. The OpenAI Agents SDK (and most chat clients)
   resend the whole history each turn and its first user message never changes, so turn 2 maps
   the same values to the same pseudonyms. Two conversations that open with the same words share
   a scope, which only ever joins one caller's own data.
Values, and hashes of them, never appear in reprs, logs or exceptions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phigate.wire.fields import endpoint_kind
from phigate.wire.operators import TOKEN, normalise

CONVERSATION_HEADER = "x-phigate-conversation"


class VaultFull(Exception):
    """A scope reached its value limit; the request is refused instead of renumbering."""


@dataclass(frozen=True, slots=True)
class Scope:
    caller: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "Scope(…)"


@dataclass(slots=True)
class _Entries:
    used: float
    numbers: dict[tuple[str, str], int] = field(default_factory=dict)
    values: dict[tuple[str, int], str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


class Vault:
    def __init__(
        self,
        *,
        ttl_seconds: float = 3600.0,
        max_scopes: int = 10_000,
        max_values: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max_scopes = max_scopes
        self._max_values = max_values
        self._clock = clock
        self._key = os.urandom(32)  # scope digests are unlinkable across gateway restarts
        self._scopes: OrderedDict[bytes, _Entries] = OrderedDict()
        self._responses: OrderedDict[tuple[bytes, str], tuple[float, Scope]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Vault(scopes={len(self._scopes)})"

    def _digest(self, *parts: str) -> bytes:
        return hmac.new(self._key, "\0".join(parts).encode(), hashlib.sha256).digest()

    def scope(self, issuer: str, subject: str, conversation: str) -> Scope:
        return Scope(self._digest(issuer, subject), self._digest(issuer, subject, conversation))

    def scope_for(self, endpoint: str, body: Any, *, issuer: str, subject: str,
                  header: str | None = None) -> Scope:
        """The scope of a request (see the module docstring for the rules)."""
        if header:
            return self.scope(issuer, subject, "header\0" + header)
        kind = endpoint_kind(endpoint)
        body = body if isinstance(body, dict) else {}
        if kind == "responses":
            conversation = body.get("conversation")
            if isinstance(conversation, dict):
                conversation = conversation.get("id")
            if isinstance(conversation, str) and conversation:
                return self.scope(issuer, subject, "conversation\0" + conversation)
            previous = body.get("previous_response_id")
            if isinstance(previous, str) and previous:
                known = self._linked(self._digest(issuer, subject), previous)
                return known or self.scope(issuer, subject, "response\0" + previous)
        return self.scope(issuer, subject, "first\0" + _first_user_text(kind, body))

    def remember_response(self, scope: Scope, response_id: str) -> None:
        """Let a later `previous_response_id` continue this scope."""
        with self._lock:
            key = (scope.caller, response_id)
            self._responses[key] = (self._clock(), scope)
            self._responses.move_to_end(key)
            self._expire()

    def _linked(self, caller: bytes, response_id: str) -> Scope | None:
        with self._lock:
            self._expire()
            entry = self._responses.get((caller, response_id))
            return entry[1] if entry else None

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl
        for table, limit in ((self._scopes, self._max_scopes),
                             (self._responses, self._max_scopes)):
            while table:
                oldest = next(iter(table.values()))
                used = oldest.used if isinstance(oldest, _Entries) else oldest[0]
                if used >= horizon and len(table) <= limit:
                    break
                table.popitem(last=False)

    def _entries(self, scope: Scope, create: bool) -> _Entries | None:
        self._expire()
        entries = self._scopes.get(scope.digest)
        if entries is None:
            if not create:
                return None
            entries = self._scopes[scope.digest] = _Entries(self._clock())
        entries.used = self._clock()
        self._scopes.move_to_end(scope.digest)
        return entries

    def pseudonym(self, scope: Scope, entity: str, value: str) -> str:
        """`<ENTITY_n>`: the same (normalised) value gets the same n within the scope."""
        with self._lock:
            entries = self._entries(scope, create=True)
            assert entries is not None
            key = (entity, normalise(value))
            number = entries.numbers.get(key)
            if number is None:
                if len(entries.values) >= self._max_values:
                    raise VaultFull("pseudonym scope is full")
                number = entries.counters.get(entity, 0) + 1
                entries.counters[entity] = number
                entries.numbers[key] = number
                entries.values[(entity, number)] = value
            self._expire()  # a new scope may push the oldest out
            return f"<{entity}_{number}>"

    def resolve(self, scope: Scope, entity: str, number: int) -> str | None:
        with self._lock:
            entries = self._entries(scope, create=False)
            return entries.values.get((entity, number)) if entries else None

    def reidentify(self, text: str, scope: Scope,
                   escape: Callable[[str], str] = lambda value: value) -> str:
        """Replace this scope's pseudonyms by their values; anything else stays as it is."""

        def value(match) -> str:
            if match["number"] is None:
                return match[0]
            found = self.resolve(scope, match["entity"], int(match["number"]))
            return match[0] if found is None else escape(found)

        return TOKEN.sub(value, text)

    def bind(self, scope: Scope) -> "ScopedVault":
        return ScopedVault(self, scope)


@dataclass(frozen=True, slots=True)
class ScopedVault:
    """A vault bound to one scope (what the operators and the maskers hold)."""

    vault: Vault
    scope: Scope

    def pseudonym(self, entity: str, value: str) -> str:
        return self.vault.pseudonym(self.scope, entity, value)

    def resolve(self, entity: str, number: int) -> str | None:
        return self.vault.resolve(self.scope, entity, number)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _first_user_text(kind: str, body: dict) -> str:
    if kind == "responses" and isinstance(body.get("input"), str):
        return body["input"]
    items = body.get("messages") if kind == "chat" else body.get("input")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("role") == "user":
            return _content_text(item.get("content"))
    return ""
