"""Bundle, exports and rotation: what a client holding the bundle trusts at each step."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from mitmproxy.certs import CertStore

from phigate import ca
from phigate.home import Home
from tests.test_ca_support import TLSServer, dns, python_handshake, self_signed_ca

# certifi ships one root with a negative serial number; cryptography warns when it parses it
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")
UNTRUSTED_ROOT_IN_CHAIN = 19  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN


@pytest.fixture
def home(tmp_path) -> Home:
    home = Home.open(tmp_path / "home")
    ca.ensure_ca(home)
    return home


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _trusts(bundle: Path, tmp: Path, leaf_key, chain) -> int | None:
    """None if a client using `bundle` accepts the served chain, else OpenSSL's verify code."""
    with TLSServer(tmp, leaf_key, chain) as server:
        try:
            python_handshake(server.port, bundle, "api.openai.com")
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_code
    return None


def _mitmproxy_chain(ca_dir: Path):
    store = CertStore.from_store(ca_dir, "mitmproxy", 2048)
    entry = store.get_cert("api.openai.com", [dns("api.openai.com")])
    return entry.privatekey, [entry.cert.to_cryptography(), *(c.to_cryptography() for c in entry.chain_certs)]


def test_bundle_is_the_ca_then_certifi(home):
    path = ca.bundle(home)
    certs = _certs(path)
    public = _certs(Path(certifi.where()))
    assert certs[0] == ca.load(home.ca_dir).anchor
    assert certs[1:] == public and len(public) > 100
    assert ca.bundle(home) == path and _certs(path) == certs  # rewritten, not appended to


def test_rotation_overlap_then_retire(home, tmp_path):
    bundle = ca.bundle(home)  # the path every client was configured with before the rotation
    old = ca.load(home.ca_dir)
    old_key, old_chain = _mitmproxy_chain(home.ca_dir)  # what the gateway served until its restart
    assert _trusts(bundle, tmp_path, old_key, old_chain) is None

    new = ca.rotate(home, overlap_days=30)
    assert new.fingerprint != old.fingerprint and new.hosts == old.hosts
    assert _certs(bundle)[:2] == [new.anchor, old.anchor]  # the same file, refreshed in place
    new_key, new_chain = _mitmproxy_chain(home.ca_dir)  # after the restart mitmproxy signs with the new CA
    assert new_chain[0].issuer == new.cert.subject and new_chain[1] == new.cert
    assert _trusts(bundle, tmp_path, new_key, new_chain) is None
    assert _trusts(bundle, tmp_path, old_key, old_chain) is None
    assert old.cert not in _certs(home.ca_dir / "mitmproxy-ca.pem")  # the old key is gone

    with pytest.raises(ca.CAError, match="overlap runs until"):
        ca.retire(home)
    assert ca.retire(home, force=True) == [old.fingerprint]
    assert new.anchor in _certs(bundle) and old.anchor not in _certs(bundle)
    assert _trusts(bundle, tmp_path, new_key, new_chain) is None
    assert _trusts(bundle, tmp_path, old_key, old_chain) == UNTRUSTED_ROOT_IN_CHAIN
    # the retired certificate can still be exported, to uninstall it from trust stores
    for fingerprint in (old.fingerprint, ca.authority.fingerprint(old.anchor)):
        out = ca.export(home, "pem", tmp_path / "old.pem", fingerprint=fingerprint[:12])
        assert x509.load_pem_x509_certificate(out.read_bytes()) == old.anchor


def test_retire_after_the_overlap_needs_no_force(home):
    old = ca.load(home.ca_dir)
    ca.rotate(home, overlap_days=0)
    assert ca.retire(home) == [old.fingerprint]
    assert ca.retire(home) == []  # nothing left: idempotent


def test_rotation_can_change_hosts(home):
    new = ca.rotate(home, overlap_days=1, hosts=["api.openai.com", "gateway.example.org"])
    assert new.hosts == ("api.openai.com", "gateway.example.org")


def test_intermediate_rotation_needs_the_org_ca_and_keeps_one_anchor(tmp_path):
    home = Home.open(tmp_path / "home")
    org_key, org_cert = self_signed_ca("Org Root")
    first = ca.create_intermediate(home.ca_dir, org_key, [org_cert])
    with pytest.raises(ca.CAError, match="organisation CA"):
        ca.rotate(home, overlap_days=7)
    second = ca.rotate(home, overlap_days=7, org_ca_key=org_key, org_ca_certs=[org_cert])
    assert second.kind == "intermediate" and second.fingerprint != first.fingerprint
    assert ca.anchors(home) == [org_cert]


@pytest.mark.parametrize(
    "fmt, password, openssl_args",
    [
        ("pem", None, ["x509", "-inform", "PEM"]),
        ("der", None, ["x509", "-inform", "DER"]),
        ("p12", None, ["pkcs12", "-nokeys", "-passin", "pass:"]),
        ("p12", b"s3cret-for-import", ["pkcs12", "-nokeys", "-passin", "pass:s3cret-for-import"]),
    ],
)
def test_export_formats_parse_with_openssl(home, tmp_path, fmt, password, openssl_args):
    out = ca.export(home, fmt, tmp_path / f"ca.{fmt}", password=password)
    data = out.read_bytes()
    assert b"PRIVATE KEY" not in data
    printed = subprocess.run(
        ["openssl", *openssl_args, "-in", str(out)], capture_output=True, check=True
    ).stdout
    exported = x509.load_pem_x509_certificate(printed[printed.index(b"-----BEGIN"):])
    assert exported == ca.load(home.ca_dir).anchor
    if password:
        wrong = subprocess.run(["openssl", "pkcs12", "-nokeys", "-passin", "pass:wrong", "-in", str(out)],
                               capture_output=True)
        assert wrong.returncode != 0


def test_export_unknown_fingerprint_is_refused(home, tmp_path):
    with pytest.raises(ca.CAError, match="0 CA certificates match"):
        ca.export(home, "pem", tmp_path / "x.pem", fingerprint="ffffffffffff")
