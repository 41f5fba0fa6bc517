"""The SQLite audit store: appends, search, append-only triggers, sealing, sinks, crash safety."""

import http.server
import json
import math
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from phigate.audit import canonical, note
from phigate.audit.bodies import BodyError, BodyKeyring
from phigate.audit.sinks import AppendOnlyFile, SinkError, Webhook
from phigate.audit.store import AuditError, SqliteAuditStore
from phigate.audit.verify import verify
from phigate.home import Home

PHI = ["Jane Q. Doppelganger", "078-05-1120", "MRN 00451977", "jane.doppelganger@example.org"]


def record(n=0, **changes):
    base = {
        "request_id": f"req{n:06d}",
        "started": 1_795_000_000.0 + n,
        "client": "127.0.0.1:5000",
        "mode": "reverse",
        "endpoint": "POST /v1/chat/completions",
        "identity": {"iss": "https://idp.test", "sub": f"user{n % 3}", "groups": ["clinicians", f"team{n % 2}"],
                     "jti": f"jti{n}", "exp": 1_795_003_600, "source": "authorization"},
        "policy": {"name": "default", "version": "0123456789abcdef"},
        "request": {"model": "gpt-4o-mini", "stream": False, "max_tokens": 50, "tools": [], "body_bytes": 120},
        "decisions": [{"stage": "guardrails", "decision": "allow", "rule": "", "detail": ""}],
        "masking": [{"direction": "request", "path": "messages[0].content", "entity": "PERSON",
                     "operator": "replace", "count": 1, "score": 0.85}],
        "upstream": {"status": 200, "latency_ms": 31.5, "usage": {"total_tokens": 40}},
    }
    base.update(changes)
    return base


@pytest.fixture
def home(tmp_path):
    return Home.open(tmp_path / "home")


@pytest.fixture
def store(home):
    opened = SqliteAuditStore.open(home)
    yield opened
    opened.close()


def vkey(home):
    return (home.keys_dir / "checkpoint.vkey").read_text()


