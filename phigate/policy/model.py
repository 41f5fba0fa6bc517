"""What a loaded policy is: frozen, validated data (the YAML reference is policies/README.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType

from phigate.policy.text import TextRule

SCHEMA = "phigate.policy/v1"
OPERATORS = ("redact", "placeholder", "pseudonym", "hash", "encrypt", "keep")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*")
DEFAULT_APPROVAL_TIMEOUT = 120
# The OpenAI SDKs time a request out after 600 s; a held request must be decided well before,
# leaving the rest for the model's answer.
MAX_APPROVAL_TIMEOUT = 300


def frozen_map(mapping: Mapping[str, int | str] | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Globs:
    """An allow-list with an optional deny-list of glob patterns (deny wins)."""

    allow: tuple[str, ...]
    deny: tuple[str, ...] = ()

    def permits(self, value: str) -> bool:
        return not matches_any(value, self.deny) and matches_any(value, self.allow)


def matches_any(value: str, patterns: Iterable[str]) -> bool:
    """Case-insensitive glob match (`*` also spans `/`)."""
    value = value.casefold()
    return any(fnmatchcase(value, pattern.casefold()) for pattern in patterns)


@dataclass(frozen=True)
class DirectionMasking:
    default: str
    entities: Mapping[str, str] = field(default_factory=frozen_map)

    def operator_for(self, entity_type: str) -> str:
        return self.entities.get(entity_type, self.default)


@dataclass(frozen=True)
class Masking:
    request: DirectionMasking
    response: DirectionMasking
    reidentify: bool = False


@dataclass(frozen=True)
class Guardrail:
    name: str
    rule: TextRule
    message: str | None = None


@dataclass(frozen=True)
class PhiLimits:
    """Caps on PHI per request; counts are distinct values per entity type."""

    max_identifiers: int | None = None  # all types together
    max_per_entity: Mapping[str, int] = field(default_factory=frozen_map)
    max_patients: int | None = None  # largest distinct count among patient_entities
    patient_entities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int | None = None
    max_output_tokens: int | None = None
    max_tools: int | None = None
    max_messages: int | None = None
    rate_per_minute: int | None = None


@dataclass(frozen=True)
class Condition:
    """When an approval rule fires: every condition that is set must hold."""

    endpoints: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    max_output_tokens_above: int | None = None
    phi_count_above: int | None = None
    phi_types: tuple[str, ...] = ()
    tools_declared: bool | None = None
    prompt: TextRule | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApprovalRule:
    name: str
    when: Condition
    approvals_required: int = 1
    timeout: int = DEFAULT_APPROVAL_TIMEOUT


@dataclass(frozen=True)
class Approvals:
    approver_groups: tuple[str, ...] = ()
    rules: tuple[ApprovalRule, ...] = ()


@dataclass(frozen=True)
class Policy:
    name: str
    groups: tuple[str, ...]
    priority: int
    endpoints: Globs
    models: Globs
    masking: Masking
    tools: Globs = Globs(allow=())
    forbidden_entities: tuple[str, ...] = ()
    guardrails: tuple[Guardrail, ...] = ()
    phi_limits: PhiLimits = PhiLimits()
    limits: Limits = Limits()
    approvals: Approvals = Approvals()
    upstream_key: str = "default"
    description: str = ""
    source: str = ""  # the policy file
    version: str = ""  # first 16 hex of sha256(file bytes)

    @property
    def approver_groups(self) -> tuple[str, ...]:
        return self.approvals.approver_groups

    def binds(self, groups: Iterable[str]) -> bool:
        return not set(self.groups).isdisjoint(groups)


@dataclass(frozen=True)
class PolicySet:
    """Every loaded policy, highest priority first (priorities are unique)."""

    policies: tuple[Policy, ...]
    digest: str = ""  # sha256 over every file's name and bytes

    def select(self, groups: Iterable[str]) -> Policy | None:
        """The highest-priority policy bound to any of the caller's groups, or None (-> 403)."""
        groups = set(groups)
        return next((policy for policy in self.policies if policy.binds(groups)), None)

    def get(self, name: str) -> Policy | None:
        return next((policy for policy in self.policies if policy.name == name), None)
