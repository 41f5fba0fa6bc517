"""Where approvals live while a request is held, and after (history is kept, never deleted).

`ApprovalStore` is the narrow contract the gateway, the admin API and the CLI use; gateway
replicas will later share one through PostgreSQL. `SqliteApprovalStore` keeps it in one SQLite
file (WAL) that the gateway and the `phigate approvals` CLI open at the same time: every write
runs in a `BEGIN IMMEDIATE` transaction, so two processes deciding at once are serialised and
each sees the other's committed state.

`version()` is the change cursor: a counter bumped by every write, cheap enough to poll every
~250 ms, so a held flow notices a decision made by another process within a second.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from phigate.approvals.model import (
    DECISIONS,
    MAX_REASON_CHARS,
    STATES,
    UNDECIDED_ENDINGS,
    Approval,
    ApprovalError,
    Person,
    checked_summary,
    person,
    same_person,
)

ID_PREFIX = "apr_"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32, lower case
_ID_LENGTH = 12  # 60 random bits: not guessable from another approval's id
_BUSY_TIMEOUT_SECONDS = 10.0


class ApprovalStore(Protocol):
    def create(
        self,
        *,
        request_id: str,
        requester: Person | Mapping[str, Any],
        rule: str,
        approver_groups: Iterable[str],
        summary: Mapping[str, Any],
        timeout: float,
        approvals_required: int = 1,
        holder: str = "",
        now: float | None = None,
    ) -> Approval: ...

    def get(self, approval_id: str) -> Approval: ...

    def list(
        self, states: Iterable[str] | None = ("pending",), limit: int = 100
    ) -> list[Approval]: ...

    def decide(
        self,
        approval_id: str,
        approver: Person | Mapping[str, Any],
        decision: str,
        reason: str = "",
        now: float | None = None,
    ) -> Approval: ...

    def expire_due(self, now: float | None = None) -> list[Approval]: ...

    def mark(
        self, approval_id: str, state: str, reason: str | None = None, now: float | None = None
    ) -> Approval: ...

    def abort_pending(
        self, reason: str, *, holder: str | None = None, now: float | None = None
    ) -> list[Approval]: ...

    def version(self) -> int: ...

    def close(self) -> None: ...


def new_approval_id() -> str:
    return ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def _not_found() -> ApprovalError:
    return ApprovalError("not_found", "no such approval", 404)


class SqliteApprovalStore:
    """An `ApprovalStore` in one SQLite file. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # Create the file owner-only before SQLite does (its -wal/-shm copy these permissions).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        connection = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_SECONDS, check_same_thread=False
        )
        self._db = sqlite_utils.Database(connection)
        self._lock = threading.RLock()
        self._db.enable_wal()
        with self._write():
            self._create_schema()

    def _create_schema(self) -> None:
        self._db["approvals"].create(
            {
                "id": str, "request_id": str, "created_at": float, "expires_at": float,
                "state": str, "requester": str, "rule": str, "approvals_required": int,
                "approver_groups": str, "summary": str, "decisions": str,
                "ended_at": float, "ended_reason": str, "holder": str,
            },
            pk="id",
            not_null={"request_id", "created_at", "expires_at", "state", "requester", "rule",
                      "approvals_required", "approver_groups", "summary", "decisions", "holder"},
            if_not_exists=True,
        )  # fmt: skip
        self._db["approvals"].create_index(["state", "expires_at"], if_not_exists=True)
        self._db["approvals"].create_index(["created_at"], if_not_exists=True)
        self._db["approval_changes"].create(
            {"id": int, "version": int}, pk="id", not_null={"version"}, if_not_exists=True
        )
        self._db.execute("INSERT OR IGNORE INTO approval_changes (id, version) VALUES (1, 0)")

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taking SQLite's write lock up front (no upgrade deadlocks)."""
        with self._lock:
            self._db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.conn.execute("ROLLBACK")
                raise
            self._db.conn.execute("COMMIT")

    def _changed(self) -> None:
        self._db.execute("UPDATE approval_changes SET version = version + 1 WHERE id = 1")

    def version(self) -> int:
        with self._lock:
            return self._db.execute("SELECT version FROM approval_changes WHERE id = 1").fetchone()[0]

    def create(
        self,
        *,
        request_id: str,
        requester: Person | Mapping[str, Any],
        rule: str,
        approver_groups: Iterable[str],
        summary: Mapping[str, Any],
        timeout: float,
        approvals_required: int = 1,
        holder: str = "",
        now: float | None = None,
    ) -> Approval:
        groups = tuple(sorted(set(approver_groups)))
        if not groups or not all(isinstance(g, str) and g for g in groups):
            raise ValueError("approver_groups must name at least one group")
        if approvals_required not in (1, 2):
            raise ValueError("approvals_required must be 1 or 2")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not request_id or not rule:
            raise ValueError("request_id and rule are required")
        created = time.time() if now is None else now
        approval = Approval(
            id=new_approval_id(),
            request_id=request_id,
            created_at=created,
            expires_at=created + timeout,
            state="pending",
            requester=person(requester),
            rule=rule,
            approvals_required=approvals_required,
            approver_groups=groups,
            summary=checked_summary(summary),
            holder=holder,
        )
        with self._write():
            self._db["approvals"].insert(_row(approval))
            self._changed()
        return approval

    def get(self, approval_id: str) -> Approval:
        with self._lock:
            return self._get(approval_id)

    def _get(self, approval_id: str) -> Approval:
        rows = list(self._db.query("SELECT * FROM approvals WHERE id = ?", [approval_id]))
        if not rows:
            raise _not_found()
        return _approval(rows[0])

    def list(
        self, states: Iterable[str] | None = ("pending",), limit: int = 100
    ) -> list[Approval]:
        sql, params = "SELECT * FROM approvals", []
        if states is not None:
            wanted = list(states)
            if not set(wanted) <= set(STATES):
                raise ValueError(f"states must be among {STATES}")
            sql += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            params += wanted
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        with self._lock:
            return [_approval(row) for row in self._db.query(sql, [*params, int(limit)])]

    def decide(
        self,
        approval_id: str,
        approver: Person | Mapping[str, Any],
        decision: str,
        reason: str = "",
        now: float | None = None,
    ) -> Approval:
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}")
        who = person(approver)
        reason = (reason or "").strip()
        now = time.time() if now is None else now
        expired = False
        with self._write():
            approval = self._get(approval_id)
            if approval.state != "pending":
                raise ApprovalError("not_pending", f"the approval is already {approval.state}", 409)
            if now >= approval.expires_at:
                self._end(approval_id, "expired", now, "timeout")
                expired = True
            else:
                decided = _decided(approval, who, decision, reason, now)
                self._db.execute(
                    "UPDATE approvals SET decisions = ?, state = ?, ended_at = ? WHERE id = ?",
                    [json.dumps(list(decided.decisions)), decided.state, decided.ended_at,
                     approval_id],
                )  # fmt: skip
                self._changed()
        if expired:
            raise ApprovalError("expired", "the approval expired before the decision", 409)
        return decided

    def _end(self, approval_id: str, state: str, now: float, reason: str | None) -> None:
        self._db.execute(
            "UPDATE approvals SET state = ?, ended_at = ?, ended_reason = ? WHERE id = ?",
            [state, now, reason, approval_id],
        )
        self._changed()

    def expire_due(self, now: float | None = None) -> list[Approval]:
        now = time.time() if now is None else now
        return self._end_pending("expired", "timeout", now, "expires_at <= ?", [now])

    def mark(
        self, approval_id: str, state: str, reason: str | None = None, now: float | None = None
    ) -> Approval:
        """End a pending approval without a decision: `abandoned`, `expired` or `aborted`."""
        if state not in UNDECIDED_ENDINGS:
            raise ValueError(f"state must be one of {UNDECIDED_ENDINGS}")
        now = time.time() if now is None else now
        with self._write():
            approval = self._get(approval_id)
            if approval.state != "pending":
                raise ApprovalError("not_pending", f"the approval is already {approval.state}", 409)
            self._end(approval_id, state, now, reason)
            return self._get(approval_id)

    def abort_pending(
        self, reason: str, *, holder: str | None = None, now: float | None = None
    ) -> list[Approval]:
        """At gateway start: holds of a previous run died with their connections.

        With `holder`, only that gateway instance's approvals (replicas sharing a store must not
        abort each other's live holds).
        """
        now = time.time() if now is None else now
        where, params = ("holder = ?", [holder]) if holder is not None else ("1 = 1", [])
        return self._end_pending("aborted", reason, now, where, params)

    def _end_pending(
        self, state: str, reason: str, now: float, where: str, params: list[Any]
    ) -> list[Approval]:
        with self._write():
            rows = list(
                self._db.query(
                    f"UPDATE approvals SET state = ?, ended_at = ?, ended_reason = ? "
                    f"WHERE state = 'pending' AND {where} RETURNING *",
                    [state, now, reason, *params],
                )
            )
            if rows:
                self._changed()
        return [_approval(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _decided(
    approval: Approval, who: dict[str, Any], decision: str, reason: str, now: float
) -> Approval:
    """The approval after `who` decides; raises ApprovalError when a rule forbids it."""
    if same_person(who, approval.requester):
        raise ApprovalError("self_approval", "requesters cannot decide their own requests", 403)
    if not approval.is_approver(who):
        raise ApprovalError("not_an_approver", "the caller is in none of the approver groups", 403)
    if any(same_person(who, d) for d in approval.decisions):
        raise ApprovalError("already_decided", "this approver has already decided", 409)
    if decision == "deny" and not reason:
        raise ApprovalError("reason_required", "a denial needs a reason", 400)
    if len(reason) > MAX_REASON_CHARS:
        raise ApprovalError("reason_too_long", f"the reason exceeds {MAX_REASON_CHARS} characters", 400)
    entry = {"iss": who["iss"], "sub": who["sub"], "decision": decision, "reason": reason, "time": now}
    decisions = (*approval.decisions, entry)
    state = approval.state
    if decision == "deny":
        state = "denied"
    elif sum(1 for d in decisions if d["decision"] == "approve") >= approval.approvals_required:
        state = "approved"
    ended = now if state != "pending" else None
    return replace(approval, decisions=decisions, state=state, ended_at=ended)


def _row(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.id,
        "request_id": approval.request_id,
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "state": approval.state,
        "requester": json.dumps(approval.requester),
        "rule": approval.rule,
        "approvals_required": approval.approvals_required,
        "approver_groups": json.dumps(list(approval.approver_groups)),
        "summary": json.dumps(approval.summary),
        "decisions": json.dumps(list(approval.decisions)),
        "ended_at": approval.ended_at,
        "ended_reason": approval.ended_reason,
        "holder": approval.holder,
    }


def _approval(row: Mapping[str, Any]) -> Approval:
    return Approval(
        id=row["id"],
        request_id=row["request_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        state=row["state"],
        requester=json.loads(row["requester"]),
        rule=row["rule"],
        approvals_required=row["approvals_required"],
        approver_groups=tuple(json.loads(row["approver_groups"])),
        summary=json.loads(row["summary"]),
        decisions=tuple(json.loads(row["decisions"])),
        ended_at=row["ended_at"],
        ended_reason=row["ended_reason"],
        holder=row["holder"],
    )
