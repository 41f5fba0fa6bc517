"""Who is calling: OIDC access tokens (JWTs) verified against trusted issuers.

`extract_token` finds the token in the request headers, `TokenVerifier.verify` turns it into an
`Identity` or raises `IdentityError` (a `phigate.errors.Refusal`: 401, 403 or 503 with a stable
code). `DevIssuer` is the embedded development issuer. No mitmproxy import.
"""

from phigate.identity.claims import Identity
from phigate.identity.dev import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from phigate.identity.errors import IdentityError
from phigate.identity.headers import MAX_TOKEN_BYTES, extract_token
from phigate.identity.issuers import IssuerConfigError, TrustedIssuer, load_issuers
from phigate.identity.verifier import TokenVerifier

__all__ = [
    "DEV_AUDIENCE",
    "DEV_ISSUER",
    "MAX_TOKEN_BYTES",
    "DevIssuer",
    "Identity",
    "IdentityError",
    "IssuerConfigError",
    "TokenVerifier",
    "TrustedIssuer",
    "extract_token",
    "load_issuers",
]
