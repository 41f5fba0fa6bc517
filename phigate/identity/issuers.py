"""Trusted token issuers: what each one is allowed to assert, and the YAML file that lists them.

```yaml
issuers:
  - issuer: https://login.example.org/realms/clinic
    audience: phigate                     # or a list; the token's `aud` must name one of them
    jwks_uri: https://login.example.org/realms/clinic/protocol/openid-connect/certs  # optional
    groups_claim: realm_access.roles      # dotted path; default "groups"
    max_lifetime: 3600                    # seconds between iat (or nbf) and exp
    leeway: 30                            # clock skew tolerated, seconds
    allowed_subjects: [svc-triage, alice] # optional allow-list of `sub` values
    algorithms: [RS256]                   # optional; default: every algorithm fit for the key
```

Without `jwks_uri` the keys are found through `{issuer}/.well-known/openid-configuration`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from phigate.identity.fetch import check_url

# Asymmetric algorithms only: "none" and HS* are never accepted (an HS* token "signed" with a
# public key would verify against anyone's copy of that key).
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})
ALLOWED_ALGORITHMS = RSA_ALGORITHMS | set(EC_ALGORITHMS_BY_CURVE.values()) | {"EdDSA"}


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    audience: str | tuple[str, ...]
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    groups_claim: str = "groups"
    max_lifetime: int = 3600
    leeway: int = 30
    allowed_subjects: frozenset[str] | None = None
    algorithms: frozenset[str] = field(default=ALLOWED_ALGORITHMS)

    def __post_init__(self) -> None:
        # Normalise list inputs so instances stay hashable and immutable.
        if not isinstance(self.audience, str):
            object.__setattr__(self, "audience", tuple(self.audience))
        if self.allowed_subjects is not None:
            object.__setattr__(self, "allowed_subjects", frozenset(self.allowed_subjects))
        object.__setattr__(self, "algorithms", frozenset(self.algorithms))
        problems = [f"{name}: {problem}" for name, problem in _problems(self)]
        if problems:
            raise ValueError("\n".join(problems))

    @property
    def audiences(self) -> tuple[str, ...]:
        return (self.audience,) if isinstance(self.audience, str) else self.audience

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _problems(issuer: TrustedIssuer) -> Iterable[tuple[str, str]]:
    if not issuer.issuer:
        yield "issuer", "must be a non-empty string"
    if not issuer.audiences or not all(isinstance(a, str) and a for a in issuer.audiences):
        yield "audience", "must be a non-empty string or a list of them"
    if issuer.jwks_uri is not None:
        try:
            check_url(issuer.jwks_uri)
        except ValueError as problem:
            yield "jwks_uri", str(problem)
    elif issuer.jwks_file is None:
        try:
            check_url(issuer.discovery_url)
        except ValueError as problem:
            yield "issuer", f"without jwks_uri or jwks_file, keys are discovered, so it {problem}"
    if not issuer.groups_claim or any(not part for part in issuer.groups_claim.split(".")):
        yield "groups_claim", "must be a claim name or a dotted path such as realm_access.roles"
    if not _is_int(issuer.max_lifetime) or issuer.max_lifetime <= 0:
        yield "max_lifetime", "must be a positive number of seconds"
    if not _is_int(issuer.leeway) or issuer.leeway < 0:
        yield "leeway", "must be zero or a positive number of seconds"
    if not issuer.algorithms or not issuer.algorithms <= ALLOWED_ALGORITHMS:
        yield "algorithms", f"must be a non-empty subset of {sorted(ALLOWED_ALGORITHMS)}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class IssuerConfigError(ValueError):
    """The issuers file is invalid; the message lists every problem with file and field."""


_FIELDS = {
    "issuer", "audience", "jwks_uri", "jwks_file", "groups_claim",
    "max_lifetime", "leeway", "allowed_subjects", "algorithms",
}  # fmt: skip


def load_issuers(path: str | Path) -> list[TrustedIssuer]:
    """Read the trusted issuers from a YAML file (relative `jwks_file`s are relative to it)."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as problem:
        raise IssuerConfigError(f"{path}: cannot read: {type(problem).__name__}") from None
    entries = document.get("issuers") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise IssuerConfigError(f"{path}: issuers: must be a non-empty list")

    issuers: list[TrustedIssuer] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        where = f"{path}: issuers[{index}]"
        try:
            issuers.append(_issuer_from(entry, path.parent))
        except (TypeError, ValueError) as problem:
            separator = "." if isinstance(entry, dict) else ": "
            problems += [f"{where}{separator}{line}" for line in str(problem).splitlines()]
    names = [issuer.issuer for issuer in issuers]
    twice = sorted({name for name in names if names.count(name) > 1})
    problems += [f"{path}: issuer listed twice: {name}" for name in twice]
    if problems:
        raise IssuerConfigError("\n".join(problems))
    return issuers


def _issuer_from(entry: Any, base: Path) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise TypeError("must be a mapping")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(_FIELDS))})")
    for name in ("issuer", "audience"):
        if name not in entry:
            raise ValueError(f"{name}: required")
    values = dict(entry)
    for name in ("issuer", "jwks_uri", "jwks_file", "groups_claim"):
        if name in values and not isinstance(values[name], str):
            raise TypeError(f"{name}: must be a string")
    for name in ("audience", "allowed_subjects", "algorithms"):
        value = values.get(name)
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise TypeError(f"{name}: must be a list of strings")
        elif name in values and not (name == "audience" and isinstance(value, str)):
            raise TypeError(f"{name}: must be a list of strings")
    if "jwks_file" in values:
        values["jwks_file"] = base / values["jwks_file"]
    return TrustedIssuer(**values)
