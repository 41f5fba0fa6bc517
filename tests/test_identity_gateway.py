"""Identity through the gateway: a real OIDC provider (discovery + JWKS over HTTP, key
rotation, outages), the real openai SDK, and the audit record of every refusal."""

from __future__ import annotations

import base64
import json
import time

import httpx
import openai
import pytest

from phigate.addons.embedded import RunningGateway
from tests.support.oidc import OidcProvider, new_key

from .test_pipeline import MODEL, assert_only_gateway_key, audit_rows, record_for


@pytest.fixture(scope="module")
def idp():
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def idp_never_reached():
    """A second trusted issuer whose JWKS endpoint is down from the start: no cached keys."""
    with OidcProvider() as provider:
        provider.down()
        yield provider


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream, idp, idp_never_reached):
    home = tmp_path_factory.mktemp("idhome")
    issuers = home / "issuers.yaml"
    issuers.write_text(
        "issuers:\n"
        f"  - issuer: {idp.issuer}\n    audience: phigate\n    max_lifetime: 3600\n"
        f"  - issuer: {idp_never_reached.issuer}\n    audience: phigate\n")
    with RunningGateway(home, upstream=upstream.url, upstream_ca=str(upstream.tls.ca_cert),
                        options={"identity_issuers": str(issuers), "identity_dev_issuer": False,
                                 "identity_refresh_interval": 1, "admin_listen": ""}) as running:
        yield running


def call(gw, authorization: str | None) -> httpx.Response:
    headers = {"authorization": authorization} if authorization is not None else {}
    return httpx.post(f"{gw.reverse_url}/v1/chat/completions", headers=headers, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hello"}]})


def test_a_valid_token_reaches_upstream_with_only_the_gateway_key(gw, upstream, idp):
    upstream.clear()
    token = idp.mint(sub="svc-notes", groups=["clinicians"])
    completion = openai.OpenAI(base_url=gw.reverse_url + "/v1", api_key=token,
                               max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content
    assert_only_gateway_key(upstream.received, token)
    (record,) = [r for r in audit_rows(gw) if (r.get("identity") or {}).get("sub") == "svc-notes"]
    assert record["identity"]["iss"] == idp.issuer
    assert record["identity"]["jti"] and record["identity"]["exp"]


def now() -> int:
    return int(time.time())


BAD_TOKENS = {
    "missing": (lambda idp: None, 401, "token_missing"),
    "malformed": (lambda idp: "Bearer aaaa.bbbb.cccc", 401, "token_malformed"),
    "alg none": (lambda idp: "Bearer " + idp.mint(alg="none"), 401, "alg_not_allowed"),
    "HS256 with the RSA public key": (
        lambda idp: "Bearer " + idp.mint(alg="HS256", key=idp.signing_key.public_pem),
        401, "alg_not_allowed"),
    "wrong issuer": (lambda idp: "Bearer " + idp.mint(iss="https://idp.invalid"),
                     401, "issuer_unknown"),
    "wrong audience": (lambda idp: "Bearer " + idp.mint(aud="another-api"),
                       401, "audience_invalid"),
    "expired": (lambda idp: "Bearer " + idp.mint(iat=now() - 900, nbf=now() - 900,
                                                 exp=now() - 600), 401, "token_expired"),
    "not yet valid": (lambda idp: "Bearer " + idp.mint(nbf=now() + 600, exp=now() + 900),
                      401, "token_not_yet_valid"),
    "lifetime over the limit": (lambda idp: "Bearer " + idp.mint(exp=now() + 4 * 3600),
                                401, "lifetime_too_long"),
    "unknown kid": (lambda idp: "Bearer " + idp.mint(key=new_key().private,
                                                     headers={"kid": "never-published"}),
                    401, "key_unknown"),
    "huge token": (lambda idp: "Bearer " + idp.mint(padding="x" * 12000), 401, "token_too_large"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_are_refused_clearly_and_recorded(gw, upstream, idp, case):
    make, status, code = BAD_TOKENS[case]
    upstream.clear()
    authorization = make(idp)
    response = call(gw, authorization)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["x-should-retry"] == "false"
    assert upstream.received == []
    record = record_for(gw, response.headers["x-phigate-request-id"])
    assert record["refusal"] == {"status": status, "code": code, "stage": "identity"}
    if authorization:
        token = authorization.split()[-1]
        assert token not in json.dumps(record)
        assert token not in response.text


def test_proxy_authorization_basic_carries_the_token(gw, upstream, idp):
    upstream.clear()
    token = idp.mint(sub="svc-basic", groups=["clinicians"])
    basic = base64.b64encode(f"svc:{token}".encode()).decode()
    http = httpx.Client(proxy=httpx.Proxy(gw.forward_url, headers={
        "proxy-authorization": f"Basic {basic}"}), verify=str(gw.ca_cert))
    response = http.post("https://api.openai.com/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert_only_gateway_key(upstream.received, token)


def test_key_rotation_is_picked_up_and_removed_keys_stop_working(gw, upstream, idp):
    old = idp.mint(sub="rotating", groups=["clinicians"])
    assert call(gw, f"Bearer {old}").status_code == 200
    idp.rotate(keep_old=False)
    time.sleep(1.1)  # past the refresh rate limit
    new = idp.mint(sub="rotating", groups=["clinicians"])
    assert call(gw, f"Bearer {new}").status_code == 200  # unknown kid → refresh → found
    # A token signed with the retired key is refused once the refresh dropped that key.
    assert call(gw, f"Bearer {old}").json()["error"]["code"] in ("key_unknown", "signature_invalid")


def test_jwks_outage_keeps_cached_keys_and_fails_closed_without_any(gw, upstream, idp,
                                                                      idp_never_reached):
    token = idp.mint(sub="during-outage", groups=["clinicians"])
    assert call(gw, f"Bearer {token}").status_code == 200  # keys cached
    idp.down()
    try:
        again = idp.mint(sub="during-outage-2", groups=["clinicians"])
        assert call(gw, f"Bearer {again}").status_code == 200
    finally:
        idp.up()
    upstream.clear()
    response = call(gw, "Bearer " + idp_never_reached.mint(groups=["clinicians"]))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "jwks_unavailable"
    assert upstream.received == []
