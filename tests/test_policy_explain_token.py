"""`phigate policy explain --token … --detect`: the caller and the PHI as the gateway sees them."""

from __future__ import annotations

import json

from click.testing import CliRunner

from phigate.cli import main
from phigate.identity import DevIssuer


def explain(tmp_path, *args: str):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "gpt-4o-mini", "max_tokens": 6000, "messages": [
        {"role": "user", "content": "Summarise Margaret Whitfield's chart, SSN 123-45-6789."}]}))
    return CliRunner().invoke(main, ["policy", "explain", "--home", str(tmp_path / "home"),
                                     "--request", str(request), "--json", *args])


def test_token_groups_and_detected_phi_decide(tmp_path):
    token = DevIssuer(tmp_path / "home" / "issuer").mint("dr-x", ["clinicians"])
    result = explain(tmp_path, "--token", token, "--detect")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["policy"]["name"] == "clinicians"
    assert out["outcome"] == "refuse"
    assert [r["code"] for r in out["refusals"]] == ["phi_entity_forbidden"]
    assert [a["rule"] for a in out["approvals"]] == ["large-output"]


def test_a_forged_token_is_refused(tmp_path):
    forged = DevIssuer(tmp_path / "elsewhere").mint("dr-x", ["clinicians"])
    DevIssuer(tmp_path / "home" / "issuer")  # the trusted one, with another key
    result = explain(tmp_path, "--token", forged)
    assert result.exit_code != 0
    assert "key_unknown" in result.output or "signature_invalid" in result.output
