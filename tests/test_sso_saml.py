"""The SAML service provider against a real local IdP that signs with signxml."""

from __future__ import annotations

import base64
import copy
import time
import zlib
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from phigate.identity import IdentityError
from phigate.sso.expiring import ExpiringMap, Full
from phigate.sso.saml import SamlConfig, SamlServiceProvider
from phigate.sso.saml_metadata import MetadataError, load_idp_metadata
from tests.support.saml_idp import (
    DS,
    SAML,
    SAMLP,
    SamlIdp,
    new_signer_identity,
    sign,
    verify_redirect_signature,
)

ENTITY_ID = "https://phigate.hospital.test/saml/metadata"
ACS = "https://phigate.hospital.test/saml/acs"
MS_GROUPS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"


@pytest.fixture(scope="module")
def idp():
    with SamlIdp() as running:
        yield running


@pytest.fixture
def sp(idp):
    return SamlServiceProvider(SamlConfig(entity_id=ENTITY_ID, acs_url=ACS, idp=idp.metadata()))


def b64(xml: bytes) -> str:
    return base64.b64encode(xml).decode()


def good(idp, request_id=None, **fields) -> bytes:
    return idp.response(audience=ENTITY_ID, recipient=ACS, in_response_to=request_id, **fields)


def refused(code: str, call, *args) -> IdentityError:
    with pytest.raises(IdentityError) as caught:
        call(*args)
    assert caught.value.code == code, caught.value.message
    assert caught.value.status in (401, 503)
    return caught.value


def test_a_signed_response_to_our_request_signs_the_user_in(idp, sp):
    url, request_id = sp.start_login("/approvals")
    login = sp.finish_login(
        b64(good(idp, request_id, groups=["approvers", "auditors"])), request_id
    )
    assert login.return_to == "/approvals"
    who = login.identity
    assert (who.iss, who.sub, who.groups, who.source) == (
        idp.entity_id,
        "dr-alice@hospital.example",
        ("approvers", "auditors"),
        "saml",
    )
    assert who.exp > time.time()


def test_the_authn_request_is_a_deflated_redirect_naming_us(idp, sp):
    url, request_id = sp.start_login("/")
    assert url.startswith(idp.sso_url + "?")
    query = parse_qs(urlsplit(url).query)
    assert "Signature" not in query
    request = etree.fromstring(
        zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), wbits=-15)
    )
    assert request.tag == f"{{{SAMLP}}}AuthnRequest"
    assert request.get("ID") == request_id
    assert request.get("AssertionConsumerServiceURL") == ACS
    assert request.get("Destination") == idp.sso_url
    assert request.findtext(f"{{{SAML}}}Issuer") == ENTITY_ID


def test_authn_requests_are_signed_when_configured(idp):
    key, cert = new_signer_identity("phigate sp")
    sp = SamlServiceProvider(
        SamlConfig(
            entity_id=ENTITY_ID,
            acs_url=ACS,
            idp=idp.metadata(),
            sign_requests=True,
            sp_key=key,
            sp_cert=cert,
        )
    )
    url, _ = sp.start_login("/")
    raw = urlsplit(url).query
    assert verify_redirect_signature(raw, cert)
    other_key, other_cert = new_signer_identity("someone else")
    assert not verify_redirect_signature(raw, other_cert)
    assert not verify_redirect_signature(raw.replace("SAMLRequest=", "SAMLRequest=x"), cert)
    with pytest.raises(ValueError):
        SamlConfig(entity_id=ENTITY_ID, acs_url=ACS, idp=idp.metadata(), sign_requests=True)


def test_a_value_changed_after_signing_is_refused(idp, sp):
    _, request_id = sp.start_login("/")
    xml = good(idp, request_id, groups=["clinicians"])
    tampered = xml.replace(b">clinicians<", b">approvers<")
    assert tampered != xml
    refused("saml_signature_invalid", sp.finish_login, b64(tampered), request_id)


def test_an_unsigned_assertion_is_refused(idp, sp):
    _, request_id = sp.start_login("/")
    refused(
        "saml_unsigned",
        sp.finish_login,
        b64(good(idp, request_id, sign_assertion=False)),
        request_id,
    )


