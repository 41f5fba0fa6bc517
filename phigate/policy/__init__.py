"""Policies: which caller groups may do what, how their PHI is masked, what needs approval.

Policy files are YAML in one directory (reference: policies/README.md). Nothing here imports
mitmproxy; the gateway's addons call these functions.
"""

from phigate.policy.evaluate import (
    ALLOW,
    Decision,
    approval_rules,
    check_rate,
    evaluate,
    evaluate_phi,
    refusals,
    strictest,
)
from phigate.policy.loader import PolicyError, Problem, load_policies, parse_files
from phigate.policy.model import (
    OPERATORS,
    SCHEMA,
    ApprovalRule,
    Approvals,
    Condition,
    DirectionMasking,
    Globs,
    Guardrail,
    Limits,
    Masking,
    PhiLimits,
    Policy,
    PolicySet,
)
from phigate.policy.ratelimit import RateLimiter, RateResult
from phigate.policy.store import PolicyStore, ReloadResult
from phigate.policy.text import normalize
from phigate.policy.view import RequestView, ViewError, build_view, normalize_path

__all__ = [
    "ALLOW", "OPERATORS", "SCHEMA", "ApprovalRule", "Approvals", "Condition", "Decision",
    "DirectionMasking", "Globs", "Guardrail", "Limits", "Masking", "PhiLimits", "Policy",
    "PolicyError", "PolicySet", "PolicyStore", "Problem", "RateLimiter", "RateResult",
    "ReloadResult", "RequestView", "ViewError", "approval_rules", "build_view", "check_rate", "evaluate",
    "evaluate_phi", "load_policies", "normalize", "normalize_path", "parse_files", "refusals",
    "strictest",
]
