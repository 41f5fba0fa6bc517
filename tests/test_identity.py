"""TokenVerifier against a real OIDC provider on 127.0.0.1: every way a token must be refused."""

from __future__ import annotations

import json
import threading
import traceback

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from phigate.identity import MAX_TOKEN_BYTES, IdentityError, TokenVerifier
from tests.support.oidc import OidcProvider, SigningKey, new_key

START = 1_795_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def idp(clock: Clock):
    with OidcProvider(clock=clock) as provider:
        yield provider


def verifier_for(*providers: OidcProvider, clock: Clock, **options) -> TokenVerifier:
    return TokenVerifier([p.trusted_issuer() for p in providers], clock=clock, **options)


@pytest.fixture
def verifier(idp: OidcProvider, clock: Clock) -> TokenVerifier:
    return verifier_for(idp, clock=clock)


def refusal(verifier: TokenVerifier, token: str) -> IdentityError:
    with pytest.raises(IdentityError) as caught:
        verifier.verify(token)
    return caught.value


def test_valid_token_gives_identity(idp, verifier, clock):
    token = idp.mint(sub="svc-triage", groups=["clinicians", "oncology"], jti="j-1")
    identity = verifier.verify(token, source="proxy-authorization")
    assert (identity.iss, identity.sub, identity.groups) == (
        idp.issuer, "svc-triage", ("clinicians", "oncology"),
    )  # fmt: skip
    assert (identity.jti, identity.iat, identity.exp) == ("j-1", int(START), int(START) + 300)
    record = identity.to_record()
    assert json.loads(json.dumps(record)) == record
    assert record["source"] == "proxy-authorization"
    assert record["groups"] == ["clinicians", "oncology"]
    assert token not in json.dumps(record)


def test_missing_token(verifier):
    error = refusal(verifier, "")
    assert (error.status, error.code) == (401, "token_missing")


@pytest.mark.parametrize(
    "token",
    [
        "abc.def.ghi",  # JWT-shaped, but the segments are not JSON
        "only-one-segment",
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
        "WzFd.e30.c2ln",  # header is a JSON list, not an object
    ],
)
def test_malformed_token(verifier, token):
    error = refusal(verifier, token)
    assert (error.status, error.code) == (401, "token_malformed")


@pytest.mark.parametrize(
    "headers", [{"kid": ["a"]}, {"kid": 3}, {"crit": ["exp"]}, {"b64": False, "crit": ["b64"]}]
)
def test_malformed_headers(idp, verifier, headers):
    error = refusal(verifier, idp.mint(headers=headers))
    assert (error.status, error.code) == (401, "token_malformed")


@pytest.mark.parametrize("signed", [False, True])
def test_alg_none_refused(idp, verifier, signed):
    token = idp.mint(alg="none")
    if signed:  # keep a real signature around it: still "none"
        token = token + idp.mint().rsplit(".", 1)[1]
    error = refusal(verifier, token)
    assert (error.status, error.code) == (401, "alg_not_allowed")


@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_hmac_signed_with_the_public_key_refused(idp, verifier, alg):
    token = idp.mint(alg=alg, key=idp.signing_key.public_pem)
    error = refusal(verifier, token)
    assert (error.status, error.code) == (401, "alg_not_allowed")


def test_token_alg_must_fit_the_key_type(clock):
    with OidcProvider(kty="EC", clock=clock) as ec_idp:
        verifier = verifier_for(ec_idp, clock=clock)
        assert verifier.verify(ec_idp.mint()).sub == "alice"
        rsa_key = new_key("RSA").private
        error = refusal(verifier, ec_idp.mint(alg="RS256", key=rsa_key))
        assert (error.status, error.code) == (401, "alg_not_allowed")


def test_token_alg_must_match_the_keys_declared_alg(idp, clock):
    idp.published = []
    declared = idp.signing_key.public_jwk | {"alg": "RS256"}
    idp.routes["/jwks"] = (200, {}, json.dumps({"keys": [declared]}).encode())
    verifier = verifier_for(idp, clock=clock)
    assert verifier.verify(idp.mint()).sub == "alice"
    error = refusal(verifier, idp.mint(alg="PS256"))
    assert (error.status, error.code) == (401, "alg_not_allowed")


