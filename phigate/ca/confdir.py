"""mitmproxy's confdir layout (mitmproxy 12 `certs.CertStore.from_files`).

mitmproxy reads only `mitmproxy-ca.pem`: the private key, then the certificate it signs leaves
with, then the issuers above it. With more than one certificate in the file, mitmproxy loads the
file as its chain and serves the signing CA alongside every leaf. The `-cert` files are what
clients install (mitmproxy's onboarding page hands them out): the trust anchor at the top of
the chain, never the signing CA, in the formats mitmproxy writes.
If `mitmproxy-ca.pem` is missing, mitmproxy silently creates an unconstrained CA of its own:
`phigate.ca.ensure_ca` must run first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from phigate.home import write_private

BASENAME = "mitmproxy"  # mitmproxy.options.CONF_BASENAME


def key_and_chain_file(ca_dir: Path) -> Path:
    return ca_dir / f"{BASENAME}-ca.pem"


def cert_files(ca_dir: Path) -> dict[str, Path]:
    return {ext: ca_dir / f"{BASENAME}-ca-cert.{ext}" for ext in ("pem", "cer", "p12")}


def write(
    ca_dir: Path,
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
) -> None:
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    anchor = chain[-1] if chain else cert
    anchor_pem = anchor.public_bytes(serialization.Encoding.PEM)
    files = cert_files(ca_dir)
    files["pem"].write_bytes(anchor_pem)
    files["cer"].write_bytes(anchor_pem)  # PEM under a .cer name, as mitmproxy writes it (Android)
    files["p12"].write_bytes(
        pkcs12.serialize_key_and_certificates(
            name=b"phigate", key=None, cert=anchor, cas=None,
            encryption_algorithm=serialization.NoEncryption(),
        )
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    # Written aside and renamed: mitmproxy never sees a half-written key or a key/cert mismatch.
    target = key_and_chain_file(ca_dir)
    staging = target.with_name(target.name + ".new")
    write_private(staging, key_pem + cert_pem + chain_pem)
    os.replace(staging, target)
