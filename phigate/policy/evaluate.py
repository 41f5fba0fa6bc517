"""Deciding a request against its policy: pure functions of (policy, view[, PHI summary]).

Three stages, in pipeline order:
- `evaluate(policy, view)`: everything decidable before PHI detection (size, endpoint, model,
  limits, tools, guardrails), cheapest first;
- `evaluate_phi(policy, phi_summary)`: forbidden PHI types and PHI volume, once detection ran;
- `approval_rules(policy, view, phi_summary, groups)`: which approval rules hold the request.
Refusal messages name the rule and never echo what the caller sent (text, model or tool
names, path): they may be logged, and the caller knows what it sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from phigate.errors import Refusal
from phigate.policy.model import ApprovalRule, Condition, Policy, matches_any
from phigate.policy.ratelimit import RateLimiter
from phigate.policy.text import Scan
from phigate.policy.view import RequestView

PhiSummary = Mapping[str, int]  # entity type -> distinct values found in the request


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str = ""  # e.g. "endpoints.deny", "guardrails.prompt-injection"
    code: str = ""  # the OpenAI-shaped error code
    message: str = ""
    status: int = 200
    retry: bool = False

    def refusal(self) -> Refusal:
        """The exception the gateway raises to answer a refused request."""
        return Refusal(self.status, self.code, self.message, retry=self.retry)


ALLOW = Decision(True)


def _refuse(rule: str, code: str, message: str, status: int = 403) -> Decision:
    return Decision(False, rule, code, message, status)


def evaluate(policy: Policy, view: RequestView) -> Decision:
    """The first rule that refuses the request, or ALLOW."""
    return next(refusals(policy, view), ALLOW)


def refusals(policy: Policy, view: RequestView) -> Iterator[Decision]:
    """Every pre-detection rule that refuses the request, cheapest first (lazily)."""
    limits = policy.limits
    if limits.max_body_bytes is not None and view.body_bytes > limits.max_body_bytes:
        yield _refuse("limits.max_body_bytes", "body_too_large",
                      f"Request body exceeds {limits.max_body_bytes} bytes.", 413)
    if matches_any(view.endpoint, policy.endpoints.deny):
        yield _refuse("endpoints.deny", "endpoint_denied",
                      f"This endpoint is denied by policy {policy.name}.")
    elif not matches_any(view.endpoint, policy.endpoints.allow):
        yield _refuse("endpoints.allow", "endpoint_not_allowed",
                      f"This endpoint is not allowed by policy {policy.name}.")
    if view.model is not None and not policy.models.permits(view.model):
        yield _refuse("models", "model_not_allowed",
                      f"The requested model is not allowed by policy {policy.name}.")
    yield from _limit_refusals(policy, view)
    for kind, names in (("declared", view.tools_declared), ("called", view.tools_called)):
        refused = {name for name in names if not policy.tools.permits(name)}
        if refused:
            yield _refuse("tools", "tool_not_allowed",
                          f"{len(refused)} tool(s) {kind} in the request are not allowed by policy {policy.name}.")
    scan = Scan([text for _, text in view.texts])
    for guardrail in policy.guardrails:
        if guardrail.rule.matches(scan):
            yield _refuse(f"guardrails.{guardrail.name}", "guardrail_blocked",
                          guardrail.message or f"Request blocked by guardrail {guardrail.name}.")


def _limit_refusals(policy: Policy, view: RequestView) -> Iterator[Decision]:
    limits = policy.limits
    checks = (
        ("max_output_tokens", view.max_output_tokens, "output_tokens_limit", "output tokens requested"),
        ("max_tools", len(view.tools_declared), "too_many_tools", "tools declared"),
        ("max_messages", view.message_count, "too_many_messages", "messages or input items"),
    )
    for field, actual, code, what in checks:
        cap = getattr(limits, field)
        if cap is not None and actual is not None and actual > cap:
            yield _refuse(f"limits.{field}", code, f"More than {cap} {what} (policy {policy.name}).")


def check_rate(policy: Policy, limiter: RateLimiter, caller: str) -> Decision:
    """Take one request from `caller`'s budget under the policy's `rate_per_minute`."""
    rate = policy.limits.rate_per_minute
    if rate is None or limiter.check(caller, rate).allowed:
        return ALLOW
    return Decision(False, "limits.rate_per_minute", "rate_limited",
                    f"More than {rate} requests per minute (policy {policy.name}).", 429, retry=True)


def evaluate_phi(policy: Policy, phi_summary: PhiSummary) -> Decision:
    """Refuse forbidden PHI types and PHI volume beyond the policy's caps."""
    present = {entity for entity, count in phi_summary.items() if count > 0}
    forbidden = sorted(present.intersection(policy.forbidden_entities))
    if forbidden:
        return _refuse("forbidden_entities", "phi_entity_forbidden",
                       f"The request contains {', '.join(forbidden)}, which policy {policy.name} forbids.")
    limits = policy.phi_limits
    total = sum(phi_summary.values())
    if limits.max_identifiers is not None and total > limits.max_identifiers:
        return _refuse("phi_limits.max_identifiers", "phi_volume_exceeded",
                       f"More than {limits.max_identifiers} distinct identifiers in one request (policy {policy.name}).")
    for entity, cap in sorted(limits.max_per_entity.items()):
        if phi_summary.get(entity, 0) > cap:
            return _refuse(f"phi_limits.max_per_entity.{entity}", "phi_volume_exceeded",
                           f"More than {cap} distinct {entity} values in one request (policy {policy.name}).")
    if limits.max_patients is not None:
        # Patients are estimated by the most numerous patient-identifying type (names, MRNs...).
        patients = max((phi_summary.get(entity, 0) for entity in limits.patient_entities), default=0)
        if patients > limits.max_patients:
            return _refuse("phi_limits.max_patients", "phi_volume_exceeded",
                           f"More than {limits.max_patients} patients in one request (policy {policy.name}).")
    return ALLOW


