"""The embedded development issuer and the `phigate init` / `phigate token mint` commands."""

from __future__ import annotations

import json
import stat

import jwt
import pytest
from click.testing import CliRunner

from phigate.cli.token import init_command, token_group
from phigate.home import Home
from phigate.identity import DEV_AUDIENCE, DEV_ISSUER, DevIssuer, IdentityError, TokenVerifier


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dev_issuer_creates_a_private_key_and_public_jwks(tmp_path):
    issuer = DevIssuer(tmp_path / "issuer")
    assert issuer.created
    assert mode(issuer.key_path) == 0o600
    assert mode(tmp_path / "issuer") == 0o700
    published = json.loads(issuer.jwks_path.read_text())
    assert published == issuer.jwks()
    (key,) = published["keys"]
    assert key["kid"] == issuer.kid and key["alg"] == "ES256" and "d" not in key


def test_minted_token_verifies_with_the_trusted_issuer(tmp_path):
    issuer = DevIssuer(tmp_path)
    token = issuer.mint("dr-house", ["clinicians", "approvers"], ttl_seconds=120,
                        extra_claims={"email_verified": True})  # fmt: skip
    identity = TokenVerifier([issuer.trusted_issuer()]).verify(token)
    assert (identity.iss, identity.sub, identity.groups) == (
        DEV_ISSUER, "dr-house", ("clinicians", "approvers"),
    )  # fmt: skip
    assert identity.exp - identity.iat == 120
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == DEV_AUDIENCE and claims["email_verified"] is True
    assert jwt.get_unverified_header(token)["kid"] == issuer.kid


def test_reopening_keeps_the_key(tmp_path):
    first = DevIssuer(tmp_path)
    token = first.mint("alice")
    again = DevIssuer(tmp_path)
    assert not again.created and again.kid == first.kid
    assert TokenVerifier([again.trusted_issuer()]).verify(token).sub == "alice"


def test_another_dev_issuers_tokens_are_refused(tmp_path):
    mine, theirs = DevIssuer(tmp_path / "mine"), DevIssuer(tmp_path / "theirs")
    with pytest.raises(IdentityError) as caught:
        TokenVerifier([mine.trusted_issuer()]).verify(theirs.mint("mallory"))
    assert (caught.value.status, caught.value.code) == (401, "key_unknown")


def test_key_readable_by_others_is_refused(tmp_path):
    issuer = DevIssuer(tmp_path)
    issuer.key_path.chmod(0o644)
    with pytest.raises(PermissionError):
        DevIssuer(tmp_path)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"sub": ""}, "sub"),
        ({"sub": "a", "ttl_seconds": 0}, "ttl"),
        ({"sub": "a", "ttl_seconds": 3601}, "ttl"),
        ({"sub": "a", "extra_claims": {"exp": 1}}, "exp"),
    ],
)
def test_mint_refuses_bad_arguments(tmp_path, arguments, problem):
    with pytest.raises(ValueError, match=problem):
        DevIssuer(tmp_path).mint(**arguments)


def test_in_home_uses_the_home_issuer_dir(tmp_path):
    issuer = DevIssuer.in_home(tmp_path / "home")
    assert issuer.directory == Home.open(tmp_path / "home").issuer_dir


def test_init_command_creates_home_and_issuer(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(init_command, ["--home", str(home)])
    assert result.exit_code == 0, result.output
    key_path = home.resolve() / "issuer" / "dev-issuer-key.pem"
    assert mode(key_path) == 0o600
    assert str(key_path) in result.output and "created" in result.output
    assert DEV_ISSUER in result.output
    again = CliRunner().invoke(init_command, ["--home", str(home)])
    assert "already present" in again.output


def test_token_mint_prints_only_a_verifiable_token(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(
        token_group,
        ["mint", "--sub", "svc-triage", "--group", "clinicians", "--group", "research",
         "--ttl", "90s", "--home", str(home)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # just the token, for $(phigate token mint ...)
    verifier = TokenVerifier([DevIssuer(Home.open(home).issuer_dir).trusted_issuer()])
    identity = verifier.verify(token)
    assert (identity.sub, identity.groups, identity.exp - identity.iat) == (
        "svc-triage", ("clinicians", "research"), 90,
    )  # fmt: skip


def test_token_mint_json_and_home_from_environment(tmp_path):
    home = tmp_path / "env-home"
    result = CliRunner().invoke(
        token_group, ["mint", "--sub", "alice", "--json", "--ttl", "10m"],
        env={"PHIGATE_HOME": str(home)},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert (printed["sub"], printed["groups"]) == ("alice", [])
    assert printed["exp"] - printed["iat"] == 600
    issuer = DevIssuer(Home.open(home).issuer_dir)
    assert TokenVerifier([issuer.trusted_issuer()]).verify(printed["token"]).sub == "alice"


@pytest.mark.parametrize("ttl", ["2h", "0", "ten", "5d"])
def test_token_mint_refuses_bad_ttl(tmp_path, ttl):
    result = CliRunner().invoke(
        token_group, ["mint", "--sub", "a", "--ttl", ttl, "--home", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--ttl" in result.output
