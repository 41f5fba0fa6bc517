"""The approval store: the decision rules, endings without a decision, and sharing between processes."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from phigate.approvals import ApprovalError, SqliteApprovalStore, masked_summary
from phigate.approvals.model import MAX_EXCERPT_CHARS

ALICE = {"iss": "https://idp.example", "sub": "alice", "groups": ["clinicians"]}
BOB = {"iss": "https://idp.example", "sub": "bob", "groups": ["privacy-officers"]}
CAROL = {"iss": "https://idp.example", "sub": "carol", "groups": ["privacy-officers", "clinicians"]}
MALLORY = {"iss": "https://idp.example", "sub": "mallory", "groups": ["clinicians"]}
T0 = 1_795_000_000.0


@pytest.fixture
def store(tmp_path: Path):
    opened = SqliteApprovalStore(tmp_path / "approvals.db")
    yield opened
    opened.close()


def hold(store, *, requester=ALICE, required=1, timeout=120.0, now=T0, holder="", **summary):
    return store.create(
        request_id="req-" + str(time.perf_counter_ns()),
        requester=requester,
        rule="phi-to-external-tool",
        approver_groups=["privacy-officers"],
        approvals_required=required,
        summary=masked_summary(
            endpoint="POST /v1/responses", model="gpt-5", max_tokens=512, tools=["send_fax"],
            entities={"PERSON": 2, "US_SSN": 1}, excerpt="Fax <PERSON_1>'s chart", **summary,
        ),
        timeout=timeout,
        holder=holder,
        now=now,
    )  # fmt: skip


@contextmanager
def refused(code: str, status: int):
    with pytest.raises(ApprovalError) as info:
        yield
    assert (info.value.code, info.value.status) == (code, status)


def test_create_stores_a_pending_approval_with_an_unguessable_id(store, tmp_path):
    first, second = hold(store), hold(store)
    assert re.fullmatch(r"apr_[a-z2-7]{12}", first.id) and first.id != second.id
    got = store.get(first.id)
    assert got == first
    assert (got.state, got.expires_at, got.decisions) == ("pending", T0 + 120.0, ())
    assert got.summary["entities"] == {"PERSON": 2, "US_SSN": 1}
    assert {a.id for a in store.list()} == {first.id, second.id}
    assert stat.S_IMODE(os.stat(tmp_path / "approvals.db").st_mode) == 0o600


def test_an_approver_approves_and_the_decision_is_recorded(store):
    approval = hold(store)
    decided = store.decide(approval.id, BOB, "approve", "  chart fax is routine  ", now=T0 + 5)
    assert decided.state == "approved" and decided.ended_at == T0 + 5
    assert decided.decisions == (
        {"iss": BOB["iss"], "sub": "bob", "decision": "approve",
         "reason": "chart fax is routine", "time": T0 + 5},
    )  # fmt: skip
    assert store.get(approval.id) == decided
    assert store.list() == []


def test_requesters_can_never_decide_their_own_request(store):
    approval = hold(store, requester=CAROL)  # carol is also an approver
    for decision in ("approve", "deny"):
        with refused("self_approval", 403):
            store.decide(approval.id, CAROL, decision, "looks fine", now=T0 + 1)
    # The same sub from another issuer is a different person.
    other_carol = {**CAROL, "iss": "https://other-idp.example"}
    assert store.decide(approval.id, other_carol, "approve", now=T0 + 2).state == "approved"


def test_only_members_of_the_approver_groups_decide(store):
    approval = hold(store)
    with refused("not_an_approver", 403):
        store.decide(approval.id, MALLORY, "approve", now=T0 + 1)
    assert store.get(approval.id).decisions == ()


def test_two_person_rule_needs_two_distinct_approvers(store):
    approval = hold(store, required=2)
    after_one = store.decide(approval.id, BOB, "approve", now=T0 + 1)
    assert (after_one.state, after_one.approvals, after_one.ended_at) == ("pending", 1, None)
    with refused("already_decided", 409):
        store.decide(approval.id, BOB, "approve", now=T0 + 2)
    with refused("already_decided", 409):
        store.decide(approval.id, BOB, "deny", "changed my mind", now=T0 + 2)
    after_two = store.decide(approval.id, CAROL, "approve", now=T0 + 3)
    assert after_two.state == "approved"
    record = after_two.to_record()
    assert (record["state"], record["approvals_required"]) == ("approved", 2)
    assert [(d["sub"], d["decision"], d["time"]) for d in record["decided_by"]] == [
        ("bob", "approve", T0 + 1), ("carol", "approve", T0 + 3),
    ]  # fmt: skip


def test_one_deny_denies_even_after_an_approval(store):
    approval = hold(store, required=2)
    store.decide(approval.id, BOB, "approve", now=T0 + 1)
    denied = store.decide(approval.id, CAROL, "deny", "fax number not on file", now=T0 + 2)
    assert (denied.state, denied.ended_at) == ("denied", T0 + 2)
    assert denied.decisions[-1]["reason"] == "fax number not on file"


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_deny_needs_a_reason(store, reason):
    approval = hold(store)
    with refused("reason_required", 400):
        store.decide(approval.id, BOB, "deny", reason, now=T0 + 1)
    assert store.get(approval.id).state == "pending"


def test_decisions_after_the_end_are_refused(store):
    approval = hold(store)
    store.decide(approval.id, BOB, "deny", "no", now=T0 + 1)
    with refused("not_pending", 409):
        store.decide(approval.id, CAROL, "approve", now=T0 + 2)
    with refused("not_found", 404):
        store.decide("apr_aaaaaaaaaaaa", BOB, "approve", now=T0 + 2)
    with refused("not_found", 404):
        store.get("apr_aaaaaaaaaaaa")


def test_a_late_decision_expires_the_approval(store):
    approval = hold(store, timeout=30)
    with refused("expired", 409):
        store.decide(approval.id, BOB, "approve", now=T0 + 30)
    expired = store.get(approval.id)
    assert (expired.state, expired.ended_at, expired.decisions) == ("expired", T0 + 30, ())
    with refused("not_pending", 409):
        store.decide(approval.id, BOB, "approve", now=T0 + 31)


def test_expire_due_ends_only_overdue_pending_approvals(store):
    soon, later, decided = hold(store, timeout=10), hold(store, timeout=100), hold(store, timeout=10)
    store.decide(decided.id, BOB, "approve", now=T0 + 1)
    version = store.version()
    assert [a.id for a in store.expire_due(now=T0 + 10)] == [soon.id]
    assert store.version() > version
    assert [store.get(a.id).state for a in (soon, later, decided)] == ["expired", "pending", "approved"]
    version = store.version()
    assert store.expire_due(now=T0 + 11) == []
    assert store.version() == version  # nothing changed, nothing to notice


def test_mark_abandoned_when_the_client_goes_away(store):
    approval = hold(store)
    abandoned = store.mark(approval.id, "abandoned", "client disconnected", now=T0 + 3)
    assert (abandoned.state, abandoned.ended_reason, abandoned.ended_at) == (
        "abandoned", "client disconnected", T0 + 3,
    )  # fmt: skip
    with refused("not_pending", 409):
        store.mark(approval.id, "abandoned")
    with refused("not_pending", 409):
        store.decide(approval.id, BOB, "approve", now=T0 + 4)
    with pytest.raises(ValueError):
        store.mark(hold(store).id, "approved")  # decisions go through decide()


def test_abort_pending_on_restart_keeps_finished_and_other_replicas_holds(store):
    ours, theirs = hold(store, holder="gw-a"), hold(store, holder="gw-b")
    done = hold(store, holder="gw-a")
    store.decide(done.id, BOB, "approve", now=T0 + 1)
    aborted = store.abort_pending("gateway restarted", holder="gw-a", now=T0 + 2)
    assert [a.id for a in aborted] == [ours.id]
    assert (store.get(ours.id).state, store.get(ours.id).ended_reason) == ("aborted", "gateway restarted")
    assert store.get(theirs.id).state == "pending"
    assert store.get(done.id).state == "approved"
    assert [a.id for a in store.abort_pending("gateway restarted")] == [theirs.id]


def test_history_is_kept_and_listed_newest_first(store):
    first = hold(store, now=T0)
    second = hold(store, now=T0 + 1)
    third = hold(store, now=T0 + 2)
    store.decide(first.id, BOB, "approve", now=T0 + 3)
    store.mark(second.id, "abandoned", now=T0 + 3)
    assert [a.id for a in store.list(None)] == [third.id, second.id, first.id]
    assert [a.id for a in store.list(("approved", "abandoned"))] == [second.id, first.id]
    assert len(store.list(None, limit=2)) == 2
    with pytest.raises(ValueError):
        store.list(("maybe",))


def test_create_refuses_what_would_make_an_unsafe_hold(store):
    with pytest.raises(ValueError, match="approver_groups"):
        store.create(request_id="r", requester=ALICE, rule="r", approver_groups=[],
                     summary={"endpoint": "POST /v1/responses"}, timeout=60)  # fmt: skip
    with pytest.raises(ValueError, match="approvals_required"):
        store.create(request_id="r", requester=ALICE, rule="r", approver_groups=["x"],
                     summary={"endpoint": "POST /v1/responses"}, timeout=60,
                     approvals_required=3)  # fmt: skip
    with pytest.raises(ValueError, match="body"):
        store.create(request_id="r", requester=ALICE, rule="r", approver_groups=["x"],
                     summary={"endpoint": "POST /v1/responses", "body": "raw"}, timeout=60)  # fmt: skip
    with pytest.raises(ValueError, match="iss and sub"):
        store.create(request_id="r", requester={"sub": "alice", "groups": []}, rule="r",
                     approver_groups=["x"], summary={"endpoint": "POST /v1/responses"},
                     timeout=60)  # fmt: skip
    assert store.list(None) == [] and store.version() == 0


def test_the_excerpt_is_cut_short():
    summary = masked_summary(endpoint="POST /v1/chat/completions", excerpt="x" * 1000)
    assert len(summary["excerpt"]) == MAX_EXCERPT_CHARS and summary["excerpt"].endswith("…")


def test_a_second_connection_sees_the_same_state(store, tmp_path):
    approval = hold(store)
    other = SqliteApprovalStore(tmp_path / "approvals.db")
    try:
        assert other.version() == store.version()
        other.decide(approval.id, BOB, "approve", now=T0 + 1)
        assert store.get(approval.id).state == "approved"
    finally:
        other.close()


def test_concurrent_threads_each_get_their_write(store):
    approvals = [hold(store) for _ in range(8)]
    errors: list[BaseException] = []

    def approve(approval_id: str) -> None:
        try:
            store.decide(approval_id, BOB, "approve", now=T0 + 1)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=approve, args=(a.id,)) for a in approvals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {a.state for a in store.list(None)} == {"approved"}
    assert store.version() == 16


DECIDE_IN_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from phigate.approvals import SqliteApprovalStore, ApprovalError
    path, approval_id, approver, start_at = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
    store = SqliteApprovalStore(path)
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        decided = store.decide(approval_id, approver, "approve", "from another process")
        print(json.dumps({"ok": decided.state, "at": time.time()}))
    except ApprovalError as error:
        print(json.dumps({"error": error.code, "at": time.time()}))
    """
)


