"""The cache-only fast paths the addons use on the event loop: they answer only what was fully
verified or analysed before, and never a stale or unknown entry."""

from __future__ import annotations

from phigate.detect import TextField
from phigate.identity import DevIssuer, TokenVerifier

from .test_detect import detector  # noqa: F401 (the session-wide detector fixture)


def test_verifier_cache_answers_only_verified_unexpired_tokens(tmp_path):
    now = [1_800_000_000.0]
    issuer = DevIssuer(tmp_path / "issuer", clock=lambda: now[0])
    verifier = TokenVerifier([issuer.trusted_issuer()], clock=lambda: now[0])
    token = issuer.mint("dr-fast", ["clinicians"], ttl_seconds=60)
    assert verifier.cached(token) is None  # never verified: the caller must verify
    verified = verifier.verify(token)
    assert verifier.cached(token, "proxy-authorization") == verified.__class__(
        **{**verified.__dict__, "source": "proxy-authorization"})
    now[0] += 3600  # expired: no longer answered from the cache
    assert verifier.cached(token) is None
    assert verifier.cached("") is None and verifier.cached("x" * 20_000) is None


def test_detector_knows_which_texts_it_has_analysed(detector):  # noqa: F811
    fields = [TextField("Seen by Dr. Amelia Hartwell on 2026-11-03.", None),
              TextField("a value never analysed before 7f3c", "note")]
    assert not detector.is_cached(fields)
    detector.analyze(fields)
    assert detector.is_cached(fields)
    assert not detector.is_cached([TextField(fields[0].text, "name")])  # the key is part of it
