"""Trusted-issuer settings, the issuers YAML file, and the guarded HTTP fetch of keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phigate.identity import IssuerConfigError, TokenVerifier, TrustedIssuer, load_issuers
from phigate.identity.fetch import MAX_RESPONSE_BYTES, FetchError, check_url, fetch_url
from tests.support.oidc import OidcProvider


@pytest.fixture
def idp():
    with OidcProvider(kty="EC") as provider:
        yield provider


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "issuers.yaml"
    path.write_text(text)
    return path


def test_load_issuers_reads_every_field(tmp_path):
    path = write(
        tmp_path,
        """
issuers:
  - issuer: https://login.example.org/realms/clinic
    audience: [phigate, account]
    jwks_uri: https://login.example.org/realms/clinic/certs
    groups_claim: realm_access.roles
    max_lifetime: 900
    leeway: 10
    allowed_subjects: [svc-triage]
    algorithms: [RS256, PS256]
  - issuer: urn:phigate:dev-issuer
    audience: phigate
    jwks_file: keys/jwks.json
""",
    )
    clinic, dev = load_issuers(path)
    assert clinic == TrustedIssuer(
        issuer="https://login.example.org/realms/clinic",
        audience=("phigate", "account"),
        jwks_uri="https://login.example.org/realms/clinic/certs",
        groups_claim="realm_access.roles",
        max_lifetime=900,
        leeway=10,
        allowed_subjects=frozenset({"svc-triage"}),
        algorithms=frozenset({"RS256", "PS256"}),
    )
    assert dev.jwks_file == tmp_path / "keys" / "jwks.json"
    assert (dev.max_lifetime, dev.leeway, dev.groups_claim, dev.allowed_subjects) == (
        3600, 30, "groups", None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("{issuer: https://idp.example}", "issuers[0].audience: required"),
        ("{audience: phigate}", "issuers[0].issuer: required"),
        ("{issuer: https://idp.example, audience: 5}", "issuers[0].audience: must be"),
        ("{issuer: https://idp.example, audience: p, max_lifetime: -1}", "issuers[0].max_lifetime"),
        ("{issuer: https://idp.example, audience: p, leeway: soon}", "issuers[0].leeway"),
        ("{issuer: https://idp.example, audience: p, audiance: q}", "issuers[0].audiance: unknown"),
        ("{issuer: https://idp.example, audience: p, algorithms: [HS256]}", "[0].algorithms"),
        ("{issuer: https://idp.example, audience: p, algorithms: RS256}", "issuers[0].algorithms"),
        ("{issuer: http://idp.example, audience: p}", "issuers[0].issuer: without jwks_uri"),
        ("{issuer: urn:x, audience: p, jwks_uri: http://10.0.0.1/k}", "issuers[0].jwks_uri"),
        ("{issuer: https://idp.example, audience: p, groups_claim: a..b}", "[0].groups_claim"),
        ("just-a-string", "issuers[0]: must be a mapping"),
    ],
)  # fmt: skip
def test_load_issuers_names_file_and_field(tmp_path, entry, field):
    path = write(tmp_path, f"issuers:\n  - {entry}\n")
    with pytest.raises(IssuerConfigError) as caught:
        load_issuers(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert field in str(caught.value)


def test_load_issuers_reports_every_problem(tmp_path):
    path = write(
        tmp_path,
        "issuers:\n  - {issuer: https://a.example}\n  - {issuer: https://b.example, audience: p,"
        " max_lifetime: 0, leeway: -1}\n  - {issuer: https://c.example, audience: p}\n"
        "  - {issuer: https://c.example, audience: q}\n",
    )
    with pytest.raises(IssuerConfigError) as caught:
        load_issuers(path)
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == [
        "issuers[0].audience", "issuers[1].max_lifetime", "issuers[1].leeway",
        "issuer listed twice",
    ]  # fmt: skip


@pytest.mark.parametrize("text", ["", "issuers: []", "issuers: {a: 1}", "[1, 2]", "a: [b"])
def test_load_issuers_refuses_empty_or_unparsable_files(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(IssuerConfigError, match=str(path)):
        load_issuers(path)


def test_load_issuers_missing_file(tmp_path):
    with pytest.raises(IssuerConfigError, match="cannot read"):
        load_issuers(tmp_path / "absent.yaml")


def test_loaded_issuers_verify_tokens(tmp_path, idp):
    path = write(
        tmp_path,
        f"issuers:\n  - issuer: {idp.issuer}\n    audience: phigate\n"
        "    groups_claim: realm_access.roles\n",
    )
    verifier = TokenVerifier(load_issuers(path))
    token = idp.mint(realm_access={"roles": ["nurse"]})
    assert verifier.verify(token).groups == ("nurse",)


def test_verifier_refuses_the_same_issuer_twice(idp):
    with pytest.raises(ValueError, match="twice"):
        TokenVerifier([idp.trusted_issuer(), idp.trusted_issuer(audience="other")])


@pytest.mark.parametrize(
    "url",
    ["https://idp.example/jwks", "http://127.0.0.1:8080/jwks", "http://127.8.9.1/k",
     "http://[::1]:9/k", "http://localhost/k"],
)  # fmt: skip
def test_allowed_key_urls(url):
    check_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://idp.example/jwks", "http://10.0.0.1/jwks", "http://localhost.evil.example/k",
     "file:///etc/passwd", "ftp://idp.example/k", "https:///no-host", "urn:x"],
)  # fmt: skip
def test_refused_key_urls(url):
    with pytest.raises(ValueError):
        check_url(url)
    with pytest.raises(FetchError):
        fetch_url(url)  # refused before any connection is attempted


def test_fetch_reads_a_document(idp):
    assert json.loads(fetch_url(idp.jwks_uri)) == idp.jwks()


def test_fetch_caps_the_response_size(idp):
    idp.routes["/big"] = (200, {}, b"x" * (MAX_RESPONSE_BYTES + 1))
    with pytest.raises(FetchError, match="larger"):
        fetch_url(idp.issuer + "/big")
    idp.routes["/fits"] = (200, {}, b"x" * MAX_RESPONSE_BYTES)
    assert len(fetch_url(idp.issuer + "/fits")) == MAX_RESPONSE_BYTES


def test_fetch_follows_only_redirects_to_allowed_urls(idp):
    idp.routes["/moved"] = (302, {"location": idp.jwks_uri}, b"")
    assert json.loads(fetch_url(idp.issuer + "/moved")) == idp.jwks()
    idp.routes["/away"] = (302, {"location": "http://idp.example/jwks"}, b"")
    with pytest.raises(FetchError, match="redirect"):
        fetch_url(idp.issuer + "/away")


def test_fetch_raises_oserror_on_http_errors(idp):
    idp.down()
    with pytest.raises(OSError):
        fetch_url(idp.jwks_uri)


def test_fetch_ignores_proxy_environment(idp, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("no_proxy", "")
    assert json.loads(fetch_url(idp.jwks_uri)) == idp.jwks()