@pytest.mark.parametrize("alg", [["RS256"], None, "RSA-OAEP", "ES256K"])
def test_odd_alg_headers_are_refused(idp, verifier, alg):
    token = idp.mint(headers={"alg": alg})
    assert refusal(verifier, token).code == "alg_not_allowed"


def test_unusable_keys_in_the_jwks_are_skipped(idp, verifier):
    junk = [
        {"kty": "oct", "k": "c2VjcmV0", "kid": idp.signing_key.kid},  # symmetric: never
        {"kty": "EC", "crv": ["P-256"], "x": "AA", "y": "AA"},
        {"kty": "RSA", "alg": ["RS256"], "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
        "not-a-key",
    ]
    jwks = {"keys": [*junk, idp.signing_key.public_jwk]}
    idp.routes["/jwks"] = (200, {}, json.dumps(jwks).encode())
    assert verifier.verify(idp.mint()).sub == "alice"


def test_issuer_algorithm_restriction(idp, clock):
    verifier = TokenVerifier([idp.trusted_issuer(algorithms=["PS256"])], clock=clock)
    assert verifier.verify(idp.mint(alg="PS256")).sub == "alice"
    error = refusal(verifier, idp.mint())  # RS256
    assert (error.status, error.code) == (401, "alg_not_allowed")


@pytest.mark.parametrize("iss", ["https://evil.example/realms/x", None, 42])
def test_wrong_issuer(idp, verifier, iss):
    error = refusal(verifier, idp.mint(iss=iss))
    assert (error.status, error.code) == (401, "issuer_unknown")


@pytest.mark.parametrize("aud", ["someone-else", ["a", "b"], None, 7])
def test_wrong_audience(idp, verifier, aud):
    error = refusal(verifier, idp.mint(aud=aud))
    assert (error.status, error.code) == (401, "audience_invalid")


def test_audience_list_and_configured_alternatives(idp, clock):
    verifier = TokenVerifier([idp.trusted_issuer(audience=["phigate", "gw2"])], clock=clock)
    assert verifier.verify(idp.mint(aud=["account", "gw2"])).sub == "alice"


def test_expired(idp, verifier):
    expired = idp.mint(iat=int(START) - 400, nbf=None, exp=int(START) - 31)
    error = refusal(verifier, expired)
    assert (error.status, error.code) == (401, "token_expired")
    within_leeway = idp.mint(iat=int(START) - 400, nbf=None, exp=int(START) - 29)
    assert verifier.verify(within_leeway).sub == "alice"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid(idp, verifier, claim):
    error = refusal(verifier, idp.mint(**{claim: int(START) + 120}))
    assert (error.status, error.code) == (401, "token_not_yet_valid")


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": int(START), "exp": int(START) + 3600 + 31},  # exp - iat
        {"iat": None, "nbf": int(START) - 10, "exp": int(START) + 3600 + 25},  # exp - nbf
        {"iat": None, "nbf": None, "exp": int(START) + 86_400},  # judged against now
    ],
)
def test_lifetime_over_the_limit(idp, verifier, claims):
    error = refusal(verifier, idp.mint(**claims))
    assert (error.status, error.code) == (401, "lifetime_too_long")


def test_lifetime_limit_is_configurable(idp, clock):
    verifier = TokenVerifier([idp.trusted_issuer(max_lifetime=60, leeway=0)], clock=clock)
    assert verifier.verify(idp.mint(exp=int(START) + 60)).sub == "alice"
    error = refusal(verifier, idp.mint(exp=int(START) + 61))
    assert error.code == "lifetime_too_long"


