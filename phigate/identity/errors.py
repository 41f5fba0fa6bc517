"""Why a caller's identity was not accepted, in a form that is safe to show and to log."""

from __future__ import annotations

from phigate.errors import Refusal


class IdentityError(Refusal):
    """An identity check failed.

    `status`: 401 (no, bad or expired token), 403 (valid token, caller not allowed),
    503 (the token cannot be checked right now, e.g. the issuer's keys are unreachable).
    `code` is stable snake_case for clients and the audit log. `message` and `str()` never
    contain token material or claim values: they name the check that failed. Being a
    `Refusal`, it becomes an OpenAI-shaped error response without translation.
    """


def unauthorized(code: str, message: str) -> IdentityError:
    return IdentityError(401, code, message)