def approval_rules(
    policy: Policy, view: RequestView, phi_summary: PhiSummary, groups: Iterable[str]
) -> list[ApprovalRule]:
    """The approval rules the request meets; empty means no human needs to look at it."""
    groups = set(groups)
    scan = Scan([text for _, text in view.texts])
    return [rule for rule in policy.approvals.rules if _meets(rule.when, view, phi_summary, groups, scan)]


def strictest(rules: Sequence[ApprovalRule]) -> ApprovalRule | None:
    """One rule standing for all the rules a request met: the most approvals, the shortest
    timeout, every rule named."""
    if not rules:
        return None
    return ApprovalRule(
        name="+".join(rule.name for rule in rules),
        when=Condition(),
        approvals_required=max(rule.approvals_required for rule in rules),
        timeout=min(rule.timeout for rule in rules),
    )


def _meets(when: Condition, view: RequestView, phi: PhiSummary, groups: set[str], scan: Scan) -> bool:
    checks = (
        (when.endpoints, lambda: matches_any(view.endpoint, when.endpoints)),
        (when.models, lambda: view.model is not None and matches_any(view.model, when.models)),
        (when.max_output_tokens_above is not None,
         lambda: (view.max_output_tokens or 0) > when.max_output_tokens_above),
        (when.phi_count_above is not None, lambda: sum(phi.values()) > when.phi_count_above),
        (when.phi_types, lambda: any(phi.get(entity, 0) > 0 for entity in when.phi_types)),
        (when.tools_declared is not None, lambda: bool(view.tools_declared) == when.tools_declared),
        (when.prompt is not None, lambda: when.prompt.matches(scan)),
        (when.groups, lambda: not groups.isdisjoint(when.groups)),
    )
    return all(check() for is_set, check in checks if is_set)
