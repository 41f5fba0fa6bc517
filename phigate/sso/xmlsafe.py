"""Parsing untrusted SAML XML safely, and the namespaces SAML uses.

The parser never resolves entities, loads DTDs or touches the network, and documents with a
DTD (XXE, billion laughs), entity references, comments or processing instructions are refused
outright: an IdP has no reason to send them, and comments inside signed text are how
NameID truncation attacks work (`alice@x<!---->.evil` read as `alice@x`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from lxml import etree

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"samlp": SAMLP, "saml": SAML, "md": MD, "ds": DS}

MAX_XML_BYTES = 256 * 1024


class UnsafeXml(ValueError):
    """The document is not well-formed, too large, or uses a refused XML feature."""


def parse_untrusted(data: bytes) -> etree._Element:
    """The root element of `data`; raises UnsafeXml (the message names the feature, no content)."""
    if len(data) > MAX_XML_BYTES:
        raise UnsafeXml(f"larger than {MAX_XML_BYTES} bytes")
    # A parser per call: lxml parsers must not be shared between threads.
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
    )
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError:
        raise UnsafeXml("not well-formed XML") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXml("document type declarations are not accepted")
    for node in root.iter(etree.Entity, etree.Comment, etree.ProcessingInstruction):
        raise UnsafeXml(f"{type(node).__name__.lstrip('_')} nodes are not accepted")
    return root


def tag(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def instant(value: str | None) -> float:
    """An xs:dateTime (SAML times are UTC) as a unix time; raises ValueError."""
    if not value:
        raise ValueError("missing time")
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_instant(unix_time: float) -> str:
    return datetime.fromtimestamp(int(unix_time), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
