"""verify(): every kind of tampering is detected and the first failing record is named."""

import json
import sqlite3

import pytest

from phigate.audit import merkle, note
from phigate.audit.store import SqliteAuditStore, derive_columns
from phigate.audit.verify import ProofError, check_proof, prove, verify
from phigate.home import Home

RECORDS = 12
TAMPERED = 5


def record(n):
    return {
        "request_id": f"req{n:04d}",
        "started": 1_795_000_000.25 + n,
        "endpoint": "POST /v1/responses",
        "identity": {"iss": "https://idp.test", "sub": f"user{n}", "groups": ["clinicians"]},
        "policy": {"name": "default", "version": "00ff00ff00ff00ff"},
        "request": {"model": "gpt-4o"},
        "decisions": [{"stage": "approvals", "decision": "approve", "rule": "ssn", "detail": ""}],
        "masking": [{"direction": "request", "entity": "US_SSN", "count": 1}],
        "approval": {"id": f"a{n}", "rule": "ssn", "state": "approved",
                     "decided_by": [{"sub": "reviewer", "time": 1_795_000_100.0, "reason": "ok"}]},
        "upstream": {"status": 200},
        "error": {"stage": "recorder", "kind": "Never"} if n == 7 else None,
    }


@pytest.fixture
def log(tmp_path):
    """A closed log of RECORDS records with checkpoints at sizes 4, 8 and 12."""
    home = Home.open(tmp_path / "home")
    store = SqliteAuditStore.open(home)
    notes = []
    for n in range(RECORDS):
        store.append(record(n), {"request": f"payload {n}".encode(), "response": b"answer"})
        if (n + 1) % 4 == 0:
            notes.append(store.checkpoint())
    store.close()
    return home, (home.keys_dir / "checkpoint.vkey").read_text(), notes


