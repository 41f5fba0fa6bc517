"""OpenAI-shaped errors: what every refusal and failure of the gateway looks like on the wire.

The OpenAI SDKs parse `{"error": {"message", "type", "code", "param"}}` into their exception
types and decide on retries from the status and the `x-should-retry` header, so refusals that a
retry cannot fix carry `x-should-retry: false` (otherwise a 5xx is retried twice by default,
and each retry would be a fresh flow and a fresh audit record).
"""

from __future__ import annotations

import json

# OpenAI's error `type` for each status class, so SDK users see familiar values.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "gateway_error",
    502: "gateway_error",
    503: "gateway_unavailable",
}


class Refusal(Exception):
    """A stage decided to end the request. The message must never contain PHI or secrets."""

    def __init__(self, status: int, code: str, message: str, *, retry: bool = False) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message
        self.retry = retry

    @property
    def type(self) -> str:
        return error_type(self.status)


def error_type(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "gateway_error")


def error_body(status: int, code: str, message: str) -> bytes:
    """The JSON body of an OpenAI-shaped error."""
    return json.dumps(
        {"error": {"message": message, "type": error_type(status), "code": code, "param": None}}
    ).encode()


def error_headers(request_id: str, *, retry: bool) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-should-retry": "true" if retry else "false",
        "x-phigate-request-id": request_id,
    }
