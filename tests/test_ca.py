"""The gateway CA: its constraints, and what curl, Python ssl and mitmproxy leaves make of them."""

from __future__ import annotations

import datetime
import os
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from mitmproxy.certs import CertStore

from phigate import ca
from phigate.ca import authority, confdir
from phigate.home import Home
from tests.test_ca_support import (
    EXCLUDED_VIOLATION,
    PERMITTED_VIOLATION,
    TLSServer,
    curl,
    dns,
    ip,
    issue_leaf,
    pem,
    python_handshake,
    read_ca,
    self_signed_ca,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Home:
    home = Home.open(tmp_path_factory.mktemp("home"))
    ca.ensure_ca(home)
    return home


@pytest.fixture(scope="module")
def anchor(home, tmp_path_factory) -> Path:
    """What clients trust: the exported root."""
    return ca.export(home, "pem", tmp_path_factory.mktemp("client") / "phigate-ca.pem")


def test_both_certificates_carry_the_constraints(home):
    key, (signer, root) = read_ca(home.ca_dir)
    for cert, path_length in ((signer, 0), (root, 1)):
        ext = cert.extensions
        basic = ext.get_extension_for_class(x509.BasicConstraints)
        assert basic.critical and basic.value.ca and basic.value.path_length == path_length
        usage = ext.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
        names = ext.get_extension_for_class(x509.NameConstraints)
        assert names.critical
        assert names.value.permitted_subtrees == [x509.DNSName("api.openai.com")]
        assert {str(n.value) for n in names.value.excluded_subtrees} == {"0.0.0.0/0", "::/0"}
        assert "O=phigate" in cert.subject.rfc4514_string()
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert 365 <= days <= 365 + authority.BACKDATE.days
    assert root.subject == root.issuer and signer.issuer == root.subject
    signer.verify_directly_issued_by(root)
    # the only key on disk is the signing CA's: the root's was discarded once it had signed
    raw = (home.ca_dir / "mitmproxy-ca.pem").read_bytes()
    assert raw.count(b"PRIVATE KEY-----") == 2 and key.public_key() == signer.public_key()


def test_openssl_reads_the_constraints(home, tmp_path):
    _, (signer, root) = read_ca(home.ca_dir)
    for cert, path_length in ((signer, 0), (root, 1)):
        (tmp_path / "ca.pem").write_bytes(pem(cert))
        text = subprocess.run(
            ["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "ca.pem")],
            capture_output=True, text=True, check=True,
        ).stdout
        constraints = text.split("X509v3 Name Constraints: critical", 1)[1]
        permitted, excluded = constraints.split("Excluded:", 1)
        assert "DNS:api.openai.com" in permitted
        assert "IP:0.0.0.0/0.0.0.0" in excluded and "IP:0:0:0:0:0:0:0:0/0:0:0:0:0:0:0:0" in excluded
        assert f"CA:TRUE, pathlen:{path_length}" in text
        assert "Certificate Sign, CRL Sign" in text


def test_confdir_has_mitmproxys_files_and_a_private_key(home):
    d = home.ca_dir
    assert oct(os.stat(d / "mitmproxy-ca.pem").st_mode & 0o777) == "0o600"
    raw = (d / "mitmproxy-ca.pem").read_bytes()
    assert raw.startswith(b"-----BEGIN PRIVATE KEY-----")  # key, signing CA, root: mitmproxy's order
    cert_pem = (d / "mitmproxy-ca-cert.pem").read_bytes()
    assert (d / "mitmproxy-ca-cert.cer").read_bytes() == cert_pem and cert_pem in raw
    assert x509.load_pem_x509_certificate(cert_pem) == ca.load(d).anchor  # what clients install
    for name in ("mitmproxy-ca-cert.pem", "mitmproxy-ca-cert.cer", "mitmproxy-ca-cert.p12"):
        assert b"PRIVATE KEY" not in (d / name).read_bytes()
    out = subprocess.run(
        ["openssl", "pkcs12", "-in", str(d / "mitmproxy-ca-cert.p12"), "-passin", "pass:", "-nokeys"],
        capture_output=True, check=True,
    ).stdout
    assert x509.load_pem_x509_certificate(out) == x509.load_pem_x509_certificate(cert_pem)


def test_ensure_ca_reuses_and_checks(home, tmp_path):
    first = ca.ensure_ca(home)
    assert ca.ensure_ca(home).fingerprint == first.fingerprint
    with pytest.raises(ca.CAError, match="does not permit example.com"):
        ca.ensure_ca(home, hosts=["example.com"])
    other = Home.open(tmp_path)
    ca.ensure_ca(other)
    os.chmod(other.ca_dir / "mitmproxy-ca.pem", 0o644)
    with pytest.raises(ca.CAError, match="readable by other users"):
        ca.ensure_ca(other)


def test_unconstrained_ca_is_refused(tmp_path):
    """A CA mitmproxy made on its own (no name constraints) must never be used."""
    CertStore.create_store(tmp_path / "ca", "mitmproxy", 2048)
    with pytest.raises(ca.CAError, match="no name constraints"):
        ca.ensure_ca(Home.open(tmp_path))


@pytest.mark.parametrize("bad", [["10.0.0.1"], ["*.openai.com"], [""]])
def test_hosts_must_be_dns_names(tmp_path, bad):
    with pytest.raises(ca.CAError):
        ca.create_root(tmp_path, bad)


def test_leaf_in_scope_is_accepted_by_python_and_curl(home, anchor, tmp_path):
    key, (ca_cert, _) = read_ca(home.ca_dir)
    leaf_key, leaf = issue_leaf(key, ca_cert, [dns("api.openai.com")])
    cafile = anchor
    with TLSServer(tmp_path, leaf_key, [leaf, ca_cert]) as server:
        python_handshake(server.port, cafile, "api.openai.com")
        result = curl(server.port, cafile, "api.openai.com")
    assert result.returncode == 0 and result.stdout == "ok", result.stderr


@pytest.mark.parametrize(
    "names, host, code",
    [
        ([dns("example.com")], "example.com", PERMITTED_VIOLATION),
        ([dns("api.openai.com.evil.example")], "api.openai.com.evil.example", PERMITTED_VIOLATION),
        ([ip("127.0.0.1")], "127.0.0.1", EXCLUDED_VIOLATION),
    ],
)
def test_leaf_out_of_scope_is_rejected_by_python_and_curl(home, anchor, tmp_path, names, host, code):
    key, (ca_cert, _) = read_ca(home.ca_dir)
    leaf_key, leaf = issue_leaf(key, ca_cert, names)
    cafile = anchor
    with TLSServer(tmp_path, leaf_key, [leaf, ca_cert]) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            python_handshake(server.port, cafile, host)
        result = curl(server.port, cafile, host) if code == PERMITTED_VIOLATION else None
    assert caught.value.verify_code == code
    if result is not None:
        assert result.returncode == 60 and "permitted subtree violation" in result.stderr


def test_same_leaf_from_an_unconstrained_ca_verifies(tmp_path):
    """Control: the rejection above comes from the name constraint, not from the leaf."""
    key, cert = self_signed_ca("unconstrained test CA")
    leaf_key, leaf = issue_leaf(key, cert, [dns("example.com")])
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(pem(cert))
    with TLSServer(tmp_path, leaf_key, [leaf]) as server:
        python_handshake(server.port, cafile, "example.com")


def _mitmproxy_leaf(ca_dir, host: str):
    store = CertStore.from_store(ca_dir, "mitmproxy", 2048)
    entry = store.get_cert(host, [dns(host)])
    chain = [entry.cert.to_cryptography()] + [
        c.to_cryptography() for c in entry.chain_certs if c.to_cryptography() != entry.cert.to_cryptography()
    ]
    return entry.privatekey, chain


def test_mitmproxy_leaves_respect_the_constraints(home, anchor, tmp_path):
    cafile = anchor
    key, chain = _mitmproxy_leaf(home.ca_dir, "api.openai.com")
    with TLSServer(tmp_path, key, chain) as server:
        python_handshake(server.port, cafile, "api.openai.com")
        assert curl(server.port, cafile, "api.openai.com").returncode == 0
    key, chain = _mitmproxy_leaf(home.ca_dir, "example.com")
    with TLSServer(tmp_path, key, chain) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            python_handshake(server.port, cafile, "example.com")
    assert caught.value.verify_code == PERMITTED_VIOLATION


def test_intermediate_under_an_org_ca(tmp_path):
    org_key, org_cert = self_signed_ca("Example Hospital Root CA")
    ca_dir = tmp_path / "ca"
    info = ca.create_intermediate(ca_dir, org_key, [org_cert], ["api.openai.com"], days=90)
    assert info.kind == "intermediate" and info.anchor == org_cert
    raw = (ca_dir / "mitmproxy-ca.pem").read_bytes()
    assert x509.load_pem_x509_certificates(raw) == [info.cert, org_cert]  # mitmproxy's chain order
    assert info.cert.issuer == org_cert.subject
    cafile = tmp_path / "org-root.pem"
    cafile.write_bytes(pem(org_cert))  # clients trust only the organisation's root
    key, chain = _mitmproxy_leaf(ca_dir, "api.openai.com")
    assert chain[1] == info.cert
    with TLSServer(tmp_path, key, chain) as server:
        python_handshake(server.port, cafile, "api.openai.com")
        assert curl(server.port, cafile, "api.openai.com").returncode == 0
    key, chain = _mitmproxy_leaf(ca_dir, "example.com")
    with TLSServer(tmp_path, key, chain) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            python_handshake(server.port, cafile, "example.com")
    assert caught.value.verify_code == PERMITTED_VIOLATION


def test_intermediate_refuses_a_mismatched_or_short_lived_org_ca(tmp_path):
    org_key, org_cert = self_signed_ca("Org Root")
    other_key, _ = self_signed_ca("Other")
    with pytest.raises(ca.CAError, match="does not match"):
        ca.create_intermediate(tmp_path / "a", other_key, [org_cert])
    with pytest.raises(ca.CAError, match="after the organisation CA expires"):
        ca.create_intermediate(tmp_path / "b", org_key, [org_cert], days=20 * 365)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_expired_ca_is_refused_but_can_be_rotated(tmp_path):
    home = Home.open(tmp_path)
    ca.ensure_ca(home)
    key, (cert, root) = read_ca(home.ca_dir)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
        .public_key(cert.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400)).not_valid_after(now - datetime.timedelta(days=1))
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    confdir.write(home.ca_dir, key, builder.sign(key, hashes.SHA256()), chain=(root,))
    with pytest.raises(ca.CAError, match="expired"):
        ca.ensure_ca(home)
    renewed = ca.rotate(home, overlap_days=0)
    assert ca.ensure_ca(home).fingerprint == renewed.fingerprint


def test_org_ca_that_cannot_sign_a_sub_ca_is_refused(tmp_path):
    leaf_only_key, leaf_only = _ca_with_pathlen_zero()
    with pytest.raises(ca.CAError, match="pathlen 0"):
        ca.create_intermediate(tmp_path, leaf_only_key, [leaf_only])


def _ca_with_pathlen_zero():
    key, cert = self_signed_ca("Issuing CA (pathlen 0)")
    builder = (
        x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
        .public_key(cert.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    return key, builder.sign(key, hashes.SHA256())
