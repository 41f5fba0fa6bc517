"""Service callers with a signed SAML assertion instead of an OIDC token
(`Authorization: SAML <base64>`): same group mapping, same audit fields, refusals as for JWTs."""

from __future__ import annotations

import base64

import httpx
import pytest

from phigate.addons.embedded import GATEWAY_KEY, RunningGateway
from tests.support.saml_idp import SamlIdp

from .test_pipeline import MODEL, record_for

AUDIENCE = "https://phigate.hospital.example/api"


@pytest.fixture(scope="module")
def idp():
    with SamlIdp() as running:
        yield running


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream, idp):
    home = tmp_path_factory.mktemp("saml-api")
    metadata = home / "idp.xml"
    metadata.write_bytes(idp.metadata_xml())
    with RunningGateway(home, upstream=upstream.url, upstream_ca=str(upstream.tls.ca_cert),
                        options={"admin_listen": "", "identity_saml_idp_metadata": str(metadata),
                                 "identity_saml_audience": AUDIENCE}) as running:
        yield running


def saml(idp, **fields) -> str:
    xml = idp.response(audience=AUDIENCE, recipient=AUDIENCE, name_id="svc-batch",
                       groups=["clinicians"], **fields)
    return "SAML " + base64.b64encode(xml).decode()


def ask(gw, authorization: str) -> httpx.Response:
    return httpx.post(f"{gw.reverse_url}/v1/chat/completions",
                      headers={"authorization": authorization},
                      json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


def test_a_signed_assertion_identifies_the_caller(gw, upstream, idp):
    upstream.clear()
    header = saml(idp)
    response = ask(gw, header)
    assert response.status_code == 200
    (sent,) = upstream.received
    assert sent.headers["authorization"] == f"Bearer {GATEWAY_KEY}"
    record = record_for(gw, response.headers["x-phigate-request-id"])
    assert record["identity"]["sub"] == "svc-batch"
    assert record["identity"]["groups"] == ["clinicians"]
    assert record["identity"]["source"] == "saml"
    assert record["policy"]["name"] == "clinicians"
    # An assertion is accepted once.
    replayed = ask(gw, header)
    assert replayed.status_code == 401
    assert replayed.json()["error"]["code"] == "saml_replayed"


@pytest.mark.parametrize(("fields", "code"), [
    ({"lifetime": -60}, "saml_expired"),
    ({"audience": "https://another-sp.example"}, "saml_audience_invalid"),
    ({"sign_assertion": False}, "saml_unsigned"),
])
def test_bad_assertions_are_refused(gw, upstream, idp, fields, code):
    upstream.clear()
    audience = fields.pop("audience", AUDIENCE)
    xml = idp.response(audience=audience, recipient=AUDIENCE, name_id="svc-batch",
                       groups=["clinicians"], **fields)
    response = ask(gw, "SAML " + base64.b64encode(xml).decode())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["x-should-retry"] == "false"
    assert upstream.received == []


def test_a_tampered_assertion_is_refused(gw, upstream, idp):
    xml = idp.response(audience=AUDIENCE, recipient=AUDIENCE, name_id="svc-batch",
                       groups=["clinicians"])
    tampered = xml.replace(b"svc-batch", b"svc-admin")
    response = ask(gw, "SAML " + base64.b64encode(tampered).decode())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "saml_signature_invalid"
