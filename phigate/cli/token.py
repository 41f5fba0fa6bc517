"""`phigate init` and `phigate token mint`: the home folder and development tokens."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import jwt

from phigate.home import ENV_VAR, Home
from phigate.identity.dev import DEV_AUDIENCE, DEV_ISSUER, MAX_TTL_SECONDS, DevIssuer

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=ENV_VAR,
    help=f"phigate's state folder [env: {ENV_VAR}; default: ~/.phigate]",
)


class Duration(click.ParamType):
    """Seconds, written as `600`, `90s`, `10m` or `1h`."""

    name = "duration"
    _UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):  # click may pass already converted values
            return value
        match = re.fullmatch(r"(\d+)([smh]?)", str(value).strip())
        if match is None:
            self.fail("use a number of seconds or a number with s, m or h (e.g. 10m)", param, ctx)
        return int(match[1]) * self._UNITS[match[2]]


@click.command("init")
@home_option
def init_command(home: Path | None) -> None:
    """Create the home folder and the development token issuer."""
    opened = Home.open(home)
    issuer = DevIssuer(opened.issuer_dir)
    state = "created" if issuer.created else "already present"
    click.echo(f"home          {opened.root}")
    click.echo(f"dev issuer    {DEV_ISSUER} (audience {DEV_AUDIENCE})")
    click.echo(f"  signing key {issuer.key_path} ({state}, private to you)")
    click.echo(f"  public keys {issuer.jwks_path}")
    click.echo("next: phigate token mint --sub NAME --group GROUP")


@click.group("token")
def token_group() -> None:
    """Development tokens from the embedded issuer (not for production identities)."""


@token_group.command("mint")
@click.option("--sub", required=True, help="The caller's subject (user or service name).")
@click.option("--group", "groups", multiple=True, help="A group of the caller; repeatable.")
@click.option(
    "--ttl", type=Duration(), default="10m", show_default=True,
    help=f"Lifetime, at most {MAX_TTL_SECONDS // 60}m.",
)  # fmt: skip
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print the token and its claims as JSON.")
def mint_command(
    sub: str, groups: tuple[str, ...], ttl: int, home: Path | None, as_json: bool
) -> None:
    """Mint a token; prints only the token, so `$(phigate token mint ...)` works."""
    if not 0 < ttl <= MAX_TTL_SECONDS:
        raise click.BadParameter(
            f"must be between 1s and {MAX_TTL_SECONDS // 60}m", param_hint="--ttl"
        )
    if not sub.strip():
        raise click.BadParameter("must not be empty", param_hint="--sub")
    issuer = DevIssuer(Home.open(home).issuer_dir)
    if issuer.created:
        click.echo(f"created the dev issuer key {issuer.key_path}", err=True)
    token = issuer.mint(sub, groups, ttl)
    if not as_json:
        click.echo(token)
        return
    claims = jwt.decode(token, options={"verify_signature": False})
    click.echo(json.dumps({"token": token, **claims}, indent=2))