@pytest.mark.parametrize(
    "claims",
    [{"sub": None}, {"sub": ""}, {"sub": 5}, {"exp": None}, {"exp": "soon"}, {"exp": True},
     {"jti": 9}, {"iat": "x"}],
)  # fmt: skip
def test_missing_or_ill_typed_claims(idp, verifier, claims):
    error = refusal(verifier, idp.mint(**claims))
    assert (error.status, error.code) == (401, "claim_invalid")


def test_signature_from_another_key_with_a_known_kid(idp, verifier):
    forged = idp.mint(key=new_key("RSA").private)  # header names the provider's kid
    error = refusal(verifier, forged)
    assert (error.status, error.code) == (401, "signature_invalid")


def test_tampered_payload(idp, verifier):
    header, _, signature = idp.mint(sub="alice").split(".")
    other_payload = idp.mint(sub="mallory").split(".")[1]
    error = refusal(verifier, f"{header}.{other_payload}.{signature}")
    assert (error.status, error.code) == (401, "signature_invalid")


def test_weak_rsa_keys_are_not_used(idp, clock):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    idp.signing_key = SigningKey("weak", weak, "RS256")
    idp.published = [idp.signing_key]
    verifier = verifier_for(idp, clock=clock)
    error = refusal(verifier, idp.mint())
    assert (error.status, error.code) == (401, "key_unknown")


def test_unknown_kid_after_one_refresh(idp, verifier, clock):
    assert verifier.verify(idp.mint()).sub == "alice"
    assert idp.jwks_fetches == 1
    clock.now += 30  # past the refresh rate limit
    error = refusal(verifier, idp.mint(headers={"kid": "no-such-key"}))
    assert (error.status, error.code) == (401, "key_unknown")
    assert idp.jwks_fetches == 2  # refreshed once, in case the key had just been rotated in


def test_refresh_on_unknown_kid_is_rate_limited(idp, clock):
    verifier = verifier_for(idp, clock=clock, refresh_interval=30)
    verifier.verify(idp.mint())  # t=0: first fetch
    for n in range(8):  # t=0, 5, ..., 35: only t=30 may refresh
        refusal(verifier, idp.mint(headers={"kid": f"made-up-{n}"}))
        clock.now += 5
    assert idp.jwks_fetches == 2
    clock.now += 30  # t=70
    refusal(verifier, idp.mint(headers={"kid": "made-up-later"}))
    assert idp.jwks_fetches == 3


def test_token_without_kid_needs_a_single_published_key(idp, verifier, clock):
    assert verifier.verify(idp.mint(headers={"kid": None})).sub == "alice"
    idp.rotate(keep_old=True)
    clock.now += 301  # keys are past max age: the next verify reloads them
    error = refusal(verifier, idp.mint(headers={"kid": None}))
    assert error.code == "key_unknown"
    assert idp.jwks_fetches == 2


def test_rotation_picks_up_new_key_and_keeps_old_one_while_published(idp, verifier, clock):
    old_token = idp.mint()
    assert verifier.verify(old_token).sub == "alice"
    idp.rotate(keep_old=True)
    clock.now += 31
    new_token = idp.mint(sub="bob")
    assert verifier.verify(new_token).sub == "bob"
    assert idp.jwks_fetches == 2
    assert verifier.verify(old_token).sub == "alice"
    previous = idp.published[1]
    signed_by_previous = idp.mint(sub="carol", key=previous.private, headers={"kid": previous.kid})
    assert verifier.verify(signed_by_previous).sub == "carol"


def test_removed_key_stops_working_after_refresh_even_for_cached_tokens(idp, verifier, clock):
    old_token = idp.mint()
    assert verifier.verify(old_token).sub == "alice"  # now in the verified-token cache
    idp.rotate(keep_old=False)
    clock.now += 31
    assert verifier.verify(idp.mint(sub="bob")).sub == "bob"  # unknown kid: refresh
    error = refusal(verifier, old_token)
    assert (error.status, error.code) == (401, "key_unknown")


