"""Group commit: `append_many` writes the same log as one-by-one appends, and the committer's
one writer thread batches, isolates bad records, keeps order with checkpoints and drains."""

import sqlite3
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import pytest

from phigate.audit import merkle, note
from phigate.audit.batch import GroupCommitter
from phigate.audit.store import AuditError, SqliteAuditStore
from phigate.audit.verify import check_proof, prove, verify

from .test_audit_store import home, record, vkey  # noqa: F401 (home: the shared fixture)


class CountingStore(SqliteAuditStore):
    """The real SQLite store, noting the size of every transaction it is asked for."""

    def __init__(self, *args, **kwargs) -> None:
        self.batches: list[int] = []
        super().__init__(*args, **kwargs)

    def append_many(self, items):
        items = list(items)
        self.batches.append(len(items))
        return super().append_many(items)


@pytest.fixture
def store(home):
    opened = CountingStore.open(home)
    yield opened
    opened.close()


@pytest.fixture
def committer(store):
    running = GroupCommitter(store)
    yield running
    running.close()


def held(committer: GroupCommitter) -> threading.Event:
    """Park the writer thread until the event is set, so that what is submitted meanwhile
    queues up and is taken together."""
    gate, parked = threading.Event(), threading.Event()
    committer.call(lambda: (parked.set(), gate.wait(10)))
    assert parked.wait(10)
    return gate


def leaves(path) -> list[bytes]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT leaf_hash FROM records ORDER BY seq")]


# --- the store -------------------------------------------------------------------------------


def test_append_many_writes_what_sequential_appends_write(home, tmp_path, monkeypatch):
    # A fixed clock: the entry's "logged" time is the only thing two runs would differ in
    # (bodies are sealed with random nonces, so these records carry none).
    monkeypatch.setattr("phigate.audit.store.time", types.SimpleNamespace(time=lambda: 1.5e9))
    one_by_one = SqliteAuditStore.open(home, tmp_path / "sequential.db")
    grouped = SqliteAuditStore.open(home, tmp_path / "grouped.db")
    records = [record(n) for n in range(7)] + [record(3)]  # a repeated request id too
    assert [one_by_one.append(r) for r in records] == list(range(8))
    assert grouped.append_many([(r, None) for r in records[:5]]) == [0, 1, 2, 3, 4]
    assert grouped.append_many([(r, None) for r in records[5:]]) == [5, 6, 7]
    assert grouped.append_many([]) == []
    assert [grouped.get(s)["record"] for s in range(8)] == records
    assert grouped.get(7)["id"] != "req000003"  # its own id, as a sequential append gives
    heads = [note.open_checkpoint(s.checkpoint(), note.Verifier.from_vkey(vkey(home)))
             for s in (one_by_one, grouped)]
    for s in (one_by_one, grouped):
        s.close()
    assert leaves(tmp_path / "grouped.db")[:7] == leaves(tmp_path / "sequential.db")[:7]
    assert heads[0].size == heads[1].size == 8
    assert heads[1].root == merkle.root(leaves(tmp_path / "grouped.db"))
    assert heads[0].root == merkle.root(leaves(tmp_path / "sequential.db"))
    for path in ("sequential.db", "grouped.db"):
        assert verify(tmp_path / path, None, vkey(home)).ok


def test_append_many_with_bodies_verifies_and_proves(home, store):
    seqs = store.append_many([(record(n), {"request": f"body {n}".encode(), "response": b"ok"})
                              for n in range(10)])
    assert seqs == list(range(10)) and store.batches == [10]
    assert store.read_bodies(6) == {"request": b"body 6", "response": b"ok"}
    store.checkpoint()
    assert store.append(record(10)) == 10  # append is append_many of one
    store.checkpoint()
    report = verify(store.path, None, vkey(home))
    assert report.ok and report.records == report.latest_signed_size == 11
    check_proof(prove(store.path, 4), vkey(home))


@pytest.mark.parametrize("bad", [
    (record(2, started=b"bytes are not JSON"), None),  # fails inside the transaction
    (record(2), {"Bad Kind": b""}),  # refused before it
])
def test_a_failed_batch_writes_nothing_and_the_tree_stays(home, store, bad):
    store.append(record(0))
    with pytest.raises((TypeError, AuditError)):
        store.append_many([(record(1), None), bad, (record(3), None)])
    assert store.size == 1 and store.count() == 1
    assert store.append_many([(record(1), None), (record(3), None)]) == [1, 2]
    store.checkpoint()
    assert verify(store.path, None, vkey(home)).ok


# --- the committer ---------------------------------------------------------------------------


def test_a_lone_record_is_committed_at_once(committer, store):
    assert committer.submit(record(0), {"request": b"x"}).result(10) == 0
    assert store.batches == [1]


