"""SAML metadata: reading the hospital IdP's (a local file) and writing ours.

The IdP metadata file is trusted configuration (an administrator downloads and checks it);
its signature, if any, is not verified here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from phigate.identity.fetch import check_url
from phigate.sso.xmlsafe import DS, MD, NS, UnsafeXml, parse_untrusted, tag

REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"


class MetadataError(ValueError):
    """The IdP metadata is unusable; the message names the file and the missing part."""


@dataclass(frozen=True)
class IdpMetadata:
    entity_id: str
    sso_url: str  # its HTTP-Redirect SingleSignOnService
    certificates: tuple[x509.Certificate, ...]  # signing certificates (several during rotation)

    def __post_init__(self) -> None:
        if not self.entity_id:
            raise MetadataError("entity_id: required")
        try:
            check_url(self.sso_url)
        except ValueError as problem:
            raise MetadataError(f"sso_url: {problem}") from None
        if not self.certificates:
            raise MetadataError("certificates: at least one signing certificate is required")


def load_idp_metadata(path: str | Path, entity_id: str | None = None) -> IdpMetadata:
    """The IdP in a metadata file: its EntityDescriptor, or `entity_id`'s among several."""
    path = Path(path)
    try:
        root = parse_untrusted(path.read_bytes())
    except (OSError, UnsafeXml) as problem:
        raise MetadataError(f"{path}: cannot read: {problem}") from None
    entities = (
        [root]
        if root.tag == tag(MD, "EntityDescriptor")
        else root.iter(tag(MD, "EntityDescriptor"))
    )
    candidates = [
        entity
        for entity in entities
        if entity.find("md:IDPSSODescriptor", NS) is not None
        and (entity_id is None or entity.get("entityID") == entity_id)
    ]
    if len(candidates) != 1:
        raise MetadataError(f"{path}: expected exactly one matching IdP, found {len(candidates)}")
    entity = candidates[0]
    descriptor = entity.find("md:IDPSSODescriptor", NS)
    sso = [
        s.get("Location")
        for s in descriptor.findall("md:SingleSignOnService", NS)
        if s.get("Binding") == REDIRECT_BINDING
    ]
    if not sso or not sso[0]:
        raise MetadataError(f"{path}: the IdP has no HTTP-Redirect SingleSignOnService")
    certificates = []
    for key in descriptor.findall("md:KeyDescriptor", NS):
        if key.get("use") not in (None, "signing"):
            continue
        for element in key.iterfind(".//ds:X509Certificate", NS):
            try:
                der = base64.b64decode("".join((element.text or "").split()), validate=True)
                certificates.append(x509.load_der_x509_certificate(der))
            except (binascii.Error, ValueError):
                raise MetadataError(f"{path}: an IdP signing certificate is unreadable") from None
    try:
        return IdpMetadata(entity.get("entityID") or "", sso[0], tuple(certificates))
    except MetadataError as problem:
        raise MetadataError(f"{path}: {problem}") from None


def sp_metadata(
    entity_id: str,
    acs_url: str,
    name_id_format: str,
    *,
    signing_cert: x509.Certificate | None,
    authn_requests_signed: bool,
    want_assertions_signed: bool,
) -> bytes:
    """Our SPSSODescriptor, for the IdP administrator."""
    root = etree.Element(tag(MD, "EntityDescriptor"), nsmap={"md": MD}, entityID=entity_id)
    sp = etree.SubElement(
        root,
        tag(MD, "SPSSODescriptor"),
        AuthnRequestsSigned=_bool(authn_requests_signed),
        WantAssertionsSigned=_bool(want_assertions_signed),
        protocolSupportEnumeration=PROTOCOL,
    )
    if signing_cert is not None:
        key = etree.SubElement(sp, tag(MD, "KeyDescriptor"), use="signing")
        info = etree.SubElement(key, tag(DS, "KeyInfo"), nsmap={"ds": DS})
        data = etree.SubElement(info, tag(DS, "X509Data"))
        cert = etree.SubElement(data, tag(DS, "X509Certificate"))
        cert.text = base64.b64encode(signing_cert.public_bytes(Encoding.DER)).decode()
    etree.SubElement(sp, tag(MD, "NameIDFormat")).text = name_id_format
    etree.SubElement(
        sp,
        tag(MD, "AssertionConsumerService"),
        Binding=POST_BINDING,
        Location=acs_url,
        index="0",
        isDefault="true",
    )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _bool(value: bool) -> str:
    return "true" if value else "false"
