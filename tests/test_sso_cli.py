"""`phigate sso`: SP keys and metadata, and the IdP metadata check."""

from __future__ import annotations

import base64
import datetime
import stat

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree

from phigate.cli.sso import sso_group
from phigate.sso.saml_metadata import MD, POST_BINDING
from tests.support.saml_idp import SamlIdp, new_signer_identity

ACS = "https://admin.hospital.test/saml/acs"


def run(*args: str):
    return CliRunner().invoke(sso_group, list(args), catch_exceptions=False)


def test_keygen_then_metadata_publishes_our_certificate(tmp_path):
    out = tmp_path / "sp"
    assert run("keygen", "--out", str(out), "--days", "30").exit_code == 0
    assert stat.S_IMODE((out / "sp-key.pem").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out / "sp-cert.pem").read_bytes())
    assert run("keygen", "--out", str(out)).exit_code != 0  # never overwrites a key

    result = run(
        "metadata",
        "--entity-id",
        "urn:phigate:admin",
        "--acs-url",
        ACS,
        "--cert",
        str(out / "sp-cert.pem"),
        "--sign-requests",
    )
    assert result.exit_code == 0
    root = etree.fromstring(result.output.encode())
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    assert root.get("entityID") == "urn:phigate:admin"
    assert descriptor.get("AuthnRequestsSigned") == "true"
    service = descriptor.find(f"{{{MD}}}AssertionConsumerService")
    assert (service.get("Binding"), service.get("Location")) == (POST_BINDING, ACS)
    assert _fingerprint_of_published(root) == cert.fingerprint(hashes.SHA256()).hex()
    assert run("metadata", "--entity-id", "e", "--acs-url", ACS, "--sign-requests").exit_code != 0


def _fingerprint_of_published(root) -> str:
    der = base64.b64decode(root.findtext(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate"))
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()


def test_idp_check_reports_certificates_and_fails_when_none_is_valid(tmp_path):
    with SamlIdp() as idp:
        path = tmp_path / "idp.xml"
        path.write_bytes(idp.metadata_xml())
        result = run("idp", str(path))
        assert result.exit_code == 0
        assert idp.entity_id in result.output and idp.sso_url in result.output
        assert idp.cert.fingerprint(hashes.SHA256()).hex(":") in result.output
        assert "expires soon" in result.output  # the test certificate lives 30 days

        key, _ = new_signer_identity()
        old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=400)
        expired = (
            x509.CertificateBuilder()
            .subject_name(idp.cert.subject)
            .issuer_name(idp.cert.subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(old)
            .not_valid_after(old + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        idp.cert = expired
        path.write_bytes(idp.metadata_xml())
        result = run("idp", str(path))
        assert result.exit_code != 0 and "EXPIRED" in result.output
        path.write_bytes(b"<not-metadata/>")
        assert run("idp", str(path)).exit_code != 0
