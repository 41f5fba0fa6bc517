"""extract_token: where the caller's token is taken from, and what is never taken as one."""

from __future__ import annotations

import base64
import urllib.request

import pytest

from phigate.identity import MAX_TOKEN_BYTES, IdentityError, extract_token

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
OTHER_JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln"
OPENAI_KEY = "sk-proj-Abc123_def-456"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def refused(authorization: str | None, proxy_authorization: str | None) -> IdentityError:
    with pytest.raises(IdentityError) as caught:
        extract_token(authorization, proxy_authorization)
    return caught.value


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_authorization_bearer(scheme):
    assert extract_token(f"{scheme} {JWT}", None) == (JWT, "authorization")


def test_proxy_bearer():
    assert extract_token(None, f"Bearer {JWT}") == (JWT, "proxy-authorization")


def test_proxy_basic_carries_the_token_as_password():
    assert extract_token(None, basic("user", JWT)) == (JWT, "proxy-authorization")


def test_proxy_url_credentials_as_clients_send_them():
    # What urllib (like httpx and curl) sends for HTTPS_PROXY=http://user:<JWT>@host:8080.
    request = urllib.request.Request("https://api.openai.com/v1/models")  # never opened
    proxy_url = f"http://user:{JWT}@127.0.0.1:8080"
    urllib.request.ProxyHandler({}).proxy_open(request, proxy_url, "https")
    header = request.get_header("Proxy-authorization")
    assert extract_token(None, header) == (JWT, "proxy-authorization")


def test_jwt_in_authorization_wins_over_proxy_credentials():
    assert extract_token(f"Bearer {JWT}", basic("user", OTHER_JWT)) == (JWT, "authorization")


def test_openai_key_in_authorization_is_never_an_identity():
    assert extract_token(f"Bearer {OPENAI_KEY}", basic("u", JWT)) == (JWT, "proxy-authorization")
    error = refused(f"Bearer {OPENAI_KEY}", None)
    assert (error.status, error.code) == (401, "token_missing")


@pytest.mark.parametrize("authorization", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer  "])
def test_missing(authorization):
    error = refused(authorization, None)
    assert (error.status, error.code) == (401, "token_missing")


@pytest.mark.parametrize(
    "proxy_authorization",
    [
        "Digest username=x",
        "Bearer " + OPENAI_KEY,
        basic("user", "password"),
        "Basic " + base64.b64encode(JWT.encode()).decode(),  # no ":" separator
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"user:\xff\xfe").decode(),
    ],
)
def test_malformed_proxy_credentials(proxy_authorization):
    error = refused(None, proxy_authorization)
    assert (error.status, error.code) == (401, "token_malformed")


@pytest.mark.parametrize("where", ["authorization", "proxy-bearer", "proxy-basic"])
def test_huge_token(where):
    huge = JWT + "A" * MAX_TOKEN_BYTES
    headers = {
        "authorization": (f"Bearer {huge}", None),
        "proxy-bearer": (None, f"Bearer {huge}"),
        "proxy-basic": (None, basic("user", huge)),
    }[where]
    error = refused(*headers)
    assert (error.status, error.code) == (401, "token_too_large")


def test_token_at_the_size_limit_is_accepted():
    at_limit = JWT + "A" * (MAX_TOKEN_BYTES - len(JWT))
    assert extract_token(None, basic("user", at_limit)) == (at_limit, "proxy-authorization")


def test_error_messages_do_not_echo_credentials():
    cases = [(None, basic("user", "hunter2")), (None, "Bearer hunter2"), ("x", "Zz hunter2")]
    for headers in cases:
        error = refused(*headers)
        assert "hunter2" not in f"{error} {error!r} {error.message}"
