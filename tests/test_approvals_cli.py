"""`phigate approvals` on a real home folder, with tokens from the home's dev issuer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from phigate.approvals import SqliteApprovalStore, masked_summary
from phigate.cli.approvals import approvals_group
from phigate.home import Home
from phigate.identity import DEV_ISSUER, DevIssuer


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.open(tmp_path / "home")


@pytest.fixture
def store(home: Home):
    opened = SqliteApprovalStore(home.root / "approvals.db")
    yield opened
    opened.close()


@pytest.fixture
def issuer(home: Home) -> DevIssuer:
    return DevIssuer(home.issuer_dir)


def hold(store, *, required: int = 1, rule: str = "phi-to-external-tool"):
    return store.create(
        request_id="req-1",
        requester={"iss": DEV_ISSUER, "sub": "alice", "groups": ["clinicians"]},
        rule=rule,
        approver_groups=["privacy-officers"],
        approvals_required=required,
        summary=masked_summary(endpoint="POST /v1/responses", model="gpt-5", tools=["send_fax"],
                               entities={"PERSON": 2}, excerpt="Fax <PERSON_1>"),
        timeout=600,
    )  # fmt: skip


def run(home: Home, *args: str, env: dict | None = None):
    return CliRunner().invoke(approvals_group, [*args, "--home", str(home.root)], env=env)


def test_list_shows_pending_and_all_shows_history(home, store, issuer):
    pending, decided = hold(store, rule="rule-a"), hold(store, rule="rule-b")
    store.decide(decided.id, {"iss": DEV_ISSUER, "sub": "bob", "groups": ["privacy-officers"]},
                 "approve")  # fmt: skip
    result = run(home, "list")
    assert result.exit_code == 0, result.output
    assert pending.id in result.output and "rule-a" in result.output and decided.id not in result.output
    everything = run(home, "list", "--all", "--json")
    assert {a["id"]: a["state"] for a in json.loads(everything.output)} == {
        pending.id: "pending", decided.id: "approved",
    }  # fmt: skip
    store.mark(pending.id, "abandoned")
    assert run(home, "list").output.strip() == "no pending approvals"


def test_show_prints_the_masked_summary(home, store):
    approval = hold(store, required=2)
    result = run(home, "show", approval.id)
    assert result.exit_code == 0, result.output
    assert "entities:    PERSON x2" in result.output and "excerpt:     Fax <PERSON_1>" in result.output
    assert "approvals:   0 of 2 from privacy-officers" in result.output
    assert json.loads(run(home, "show", approval.id, "--json").output)["id"] == approval.id
    missing = run(home, "show", "apr_aaaaaaaaaaaa")
    assert missing.exit_code == 1 and "not_found" in missing.output


def test_approve_with_a_verified_token(home, store, issuer):
    approval = hold(store)
    token = issuer.mint("bob", ["privacy-officers"])
    result = run(home, "approve", approval.id, "--token", token, "--reason", "routine")
    assert result.exit_code == 0, result.output
    assert "state approved" in result.output and token not in result.output
    decision = store.get(approval.id).decisions[0]
    assert (decision["iss"], decision["sub"], decision["reason"]) == (DEV_ISSUER, "bob", "routine")


def test_deny_needs_a_reason_and_takes_the_token_from_the_environment(home, store, issuer):
    approval = hold(store)
    env = {"PHIGATE_TOKEN": issuer.mint("carol", ["privacy-officers"])}
    missing = run(home, "deny", approval.id, env=env)
    assert missing.exit_code == 2 and "--reason" in missing.output
    result = run(home, "deny", approval.id, "--reason", "wrong patient", env=env)
    assert result.exit_code == 0, result.output
    assert store.get(approval.id).state == "denied"


def test_the_store_rules_apply_to_the_cli(home, store, issuer):
    approval = hold(store)
    own = run(home, "approve", approval.id, "--token", issuer.mint("alice", ["privacy-officers"]))
    assert own.exit_code == 1 and "self_approval" in own.output
    outsider = run(home, "approve", approval.id, "--token", issuer.mint("mallory", ["clinicians"]))
    assert outsider.exit_code == 1 and "not_an_approver" in outsider.output
    assert store.get(approval.id).decisions == ()


def test_a_bad_token_is_refused_before_the_store_is_touched(home, store, tmp_path):
    approval = hold(store)
    forged = DevIssuer(tmp_path / "elsewhere").mint("bob", ["privacy-officers"])
    result = run(home, "approve", approval.id, "--token", forged)
    assert result.exit_code == 1 and "token refused" in result.output and forged not in result.output
    assert store.get(approval.id).decisions == ()


def test_issuers_file_replaces_the_dev_issuer(home, store, issuer, tmp_path):
    approval = hold(store, required=2)
    other = DevIssuer(tmp_path / "idp")
    issuers = tmp_path / "issuers.yaml"
    issuers.write_text(
        f"issuers:\n  - issuer: {DEV_ISSUER}\n    audience: phigate\n"
        f"    jwks_file: {other.jwks_path}\n"
    )
    dev_token = issuer.mint("bob", ["privacy-officers"])
    refused = run(home, "approve", approval.id, "--token", dev_token, "--issuers", str(issuers))
    assert refused.exit_code == 1 and "token refused" in refused.output
    token = other.mint("bob", ["privacy-officers"])
    accepted = run(home, "approve", approval.id, "--token", token, "--issuers", str(issuers))
    assert accepted.exit_code == 0, accepted.output
    assert "1 of 2 approvals" in accepted.output


def test_home_comes_from_the_environment(home, store):
    approval = hold(store)
    result = CliRunner().invoke(approvals_group, ["list"], env={"PHIGATE_HOME": str(home.root)})
    assert result.exit_code == 0 and approval.id in result.output
