"""`phigate ca ...` (the gateway CA) and `phigate doctor` (client-side checks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from phigate import ca
from phigate.ca import authority, confdir, doctor, history, trust
from phigate.home import ENV_VAR, Home

EXPORT_SUFFIX = {"pem": "pem", "der": "cer", "p12": "p12"}

home_option = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), envvar=ENV_VAR,
    help="phigate's state folder (default ~/.phigate).",
)
hosts_option = click.option(
    "--hosts", multiple=True,
    help="Host(s) the CA may sign for, comma-separated or repeated "
    "(default: api.openai.com; on rotate: those of the current CA).",
)
days_option = click.option("--days", type=click.IntRange(min=1), default=authority.DEFAULT_DAYS,
                           show_default=True, help="Validity of the CA in days.")
org_options = [
    click.option("--org-ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="PEM: the organisation CA's certificate, then its issuers."),
    click.option("--org-ca-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  help="PEM: the organisation CA's private key."),
    click.option("--org-ca-key-password", envvar="PHIGATE_ORG_CA_KEY_PASSWORD", show_envvar=True,
                 help="Password of the organisation CA key; prefer the environment variable."),
]


def _org_options(command):
    for option in reversed(org_options):
        command = option(command)
    return command


def _hosts(values: tuple[str, ...]) -> tuple[str, ...] | None:
    hosts = tuple(h for value in values for h in value.split(",") if h.strip())
    return hosts or None


def _load_org_ca(cert_path: Path | None, key_path: Path | None, password: str | None):
    if not cert_path or not key_path:
        raise click.UsageError("--org-ca-cert and --org-ca-key are both required")
    try:
        certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
        key = serialization.load_pem_private_key(
            key_path.read_bytes(), password.encode() if password else None
        )
    except (ValueError, TypeError) as exc:
        raise click.ClickException(
            "cannot read the organisation CA (PEM certificate and key; encrypted keys need "
            "PHIGATE_ORG_CA_KEY_PASSWORD)"
        ) from exc
    return key, certs


class _CAErrors(click.Group):
    """Turn CAError into a clean one-line error (its messages never hold secrets)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ca.CAError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group("ca", cls=_CAErrors)
def ca_group() -> None:
    """The gateway CA that forward-proxy clients trust."""


@ca_group.command("init")
@home_option
@hosts_option
@days_option
@click.option("--intermediate", is_flag=True,
              help="Sign the gateway's CA with your organisation's CA instead of a new root.")
@_org_options
def init_command(home, hosts, days, intermediate, org_ca_cert, org_ca_key, org_ca_key_password):
    """Create the CA (refuses to replace one: use `rotate`)."""
    state = Home.open(home)
    if confdir.key_and_chain_file(state.ca_dir).exists():
        raise click.ClickException("a CA already exists: use `phigate ca rotate` to replace it")
    chosen = _hosts(hosts) or ca.DEFAULT_HOSTS
    if intermediate:
        key, certs = _load_org_ca(org_ca_cert, org_ca_key, org_ca_key_password)
        info = ca.create_intermediate(state.ca_dir, key, certs, chosen, days)
    elif org_ca_cert or org_ca_key:
        raise click.UsageError("--org-ca-cert/--org-ca-key need --intermediate")
    else:
        info = ca.create_root(state.ca_dir, chosen, days)
    click.echo(f"created {info.kind} CA {info.fingerprint} for {', '.join(info.hosts)}")
    click.echo(f"clients trust: {info.anchor.subject.rfc4514_string()} "
               f"({authority.fingerprint(info.anchor)})")
    click.echo(f"bundle: {ca.bundle(state)}")


