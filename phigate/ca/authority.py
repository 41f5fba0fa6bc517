"""The gateway's certificate authority: creation, loading and the checks it must pass.

The CA is the most dangerous secret phigate holds: whoever has its key can impersonate any site
its clients trust it for. So it is built to be worth little if it leaks:
- X.509 NameConstraints permit only the intercepted hosts (DNS) and exclude every IP address,
  so clients reject a certificate it signs for any other name;
- it is never the trust anchor itself: clients trust a root above it (phigate's own, whose key
  is discarded once it has signed, or the organisation's), because some clients ignore name
  constraints in an anchor;
- pathlen 0 and the serverAuth extended key usage: it can sign TLS server leaves and nothing else;
- a short validity (one year by default), replaced with `rotation.rotate`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phigate.ca import confdir
from phigate.home import Home

DEFAULT_HOSTS = ("api.openai.com",)
DEFAULT_DAYS = 365
# mitmproxy backdates its leaves by two days (clients with slow clocks); the CA starts earlier
# still, so that no leaf starts before its CA.
BACKDATE = datetime.timedelta(days=3)
EXPIRY_WARNING = datetime.timedelta(days=30)
ROOT_NAME = "phigate gateway root CA"
SIGNING_NAME = "phigate gateway signing CA"
ALL_IPS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


class CAError(Exception):
    """The CA is missing, invalid, expired or unsafe; the message says what to do."""


@dataclass(frozen=True)
class CAInfo:
    """The CA mitmproxy signs with, and the chain above it up to the clients' trust anchor."""

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuers above `cert`, nearest first

    @property
    def kind(self) -> str:
        """"root" under phigate's own (keyless) root, "intermediate" under an organisation CA."""
        return "root" if self.anchor.subject == _subject(ROOT_NAME) else "intermediate"

    @property
    def anchor(self) -> x509.Certificate:
        """What clients must trust: the root, or the top of the organisation chain we were given."""
        return self.chain[-1] if self.chain else self.cert

    @property
    def hosts(self) -> tuple[str, ...]:
        return permitted_hosts(self.cert)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def to_dict(self) -> dict:
        now = datetime.datetime.now(datetime.UTC)
        return {
            "kind": self.kind,
            "subject": self.cert.subject.rfc4514_string(),
            "fingerprint_sha256": self.fingerprint,
            "anchor_subject": self.anchor.subject.rfc4514_string(),
            "anchor_fingerprint_sha256": fingerprint(self.anchor),
            "permitted_hosts": list(self.hosts),
            "not_before": self.cert.not_valid_before_utc.isoformat(),
            "not_after": self.cert.not_valid_after_utc.isoformat(),
            "expires_soon": self.cert.not_valid_after_utc - now < EXPIRY_WARNING,
        }


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def permitted_hosts(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return ()
    subtrees = constraints.permitted_subtrees or ()
    return tuple(n.value for n in subtrees if isinstance(n, x509.DNSName))


def normalise_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """Lower-case IDNA DNS names; IPs and wildcards are refused (the CA excludes all IPs, and a
    DNS constraint already covers the name's subdomains)."""
    result: list[str] = []
    for raw in hosts:
        host = raw.strip().rstrip(".").lower()
        if not host:
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise CAError("hosts must be DNS names: the CA excludes every IP address")
        if "*" in host or host.startswith("."):
            raise CAError("hosts must be plain DNS names without wildcards")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise CAError("a host is not a valid DNS name") from exc
        if host not in result:
            result.append(host)
    if not result:
        raise CAError("at least one host is required")
    return tuple(result)


def create_root(
    home_ca_dir: Path, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = DEFAULT_DAYS
) -> CAInfo:
    """Create a phigate root (the clients' trust anchor) and, under it, the name-constrained CA
    mitmproxy signs with; write them as mitmproxy's confdir.

    The root's key never leaves this function: with it gone, nobody can issue another CA under
    the root, and the constraints in the signing CA bind every client. Some clients (Java's PKIX
    among them) ignore name constraints in a trust anchor itself, but not in a CA below it.
    """
    hosts = normalise_hosts(hosts)
    not_after = _not_after(days)
    root_key = ec.generate_private_key(ec.SECP256R1())
    name = _subject(ROOT_NAME)
    root = (
        _builder(name, root_key, hosts, not_after, issuer_name=name, path_length=1)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    return _create_signing_ca(Path(home_ca_dir), root_key, (root,), hosts, not_after)


def create_intermediate(
    home_ca_dir: Path,
    org_ca_key: CertificateIssuerPrivateKeyTypes,
    org_ca_certs: Sequence[x509.Certificate],
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = DEFAULT_DAYS,
) -> CAInfo:
    """Create the name-constrained signing CA under an existing organisation CA.

    `org_ca_certs` is the organisation CA's certificate first, then its own issuers up to the
    root (if any). Clients that already trust the organisation's root need no new trust anchor.
    """
    if not org_ca_certs:
        raise CAError("the organisation CA certificate is required")
    org_cert = org_ca_certs[0]
    if org_cert.public_key() != org_ca_key.public_key():
        raise CAError("the organisation CA key does not match its certificate")
    if not _is_ca(org_cert):
        raise CAError("the organisation certificate is not a CA (basicConstraints CA:TRUE)")
    if org_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0:
        raise CAError("the organisation CA has pathlen 0: it cannot sign a sub-CA")
    hosts = normalise_hosts(hosts)
    not_after = _not_after(days)
    if not_after > org_cert.not_valid_after_utc:
        raise CAError("the requested validity ends after the organisation CA expires; lower --days")
    return _create_signing_ca(Path(home_ca_dir), org_ca_key, tuple(org_ca_certs), hosts, not_after)


def _create_signing_ca(
    ca_dir: Path,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    issuer_chain: tuple[x509.Certificate, ...],
    hosts: tuple[str, ...],
    not_after: datetime.datetime,
) -> CAInfo:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = issuer_chain[0]
    cert = (
        _builder(_subject(SIGNING_NAME), key, hosts, not_after, issuer_name=issuer.subject)
        .add_extension(_authority_key_id(issuer), critical=False)
        .sign(issuer_key, _signature_hash(issuer_key))
    )
    confdir.write(ca_dir, key, cert, chain=issuer_chain)
    return CAInfo(cert, issuer_chain)


def load(home_ca_dir: Path) -> CAInfo:
    """Load the confdir's CA and refuse it unless it is safe to sign with (fail closed)."""
    info = read(home_ca_dir)
    check(info)
    return info


def read(home_ca_dir: Path) -> CAInfo:
    """Load the confdir's CA, checking only that the file is private and the key matches."""
    ca_file = confdir.key_and_chain_file(Path(home_ca_dir))
    if not ca_file.exists():
        raise CAError("no gateway CA: run `phigate ca init`")
    if os.stat(ca_file).st_mode & 0o077:
        raise CAError(f"{ca_file.name} is readable by other users: chmod 600 it")
    raw = ca_file.read_bytes()
    try:
        key = serialization.load_pem_private_key(raw, password=None)
        certs = x509.load_pem_x509_certificates(raw)
    except (ValueError, TypeError) as exc:
        raise CAError(f"{ca_file.name} does not hold an unencrypted key and a certificate") from exc
    info = CAInfo(certs[0], tuple(certs[1:]))
    if key.public_key() != info.cert.public_key():
        raise CAError(f"the key in {ca_file.name} does not match its certificate")
    return info


def check(info: CAInfo) -> None:
    """Refuse a CA that is not one, carries no name constraints, or has expired."""
    if not _is_ca(info.cert):
        raise CAError("the gateway certificate is not a CA")
    if not info.hosts:
        raise CAError(
            "the gateway CA has no name constraints (e.g. one mitmproxy created itself): "
            "move it away and run `phigate ca init`"
        )
    if info.cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        raise CAError("the gateway CA has expired: run `phigate ca rotate`")


def ensure_ca(home: Home, hosts: Sequence[str] | None = None) -> CAInfo:
    """The CA the gateway signs with: created on first use, reused and checked afterwards.

    Call it before mitmproxy reads its confdir, or mitmproxy creates an unconstrained CA itself.
    With `hosts`, refuse a CA that does not permit each of them.
    """
    ca_dir = Path(home.ca_dir)
    if not confdir.key_and_chain_file(ca_dir).exists():
        ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return create_root(ca_dir, hosts or DEFAULT_HOSTS)
    info = load(ca_dir)
    if hosts:
        missing = [h for h in normalise_hosts(hosts) if not _permits(info.hosts, h)]
        if missing:
            raise CAError(
                f"the gateway CA does not permit {', '.join(missing)}: "
                "run `phigate ca rotate --hosts`"
            )
    return info


def _permits(permitted: Sequence[str], host: str) -> bool:
    return any(host == p or host.endswith("." + p) for p in permitted)


def _not_after(days: int) -> datetime.datetime:
    if days < 1:
        raise CAError("validity must be at least one day")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now + datetime.timedelta(days=days)


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phigate"),
        ]
    )


def _builder(
    name: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    not_after: datetime.datetime,
    issuer_name: x509.Name,
    path_length: int = 0,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(h) for h in hosts],
        excluded_subtrees=[x509.IPAddress(n) for n in ALL_IPS],
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Byte-equal to the issuer's own SKI: strict verifiers reject a recomputed one that differs.
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm | None:
    # Ed25519/Ed448 sign the message itself; every other key type signs a SHA-256 digest
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
