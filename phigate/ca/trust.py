"""What clients trust: the CA bundle and single-certificate exports.

`SSL_CERT_FILE` and `REQUESTS_CA_BUNDLE` REPLACE a client's default roots, so the bundle holds
the gateway's trust anchor(s) followed by certifi's public roots: the client keeps reaching
every other HTTPS site it reached before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from phigate.ca import authority, history
from phigate.ca.authority import CAError
from phigate.home import Home

BUNDLE_NAME = "phigate-ca-bundle.pem"
Format = Literal["pem", "der", "p12"]


def anchors(home: Home) -> list[x509.Certificate]:
    """The certificates clients must trust: the active CA's anchor, then those of CAs still in
    their rotation overlap (deduplicated: an intermediate's anchor rarely changes)."""
    ca_dir = Path(home.ca_dir)
    found = [authority.load(ca_dir).anchor, *(c[-1] for c in history.overlapping_chains(ca_dir))]
    unique: dict[bytes, x509.Certificate] = {}
    for cert in found:
        unique.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    return list(unique.values())


def bundle(home: Home) -> Path:
    """(Re)write the bundle in the CA folder and return its path; written aside and renamed, so a
    client reading it never sees half a file."""
    ca_dir = Path(home.ca_dir)
    parts = [
        f"# phigate gateway CA: {c.subject.rfc4514_string()}\n"
        f"# SHA-256 {authority.fingerprint(c)}\n".encode()
        + c.public_bytes(serialization.Encoding.PEM)
        for c in anchors(home)
    ]
    parts.append(b"\n" + Path(certifi.where()).read_bytes())
    target = ca_dir / BUNDLE_NAME
    staging = target.with_name(target.name + ".new")
    staging.write_bytes(b"".join(parts))
    os.chmod(staging, 0o644)
    os.replace(staging, target)
    return target


def export(
    home: Home,
    format: Format,
    out: Path,
    password: bytes | None = None,
    fingerprint: str | None = None,
) -> Path:
    """Write one trust anchor: the active one, or that of the CA whose SHA-256 starts with
    `fingerprint` (active, overlapping or retired: ops uninstall retired ones)."""
    cert = _select(home, fingerprint)
    if format == "pem":
        data = cert.public_bytes(serialization.Encoding.PEM)
    elif format == "der":
        data = cert.public_bytes(serialization.Encoding.DER)
    elif format == "p12":
        encryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        data = pkcs12.serialize_java_truststore(
            [pkcs12.PKCS12Certificate(cert, b"phigate-gateway-ca")], encryption
        )
    else:
        raise CAError(f"unknown export format {format!r}")
    out = Path(out)
    out.write_bytes(data)
    return out


def _select(home: Home, prefix: str | None) -> x509.Certificate:
    """The anchor of the chain in which some certificate's SHA-256 starts with `prefix` (so the
    fingerprints `show` prints, of signing CAs and of anchors alike, all work)."""
    if not prefix:
        return anchors(home)[0]
    ca_dir = Path(home.ca_dir)
    active = authority.load(ca_dir)
    chains = [[active.cert, *active.chain], *history.replaced_chains(ca_dir)]
    prefix = prefix.lower()
    matches = {
        authority.fingerprint(chain[-1]): chain[-1]
        for chain in chains
        if any(authority.fingerprint(c).startswith(prefix) for c in chain)
    }
    if len(matches) != 1:
        raise CAError(f"{len(matches)} CA certificates match that fingerprint prefix")
    return next(iter(matches.values()))
