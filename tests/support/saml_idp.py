"""A real SAML 2.0 identity provider on 127.0.0.1 for tests, signing with signxml.

Its key and self-signed certificate are made at start. `GET /sso` takes an HTTP-Redirect
AuthnRequest (checking its signature when `sp_cert` is set) and answers with a page that
auto-posts a signed Response for `user` to the request's ACS URL, as real IdPs do.
`response(...)` builds Responses directly, with a knob for every check an SP must make.

    with SamlIdp() as idp:
        xml = idp.response(audience=..., recipient=..., in_response_to=request_id)
"""

from __future__ import annotations

import base64
import datetime
import html
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod

from phigate.sso.saml_metadata import IdpMetadata
from tests.support.loopback import LoopbackServer

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


def new_signer_identity(
    common_name: str = "phigate test idp",
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA key and a self-signed certificate valid from yesterday for 30 days."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def sign(element: etree._Element, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> etree._Element:
    """Enveloped RSA-SHA256 signature over `element` (by ID), placed after its Issuer."""
    placeholder = etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS}, Id="placeholder")
    issuer = element.find(f"{{{SAML}}}Issuer")
    issuer.addnext(placeholder)
    signer = XMLSigner(c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
    return signer.sign(
        element, key=key, cert=[cert], reference_uri="#" + element.get("ID"), id_attribute="ID"
    )


@dataclass
class User:
    name_id: str = "dr-alice@hospital.example"
    groups: Iterable[str] = ("approvers",)


@dataclass
class Received:
    """An AuthnRequest the IdP was sent."""

    request_id: str
    acs_url: str
    issuer: str
    signed: bool
    xml: bytes = field(repr=False)


class SamlIdp(LoopbackServer):
    def __init__(
        self, *, clock: Callable[[], float] = time.time, groups_attribute: str = "groups"
    ) -> None:
        self.clock = clock
        self.groups_attribute = groups_attribute
        self.key, self.cert = new_signer_identity()
        self.user = User()
        self.sp_cert: x509.Certificate | None = None  # when set, AuthnRequests must be signed
        self.received: list[Received] = []
        self._serve(_handler_for(self))

    @property
    def entity_id(self) -> str:
        return self.base + "/idp"

    @property
    def sso_url(self) -> str:
        return self.base + "/sso"

    def metadata(self) -> IdpMetadata:
        return IdpMetadata(self.entity_id, self.sso_url, (self.cert,))

    def metadata_xml(self, *extra_certs: x509.Certificate) -> bytes:
        root = etree.Element(
            f"{{{MD}}}EntityDescriptor", nsmap={"md": MD, "ds": DS}, entityID=self.entity_id
        )
        idp = etree.SubElement(root, f"{{{MD}}}IDPSSODescriptor", protocolSupportEnumeration=SAMLP)
        for cert in (self.cert, *extra_certs):
            descriptor = etree.SubElement(idp, f"{{{MD}}}KeyDescriptor", use="signing")
            data = etree.SubElement(
                etree.SubElement(descriptor, f"{{{DS}}}KeyInfo"), f"{{{DS}}}X509Data"
            )
            der = cert.public_bytes(serialization.Encoding.DER)
            etree.SubElement(data, f"{{{DS}}}X509Certificate").text = base64.b64encode(der).decode()
        etree.SubElement(
            idp, f"{{{MD}}}SingleSignOnService", Binding=REDIRECT, Location=self.sso_url
        )
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def assertion(
        self,
        *,
        audience: str,
        recipient: str,
        in_response_to: str | None = None,
        name_id: str | None = None,
        groups: Iterable[str] | None = None,
        issuer: str | None = None,
        issued_offset: float = 0,
        lifetime: float = 300,
        assertion_id: str | None = None,
        session_not_on_or_after: float | None = None,
    ) -> etree._Element:
        """An unsigned Assertion; every field can be set wrong on purpose."""
        now = self.clock() + issued_offset
        assertion = etree.Element(
            f"{{{SAML}}}Assertion",
            nsmap={"saml": SAML},
            ID=assertion_id or "_a" + uuid.uuid4().hex,
            Version="2.0",
            IssueInstant=_instant(now),
        )
        etree.SubElement(assertion, f"{{{SAML}}}Issuer").text = issuer or self.entity_id
        subject = etree.SubElement(assertion, f"{{{SAML}}}Subject")
        etree.SubElement(subject, f"{{{SAML}}}NameID").text = name_id or self.user.name_id
        confirmation = etree.SubElement(
            subject,
            f"{{{SAML}}}SubjectConfirmation",
            Method="urn:oasis:names:tc:SAML:2.0:cm:bearer",
        )
        data = etree.SubElement(
            confirmation,
            f"{{{SAML}}}SubjectConfirmationData",
            Recipient=recipient,
            NotOnOrAfter=_instant(now + lifetime),
        )
        if in_response_to is not None:
            data.set("InResponseTo", in_response_to)
        conditions = etree.SubElement(
            assertion,
            f"{{{SAML}}}Conditions",
            NotBefore=_instant(now - 5),
            NotOnOrAfter=_instant(now + lifetime),
        )
        restriction = etree.SubElement(conditions, f"{{{SAML}}}AudienceRestriction")
        etree.SubElement(restriction, f"{{{SAML}}}Audience").text = audience
        statement = etree.SubElement(
            assertion, f"{{{SAML}}}AuthnStatement", AuthnInstant=_instant(now)
        )
        if session_not_on_or_after is not None:
            statement.set("SessionNotOnOrAfter", _instant(session_not_on_or_after))
        attributes = etree.SubElement(assertion, f"{{{SAML}}}AttributeStatement")
        attribute = etree.SubElement(attributes, f"{{{SAML}}}Attribute", Name=self.groups_attribute)
        for group in self.user.groups if groups is None else groups:
            etree.SubElement(attribute, f"{{{SAML}}}AttributeValue").text = group
        return assertion

    def response(
        self,
        *,
        sign_assertion: bool = True,
        sign_response: bool = False,
        destination: str | None = None,
        status: str = SUCCESS,
        key: rsa.RSAPrivateKey | None = None,
        cert: x509.Certificate | None = None,
        **assertion_fields: Any,
    ) -> bytes:
        """A Response around one assertion (see `assertion`), signed as asked."""
        key, cert = key or self.key, cert or self.cert
        assertion = self.assertion(**assertion_fields)
        if sign_assertion:
            assertion = sign(assertion, key, cert)
        in_response_to = assertion_fields.get("in_response_to")
        response = etree.Element(
            f"{{{SAMLP}}}Response",
            nsmap={"samlp": SAMLP, "saml": SAML},
            ID="_r" + uuid.uuid4().hex,
            Version="2.0",
            IssueInstant=_instant(self.clock()),
            Destination=destination or assertion_fields["recipient"],
        )
        if in_response_to is not None:
            response.set("InResponseTo", in_response_to)
        etree.SubElement(response, f"{{{SAML}}}Issuer").text = self.entity_id
        status_element = etree.SubElement(response, f"{{{SAMLP}}}Status")
        etree.SubElement(status_element, f"{{{SAMLP}}}StatusCode", Value=status)
        response.append(assertion)
        if sign_response:
            response = sign(response, key, cert)
        return etree.tostring(response)

    # the browser login
    def _login_page(self, raw_query: str) -> tuple[int, bytes]:
        query = parse_qs(raw_query)
        try:
            xml = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), wbits=-15)
            request = etree.fromstring(
                xml, etree.XMLParser(resolve_entities=False, no_network=True)
            )
        except (KeyError, ValueError, zlib.error, etree.XMLSyntaxError):
            return 400, b"bad AuthnRequest"
        signed = "Signature" in query
        if self.sp_cert is not None and not verify_redirect_signature(raw_query, self.sp_cert):
            return 403, b"AuthnRequest signature refused"
        received = Received(
            request.get("ID"),
            request.get("AssertionConsumerServiceURL"),
            request.findtext(f"{{{SAML}}}Issuer"),
            signed,
            xml,
        )
        self.received.append(received)
        response = self.response(
            audience=received.issuer, recipient=received.acs_url, in_response_to=received.request_id
        )
        page = AUTO_POST.format(
            acs=html.escape(received.acs_url, quote=True),
            response=base64.b64encode(response).decode(),
        )
        return 200, page.encode()


AUTO_POST = """<!doctype html><html><head><title>Test IdP</title></head><body>
<form method="post" action="{acs}"><input type="hidden" name="SAMLResponse" value="{response}">
<noscript><button type="submit">Continue</button></noscript></form>
<script>document.forms[0].submit()</script></body></html>"""


def verify_redirect_signature(raw_query: str, cert: x509.Certificate) -> bool:
    """The HTTP-Redirect binding's signature: over the query parts as sent, in spec order."""
    parts = dict(part.split("=", 1) for part in raw_query.split("&") if "=" in part)
    if "Signature" not in parts or "SigAlg" not in parts:
        return False
    signed = "&".join(
        f"{name}={parts[name]}" for name in ("SAMLRequest", "RelayState", "SigAlg") if name in parts
    )
    try:
        cert.public_key().verify(
            base64.b64decode(unquote_plus(parts["Signature"])),
            signed.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except Exception:  # noqa: BLE001 (any failure is a refusal)
        return False
    return True


def _handler_for(idp: SamlIdp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            status, body = idp._login_page(parts.query) if parts.path == "/sso" else (404, b"")
            self.send_response(status)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


def _instant(unix_time: float) -> str:
    return datetime.datetime.fromtimestamp(unix_time, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