def test_appends_are_gapless_and_read_back(store):
    seqs = [store.append(record(n), {"request": f"body {n}".encode()}) for n in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    got = store.get(3)
    assert got["id"] == "req000003" and got["seq"] == 3 and got["record"] == record(3)
    assert set(got["bodies"]) == {"request"}
    assert store.read_bodies(3) == {"request": b"body 3"}
    assert store.lookup("req000003") == 3 and store.lookup("nope") is None
    assert store.get(99) is None


def test_a_replayed_request_id_gets_its_own_record_id(store):
    first = store.append(record(1))
    second = store.append(record(1))
    assert store.get(first)["id"] == "req000001"
    assert store.get(second)["id"] != "req000001"
    assert store.get(second)["record"]["request_id"] == "req000001"


def test_search_by_every_filter(store):
    store.append(record(0))
    store.append(record(1, refusal={"status": 403, "code": "policy_denied", "stage": "guardrails"},
                        masking=[{"entity": "US_SSN"}], endpoint="POST /v1/responses"))
    store.append(record(2, error={"stage": "masking", "kind": "TimeoutError"}, upstream=None))
    seqs = lambda **f: [r["seq"] for r in store.search(**f)]  # noqa: E731
    assert seqs() == [2, 1, 0]
    assert seqs(subject="user1") == [1]
    assert seqs(group="team0") == [2, 0]
    assert seqs(since=1_795_000_001.0) == [2, 1]
    assert seqs(until=1_795_000_001.0) == [0]
    assert seqs(endpoint="POST /v1/responses") == [1]
    assert seqs(entity_type="US_SSN") == [1]
    assert seqs(decision="refuse") == [1] and seqs(decision="error") == [2]
    assert seqs(status=403) == [1] and seqs(status=500) == [2] and seqs(status=200) == [0]
    assert seqs(limit=1) == [2]
    row = store.search(subject="user2")[0]
    assert row["groups"] == ["clinicians", "team0"] and row["error"] == "masking:TimeoutError"
    assert store.count(group="clinicians") == 3


@pytest.mark.parametrize("table", ["records", "bodies", "checkpoints", "meta"])
def test_triggers_refuse_update_and_delete(store, table):
    store.append(record(0), {"request": b"x"})
    store.checkpoint()
    store.close()
    conn = sqlite3.connect(store.path)
    column = {"records": "subject", "bodies": "kind", "checkpoints": "note", "meta": "value"}[table]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(f"UPDATE {table} SET {column} = 'forged'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(f"DELETE FROM {table}")
    conn.close()


def test_a_failed_append_writes_nothing(store):
    store.append(record(0))
    with pytest.raises(TypeError):
        store.append(record(1, started=b"bytes are not JSON"))
    with pytest.raises(ValueError):
        store.append(record(1, started=math.nan))
    with pytest.raises(AuditError):
        store.append(record(1), {"Bad Kind": b""})
    assert store.size == 1
    assert store.append(record(1)) == 1


def test_no_phi_reaches_the_database_file(home, store):
    for n in range(20):
        body = json.dumps({"messages": [{"role": "user", "content": f"{PHI[n % 4]} is my patient"}]})
        store.append(record(n), {"request": body.encode(), "response": " ".join(PHI).encode()})
    store.checkpoint()
    store.close()
    files = [p for p in home.root.rglob("*") if p.is_file() and not p.name.endswith(".key")]
    assert any(p.name == "audit.db" for p in files)
    blob = b"".join(p.read_bytes() for p in files)
    for value in PHI:
        for form in (value.encode(), value.encode("utf-16-le"), value.lower().encode()):
            assert form not in blob
    reopened = SqliteAuditStore.open(home)
    assert PHI[0].encode() in reopened.read_bodies(0)["request"]
    reopened.close()


def test_canonical_form_is_sorted_compact_utf8_and_strict():
    assert canonical.dumps({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'
    for bad in ({1: "int key"}, {"x": b"bytes"}, {"x": {1, 2}}, {"x": math.inf},
                {"x": [{"y": (1, {2: "deep int key"})}]}, {"x": [[[b"deep bytes"]]]}, [{"x": object()}]):
        with pytest.raises((TypeError, ValueError)):
            canonical.dumps(bad)

    class Name(str):
        pass

    assert canonical.dumps({Name("k"): (1, None, True, 2.5, [Name("v")])}) == '{"k":[1,null,true,2.5,["v"]]}'


def test_body_keys_bind_ciphertext_to_record_and_kind(home):
    ring = BodyKeyring(home.keys_dir)
    sealed = ring.seal("rec1", "request", b"secret")
    assert ring.open("rec1", "request", sealed) == b"secret"
    for record_id, kind in (("rec2", "request"), ("rec1", "response")):
        with pytest.raises(BodyError):
            ring.open(record_id, kind, sealed)
    altered = type(sealed)(sealed.key_id, sealed.blob[:-1] + bytes([sealed.blob[-1] ^ 1]))
    with pytest.raises(BodyError):
        ring.open("rec1", "request", altered)
    old = ring.current_id
    ring.rotate()
    assert ring.current_id != old
    assert BodyKeyring(home.keys_dir).open("rec1", "request", sealed) == b"secret"
    key_file = home.keys_dir / f"body-{old}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.unlink()
    with pytest.raises(BodyError, match="not present"):
        BodyKeyring(home.keys_dir).open("rec1", "request", sealed)


def test_two_connections_keep_one_gapless_tree(home, store):
    other = SqliteAuditStore.open(home)
    assert [store.append(record(0)), other.append(record(1)), store.append(record(2))] == [0, 1, 2]
    store.checkpoint()
    other.close()
    assert verify(store.path, None, vkey(home)).ok


def test_seal_closes_the_segment_and_starts_a_new_file(home, store):
    for n in range(3):
        store.append(record(n))
    old_origin = store.origin
    sealed, final = store.seal()
    assert sealed.parent.name == "audit-segments" and sealed.exists()
    assert note.open_checkpoint(final, note.Verifier.from_vkey(vkey(home))).size == 3
    assert store.size == 0 and store.origin != old_origin and store.path == home.audit_db
    assert store.append(record(9)) == 0
    conn = sqlite3.connect(sealed)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert int(meta["retain_until"][:4]) - int(meta["sealed_at"][:4]) == 6
    with pytest.raises(sqlite3.IntegrityError, match="sealed"):
        conn.execute("INSERT INTO checkpoints (size, created, note) VALUES (0, 0, 'x')")
    conn.close()
    assert verify(sealed, [final], vkey(home)).ok


def test_file_sink_appends_every_checkpoint(home, tmp_path):
    path = tmp_path / "external" / "checkpoints.txt"
    path.parent.mkdir()
    path.write_text("")
    store = SqliteAuditStore.open(home, sinks=[AppendOnlyFile(path)])
    notes = []
    for n in range(3):
        store.append(record(n))
        notes.append(store.checkpoint())
    store.close()
    assert note.split_notes(path.read_text()) == notes


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[str] = []
    failures_left = 0

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"])).decode()
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(503)
        else:
            type(self).received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    handler = type("Handler", (_Collector,), {"received": [], "failures_left": 2})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/checkpoints"
    server.shutdown()
    server.server_close()


def test_webhook_sink_retries_then_delivers(home, collector):
    handler, url = collector
    store = SqliteAuditStore.open(home, sinks=[Webhook(url, backoff=0.01)])
    store.append(record(0))
    signed = store.checkpoint()
    store.close()
    assert handler.received == [signed]


def test_webhook_failure_raises_but_keeps_the_checkpoint(home, collector):
    handler, url = collector
    handler.failures_left = 10
    store = SqliteAuditStore.open(home, sinks=[Webhook(url, attempts=2, backoff=0.01)])
    store.append(record(0))
    with pytest.raises(SinkError, match="unreachable after 2 attempts"):
        store.checkpoint()
    assert store.db["checkpoints"].count == 1
    store.close()


WRITER = textwrap.dedent("""
    import sys
    from phigate.audit.store import SqliteAuditStore
    from phigate.home import Home
    store = SqliteAuditStore.open(Home.open(sys.argv[1]))
    n = 0
    while True:
        record = {"request_id": f"r{n}", "endpoint": "POST /v1/responses"}
        seq = store.append(record, {"request": b"x" * 300})
        print(seq, flush=True)
        if seq % 50 == 49:
            store.checkpoint()
        n += 1
""")


def test_sigkill_loses_no_committed_record(home):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home.root)], stdout=subprocess.PIPE, text=True)
    last = -1
    deadline = time.monotonic() + 30
    while last < 400 and time.monotonic() < deadline:
        last = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert last >= 400
    store = SqliteAuditStore.open(home)
    assert store.size >= last + 1  # every append that returned is there
    assert store.get(last)["id"] == f"r{last}"
    store.checkpoint()
    store.close()
    report = verify(home.audit_db, None, vkey(home))
    assert report.ok, report.failures
    assert report.records == report.latest_signed_size >= last + 1


def test_the_audit_modules_never_import_mitmproxy():
    code = ("import sys, phigate.audit.verify, phigate.audit.batch, phigate.cli.audit; "
            "print('mitmproxy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


def test_retention_date_of_a_leap_day_seal():
    import datetime as dt

    from phigate.audit.store import _years_later

    assert _years_later(dt.datetime(2028, 2, 29), 6) == dt.datetime(2034, 2, 28)
    assert _years_later(dt.datetime(2026, 11, 24), 6) == dt.datetime(2032, 11, 24)