def test_what_queues_during_a_commit_goes_in_one_batch(committer, store):
    gate = held(committer)
    futures = [committer.submit(record(n)) for n in range(40)]
    gate.set()
    assert [f.result(10) for f in futures] == list(range(40))
    assert store.batches == [40]


def test_batches_are_bounded(store):
    committer = GroupCommitter(store, max_batch=16)
    gate = held(committer)
    futures = [committer.submit(record(n)) for n in range(40)]
    gate.set()
    assert [f.result(10) for f in futures] == list(range(40))
    assert store.batches == [16, 16, 8]
    committer.close()


def test_a_bad_record_fails_only_its_own_future(home, committer, store):
    gate = held(committer)
    futures = [committer.submit(record(n)) for n in range(3)]
    not_json = committer.submit(record(3, started=b"bytes are not JSON"))
    futures += [committer.submit(record(n)) for n in range(4, 6)]
    bad_kind = committer.submit(record(6), {"Bad Kind": b""})
    futures += [committer.submit(record(n), {"request": b"fine"}) for n in range(7, 9)]
    gate.set()
    with pytest.raises(TypeError):
        not_json.result(10)
    with pytest.raises(AuditError):
        bad_kind.result(10)
    assert [f.result(10) for f in futures] == list(range(7))  # in order, no gap
    assert store.batches[0] == 9  # the batch was tried whole first
    assert [store.get(s)["record"]["request_id"] for s in range(7)] == [
        f"req{n:06d}" for n in (0, 1, 2, 4, 5, 7, 8)]
    committer.call(store.checkpoint).result(10)
    assert verify(store.path, None, vkey(home)).ok


def test_concurrent_submits_land_gapless_and_verify(home, committer, store):
    def caller(first: int) -> list[tuple[int, str]]:
        """Like a flow: submit, wait for the commit, next."""
        done = []
        for n in range(first, first + 150):
            seq = committer.submit(record(n), {"request": b"r" * 200}).result(30)
            done.append((seq, f"req{n:06d}"))
        return done

    with ThreadPoolExecutor(8) as callers:
        landed = [pair for part in callers.map(caller, range(0, 1200, 150)) for pair in part]
    assert sorted(seq for seq, _ in landed) == list(range(1200))
    for seq, request_id in landed[::50]:
        assert store.get(seq)["record"]["request_id"] == request_id
    assert sum(store.batches) == 1200
    committer.call(store.checkpoint).result(10)
    report = verify(store.path, None, vkey(home))
    assert report.ok and report.records == report.latest_signed_size == 1200


def test_a_checkpoint_between_batches_covers_exactly_what_came_before(home, committer, store):
    gate = held(committer)
    before = [committer.submit(record(n)) for n in range(10)]
    signed = committer.call(store.checkpoint)
    after = [committer.submit(record(n)) for n in range(10, 25)]
    gate.set()
    head = note.open_checkpoint(signed.result(10), note.Verifier.from_vkey(vkey(home)))
    assert [f.result(10) for f in before + after] == list(range(25))
    assert store.batches == [10, 15]
    assert head.size == 10 and head.root == merkle.root(leaves(store.path)[:10])
    committer.call(store.checkpoint).result(10)
    report = verify(store.path, None, vkey(home))
    assert report.ok and report.checkpoints == 2


def test_close_drains_every_submitted_record(home, store):
    committer = GroupCommitter(store)
    gate = held(committer)
    futures = [committer.submit(record(n)) for n in range(30)]
    closer = threading.Thread(target=committer.close)
    closer.start()
    while True:  # until close() refuses new work; whatever got in first must land too
        try:
            futures.append(committer.submit(record(len(futures))))
        except RuntimeError:
            break
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert [f.result(0) for f in futures] == list(range(len(futures)))
    assert store.count() == len(futures) >= 30


def test_a_caller_that_stops_waiting_cannot_take_its_record_back(committer, store):
    gate = held(committer)
    future = committer.submit(record(0))
    assert not future.cancel()
    gate.set()
    assert future.result(10) == 0 and store.count() == 1


def test_replace_swaps_the_store_in_queue_order(home, tmp_path, store):
    committer = GroupCommitter(store)
    gate = held(committer)
    old = committer.submit(record(0))
    replaced = committer.replace(lambda: SqliteAuditStore.open(home, tmp_path / "next.db"))
    new = committer.submit(record(1))
    gate.set()
    assert (old.result(10), new.result(10)) == (0, 0)
    assert replaced.result(10) is committer.store and committer.store.path.name == "next.db"
    assert committer.store.get(0)["record"]["request_id"] == "req000001"
    committer.call(committer.store.close).result(10)
    committer.close()
    reopened = SqliteAuditStore.open(home)
    assert reopened.get(0)["record"]["request_id"] == "req000000"
    reopened.close()


def test_submit_after_close_is_refused(store):
    committer = GroupCommitter(store)
    committer.close()
    with pytest.raises(RuntimeError):
        committer.submit(record(0))