def test_a_signed_response_is_enough_only_when_assertions_need_no_signature(idp, sp):
    _, request_id = sp.start_login("/")
    xml = good(idp, request_id, sign_assertion=False, sign_response=True)
    refused("saml_unsigned", sp.finish_login, b64(xml), request_id)
    lenient = SamlServiceProvider(
        SamlConfig(
            entity_id=ENTITY_ID, acs_url=ACS, idp=idp.metadata(), want_assertions_signed=False
        )
    )
    _, request_id = lenient.start_login("/")
    login = lenient.finish_login(
        b64(good(idp, request_id, sign_assertion=False, sign_response=True)), request_id
    )
    assert login.identity.sub == "dr-alice@hospital.example"
    _, request_id = lenient.start_login("/")
    tampered = good(idp, request_id, sign_assertion=False, sign_response=True).replace(
        b"dr-alice@", b"dr-mallory@"
    )
    refused("saml_signature_invalid", lenient.finish_login, b64(tampered), request_id)


def test_a_signature_by_another_key_is_refused(idp, sp):
    key, cert = new_signer_identity("impostor")
    _, request_id = sp.start_login("/")
    refused(
        "saml_signature_invalid",
        sp.finish_login,
        b64(good(idp, request_id, key=key, cert=cert)),
        request_id,
    )


def test_both_certificates_of_a_rotation_are_trusted(idp, tmp_path):
    key, cert = new_signer_identity("next idp key")
    path = tmp_path / "idp.xml"
    path.write_bytes(idp.metadata_xml(cert))
    metadata = load_idp_metadata(path)
    assert len(metadata.certificates) == 2
    sp = SamlServiceProvider(SamlConfig(entity_id=ENTITY_ID, acs_url=ACS, idp=metadata))
    for signer in ((idp.key, idp.cert), (key, cert)):
        _, request_id = sp.start_login("/")
        xml = good(idp, request_id, key=signer[0], cert=signer[1])
        assert sp.finish_login(b64(xml), request_id).identity.sub == "dr-alice@hospital.example"


# signature wrapping
def _parts(xml: bytes):
    response = etree.fromstring(xml)
    return response, response.find(f"{{{SAML}}}Assertion")


def test_a_second_unsigned_assertion_is_refused(idp, sp):
    _, request_id = sp.start_login("/")
    response, signed = _parts(good(idp, request_id))
    evil = copy.deepcopy(signed)
    evil.remove(evil.find(f"{{{DS}}}Signature"))
    evil.set("ID", "_evil")
    evil.find(f".//{{{SAML}}}NameID").text = "chief-of-staff@hospital.example"
    response.insert(response.index(signed), evil)  # the evil one first, where naive code looks
    refused("saml_malformed", sp.finish_login, b64(etree.tostring(response)), request_id)


def test_a_signed_assertion_moved_into_a_wrapper_is_refused(idp, sp):
    _, request_id = sp.start_login("/")
    response, signed = _parts(good(idp, request_id))
    evil = copy.deepcopy(signed)
    evil.set("ID", "_evil")
    evil.find(f".//{{{SAML}}}NameID").text = "chief-of-staff@hospital.example"
    # XSW: the evil assertion carries the original signature; the signed one hides inside it.
    evil.find(f"{{{SAML}}}Subject").append(signed)
    response.append(evil)
    refused("saml_malformed", sp.finish_login, b64(etree.tostring(response)), request_id)
    # ... or hides under Extensions with nothing else: still no assertion where it belongs.
    response, signed = _parts(good(idp, request_id))
    extensions = etree.SubElement(response, f"{{{SAMLP}}}Extensions")
    extensions.append(signed)
    refused("saml_malformed", sp.finish_login, b64(etree.tostring(response)), request_id)


def test_a_signature_moved_onto_an_element_it_does_not_cover_is_refused(idp, sp):
    # The IdP signed the whole Response; the signature is moved into the (unsigned) assertion.
    # It still verifies cryptographically (the enveloped transform drops it wherever it is),
    # but what it covers is not the assertion it is now attached to.
    _, request_id = sp.start_login("/")
    response, assertion = _parts(good(idp, request_id, sign_assertion=False, sign_response=True))
    signature = response.find(f"{{{DS}}}Signature")
    assertion.find(f"{{{SAML}}}Issuer").addnext(signature)
    moved = etree.tostring(response)
    location = SignatureConfiguration(location=f"./{{{SAML}}}Assertion/")
    assert (
        XMLVerifier().verify(moved, x509_cert=idp.cert, expect_config=location).signed_xml.tag
        == response.tag
    )
    refused("saml_signature_invalid", sp.finish_login, b64(moved), request_id)


