"""SAML 2.0 service provider: SP-initiated login (HTTP-Redirect AuthnRequest, HTTP-POST
Response) and `Authorization: SAML <base64>` for API callers.

Signatures are verified with signxml (XML-DSig is never hand-written here), and every value the
identity is built from is read from the element signxml returns as signed, never from the
received tree: that, the single-Assertion rule and unique IDs defeat signature wrapping.
Each accepted assertion ID is remembered until it expires (replay cache), and each AuthnRequest
ID can be answered once. Errors are `IdentityError`s (401, `saml_*` codes) whose messages name
the failed check, never assertion content.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import quote_plus, urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidSignature, SignXMLException

from phigate.identity import Identity, IdentityError
from phigate.identity.fetch import check_url
from phigate.sso.expiring import ExpiringMap, Full
from phigate.sso.saml_metadata import POST_BINDING, IdpMetadata, sp_metadata
from phigate.sso.session import Login
from phigate.sso.xmlsafe import (
    NS,
    SAML,
    SAMLP,
    UnsafeXml,
    format_instant,
    instant,
    parse_untrusted,
    tag,
)

NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
MAX_HEADER_CHARS = 96 * 1024
MAX_NAME_ID_CHARS = 512

_SIGNATURE_CHECKS = SignatureConfiguration(
    expect_references=1,
    signature_methods=frozenset(
        {
            SignatureMethod.RSA_SHA256,
            SignatureMethod.RSA_SHA384,
            SignatureMethod.RSA_SHA512,
            SignatureMethod.ECDSA_SHA256,
            SignatureMethod.ECDSA_SHA384,
            SignatureMethod.ECDSA_SHA512,
        }
    ),
    digest_algorithms=frozenset(
        {DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}
    ),
)
_RESPONSE, _ASSERTION = tag(SAMLP, "Response"), tag(SAML, "Assertion")


@dataclass(frozen=True)
class SamlConfig:
    entity_id: str  # ours (the SP's); assertions must name it as their Audience
    acs_url: str  # ours; assertions must name it as Recipient (and responses as Destination)
    idp: IdpMetadata
    groups_attribute: str = (
        "groups"  # e.g. http://schemas.microsoft.com/ws/2008/06/identity/claims/groups
    )
    name_id_format: str = NAMEID_UNSPECIFIED
    sign_requests: bool = False
    sp_key: rsa.RSAPrivateKey | None = None  # signs AuthnRequests (RSA-SHA256)
    sp_cert: x509.Certificate | None = None  # published in our metadata
    want_assertions_signed: bool = True  # False also accepts a signed Response around it
    clock_skew: int = 60
    request_ttl: int = 300
    max_outstanding: int = 10_000
    replay_cache_size: int = 100_000

    def __post_init__(self) -> None:
        if not self.entity_id or not self.groups_attribute:
            raise ValueError("entity_id and groups_attribute must be non-empty")
        check_url(self.acs_url)
        if self.sign_requests and (self.sp_key is None or self.sp_cert is None):
            raise ValueError("sign_requests needs sp_key and sp_cert")
        if self.sp_key is not None and not isinstance(self.sp_key, rsa.RSAPrivateKey):
            raise ValueError("sp_key must be an RSA private key (requests are signed RSA-SHA256)")
        if not 0 <= self.clock_skew <= 300:
            raise ValueError("clock_skew must be between 0 and 300 seconds")


@dataclass(frozen=True)
class _Checked:
    identity: Identity
    session_not_after: int | None


class SamlServiceProvider:
    """One SP trusting one IdP. Thread-safe; the caches live in this process's memory."""

    def __init__(self, config: SamlConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._outstanding = ExpiringMap(config.max_outstanding, clock)
        self._seen = ExpiringMap(config.replay_cache_size, clock)

    def metadata_xml(self) -> bytes:
        c = self.config
        return sp_metadata(
            c.entity_id,
            c.acs_url,
            c.name_id_format,
            signing_cert=c.sp_cert,
            authn_requests_signed=c.sign_requests,
            want_assertions_signed=c.want_assertions_signed,
        )

    def start_login(self, return_to: str) -> tuple[str, str]:
        """The IdP URL to redirect the browser to, and the AuthnRequest ID to bind to it."""
        request_id = "_" + secrets.token_hex(20)
        now = self._clock()
        try:
            self._outstanding.add(request_id, return_to, now + self.config.request_ttl)
        except Full:
            raise IdentityError(
                503, "saml_busy", "too many logins in progress", retry=True
            ) from None
        deflater = zlib.compressobj(wbits=-15)  # raw DEFLATE, as the Redirect binding requires
        encoded = deflater.compress(self._authn_request(request_id, now)) + deflater.flush()
        query = urlencode({"SAMLRequest": base64.b64encode(encoded).decode()})
        if self.config.sign_requests:
            assert self.config.sp_key is not None
            query += "&" + urlencode({"SigAlg": RSA_SHA256})
            signature = self.config.sp_key.sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
            query += "&Signature=" + quote_plus(base64.b64encode(signature).decode())
        separator = "&" if "?" in self.config.idp.sso_url else "?"
        return self.config.idp.sso_url + separator + query, request_id

    def finish_login(self, saml_response: str, request_id: str | None) -> Login:
        """Check the POSTed SAMLResponse against the request this browser started."""
        document = _decode(saml_response)
        assertion, envelope = self._verified_response(document, _parse(document))
        if request_id is None:
            raise _request_unknown()
        self._check_envelope(envelope, request_id)
        checked = self._check_assertion(assertion, request_id)
        return_to = self._outstanding.pop(request_id)
        if return_to is None:
            raise _request_unknown()
        self._remember(checked.identity)
        return Login(checked.identity, return_to, checked.session_not_after)

    def verify_assertion_header(self, value: str) -> Identity:
        """`Authorization: SAML <base64 Response or Assertion>`: the same checks as a login,
        except that no AuthnRequest is answered; each assertion is accepted once."""
        if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS:
            raise _malformed("the SAML authorization header is missing or too large")
        scheme, _, encoded = value.strip().partition(" ")
        if scheme.lower() != "saml" or not encoded.strip():
            raise _malformed("use `Authorization: SAML <base64 Response or Assertion>`")
        document = _decode(encoded.strip())
        root = _parse(document)
        if root.tag == _RESPONSE:
            assertion, envelope = self._verified_response(document, root)
            self._check_envelope(envelope, None)
        elif root.tag == _ASSERTION:
            if sum(1 for _ in root.iter(_ASSERTION)) != 1:
                raise _malformed("an assertion may not contain other assertions")
            assertion = self._verified(document, "./", _ASSERTION, root.get("ID"))
        else:
            raise _malformed("the document is neither a SAML Response nor an Assertion")
        checked = self._check_assertion(assertion, None)
        self._remember(checked.identity)
        return checked.identity

    # signatures
    def _verified_response(
        self, document: bytes, root: etree._Element
    ) -> tuple[etree._Element, etree._Element]:
        """(signed Assertion, Response to read the envelope from): both trusted or checked."""
        if root.tag != _RESPONSE:
            raise _malformed("the document is not a SAML Response")
        assertions = list(root.iter(_ASSERTION))
        if len(assertions) != 1 or any(root.iter(tag(SAML, "EncryptedAssertion"))):
            raise _malformed("the response must hold exactly one (unencrypted) assertion")
        assertion = assertions[0]
        if assertion.getparent() is not root:
            raise _malformed("the assertion is not a child of the response")
        response_signed, assertion_signed = _is_signed(root), _is_signed(assertion)
        if not assertion_signed and (self.config.want_assertions_signed or not response_signed):
            raise IdentityError(401, "saml_unsigned", "the assertion is not signed")
        envelope = trusted = root
        if response_signed:
            envelope = self._verified(document, "./", _RESPONSE, root.get("ID"))
            trusted = envelope.find("saml:Assertion", NS)
        if assertion_signed:
            location = f"./{{{SAML}}}Assertion/"
            trusted = self._verified(document, location, _ASSERTION, assertion.get("ID"))
        if trusted is None:
            raise _malformed("the signed response holds no assertion")
        return trusted, envelope

    def _verified(
        self, document: bytes, location: str, expected_tag: str, expected_id: str | None
    ) -> etree._Element:
        """The element as signed (re-parsed from its canonical form by signxml)."""
        if not expected_id:
            raise _malformed("the signed element has no ID")
        checks = replace(_SIGNATURE_CHECKS, location=location)
        for certificate in self.config.idp.certificates:
            try:
                result = XMLVerifier().verify(
                    document, x509_cert=certificate, id_attribute="ID", expect_config=checks
                )
            except InvalidSignature:  # wrong key (rotation: try the next), tampered, bad cert
                continue
            except (SignXMLException, etree.LxmlError, ValueError):
                raise _bad_signature(
                    "the signature is malformed or uses a refused algorithm"
                ) from None
            signed = result.signed_xml
            if signed is None or signed.tag != expected_tag or signed.get("ID") != expected_id:
                raise _bad_signature("the signature does not cover the element it is attached to")
            return signed
        raise _bad_signature("the signature does not verify with the IdP's certificates")

    # checks on trusted data
    def _check_envelope(self, envelope: etree._Element, request_id: str | None) -> None:
        if envelope.get("Version") != "2.0":
            raise _malformed("the response is not SAML 2.0")
        status = envelope.find("samlp:Status/samlp:StatusCode", NS)
        if status is None or status.get("Value") != SUCCESS:
            raise IdentityError(
                401, "saml_status_failed", "the identity provider did not report success"
            )
        destination = envelope.get("Destination")
        if destination is not None and destination != self.config.acs_url:
            raise _wrong_recipient()
        issuer = envelope.find("saml:Issuer", NS)
        if issuer is not None and _text(issuer) != self.config.idp.entity_id:
            raise _wrong_issuer()
        answered = envelope.get("InResponseTo")
        if request_id is not None and answered is not None and answered != request_id:
            raise _request_unknown()

    def _check_assertion(self, assertion: etree._Element, request_id: str | None) -> _Checked:
        now, skew = self._clock(), self.config.clock_skew
        assertion_id = assertion.get("ID")
        if assertion.get("Version") != "2.0" or not assertion_id:
            raise _malformed("the assertion is not SAML 2.0 or has no ID")
        issued = _time(assertion.get("IssueInstant"))
        if issued > now + skew:
            raise _not_yet_valid()
        if _text(_single(assertion, "saml:Issuer")) != self.config.idp.entity_id:
            raise _wrong_issuer()
        subject = _single(assertion, "saml:Subject")
        name_id = _name_id(subject)
        conditions = _single(assertion, "saml:Conditions")
        not_before, not_after = (
            _optional_time(conditions.get(name)) for name in ("NotBefore", "NotOnOrAfter")
        )
        if not_before is not None and not_before > now + skew:
            raise _not_yet_valid()
        if not_after is not None and not_after <= now - skew:
            raise _expired()
        restrictions = conditions.findall("saml:AudienceRestriction", NS)
        if not restrictions or not all(
            any(_text(a) == self.config.entity_id for a in r.findall("saml:Audience", NS))
            for r in restrictions
        ):
            raise IdentityError(
                401,
                "saml_audience_invalid",
                "the assertion is not meant for this service (Audience)",
            )
        confirmed_until = self._confirmed_until(subject, now, request_id)
        expires = confirmed_until if not_after is None else min(confirmed_until, not_after)
        identity = Identity(
            iss=self.config.idp.entity_id,
            sub=name_id,
            groups=self._groups(assertion),
            jti=assertion_id,
            exp=int(expires),
            iat=int(issued),
            source="saml",
        )
        session_ends = [
            _time(s.get("SessionNotOnOrAfter"))
            for s in assertion.findall("saml:AuthnStatement", NS)
            if s.get("SessionNotOnOrAfter")
        ]
        return _Checked(identity, int(min(session_ends)) if session_ends else None)

    def _confirmed_until(
        self, subject: etree._Element, now: float, request_id: str | None
    ) -> float:
        """When the first bearer SubjectConfirmation that passes every check stops confirming."""
        skew, failure = self.config.clock_skew, None
        for confirmation in subject.findall("saml:SubjectConfirmation", NS):
            data = confirmation.find("saml:SubjectConfirmationData", NS)
            if confirmation.get("Method") != BEARER or data is None:
                continue
            not_before = _optional_time(data.get("NotBefore"))
            not_after = _time(data.get("NotOnOrAfter"))
            if data.get("Recipient") != self.config.acs_url:
                failure = failure or _wrong_recipient()
            elif not_after <= now - skew:
                failure = failure or _expired()
            elif not_before is not None and not_before > now + skew:
                failure = failure or _not_yet_valid()
            elif request_id is not None and data.get("InResponseTo") != request_id:
                failure = failure or _request_unknown()
            else:
                return not_after
        raise failure or _malformed("the assertion has no bearer subject confirmation")

    def _groups(self, assertion: etree._Element) -> tuple[str, ...]:
        groups: dict[str, None] = {}  # ordered and without duplicates
        for attribute in assertion.iterfind("saml:AttributeStatement/saml:Attribute", NS):
            if attribute.get("Name") != self.config.groups_attribute:
                continue
            for value in attribute.findall("saml:AttributeValue", NS):
                text = _text(value)
                if text:
                    groups[text] = None
        return tuple(groups)

    def _remember(self, identity: Identity) -> None:
        key = f"{identity.iss}\n{identity.jti}"
        try:
            fresh = self._seen.add(key, True, identity.exp + self.config.clock_skew)
        except Full:
            raise IdentityError(
                503, "saml_replay_cache_full", "too many recent assertions", retry=True
            ) from None
        if not fresh:
            raise IdentityError(401, "saml_replayed", "the assertion was already used")

    def _authn_request(self, request_id: str, now: float) -> bytes:
        request = etree.Element(
            tag(SAMLP, "AuthnRequest"),
            nsmap={"samlp": SAMLP, "saml": SAML},
            ID=request_id,
            Version="2.0",
            IssueInstant=format_instant(now),
            Destination=self.config.idp.sso_url,
            AssertionConsumerServiceURL=self.config.acs_url,
            ProtocolBinding=POST_BINDING,
        )
        etree.SubElement(request, tag(SAML, "Issuer")).text = self.config.entity_id
        etree.SubElement(
            request,
            tag(SAMLP, "NameIDPolicy"),
            Format=self.config.name_id_format,
            AllowCreate="true",
        )
        return etree.tostring(request)


def _decode(encoded: str) -> bytes:
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("the SAML message is not valid base64") from None


def _parse(document: bytes) -> etree._Element:
    try:
        return parse_untrusted(document)
    except UnsafeXml as problem:
        raise _malformed(f"the SAML message was refused: {problem}") from None


def _is_signed(element: etree._Element) -> bool:
    signatures = element.findall("ds:Signature", NS)
    if len(signatures) > 1:
        raise _malformed("an element carries more than one signature")
    return bool(signatures)


def _single(parent: etree._Element, path: str) -> etree._Element:
    found = parent.findall(path, NS)
    if len(found) != 1:
        raise _malformed(f"expected exactly one {path.split(':')[-1]}")
    return found[0]


def _name_id(subject: etree._Element) -> str:
    name_id = _single(subject, "saml:NameID")
    text = _text(name_id)
    if not text or len(text) > MAX_NAME_ID_CHARS:
        raise _malformed("the NameID is empty or too long")
    return text


def _text(element: etree._Element) -> str:
    """An element's whole text; child nodes of any kind (a comment splitting it) are refused."""
    if len(element):
        raise _malformed(f"{etree.QName(element).localname} must hold text only")
    return (element.text or "").strip()


def _time(value: str | None) -> float:
    try:
        return instant(value)
    except (ValueError, OverflowError):
        raise _malformed("a time in the assertion is missing or malformed") from None


def _optional_time(value: str | None) -> float | None:
    return None if value is None else _time(value)


def _malformed(message: str) -> IdentityError:
    return IdentityError(401, "saml_malformed", message)


def _bad_signature(message: str) -> IdentityError:
    return IdentityError(401, "saml_signature_invalid", message)


def _expired() -> IdentityError:
    return IdentityError(401, "saml_expired", "the assertion has expired")


def _not_yet_valid() -> IdentityError:
    return IdentityError(401, "saml_not_yet_valid", "the assertion is not valid yet")


def _wrong_recipient() -> IdentityError:
    return IdentityError(
        401,
        "saml_recipient_invalid",
        "the assertion is addressed to another endpoint (Recipient/Destination)",
    )


def _wrong_issuer() -> IdentityError:
    return IdentityError(
        401, "saml_issuer_invalid", "the assertion was not issued by the trusted IdP"
    )


def _request_unknown() -> IdentityError:
    return IdentityError(
        401,
        "saml_request_unknown",
        "the response answers no login started in this browser (InResponseTo)",
    )