def test_keys_are_refreshed_when_older_than_max_age(idp, clock):
    verifier = verifier_for(idp, clock=clock, max_key_age=300)
    verifier.verify(idp.mint())
    clock.now += 299
    verifier.verify(idp.mint(iat=int(clock.now), exp=int(clock.now) + 300))
    assert idp.jwks_fetches == 1
    clock.now += 2
    verifier.verify(idp.mint(iat=int(clock.now), exp=int(clock.now) + 300))
    assert idp.jwks_fetches == 2


def test_cached_keys_keep_working_while_jwks_is_down(idp, clock):
    verifier = verifier_for(idp, clock=clock, max_key_age=60)
    verifier.verify(idp.mint())
    idp.down()
    clock.now += 120  # keys are stale: a refresh is attempted, fails, old keys stay
    fresh = idp.mint(iat=int(clock.now), exp=int(clock.now) + 300)
    assert verifier.verify(fresh).sub == "alice"
    assert idp.jwks_fetches == 2


def test_no_keys_and_jwks_down_is_503(idp, verifier, clock):
    idp.down()
    error = refusal(verifier, idp.mint())
    assert (error.status, error.code, error.retry) == (503, "jwks_unavailable", True)
    idp.up()
    clock.now += 31
    assert verifier.verify(idp.mint(iat=int(clock.now), exp=int(clock.now) + 300)).sub == "alice"


def test_unknown_kid_while_jwks_down_is_503(idp, verifier, clock):
    verifier.verify(idp.mint())
    idp.down()
    clock.now += 31
    error = refusal(verifier, idp.mint(headers={"kid": "rotated-in"}, iat=int(clock.now)))
    assert (error.status, error.code, error.retry) == (503, "jwks_unavailable", True)


def test_unreachable_provider_is_503(clock):
    idp = OidcProvider(clock=clock).start()
    verifier = verifier_for(idp, clock=clock)
    token = idp.mint()
    idp.stop()  # connection refused from now on
    error = refusal(verifier, token)
    assert (error.status, error.code) == (503, "jwks_unavailable")


def test_huge_token(verifier):
    error = refusal(verifier, "a" * (MAX_TOKEN_BYTES + 1))
    assert (error.status, error.code) == (401, "token_too_large")


def test_huge_token_made_of_claims(idp, verifier):
    error = refusal(verifier, idp.mint(padding="x" * MAX_TOKEN_BYTES))
    assert error.code == "token_too_large"


@pytest.mark.parametrize(
    ("groups_claim", "claims", "expected"),
    [
        ("realm_access.roles", {"realm_access": {"roles": ["nurse", "reviewer"]}},
         ("nurse", "reviewer")),
        ("resource_access.phigate.roles",
         {"resource_access": {"phigate": {"roles": ["approver"]}}}, ("approver",)),
        ("scp", {"scp": "clinicians  research"}, ("clinicians", "research")),
        ("groups", {"groups": "a,b, c"}, ("a", "b", "c")),
        ("groups", {"groups": None}, ()),
        ("realm_access.roles", {"realm_access": "not-a-mapping"}, ()),
    ],
)  # fmt: skip
def test_groups_claim_paths_and_shapes(idp, clock, groups_claim, claims, expected):
    verifier = TokenVerifier([idp.trusted_issuer(groups_claim=groups_claim)], clock=clock)
    assert verifier.verify(idp.mint(**claims)).groups == expected


@pytest.mark.parametrize("groups", [7, ["ok", 3], {"a": 1}])
def test_groups_claim_of_wrong_type_is_refused(idp, verifier, groups):
    error = refusal(verifier, idp.mint(groups=groups))
    assert (error.status, error.code) == (401, "claim_invalid")


def test_subject_allow_list(idp, clock):
    verifier = TokenVerifier([idp.trusted_issuer(allowed_subjects={"svc-triage"})], clock=clock)
    assert verifier.verify(idp.mint(sub="svc-triage")).sub == "svc-triage"
    error = refusal(verifier, idp.mint(sub="mallory"))
    assert (error.status, error.code, error.retry) == (403, "subject_not_allowed", False)