@ca_group.command("export")
@home_option
@click.option("--format", "fmt", type=click.Choice(list(EXPORT_SUFFIX)), default="pem",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file (default phigate-ca.pem/.cer/.p12 here).")
@click.option("--fingerprint",
              help="Export this CA (SHA-256 prefix; see `show`) instead of the active one.")
@click.option("--p12-password", envvar="PHIGATE_P12_PASSWORD", show_envvar=True,
              help="Protect the .p12 (some importers insist on one); none by default.")
def export_command(home, fmt, out, fingerprint, p12_password):
    """Write the certificate clients must trust (never a key)."""
    out = out or Path(f"phigate-ca.{EXPORT_SUFFIX[fmt]}")
    password = p12_password.encode() if p12_password else None
    click.echo(ca.export(Home.open(home), fmt, out, password=password, fingerprint=fingerprint))


@ca_group.command("bundle")
@home_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also copy it here.")
def bundle_command(home, out):
    """The gateway CA(s) plus certifi's roots, for SSL_CERT_FILE / REQUESTS_CA_BUNDLE."""
    path = ca.bundle(Home.open(home))
    if out:
        shutil.copyfile(path, out)
        path = out
    click.echo(path)


@ca_group.command("rotate")
@home_option
@click.option("--overlap-days", type=click.IntRange(min=0), default=30, show_default=True,
              help="How long the old CA stays in the bundle.")
@hosts_option
@days_option
@_org_options
def rotate_command(home, overlap_days, hosts, days, org_ca_cert, org_ca_key, org_ca_key_password):
    """Replace the CA; the old one stays trusted for the overlap. Restart the gateway after."""
    state = Home.open(home)
    key, certs = (None, ())
    if org_ca_cert or org_ca_key:
        key, certs = _load_org_ca(org_ca_cert, org_ca_key, org_ca_key_password)
    info = ca.rotate(state, overlap_days, _hosts(hosts), days, key, certs)
    click.echo(f"new {info.kind} CA {info.fingerprint}")
    click.echo(f"bundle refreshed: {state.ca_dir / trust.BUNDLE_NAME}")
    click.echo("next: distribute the bundle/CA to clients, then restart the gateway")


@ca_group.command("retire")
@home_option
@click.option("--force", is_flag=True, help="Retire before the overlap ends.")
def retire_command(home, force):
    """Drop replaced CAs whose overlap has ended from the bundle."""
    state = Home.open(home)
    for fp in ca.retire(state, force=force):
        click.echo(f"retired {fp}")
    click.echo(f"bundle refreshed: {state.ca_dir / trust.BUNDLE_NAME}")


@ca_group.command("show")
@home_option
@click.option("--json", "as_json", is_flag=True)
def show_command(home, as_json):
    """The active CA, CAs in their overlap, and where the bundle is."""
    state = Home.open(home)
    report = ca.load(state.ca_dir).to_dict()
    report["overlapping"] = history.overlapping(state.ca_dir)
    report["confdir"] = str(state.ca_dir)
    report["bundle"] = str(state.ca_dir / trust.BUNDLE_NAME)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if key == "overlapping":
            for entry in value:
                click.echo(f"overlapping: {entry['fingerprint']} until {entry['retire_after']}")
        else:
            click.echo(f"{key}: {value}")


@click.command("doctor")
@click.option("--proxy", required=True,
              help="The gateway's forward-proxy URL, e.g. http://gateway:8080.")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verify with this bundle instead of the host's trust store.")
@click.option("--host", default="api.openai.com", show_default=True, help="The intercepted host.")
@click.option("--other-host", default="example.com", show_default=True,
              help="A host the gateway must not intercept.")
@click.option("--timeout", type=float, default=5.0, show_default=True)
def doctor_command(proxy, ca_bundle, host, other_host, timeout):
    """Check this client host can use the gateway: sends TLS handshakes only, never a request."""
    try:
        checks = doctor.diagnose(proxy, ca_bundle, host, other_host, timeout)
    except doctor.ProxyError as exc:
        raise click.UsageError(str(exc)) from exc
    for check in checks:
        click.echo(f"[{check.status:>4}] {check.name}: {check.detail}")
        if check.fix and check.status != "ok":
            click.echo(f"       fix: {check.fix}")
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)
