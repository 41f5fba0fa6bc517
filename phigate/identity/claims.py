"""The verified caller, and the checks a token's claims must pass once its signature holds."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from phigate.identity.errors import IdentityError, unauthorized
from phigate.identity.issuers import TrustedIssuer


@dataclass(frozen=True)
class Identity:
    iss: str
    sub: str
    groups: tuple[str, ...]
    jti: str | None
    exp: int
    iat: int | None
    source: str  # "authorization" | "proxy-authorization"

    def to_record(self) -> dict[str, Any]:
        """The plain, JSON-able form for the flow record (never the token)."""
        return {
            "iss": self.iss,
            "sub": self.sub,
            "groups": list(self.groups),
            "jti": self.jti,
            "exp": self.exp,
            "iat": self.iat,
            "source": self.source,
        }


def identity_from_claims(
    claims: dict[str, Any], issuer: TrustedIssuer, now: float, source: str
) -> Identity:
    """Check the claims of a token whose signature verified; raise IdentityError if they fail."""
    if claims.get("iss") != issuer.issuer:  # selected on unverified data: confirm on verified
        raise unauthorized("issuer_unknown", "the token's issuer (iss) is not trusted")
    exp = _time_claim(claims, "exp", required=True)
    iat = _time_claim(claims, "iat")
    nbf = _time_claim(claims, "nbf")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _claim_invalid("sub")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise _claim_invalid("jti")

    if not _audience_matches(claims.get("aud"), issuer.audiences):
        raise unauthorized("audience_invalid", "the token is not meant for this gateway (aud)")
    leeway = issuer.leeway
    if exp <= now - leeway:
        raise unauthorized("token_expired", "the token has expired")
    if any(t is not None and t > now + leeway for t in (nbf, iat)):
        raise unauthorized("token_not_yet_valid", "the token is not valid yet (nbf/iat)")
    start = iat if iat is not None else nbf if nbf is not None else now
    if exp - start > issuer.max_lifetime + leeway:
        raise unauthorized(
            "lifetime_too_long",
            f"the token lives longer than the issuer's limit of {issuer.max_lifetime} s",
        )
    if issuer.allowed_subjects is not None and sub not in issuer.allowed_subjects:
        raise IdentityError(403, "subject_not_allowed", "the token's subject is not allowed")

    return Identity(
        iss=issuer.issuer,
        sub=sub,
        groups=groups_from_claims(claims, issuer.groups_claim),
        jti=jti,
        exp=int(exp),
        iat=None if iat is None else int(iat),
        source=source,
    )


def groups_from_claims(claims: dict[str, Any], path: str) -> tuple[str, ...]:
    """The groups at a dotted claim path: a list of strings or a space/comma-separated string.

    A missing claim means no groups; a claim of the wrong type is refused (fail closed).
    """
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ()
        value = value[part]
    if isinstance(value, str):
        return tuple(group for group in re.split(r"[\s,]+", value) if group)
    if isinstance(value, list) and all(isinstance(group, str) for group in value):
        return tuple(group for group in value if group)
    raise _claim_invalid(path)


def _audience_matches(aud: Any, accepted: tuple[str, ...]) -> bool:
    if isinstance(aud, str):
        return aud in accepted
    if isinstance(aud, list):
        return any(isinstance(a, str) and a in accepted for a in aud)
    return False


def _time_claim(claims: dict[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise _claim_invalid(name)
    return value


def _claim_invalid(name: str) -> IdentityError:
    return unauthorized("claim_invalid", f"the token's `{name}` claim is missing or malformed")
