"""`phigate audit` through click's CliRunner."""

import csv
import datetime as dt
import io
import json
import sqlite3

import pytest
from click.testing import CliRunner

from phigate.audit import note
from phigate.audit.store import SqliteAuditStore
from phigate.audit.verify import check_proof
from phigate.cli.audit import audit_group
from phigate.home import Home


def record(n, **changes):
    base = {
        "request_id": f"req{n}",
        "started": 1_795_000_000.0 + 3600 * n,
        "endpoint": "POST /v1/chat/completions" if n % 2 else "POST /v1/responses",
        "identity": {"iss": "https://idp.test", "sub": f"user{n % 2}", "groups": [f"team{n % 3}"]},
        "policy": {"name": "default", "version": "abcdefabcdefabcd"},
        "request": {"model": "gpt-4o"},
        "decisions": [{"stage": "guardrails", "decision": "allow", "rule": "", "detail": ""}],
        "masking": [{"entity": "US_SSN" if n == 3 else "PERSON"}],
        "upstream": {"status": 200},
    }
    base.update(changes)
    return base


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = Home.open(tmp_path / "home")
    store = SqliteAuditStore.open(home)
    for n in range(6):
        store.append(record(n), {"request": f"note about patient {n}".encode()})
    store.append(record(6, refusal={"status": 403, "code": "blocked", "stage": "guardrails"}))
    store.checkpoint()
    store.close()
    monkeypatch.setenv("PHIGATE_HOME", str(home.root))
    return home


def run(*args, ok=True):
    result = CliRunner().invoke(audit_group, list(args), catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_help_documents_every_command():
    output = run("--help").output
    for command in ("verify", "prove", "search", "show", "export", "checkpoint", "seal"):
        assert command in output
        assert "--home" in run(command, "--help").output


def test_verify_ok_and_json(home):
    assert run("verify").output.rstrip().endswith("OK")
    report = json.loads(run("verify", "--json").output)
    assert report["ok"] and report["records"] == 7 and report["first_failure"] is None


def test_verify_names_the_tampered_record_and_exits_1(home):
    conn = sqlite3.connect(home.audit_db)
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("UPDATE records SET subject = 'nobody' WHERE seq = 2")
    conn.commit()
    conn.close()
    result = run("verify", ok=False)
    assert "FAIL seq 2 (id req2): column subject" in result.output and "TAMPERED" in result.output
    report = json.loads(run("verify", "--json", ok=False).output)
    assert report["first_failure"] == {"seq": 2, "id": "req2", "reason": "column subject differs from the canonical entry"}


def test_verify_with_external_checkpoints_and_explicit_key(home, tmp_path):
    sink = tmp_path / "sink.txt"
    run("checkpoint", "--export-file", str(sink))
    vkey = (home.keys_dir / "checkpoint.vkey").read_text().strip()
    report = json.loads(run("verify", "--checkpoints", str(sink), "--key", vkey, "--json").output)
    assert report["external_checkpoints"] == 1
    other = note.Signer.generate("example.org/other").verifier.vkey
    assert not json.loads(run("verify", "--key", other, "--json", ok=False).output)["ok"]


def test_search_filters_and_table(home):
    rows = json.loads(run("search", "--json").output)
    assert [r["seq"] for r in rows] == [6, 5, 4, 3, 2, 1, 0]
    pick = lambda *a: [r["seq"] for r in json.loads(run("search", "--json", *a).output)]  # noqa: E731
    assert pick("--subject", "user1") == [5, 3, 1]
    assert pick("--group", "team0") == [6, 3, 0]
    assert pick("--entity", "US_SSN") == [3]
    assert pick("--endpoint", "POST /v1/responses") == [6, 4, 2, 0]
    assert pick("--decision", "refuse") == [6] and pick("--status", "403") == [6]
    start = dt.datetime.fromtimestamp(1_795_000_000, dt.UTC)
    naive = (start + dt.timedelta(hours=2)).replace(tzinfo=None).isoformat()  # naive means UTC
    aware = (start + dt.timedelta(hours=4)).isoformat()
    assert pick("--since", naive) == [6, 5, 4, 3, 2]
    assert pick("--until", aware) == [3, 2, 1, 0]
    assert pick("--since", naive, "--until", aware) == [3, 2]
    assert pick("--since", "1d") == []
    run("search", "--since", "yesterday", ok=False)
    table = run("search", "--subject", "user0").output
    assert table.splitlines()[0].split()[:3] == ["seq", "time", "subject"] and start.isoformat(timespec="seconds") in table


def test_show_decrypts_bodies(home):
    shown = json.loads(run("show", "req4", "--json").output)
    assert shown["seq"] == 4 and shown["decrypted_bodies"] == {"request": "note about patient 4"}
    assert "note about patient 1" in run("show", "1").output
    run("show", "nope", ok=False)


def test_show_without_the_body_key(home):
    for key in home.keys_dir.glob("body-*.key"):
        key.unlink()
    shown = json.loads(run("show", "2", "--json").output)
    assert "not present" in shown["decrypted_bodies"]["unavailable"]
    assert shown["record"]["request_id"] == "req2"


def test_prove_json_checks_out_independently(home):
    proof = json.loads(run("prove", "req3", "--json").output)
    vkey = (home.keys_dir / "checkpoint.vkey").read_text()
    assert check_proof(proof, vkey).size == 7
    assert "record 3 is leaf 3 of 7" in run("prove", "3").output


def test_export_jsonl_and_csv(home, tmp_path):
    lines = run("export").output.splitlines()
    assert [json.loads(line)["record"]["request_id"] for line in lines] == [f"req{n}" for n in range(7)]
    out = tmp_path / "audit.csv"
    run("export", "--format", "csv", "--out", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 7 and rows[3]["entity_types"] == "US_SSN" and rows[6]["status"] == "403"
    assert "note about patient" not in out.read_text()


def test_checkpoint_and_seal(home):
    signed = run("checkpoint").output
    assert signed.split("\n")[1] == "7"
    output = run("seal").output
    assert output.startswith("sealed: ") and "audit-segments" in output
    sealed = output.splitlines()[0].removeprefix("sealed: ")
    assert json.loads(run("verify", "--db", sealed, "--json").output)["ok"]
    assert json.loads(run("search", "--json").output) == []


def test_missing_database_is_a_clear_error(tmp_path):
    result = run("search", "--db", str(tmp_path / "none.db"), ok=False)
    assert "no audit database" in result.output
