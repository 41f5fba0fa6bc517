"""Finding the caller's token in the request headers.

Precedence (first match wins):
1. `Authorization: Bearer <JWT>`: apps using the OpenAI SDK set OPENAI_API_KEY to their token.
2. `Proxy-Authorization: Bearer <JWT>` or `Basic base64(user:<JWT>)`: the latter is what
   clients send for `HTTPS_PROXY=http://user:<JWT>@gateway:8080`.

An Authorization value that is not JWT-shaped (such as a real `sk-...` OpenAI key) is never an
identity: it is ignored here, and the upstream stage strips it before anything leaves.
"""

from __future__ import annotations

import base64
import binascii
import re

from phigate.identity.errors import IdentityError, unauthorized

MAX_TOKEN_BYTES = 8 * 1024
# A Basic credential is base64 of "user:token" (4/3 of the size) plus the scheme and a username.
_MAX_HEADER_BYTES = MAX_TOKEN_BYTES * 4 // 3 + 512

AUTHORIZATION = "authorization"
PROXY_AUTHORIZATION = "proxy-authorization"

# Compact JWS: three base64url segments (the signature may be empty, as in alg "none").
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def looks_like_jwt(value: str) -> bool:
    return _JWT_SHAPE.fullmatch(value) is not None


def extract_token(authorization: str | None, proxy_authorization: str | None) -> tuple[str, str]:
    """Return `(token, source)`, source being "authorization" or "proxy-authorization"."""
    bearer = _bearer(authorization)
    if bearer is not None and looks_like_jwt(bearer):
        return check_token_size(bearer), AUTHORIZATION
    if proxy_authorization:
        token = _from_proxy_authorization(proxy_authorization)
        return check_token_size(token), PROXY_AUTHORIZATION
    raise unauthorized(
        "token_missing",
        "no identity token: send `Authorization: Bearer <JWT>` or proxy credentials "
        "carrying the JWT as the password",
    )


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    _check_header_size(header)
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _from_proxy_authorization(header: str) -> str:
    _check_header_size(header)
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        token = value
    elif scheme == "basic":
        token = _basic_password(value)
    else:
        raise unauthorized(
            "token_malformed", "Proxy-Authorization must use the Bearer or Basic scheme"
        )
    if not looks_like_jwt(token):
        raise unauthorized("token_malformed", "Proxy-Authorization does not carry a JWT")
    return token


def _basic_password(encoded: str) -> str:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized(
            "token_malformed", "Proxy-Authorization Basic credentials are not valid base64"
        ) from None
    _user, separator, password = decoded.partition(":")
    if not separator:
        raise unauthorized(
            "token_malformed", "Proxy-Authorization Basic credentials have no password part"
        )
    return password


def _check_header_size(header: str) -> None:
    # Bounds the work (base64 decoding, matching) done on a header before the token is known.
    if len(header) > _MAX_HEADER_BYTES:
        raise _too_large()


def check_token_size(token: str) -> str:
    """Return the token, or raise token_too_large (checked before any parsing)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise _too_large()
    return token


def _too_large() -> IdentityError:
    return unauthorized(
        "token_too_large", f"the identity token is larger than {MAX_TOKEN_BYTES} bytes"
    )