def attacker(path):
    """A raw connection with the append-only triggers dropped, as an attacker would."""
    conn = sqlite3.connect(path, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    return conn


def changed(value):
    if isinstance(value, bytes):
        return bytes([value[0] ^ 1]) + value[1:]
    if isinstance(value, int | float):
        return value + 1
    return "forged" if value is None else value[:-1] + ("x" if value[-1:] != "x" else "y")


def test_an_untouched_log_verifies(log):
    home, vkey, notes = log
    report = verify(home.audit_db, notes, vkey)
    assert report.ok and report.records == RECORDS and report.checkpoints == 3
    assert report.external_checkpoints == 3 and report.unsigned_tail == 0
    assert bytes.fromhex(report.root) == note.open_checkpoint(notes[-1], note.Verifier.from_vkey(vkey)).root


COLUMNS = [c for c in derive_columns({"seq": 0, "id": "x", "logged": 0.0, "record": record(7)})
           if c != "seq"] + ["entry", "leaf_hash"]


@pytest.mark.parametrize("seq", [0, TAMPERED, RECORDS - 1])
@pytest.mark.parametrize("column", COLUMNS)
def test_tampering_any_column_names_the_record(log, column, seq):
    home, vkey, notes = log
    conn = attacker(home.audit_db)
    (value,) = conn.execute(f"SELECT {column} FROM records WHERE seq = ?", (seq,)).fetchone()
    if column == "entry":
        forged = value.replace(f'"sub":"user{seq}"', '"sub":"someone-else"')
        assert forged != value
    else:
        forged = changed(value)
    conn.execute(f"UPDATE records SET {column} = ? WHERE seq = ?", (forged, seq))
    conn.close()
    report = verify(home.audit_db, notes, vkey)
    assert not report.ok
    assert report.first_failure.seq == seq
    assert report.first_failure.id == (forged if column == "id" else f"req{seq:04d}")


def test_entry_that_is_not_utf8_is_a_failure_not_a_crash(log):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    conn.execute("UPDATE records SET entry = CAST(x'7bff7d' AS TEXT) WHERE seq = 3")
    conn.close()
    assert verify(home.audit_db, None, vkey).first_failure.seq == 3


def test_changing_a_column_type_is_detected(log):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    conn.execute("UPDATE records SET subject = CAST(subject AS BLOB) WHERE seq = 3")
    conn.close()
    assert verify(home.audit_db, None, vkey).first_failure.seq == 3


def test_rewriting_entry_columns_and_leaf_consistently_is_caught_by_the_signature(log):
    home, vkey, notes = log
    conn = attacker(home.audit_db)
    (text,) = conn.execute("SELECT entry FROM records WHERE seq = ?", (TAMPERED,)).fetchone()
    entry = json.loads(text)
    entry["record"]["identity"]["sub"] = "someone-else"
    forged = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    columns = derive_columns(entry)
    sets = ", ".join(f"{c} = ?" for c in columns)
    conn.execute(f"UPDATE records SET {sets}, entry = ?, leaf_hash = ? WHERE seq = ?",
                 [*columns.values(), forged, merkle.leaf_hash(forged.encode()), TAMPERED])
    conn.close()
    report = verify(home.audit_db, None, vkey)
    assert not report.ok
    # Records 4..7 lie between the last matching checkpoint (size 4) and the first failing one.
    assert report.first_failure.seq == 4 and "4..7" in report.first_failure.reason


@pytest.mark.parametrize("action", ["alter", "delete", "add"])
def test_tampering_bodies(log, action):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    if action == "alter":
        where = "WHERE seq = ? AND kind = 'request'"
        (blob,) = conn.execute(f"SELECT sealed FROM bodies {where}", (TAMPERED,)).fetchone()
        conn.execute(f"UPDATE bodies SET sealed = ? {where}", (changed(blob), TAMPERED))
    elif action == "delete":
        conn.execute("DELETE FROM bodies WHERE seq = ? AND kind = 'response'", (TAMPERED,))
    else:
        conn.execute("INSERT INTO bodies (seq, kind, key_id, sealed) VALUES (?, 'extra', 'k', x'00')", (TAMPERED,))
    conn.close()
    report = verify(home.audit_db, None, vkey)
    assert (report.first_failure.seq, report.first_failure.id) == (TAMPERED, "req0005")


def test_deleting_a_record(log):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    conn.execute("DELETE FROM records WHERE seq = ?", (TAMPERED,))
    conn.execute("DELETE FROM bodies WHERE seq = ?", (TAMPERED,))
    conn.close()
    report = verify(home.audit_db, None, vkey)
    assert report.first_failure.seq == TAMPERED and "missing" in report.first_failure.reason


def test_deleting_and_renumbering_the_rest(log):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    conn.execute("DELETE FROM records WHERE seq = ?", (TAMPERED,))
    conn.execute("DELETE FROM bodies WHERE seq = ?", (TAMPERED,))
    conn.execute("UPDATE records SET seq = seq - 1 WHERE seq > ?", (TAMPERED,))
    conn.execute("UPDATE bodies SET seq = seq - 1 WHERE seq > ?", (TAMPERED,))
    conn.close()
    report = verify(home.audit_db, None, vkey)
    assert report.first_failure.seq == TAMPERED and report.first_failure.id == "req0006"


def test_reordering_rows(log):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    for table in ("records", "bodies"):
        conn.execute(f"UPDATE {table} SET seq = -1 WHERE seq = 2")
        conn.execute(f"UPDATE {table} SET seq = 2 WHERE seq = 9")
        conn.execute(f"UPDATE {table} SET seq = 9 WHERE seq = -1")
    conn.close()
    report = verify(home.audit_db, None, vkey)
    assert (report.first_failure.seq, report.first_failure.id) == (2, "req0009")
    assert "reordered" in report.first_failure.reason


def truncate(home, keep, *, cover_tracks):
    conn = attacker(home.audit_db)
    conn.execute("DELETE FROM records WHERE seq >= ?", (keep,))
    conn.execute("DELETE FROM bodies WHERE seq >= ?", (keep,))
    if cover_tracks:  # drop the checkpoints that mention the tail and rebuild the tree state
        conn.execute("DELETE FROM checkpoints WHERE size > ?", (keep,))
        leaves = [bytes(h) for (h,) in conn.execute("SELECT leaf_hash FROM records ORDER BY seq")]
        tree = merkle.CompactRange()
        for leaf in leaves:
            tree.append(leaf)
        conn.execute("UPDATE tree_state SET size = ?, frontier = ?", (tree.size, tree.to_bytes()))
    conn.close()


def test_truncating_the_tail_is_caught_by_stored_checkpoints(log):
    home, vkey, _ = log
    truncate(home, 9, cover_tracks=False)
    report = verify(home.audit_db, None, vkey)
    assert report.first_failure.seq == 9 and "truncated" in report.first_failure.reason


def test_truncation_with_covered_tracks_needs_the_exported_checkpoints(log):
    home, vkey, notes = log
    truncate(home, 9, cover_tracks=True)
    assert verify(home.audit_db, None, vkey).ok  # why checkpoints must be exported
    report = verify(home.audit_db, notes, vkey)
    assert report.first_failure.seq == 9 and "truncated" in report.first_failure.reason


@pytest.mark.parametrize("edit", ["root", "size_column", "signature", "delete", "reorder"])
def test_editing_checkpoints(log, edit):
    home, vkey, notes = log
    conn = attacker(home.audit_db)
    if edit == "root":
        (text,) = conn.execute("SELECT note FROM checkpoints WHERE id = 2").fetchone()
        lines = text.split("\n")
        lines[2] = ("B" if lines[2][0] == "A" else "A") + lines[2][1:]
        conn.execute("UPDATE checkpoints SET note = ? WHERE id = 2", ("\n".join(lines),))
    elif edit == "size_column":
        conn.execute("UPDATE checkpoints SET size = 7 WHERE id = 2")
    elif edit == "signature":
        forger = note.Signer.generate(note.Verifier.from_vkey(vkey).name)
        head = note.Checkpoint(note.parse(notes[1]).text.split("\n")[0], 8, bytes(32))
        conn.execute("UPDATE checkpoints SET note = ? WHERE id = 2", (note.sign(head.text(), forger),))
    elif edit == "delete":
        conn.execute("DELETE FROM checkpoints WHERE id = 3")
    else:
        conn.execute("UPDATE checkpoints SET id = 9 WHERE id = 1")
    conn.close()
    report = verify(home.audit_db, notes if edit == "delete" else None, vkey)
    if edit == "delete":
        # A deleted stored checkpoint is no loss while the exported copy still matches.
        assert report.ok and report.checkpoints == 2
    else:
        assert not report.ok
        assert any("checkpoint" in f.reason for f in report.failures)


def test_a_dropped_table_is_a_failure_not_a_crash(log):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    conn.execute("DROP TABLE bodies")
    conn.close()
    report = verify(home.audit_db, None, vkey)
    assert not report.ok and "damaged" in report.failures[0].reason


def test_tree_state_tampering_is_detected(log):
    home, vkey, _ = log
    conn = attacker(home.audit_db)
    conn.execute("UPDATE tree_state SET size = size - 1")
    conn.close()
    assert not verify(home.audit_db, None, vkey).ok


def test_checkpoints_of_other_segments_are_skipped(log, tmp_path):
    home, vkey, notes = log
    other = SqliteAuditStore.open(home, tmp_path / "other.db")
    other.append(record(0))
    foreign = other.checkpoint()
    other.close()
    report = verify(home.audit_db, [*notes, foreign], vkey)
    assert report.ok and report.external_skipped == 1


def test_every_record_proves_and_a_third_party_can_check_it(log):
    home, vkey, _ = log
    for seq in range(RECORDS):
        proof = json.loads(json.dumps(prove(home.audit_db, seq)))  # survives a JSON round trip
        head = check_proof(proof, vkey)
        assert head.size == RECORDS
        assert json.loads(proof["canonical"])["id"] == f"req{seq:04d}"


def test_check_proof_rejects_altered_inputs(log):
    home, vkey, notes = log
    proof = prove(home.audit_db, 6)
    with pytest.raises(ProofError, match="not included"):
        check_proof(proof, vkey, canonical=proof["canonical"].replace("user6", "user7"))
    with pytest.raises(ProofError, match="another tree size"):
        check_proof(proof, vkey, checkpoint=notes[1])
    with pytest.raises(ProofError, match="another seq"):
        check_proof(proof, vkey, canonical=prove(home.audit_db, 7)["canonical"])
    forged = {**proof, "inclusion_path": [proof["inclusion_path"][0][::-1], *proof["inclusion_path"][1:]]}
    with pytest.raises(ProofError):
        check_proof(forged, vkey)
    other = note.Signer.generate("example.org/other").verifier.vkey
    with pytest.raises(ProofError, match="checkpoint"):
        check_proof(proof, other)


def test_prove_needs_a_covering_checkpoint(log):
    home, _, _ = log
    store = SqliteAuditStore.open(home)
    seq = store.append(record(99))
    store.close()
    with pytest.raises(ProofError, match="no checkpoint covers"):
        prove(home.audit_db, seq)
