"""Browser OIDC login (code + PKCE) against a real local provider, without a browser."""

from __future__ import annotations

import base64
import hashlib
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from phigate.identity import IdentityError
from phigate.sso.oidc_login import OidcLogin, OidcLoginConfig
from tests.support.oidc_login_idp import LoginUser, OidcLoginProvider

REDIRECT = "https://phigate.hospital.test/oidc/callback"


class _Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):  # noqa: ANN002, ANN201
        return None


def authorize(url: str) -> dict[str, str]:
    """Visit the authorization URL like a browser would, and read where the IdP sends it back."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _Stay())
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(url, timeout=5)
    assert redirected.value.code == 302
    location = redirected.value.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def idp():
    with OidcLoginProvider(client_id="phigate-admin", redirect_uris=[REDIRECT]) as running:
        yield running


@pytest.fixture
def oidc(idp):
    return OidcLogin(
        OidcLoginConfig(issuer=idp.issuer, client_id="phigate-admin", redirect_uri=REDIRECT)
    )


def refused(code: str, call, *args) -> IdentityError:
    with pytest.raises(IdentityError) as caught:
        call(*args)
    assert caught.value.code == code, caught.value.message
    return caught.value


def test_the_code_flow_with_pkce_signs_the_user_in(idp, oidc):
    idp.user = LoginUser("dr-alice", ["approvers", "auditors"])
    url, state = oidc.start_login("/approvals")
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(idp.issuer + "/authorize?")
    assert query["code_challenge_method"] == ["S256"] and query["state"] == [state]
    assert len(query["nonce"][0]) >= 32 and len(query["code_challenge"][0]) == 43
    login = oidc.finish_login(authorize(url), state)
    assert login.return_to == "/approvals"
    who = login.identity
    assert (who.iss, who.sub, who.groups, who.source) == (
        idp.issuer,
        "dr-alice",
        ("approvers", "auditors"),
        "oidc",
    )
    assert idp.refused == []


def test_each_login_gets_fresh_state_nonce_and_verifier(oidc):
    first, second = (parse_qs(urlsplit(oidc.start_login("/")[0]).query) for _ in range(2))
    for name in ("state", "nonce", "code_challenge"):
        assert first[name] != second[name]


def test_a_state_this_browser_did_not_start_is_refused(idp, oidc):
    url, state = oidc.start_login("/")
    _, other_state = oidc.start_login("/")
    params = authorize(url)
    refused("oidc_state_invalid", oidc.finish_login, params, other_state)
    refused("oidc_state_invalid", oidc.finish_login, params, None)
    refused("oidc_state_invalid", oidc.finish_login, {**params, "state": "forged"}, "forged")
    assert idp.token_requests == 0  # refused before the code was spent


def test_a_replayed_callback_or_code_is_refused(idp, oidc):
    url, state = oidc.start_login("/")
    params = authorize(url)
    oidc.finish_login(params, state)
    refused("oidc_state_invalid", oidc.finish_login, params, state)
    # The same code under a fresh login of this browser: the IdP accepts each code once.
    _, fresh_state = oidc.start_login("/")
    refused("oidc_code_rejected", oidc.finish_login, {**params, "state": fresh_state}, fresh_state)
    assert idp.refused == ["invalid_grant"]


def test_a_wrong_nonce_is_refused(idp, oidc):
    idp.nonce_override = "nonce-of-another-login"
    url, state = oidc.start_login("/")
    refused("oidc_nonce_invalid", oidc.finish_login, authorize(url), state)


def test_the_id_token_is_checked_by_the_token_verifier(idp, oidc):
    idp.claim_overrides = {"aud": "another-client"}
    url, state = oidc.start_login("/")
    refused("audience_invalid", oidc.finish_login, authorize(url), state)
    idp.claim_overrides = {"iss": "https://impostor.test"}
    url, state = oidc.start_login("/")
    refused("issuer_unknown", oidc.finish_login, authorize(url), state)


def test_the_code_verifier_must_match_the_challenge(idp):
    def tampering_post(url, fields, headers):
        from phigate.sso.oidc_login import post_form

        return post_form(url, {**fields, "code_verifier": "x" * 64}, headers)

    oidc = OidcLogin(
        OidcLoginConfig(issuer=idp.issuer, client_id="phigate-admin", redirect_uri=REDIRECT),
        post=tampering_post,
    )
    url, state = oidc.start_login("/")
    refused("oidc_code_rejected", oidc.finish_login, authorize(url), state)


def test_an_idp_error_or_another_issuer_is_refused(idp, oidc):
    url, state = oidc.start_login("/")
    refused("oidc_denied", oidc.finish_login, {"error": "access_denied", "state": state}, state)
    url, state = oidc.start_login("/")
    refused(
        "oidc_issuer_invalid",
        oidc.finish_login,
        {**authorize(url), "iss": "https://other.test"},
        state,
    )


def test_a_confidential_client_authenticates_at_the_token_endpoint():
    with OidcLoginProvider(
        client_id="phigate admin", redirect_uris=[REDIRECT], client_secret="s3cr:t&"
    ) as idp:
        config = dict(issuer=idp.issuer, client_id="phigate admin", redirect_uri=REDIRECT)
        good = OidcLogin(OidcLoginConfig(**config, client_secret="s3cr:t&"))
        url, state = good.start_login("/")
        assert good.finish_login(authorize(url), state).identity.sub == "dr-alice"
        bad = OidcLogin(OidcLoginConfig(**config, client_secret="wrong"))
        url, state = bad.start_login("/")
        refused("oidc_code_rejected", bad.finish_login, authorize(url), state)


def test_an_unreachable_provider_is_a_retryable_503():
    oidc = OidcLogin(
        OidcLoginConfig(issuer="http://127.0.0.1:9", client_id="c", redirect_uri=REDIRECT)
    )
    error = refused("oidc_unavailable", oidc.start_login, "/")
    assert error.status == 503 and error.retry


def test_pkce_challenge_is_s256_of_the_verifier(idp):
    seen = {}

    def recording_post(url, fields, headers):
        from phigate.sso.oidc_login import post_form

        seen.update(fields)
        return post_form(url, fields, headers)

    oidc = OidcLogin(
        OidcLoginConfig(issuer=idp.issuer, client_id="phigate-admin", redirect_uri=REDIRECT),
        post=recording_post,
    )
    url, state = oidc.start_login("/")
    challenge = parse_qs(urlsplit(url).query)["code_challenge"][0]
    oidc.finish_login(authorize(url), state)
    digest = hashlib.sha256(seen["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