def test_several_issuers_select_by_iss_then_verify_strictly(clock):
    with OidcProvider(clock=clock) as a, OidcProvider(kty="OKP", clock=clock) as b:
        verifier = verifier_for(a, b, clock=clock)
        assert verifier.verify(a.mint(sub="from-a")).iss == a.issuer
        assert verifier.verify(b.mint(sub="from-b")).iss == b.issuer
        # Signed by A but claiming B: B's keys are used, so it cannot verify.
        claims_b_with_a_kid = a.mint(iss=b.issuer)
        assert refusal(verifier, claims_b_with_a_kid).code == "key_unknown"
        claims_b_with_b_kid = a.mint(iss=b.issuer, alg="EdDSA", key=new_key("OKP").private,
                                     headers={"kid": b.signing_key.kid})  # fmt: skip
        assert refusal(verifier, claims_b_with_b_kid).code == "signature_invalid"
        assert a.jwks_fetches == 1


def test_keys_found_through_discovery_once(idp, clock):
    verifier = verifier_for(idp, clock=clock)
    verifier.verify(idp.mint())
    clock.now += 31
    refusal(verifier, idp.mint(headers={"kid": "other"}))
    assert (idp.discovery_fetches, idp.jwks_fetches) == (1, 2)


def test_discovery_naming_another_issuer_is_not_trusted(idp, verifier):
    idp.discovery_issuer = "https://impostor.example"
    error = refusal(verifier, idp.mint())
    assert (error.status, error.code) == (503, "jwks_unavailable")
    assert idp.jwks_fetches == 0


def test_explicit_jwks_uri_skips_discovery(idp, clock):
    verifier = TokenVerifier([idp.trusted_issuer(jwks_uri=idp.jwks_uri)], clock=clock)
    verifier.verify(idp.mint())
    assert (idp.discovery_fetches, idp.jwks_fetches) == (0, 1)


@pytest.mark.parametrize("body", [b"not json", b'{"keys": "nope"}', b"[]"])
def test_unusable_jwks_document_counts_as_unavailable(idp, verifier, body):
    idp.routes["/jwks"] = (200, {}, body)
    assert refusal(verifier, idp.mint()).code == "jwks_unavailable"


def test_verified_token_cache_honours_exp_and_source(idp, verifier, clock):
    token = idp.mint(exp=int(START) + 100)
    assert verifier.verify(token).source == "authorization"
    assert verifier.verify(token, source="proxy-authorization").source == "proxy-authorization"
    clock.now += 100 + 30  # past exp + leeway
    assert refusal(verifier, token).code == "token_expired"
    assert idp.jwks_fetches == 1


def test_verified_token_cache_is_bounded(idp, clock):
    verifier = verifier_for(idp, clock=clock, cache_size=2)
    tokens = [idp.mint(jti=str(n)) for n in range(3)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified._entries) == 2


def test_concurrent_cold_start_fetches_keys_once(idp, verifier):
    tokens = [idp.mint(jti=str(n)) for n in range(16)]
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda t=t: results.append(verifier.verify(t).sub))
        for t in tokens
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["alice"] * 16
    assert idp.jwks_fetches == 1


def test_errors_never_carry_token_or_claim_values(idp, verifier, clock):
    secret = "SECRET-7f3a"
    bad_tokens = [
        idp.mint(sub=secret, aud=secret),
        idp.mint(sub=secret, iss=f"https://{secret}.example"),
        idp.mint(sub=secret, exp=int(START) - 999, iat=int(START) - 1000),
        idp.mint(sub=secret, headers={"kid": secret}),
        idp.mint(sub=secret, alg="HS256", key=idp.signing_key.public_pem),
        idp.mint(sub=secret, groups=[secret, 1]),
        idp.mint(sub=secret, key=new_key("RSA").private),
        "eyJhbGciOiJSUzI1NiJ9." + secret + ".x",
    ]
    for token in bad_tokens:
        error = refusal(verifier, token)
        shown = [str(error), repr(error), error.message, *traceback.format_exception(error)]
        text = " ".join(shown)
        assert secret not in text and token not in text