def child(path: Path, approval_id: str, approver: dict, start_at: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DECIDE_IN_CHILD, str(path), approval_id, json.dumps(approver),
         str(start_at)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_decision_in_another_process_is_noticed_within_a_second(store, tmp_path):
    approval = store.create(
        request_id="req-x", requester=ALICE, rule="phi-to-external-tool",
        approver_groups=["privacy-officers"], summary={"endpoint": "POST /v1/responses"},
        timeout=60,
    )  # fmt: skip
    seen = store.version()
    process = child(tmp_path / "approvals.db", approval.id, BOB, time.time() + 1.0)
    noticed_at = None
    deadline = time.monotonic() + 15
    while noticed_at is None and time.monotonic() < deadline:
        time.sleep(0.25)  # the gateway's polling interval
        if store.version() != seen:
            noticed_at = time.time()
    result = json.loads(process.communicate(timeout=15)[0])
    assert result == {"ok": "approved", "at": result["at"]}
    assert noticed_at is not None
    assert noticed_at - result["at"] < 1.0
    assert store.get(approval.id).decisions[0]["reason"] == "from another process"


def test_two_processes_deciding_at_once_are_serialised(store, tmp_path):
    approval = hold(store, timeout=3600, now=time.time())
    start_at = time.time() + 1.0
    processes = [child(tmp_path / "approvals.db", approval.id, who, start_at) for who in (BOB, CAROL)]
    results = [json.loads(p.communicate(timeout=15)[0]) for p in processes]
    outcomes = sorted(r.get("ok") or r.get("error") for r in results)
    assert outcomes == ["approved", "not_pending"]
    assert len(store.get(approval.id).decisions) == 1
