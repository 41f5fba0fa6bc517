"""Per-flow state that must not go into `flow.metadata`.

`flow.metadata` is saved with the flow (mitmweb, flow files), so it holds only the plain,
PHI-free record. Live objects (the policy, the pseudonym scope, a stream masker) and raw bodies
held for the encrypted audit copy live here, keyed weakly by the flow so nothing outlives it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http


@dataclass
class FlowState:
    policy: Any = None
    identity: Any = None
    # Raw bodies for the encrypted audit copy: {"client_request": b"...", ...}.
    bodies: dict[str, bytes] = field(default_factory=dict)
    stream_masker: Any = None
    # What guardrails and approvals decide on: the request's shape and its PHI counts.
    view: Any = None
    body: Any = None  # the parsed JSON request body
    fields: list = field(default_factory=list)  # its text fields (phigate.wire)
    unsupported: Exception | None = None  # content the wire layer cannot examine
    scope: Any = None  # the pseudonym vault scope (caller + conversation)
    response_masker: Any = None  # masks/re-identifies this flow's response
    usage: dict | None = None  # token usage, noted by a stage that parsed the response already
    phi_summary: dict[str, int] = field(default_factory=dict)
    masked_excerpt: str = ""


_states: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = weakref.WeakKeyDictionary()


def of(flow: http.HTTPFlow) -> FlowState:
    state = _states.get(flow)
    if state is None:
        state = _states[flow] = FlowState()
    return state


def release(flow: http.HTTPFlow) -> None:
    _states.pop(flow, None)