def test_a_comment_injected_into_the_name_id_is_refused(idp, sp):
    _, request_id = sp.start_login("/")
    xml = good(idp, request_id, name_id="dr-alice@hospital.example.evil.test")
    injected = xml.replace(
        b">dr-alice@hospital.example.evil.test<", b">dr-alice@hospital.example<!---->.evil.test<"
    )
    assert injected != xml
    # The signature still holds (comments are not signed): the SP must not read a truncated name.
    XMLVerifier().verify(
        injected,
        x509_cert=idp.cert,
        expect_config=SignatureConfiguration(location=f"./{{{SAML}}}Assertion/"),
    )
    refused("saml_malformed", sp.finish_login, b64(injected), request_id)


# Ten levels of ten references each: 10**10 "a"s if anything expanded it.
BILLION_LAUGHS = (
    b'<!DOCTYPE r [<!ENTITY a0 "aaaaaaaaaa">'
    + b"".join(f'<!ENTITY a{level} "{f"&a{level - 1};" * 10}">'.encode() for level in range(1, 10))
    + b"]>"
)


@pytest.mark.parametrize(
    "prolog",
    [
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        BILLION_LAUGHS,
    ],
    ids=["xxe", "billion-laughs"],
)
def test_documents_with_a_dtd_are_refused(idp, sp, prolog):
    _, request_id = sp.start_login("/")
    xml = good(idp, request_id, groups=["&x;" if b"SYSTEM" in prolog else "&a9;"]).replace(
        b"&amp;", b"&"
    )
    started = time.perf_counter()
    error = refused("saml_malformed", sp.finish_login, b64(prolog + xml), request_id)
    # libxml2 itself may stop the expansion first; either way nothing is expanded.
    assert "document type" in error.message or "not well-formed" in error.message
    assert time.perf_counter() - started < 1


def test_a_dtd_is_refused_even_when_nothing_uses_it(idp, sp):
    _, request_id = sp.start_login("/")
    error = refused(
        "saml_malformed",
        sp.finish_login,
        b64(b'<!DOCTYPE r [<!ENTITY a "b">]>' + good(idp, request_id)),
        request_id,
    )
    assert "document type" in error.message


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"issued_offset": -900, "lifetime": 300}, "saml_expired"),
        ({"issued_offset": 600}, "saml_not_yet_valid"),
        ({"audience": "https://another-service.test"}, "saml_audience_invalid"),
        (
            {"recipient": "https://phigate.hospital.test/other", "destination": ACS},
            "saml_recipient_invalid",
        ),
        ({"destination": "https://another-service.test/acs"}, "saml_recipient_invalid"),
        ({"issuer": "https://another-idp.test"}, "saml_issuer_invalid"),
        ({"status": "urn:oasis:names:tc:SAML:2.0:status:Requester"}, "saml_status_failed"),
    ],
    ids=["expired", "not-yet-valid", "audience", "recipient", "destination", "issuer", "status"],
)
def test_assertions_failing_a_check_are_refused(idp, sp, fields, code):
    _, request_id = sp.start_login("/")
    values = {"audience": ENTITY_ID, "recipient": ACS, "in_response_to": request_id, **fields}
    error = refused(code, sp.finish_login, b64(idp.response(**values)), request_id)
    assert "dr-alice" not in error.message and "hospital" not in error.message


def test_in_response_to_must_answer_a_request_this_browser_started(idp, sp):
    _, request_id = sp.start_login("/")
    _, other_request = sp.start_login("/")
    refused("saml_request_unknown", sp.finish_login, b64(good(idp, "_never-sent")), "_never-sent")
    refused("saml_request_unknown", sp.finish_login, b64(good(idp, request_id)), other_request)
    refused("saml_request_unknown", sp.finish_login, b64(good(idp, request_id)), None)
    refused(
        "saml_request_unknown", sp.finish_login, b64(good(idp, None)), request_id
    )  # unsolicited
    sp.finish_login(b64(good(idp, request_id)), request_id)
    refused(
        "saml_request_unknown", sp.finish_login, b64(good(idp, request_id)), request_id
    )  # used once


def test_an_assertion_is_accepted_once(idp, sp):
    _, request_id = sp.start_login("/")
    xml = good(idp, request_id)
    sp.finish_login(b64(xml), request_id)
    refused("saml_replayed", sp.verify_assertion_header, "SAML " + b64(xml))


def test_an_expired_outstanding_request_cannot_be_answered(idp):
    now = [time.time()]
    sp = SamlServiceProvider(
        SamlConfig(entity_id=ENTITY_ID, acs_url=ACS, idp=idp.metadata(), request_ttl=60),
        clock=lambda: now[0],
    )
    _, request_id = sp.start_login("/")
    xml = good(idp, request_id)
    now[0] += 61
    refused("saml_request_unknown", sp.finish_login, b64(xml), request_id)


