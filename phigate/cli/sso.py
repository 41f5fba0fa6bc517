"""`phigate sso`: the SAML pieces an administrator exchanges with the hospital's IdP."""

from __future__ import annotations

import datetime
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from phigate.home import write_private
from phigate.sso.saml import NAMEID_UNSPECIFIED
from phigate.sso.saml_metadata import MetadataError, load_idp_metadata, sp_metadata

KEY_FILE, CERT_FILE = "sp-key.pem", "sp-cert.pem"
EXPIRY_WARNING = datetime.timedelta(days=30)


@click.group("sso")
def sso_group() -> None:
    """SAML service-provider keys and metadata, and checks of the IdP's metadata."""


@sso_group.command("keygen")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--name", default="phigate admin", show_default=True, help="Certificate CN.")
@click.option("--days", type=click.IntRange(1, 3650), default=730, show_default=True)
def keygen_command(out: Path, name: str, days: int) -> None:
    """A key and self-signed certificate that sign our AuthnRequests (RSA 3072)."""
    key_path, cert_path = out / KEY_FILE, out / CERT_FILE
    if key_path.exists():
        raise click.ClickException(f"{key_path} exists; move it away to make a new key")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    pem = serialization.PrivateFormat.PKCS8
    write_private(
        key_path, key.private_bytes(serialization.Encoding.PEM, pem, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    click.echo(f"key          {key_path} (private to you)")
    click.echo(f"certificate  {cert_path} (valid {days} days)")


@sso_group.command("metadata")
@click.option("--entity-id", required=True, help="Our SP entity ID (the IdP's Audience for us).")
@click.option("--acs-url", required=True, help="https://<admin host>/saml/acs")
@click.option("--cert", "cert_path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--sign-requests", is_flag=True, help="Say that our AuthnRequests are signed.")
@click.option("--name-id-format", default=NAMEID_UNSPECIFIED, show_default=True)
def metadata_command(
    entity_id: str, acs_url: str, cert_path: Path | None, sign_requests: bool, name_id_format: str
) -> None:
    """Print our SP metadata XML, to hand to the IdP administrator."""
    if sign_requests and cert_path is None:
        raise click.UsageError("--sign-requests needs --cert")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes()) if cert_path else None
    xml = sp_metadata(
        entity_id,
        acs_url,
        name_id_format,
        signing_cert=cert,
        authn_requests_signed=sign_requests,
        want_assertions_signed=True,
    )
    click.echo(xml.decode(), nl=False)


@sso_group.command("idp")
@click.argument("metadata", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--entity-id", help="Pick this IdP from metadata listing several.")
def idp_command(metadata: Path, entity_id: str | None) -> None:
    """Check the IdP's metadata file: entity ID, login URL, signing certificates."""
    try:
        idp = load_idp_metadata(metadata, entity_id)
    except MetadataError as problem:
        raise click.ClickException(str(problem)) from None
    click.echo(f"entity ID    {idp.entity_id}")
    click.echo(f"login URL    {idp.sso_url}")
    now = datetime.datetime.now(datetime.UTC)
    usable = 0
    for cert in idp.certificates:
        fingerprint = cert.fingerprint(hashes.SHA256()).hex(":")
        ends = cert.not_valid_after_utc
        state = (
            "EXPIRED" if ends <= now else "expires soon" if ends - now < EXPIRY_WARNING else "ok"
        )
        usable += state != "EXPIRED" and cert.not_valid_before_utc <= now
        click.echo(f"certificate  sha256 {fingerprint}")
        click.echo(f"             valid until {ends:%Y-%m-%d} ({state})")
    if not usable:
        raise click.ClickException("no IdP signing certificate is valid now: logins will fail")
