"""What an approval is: plain, JSON-able data shared by the store, the admin API and the CLI.

An approval never holds the request itself, only a masked summary of it (endpoint, model,
limits, tool names, entity counts and a short excerpt of already-masked text), so the approval
database, the webhook and the approval page carry no PHI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

STATES = ("pending", "approved", "denied", "expired", "abandoned", "aborted")
# How a hold can end without a human decision (client gone, timeout, gateway restart).
UNDECIDED_ENDINGS = ("expired", "abandoned", "aborted")
DECISIONS = ("approve", "deny")
MAX_EXCERPT_CHARS = 280
MAX_REASON_CHARS = 1000
_SUMMARY_FIELDS = frozenset({"endpoint", "model", "max_tokens", "tools", "entities", "excerpt"})


class ApprovalError(Exception):
    """A refused operation. `code` is stable; `message` names the rule, never request data."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class Person(Protocol):
    """A verified caller (phigate.identity.Identity fits)."""

    iss: str
    sub: str
    groups: Iterable[str]


def person(value: Person | Mapping[str, Any]) -> dict[str, Any]:
    """`{"iss", "sub", "groups"}` from an Identity-like object or a mapping (e.g. a flow record)."""
    get = value.get if isinstance(value, Mapping) else lambda name: getattr(value, name, None)
    iss, sub, groups = get("iss"), get("sub"), get("groups") or ()
    if not isinstance(iss, str) or not iss or not isinstance(sub, str) or not sub:
        raise ValueError("a person needs a non-empty iss and sub")
    if isinstance(groups, str) or not all(isinstance(g, str) for g in groups):
        raise ValueError("groups must be a list of strings")
    return {"iss": iss, "sub": sub, "groups": sorted(set(groups))}


def same_person(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a["iss"] == b["iss"] and a["sub"] == b["sub"]


def masked_summary(
    *,
    endpoint: str,
    model: str | None = None,
    max_tokens: int | None = None,
    tools: Iterable[str] = (),
    entities: Mapping[str, int] | None = None,
    excerpt: str = "",
) -> dict[str, Any]:
    """The only request data an approval keeps. `excerpt` must already be masked; it is cut short."""
    counts = dict(entities or {})
    if not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counts.items()):
        raise ValueError("entities must map entity types to counts")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
        raise ValueError("max_tokens must be an integer")
    if len(excerpt) > MAX_EXCERPT_CHARS:
        excerpt = excerpt[: MAX_EXCERPT_CHARS - 1] + "…"
    return {
        "endpoint": str(endpoint),
        "model": None if model is None else str(model),
        "max_tokens": max_tokens,
        "tools": [str(t) for t in tools],
        "entities": dict(sorted(counts.items())),
        "excerpt": excerpt,
    }


def checked_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Re-validate a summary given as a mapping: unknown keys (e.g. a raw body) are refused."""
    unknown = set(summary) - _SUMMARY_FIELDS
    if unknown:
        raise ValueError(f"summary has fields it may not carry: {sorted(unknown)}")
    if "endpoint" not in summary:
        raise ValueError("summary needs an endpoint")
    return masked_summary(**summary)


@dataclass(frozen=True)
class Approval:
    id: str
    request_id: str
    created_at: float
    expires_at: float
    state: str
    requester: dict[str, Any]
    rule: str
    approvals_required: int
    approver_groups: tuple[str, ...]
    summary: dict[str, Any]
    decisions: tuple[dict[str, Any], ...] = ()
    ended_at: float | None = None
    ended_reason: str | None = None
    holder: str = ""  # the gateway instance holding the flow (see abort_pending)

    @property
    def approvals(self) -> int:
        return sum(1 for d in self.decisions if d["decision"] == "approve")

    def is_approver(self, who: Mapping[str, Any]) -> bool:
        return bool(set(who["groups"]) & set(self.approver_groups))

    def can_decide(self, who: Mapping[str, Any], now: float) -> bool:
        """Whether `who` may decide now (what `decide` would accept, reason aside)."""
        return (
            self.state == "pending"
            and now < self.expires_at
            and not same_person(who, self.requester)
            and self.is_approver(who)
            and not any(same_person(who, d) for d in self.decisions)
        )

    def to_record(self) -> dict[str, Any]:
        """The `approval` entry of the per-flow record (what the audit log keeps)."""
        return {
            "id": self.id,
            "rule": self.rule,
            "state": self.state,
            "approvals_required": self.approvals_required,
            "decided_by": [
                {"iss": d["iss"], "sub": d["sub"], "decision": d["decision"], "time": d["time"],
                 "reason": d["reason"]}
                for d in self.decisions
            ],  # fmt: skip
            "ended_reason": self.ended_reason,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "state": self.state,
            "requester": dict(self.requester),
            "rule": self.rule,
            "approvals_required": self.approvals_required,
            "approver_groups": list(self.approver_groups),
            "summary": dict(self.summary),
            "decisions": [dict(d) for d in self.decisions],
            "ended_at": self.ended_at,
            "ended_reason": self.ended_reason,
        }