def test_the_authorization_header_takes_a_response_or_a_bare_assertion(idp, sp):
    identity = sp.verify_assertion_header("SAML " + b64(good(idp)))
    assert identity.sub == "dr-alice@hospital.example" and identity.groups == ("approvers",)
    assertion = sign(idp.assertion(audience=ENTITY_ID, recipient=ACS), idp.key, idp.cert)
    header = "SAML " + b64(etree.tostring(assertion))
    assert sp.verify_assertion_header(header).source == "saml"
    refused("saml_replayed", sp.verify_assertion_header, header)
    unsigned = "SAML " + b64(etree.tostring(idp.assertion(audience=ENTITY_ID, recipient=ACS)))
    refused("saml_signature_invalid", sp.verify_assertion_header, unsigned)
    refused("saml_malformed", sp.verify_assertion_header, "Bearer abc.def.ghi")
    refused("saml_malformed", sp.verify_assertion_header, "SAML not*base64")
    refused("saml_malformed", sp.verify_assertion_header, "SAML " + b64(b"<notsaml/>"))
    expired = "SAML " + b64(good(idp, issued_offset=-900))
    refused("saml_expired", sp.verify_assertion_header, expired)


def test_the_groups_attribute_is_configurable(tmp_path):
    with SamlIdp(groups_attribute=MS_GROUPS) as idp:
        sp = SamlServiceProvider(
            SamlConfig(
                entity_id=ENTITY_ID, acs_url=ACS, idp=idp.metadata(), groups_attribute=MS_GROUPS
            )
        )
        plain = SamlServiceProvider(
            SamlConfig(entity_id=ENTITY_ID, acs_url=ACS, idp=idp.metadata())
        )
        assert sp.verify_assertion_header(
            "SAML " + b64(good(idp, groups=["g1", "g2", "g1"]))
        ).groups == ("g1", "g2")
        assert plain.verify_assertion_header("SAML " + b64(good(idp))).groups == ()


def test_session_not_on_or_after_limits_the_session(idp, sp):
    _, request_id = sp.start_login("/")
    ends = time.time() + 120
    login = sp.finish_login(b64(good(idp, request_id, session_not_on_or_after=ends)), request_id)
    assert login.not_after == int(ends)


def test_metadata_round_trip(idp, tmp_path):
    key, cert = new_signer_identity("phigate sp")
    sp = SamlServiceProvider(
        SamlConfig(
            entity_id=ENTITY_ID,
            acs_url=ACS,
            idp=idp.metadata(),
            sign_requests=True,
            sp_key=key,
            sp_cert=cert,
        )
    )
    ours = etree.fromstring(sp.metadata_xml())
    md = "urn:oasis:names:tc:SAML:2.0:metadata"
    assert ours.get("entityID") == ENTITY_ID
    descriptor = ours.find(f"{{{md}}}SPSSODescriptor")
    assert descriptor.get("AuthnRequestsSigned") == "true"
    assert descriptor.find(f"{{{md}}}AssertionConsumerService").get("Location") == ACS
    published = descriptor.findtext(f".//{{{DS}}}X509Certificate")
    assert base64.b64decode(published) == cert.public_bytes(
        __import__("cryptography").hazmat.primitives.serialization.Encoding.DER
    )

    path = tmp_path / "idp.xml"
    path.write_bytes(idp.metadata_xml())
    loaded = load_idp_metadata(path)
    assert (loaded.entity_id, loaded.sso_url, loaded.certificates) == (
        idp.entity_id,
        idp.sso_url,
        (idp.cert,),
    )
    path.write_bytes(
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        + idp.metadata_xml().split(b"?>", 1)[1]
    )
    with pytest.raises(MetadataError):
        load_idp_metadata(path)
    path.write_bytes(
        idp.metadata_xml().replace(b"SingleSignOnService", b"ArtifactResolutionService")
    )
    with pytest.raises(MetadataError, match="SingleSignOnService"):
        load_idp_metadata(path)


def test_the_expiring_map_is_bounded_and_single_use():
    now = [0.0]
    seen = ExpiringMap(2, lambda: now[0])
    assert seen.add("a", 1, 10) and seen.add("b", 2, 20)
    assert not seen.add("a", 1, 10)
    with pytest.raises(Full):
        seen.add("c", 3, 30)
    now[0] = 15
    assert seen.add("c", 3, 30)  # "a" expired and was reclaimed
    assert seen.pop("b") == 2 and seen.pop("b") is None
    now[0] = 40
    assert seen.pop("c") is None
