"""The audit store: one append-only, Merkle-hashed entry per request.

`AuditStore` is the interface the gateway uses; nothing outside phigate.audit assumes SQLite.
`SqliteAuditStore` keeps, in one SQLite file (WAL mode):

  meta          origin (this segment's log identity), creation time, retention, seal marker
  records       seq (0-based, gapless, = Merkle leaf index), id, the canonical JSON entry, its
                leaf hash, and search columns derived from that JSON (verify re-derives them)
  bodies        AES-256-GCM sealed request/response bodies; the entry commits to their SHA-256
  checkpoints   every signed tree head (C2SP signed note)
  tree_state    the tree size and compact frontier, so an append is O(log n)

Triggers refuse UPDATE and DELETE on meta, records, bodies and checkpoints, and any INSERT into
a sealed segment. Triggers stop mistakes, not an attacker with the file: that is what the
Merkle tree, signed checkpoints and exported copies of them (sinks) are for.

Durability: WAL with synchronous=NORMAL survives a killed process (a committed transaction is in
the WAL before COMMIT returns) but may lose the last transactions on power loss or an OS crash;
`durability="full"` fsyncs the WAL on every commit for that case, at a higher append cost.

Retention: HIPAA asks for 6 years (45 CFR 164.316(b)(2)). Segments are never pruned in place:
`seal()` closes the file with a final checkpoint, notes `retain_until`, and starts a new file;
whole sealed segment files are deleted by operators once past that date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import sqlite_utils

from phigate.audit import canonical, merkle, note
from phigate.audit.bodies import BodyKeyring, Sealed
from phigate.audit.sinks import CheckpointSink
from phigate.home import Home

ENTRY_VERSION = 1
DEFAULT_LOG_NAME = "phigate.local/audit"
DEFAULT_RETENTION_YEARS = 6
SIGNING_KEY_FILE = "checkpoint.key"
VERIFIER_KEY_FILE = "checkpoint.vkey"
SEGMENTS_DIR = "audit-segments"
APPEND_ONLY_TABLES = ("meta", "records", "bodies", "checkpoints")
REFUSING_DECISIONS = ("refuse", "deny", "timeout")
_BODY_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
_RECORD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

SEARCH_COLUMNS = (
    "time", "logged", "subject", "groups", "issuer", "endpoint", "method", "model",
    "policy_name", "policy_version", "decision", "status", "entity_types", "approval_state",
    "error",
)


class AuditStore(Protocol):
    """What the gateway and the CLI may use; a PostgreSQL store will implement the same."""

    def append(self, record: dict, bodies: dict[str, bytes] | None = None) -> int: ...
    def append_many(
        self, items: Sequence[tuple[dict, dict[str, bytes] | None]]
    ) -> list[int]: ...
    def checkpoint(self) -> str: ...
    def get(self, seq: int) -> dict | None: ...
    def lookup(self, record_id: str) -> int | None: ...
    def read_bodies(self, seq: int) -> dict[str, bytes]: ...
    def search(self, **filters: Any) -> list[dict]: ...
    def iter_summaries(self, **options: Any) -> Iterator[dict]: ...
    def count(self, **filters: Any) -> int: ...
    def seal(self) -> tuple[Path, str]: ...
    def close(self) -> None: ...


class AuditError(Exception):
    """The store refuses an operation (names the problem, never a record's content)."""


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _sorted_json(values: Any) -> str:
    items = values if isinstance(values, list) else []
    return json.dumps(sorted({str(v) for v in items if v is not None}), separators=(",", ":"))


def _outcome(record: dict) -> str:
    """The final decision: "error" if a stage failed, else the last stage's decision; a
    refused flow never reads "allow" even if the refusing stage did not note a decision."""
    if record.get("error"):
        return "error"
    decisions = [d for d in record.get("decisions") or [] if isinstance(d, dict)]
    last = _text(decisions[-1].get("decision")) if decisions else None
    if record.get("refusal"):
        return last if last in REFUSING_DECISIONS else "refuse"
    return last or "allow"


def _status(record: dict) -> int | None:
    for source in (record.get("refusal"), record.get("upstream")):
        if isinstance(source, dict) and isinstance(source.get("status"), int):
            return source["status"]
    return 500 if record.get("error") else None


def derive_columns(entry: dict) -> dict[str, Any]:
    """The search columns of an entry: a pure function of its canonical JSON."""
    record = entry["record"]
    identity = record.get("identity") or {}
    policy = record.get("policy") or {}
    request = record.get("request") or {}
    approval = record.get("approval") or {}
    error = record.get("error") or {}
    endpoint = _text(record.get("endpoint"))
    started = record.get("started")
    has_start = isinstance(started, int | float) and not isinstance(started, bool)
    masking = [m for m in record.get("masking") or [] if isinstance(m, dict)]
    return {
        "seq": entry["seq"],
        "id": entry["id"],
        "time": float(started) if has_start else entry["logged"],
        "logged": entry["logged"],
        "subject": _text(identity.get("sub")),
        "groups": _sorted_json(identity.get("groups")),
        "issuer": _text(identity.get("iss")),
        "endpoint": endpoint,
        "method": endpoint.split(" ", 1)[0] if endpoint else None,
        "model": _text(request.get("model")),
        "policy_name": _text(policy.get("name")),
        "policy_version": _text(policy.get("version")),
        "decision": _outcome(record),
        "status": _status(record),
        "entity_types": _sorted_json([m.get("entity") for m in masking]),
        "approval_state": _text(approval.get("state")),
        "error": f"{error.get('stage')}:{error.get('kind')}" if error else None,
    }


def _create_schema(db: sqlite_utils.Database, origin: str, retention_years: int) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["records"].create(
        {"seq": int, "id": str, "time": float, "logged": float, "subject": str, "groups": str,
         "issuer": str, "endpoint": str, "method": str, "model": str, "policy_name": str,
         "policy_version": str, "decision": str, "status": int, "entity_types": str,
         "approval_state": str, "error": str, "entry": str, "leaf_hash": bytes},
        pk="seq", not_null=["id", "time", "logged", "entry", "leaf_hash"],
    )
    db["records"].create_index(["id"], unique=True)
    for column in ("time", "subject", "endpoint", "decision", "status"):
        db["records"].create_index([column])
    db["bodies"].create(
        {"seq": int, "kind": str, "key_id": str, "sealed": bytes},
        pk=("seq", "kind"), not_null=["key_id", "sealed"],
    )
    db["checkpoints"].create(
        {"id": int, "size": int, "created": float, "note": str}, pk="id", not_null=["note"]
    )
    db["tree_state"].create({"id": int, "size": int, "frontier": bytes}, pk="id")
    for table in APPEND_ONLY_TABLES:
        for action in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END"
            )
    for table in ("records", "bodies", "checkpoints"):
        db.execute(
            f"CREATE TRIGGER {table}_sealed BEFORE INSERT ON {table} "
            "WHEN EXISTS (SELECT 1 FROM meta WHERE key = 'sealed_at') "
            "BEGIN SELECT RAISE(ABORT, 'audit segment is sealed'); END"
        )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    db["meta"].insert_all(
        [{"key": "origin", "value": origin}, {"key": "created", "value": now},
         {"key": "retention_years", "value": str(retention_years)},
         {"key": "entry_version", "value": str(ENTRY_VERSION)}]
    )
    db["tree_state"].insert({"id": 1, "size": 0, "frontier": b""})


def _years_later(moment: dt.datetime, years: int) -> dt.datetime:
    """The same date `years` later (29 February becomes 28 February in a common year)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def connect(path: Path, durability: Literal["normal", "full"] = "normal") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    return conn


class SqliteAuditStore:
    """The SQLite audit store. Thread-safe for appends; one writer process at a time is the
    intended deployment, but a second one is detected and the tree state reloaded."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        signer: note.Signer,
        keyring: BodyKeyring,
        sinks: Sequence[CheckpointSink] = (),
        durability: Literal["normal", "full"] = "normal",
        retention_years: int = DEFAULT_RETENTION_YEARS,
    ) -> None:
        self.path = Path(path)
        self.signer, self.keyring, self.sinks = signer, keyring, tuple(sinks)
        self.durability = durability
        self.retention_years = retention_years
        self._lock = threading.RLock()
        self._open()

    @classmethod
    def open(
        cls, home: Home, path: str | os.PathLike[str] | None = None, **options: Any
    ) -> SqliteAuditStore:
        """The store at `path` (default home.audit_db) with keys from `home.keys_dir`."""
        signer = note.Signer.load_or_create(home.keys_dir / SIGNING_KEY_FILE, DEFAULT_LOG_NAME)
        vkey_path = home.keys_dir / VERIFIER_KEY_FILE
        if not vkey_path.exists():
            vkey_path.write_text(signer.verifier.vkey + "\n")
        keyring = BodyKeyring(home.keys_dir)
        return cls(path or home.audit_db, signer=signer, keyring=keyring, **options)

    def _open(self) -> None:
        self._conn = connect(self.path, self.durability)
        writer = sqlite_utils.Database(self._conn)
        if not writer["meta"].exists():
            with self._transaction():
                origin = f"{self.signer.name}/{uuid.uuid4().hex[:16]}"
                _create_schema(writer, origin, self.retention_years)
        # Reads use their own connection: they never see another thread's open write
        # transaction, and a long export does not hold up appends (WAL readers don't block).
        self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(self._reader)
        origin_row = self._conn.execute("SELECT value FROM meta WHERE key = 'origin'").fetchone()
        self.origin: str = origin_row[0]
        self._tree = self._stored_tree()

    def _stored_tree(self) -> merkle.CompactRange:
        size, frontier = self._conn.execute(
            "SELECT size, frontier FROM tree_state WHERE id = 1"
        ).fetchone()
        return merkle.CompactRange.from_bytes(size, frontier)

    def _transaction(self):
        return _Transaction(self._conn)

    @property
    def size(self) -> int:
        return self._tree.size

    def _new_id(self, record: dict) -> str:
        wanted = record.get("request_id")
        if isinstance(wanted, str) and _RECORD_ID.fullmatch(wanted):
            taken = self._conn.execute("SELECT 1 FROM records WHERE id = ?", (wanted,)).fetchone()
            if not taken:
                return wanted
        return uuid.uuid4().hex  # a replayed flow keeps its request id: give the copy its own

    def append(self, record: dict, bodies: dict[str, bytes] | None = None) -> int:
        """Append one record (PHI-free by contract) and its bodies (sealed here); its seq."""
        return self.append_many([(record, bodies)])[0]

    def append_many(self, items: Sequence[tuple[dict, dict[str, bytes] | None]]) -> list[int]:
        """Append records and their bodies in one transaction; their seqs, in order.

        One BEGIN IMMEDIATE ... COMMIT (one WAL sync with durability "full") for the lot is what
        makes group commit cheap. All or nothing: if one record fails, none is written and the
        in-memory tree stays where it was (it only advances once the COMMIT has returned).
        """
        items = list(items)
        for _, bodies in items:
            for kind in bodies or {}:
                if not _BODY_KIND.fullmatch(kind):
                    raise AuditError("body kind must be a short lowercase name")
        if not items:
            return []
        with self._lock:
            with self._transaction():
                self._sync_tree()
                tree = merkle.CompactRange(self._tree.size, self._tree.hashes)
                seqs = [self._insert(tree, record, bodies) for record, bodies in items]
                self._conn.execute(
                    "UPDATE tree_state SET size = ?, frontier = ? WHERE id = 1",
                    (tree.size, tree.to_bytes()),
                )
            self._tree = tree  # only once committed
        return seqs

    def _insert(self, tree: merkle.CompactRange, record: dict,
                bodies: dict[str, bytes] | None) -> int:
        """Inside a write transaction: insert one entry and its bodies as leaf `tree.size`."""
        seq = tree.size
        record_id = self._new_id(record)
        sealed = {k: self.keyring.seal(record_id, k, v) for k, v in (bodies or {}).items()}
        entry = {
            "v": ENTRY_VERSION,
            "seq": seq,
            "id": record_id,
            "logged": time.time(),
            "record": record,
            "bodies": {
                kind: {"key_id": s.key_id, "sha256": hashlib.sha256(s.blob).hexdigest(),
                       "size": len(s.blob)}
                for kind, s in sealed.items()
            },
        }
        text = canonical.dumps(entry)
        leaf = merkle.leaf_hash(text.encode())
        columns = derive_columns(entry)
        values = [columns[c] for c in ("seq", "id", *SEARCH_COLUMNS)]
        self._conn.execute(_INSERT_RECORD, [*values, text, leaf])
        self._conn.executemany(
            "INSERT INTO bodies (seq, kind, key_id, sealed) VALUES (?, ?, ?, ?)",
            [(seq, kind, s.key_id, s.blob) for kind, s in sealed.items()],
        )
        tree.append(leaf)
        return seq

    def _sync_tree(self) -> None:
        """Inside a write transaction: pick up appends made by another connection."""
        (size,) = self._conn.execute("SELECT size FROM tree_state WHERE id = 1").fetchone()
        if size != self._tree.size:
            self._tree = self._stored_tree()

    def checkpoint(self) -> str:
        """Sign the current tree head, store it, export it to every sink; the signed note.

        Stored before export: a sink failure raises SinkError but the checkpoint is kept (the
        next successful export covers it: a later head proves every earlier one). The caller
        chooses the cadence, e.g. every N records or T seconds, off the event loop.
        """
        with self._lock:
            with self._transaction():
                self._sync_tree()
                head = note.Checkpoint(self.origin, self._tree.size, self._tree.root())
                signed = note.sign(head.text(), self.signer)
                self._conn.execute(
                    "INSERT INTO checkpoints (size, created, note) VALUES (?, ?, ?)",
                    (head.size, time.time(), signed),
                )
            for sink in self.sinks:
                sink.publish(signed)
        return signed

    def get(self, seq: int) -> dict | None:
        row = self._reader.execute(
            "SELECT entry, leaf_hash FROM records WHERE seq = ?", (seq,)
        ).fetchone()
        if row is None:
            return None
        entry = json.loads(row[0])
        return {**entry, "canonical": row[0], "leaf_hash": row[1].hex()}

    def lookup(self, record_id: str) -> int | None:
        row = self._reader.execute("SELECT seq FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else row[0]

    def read_bodies(self, seq: int) -> dict[str, bytes]:
        """Decrypt a record's bodies (raises BodyError if a key is missing or bytes altered)."""
        record_id = self._reader.execute("SELECT id FROM records WHERE seq = ?", (seq,)).fetchone()
        if record_id is None:
            raise AuditError(f"no record {seq}")
        rows = self._reader.execute(
            "SELECT kind, key_id, sealed FROM bodies WHERE seq = ? ORDER BY kind", (seq,)
        )
        return {
            kind: self.keyring.open(record_id[0], kind, Sealed(key_id, blob))
            for kind, key_id, blob in rows
        }

    def search(
        self,
        *,
        subject: str | None = None,
        group: str | None = None,
        since: float | None = None,
        until: float | None = None,
        endpoint: str | None = None,
        entity_type: str | None = None,
        decision: str | None = None,
        status: int | None = None,
        limit: int | None = 100,
        newest_first: bool = True,
    ) -> list[dict]:
        """Summaries of matching records (search columns only, groups/entities as lists)."""
        return list(
            self.iter_summaries(
                subject=subject, group=group, since=since, until=until, endpoint=endpoint,
                entity_type=entity_type, decision=decision, status=status, limit=limit,
                newest_first=newest_first,
            )
        )

    def iter_summaries(self, *, limit: int | None = None, newest_first: bool = False,
                       with_entry: bool = False, **filters: Any) -> Iterator[dict]:
        where, params = _where(**filters)
        columns = ", ".join(("seq", "id", *SEARCH_COLUMNS, *(("entry",) if with_entry else ())))
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {columns} FROM records {where} ORDER BY seq {order}"
        sql += " LIMIT ?" if limit else ""
        for row in self.db.query(sql, [*params, *([limit] if limit else [])]):
            row["groups"] = json.loads(row["groups"])
            row["entity_types"] = json.loads(row["entity_types"])
            if with_entry:
                row["record"] = json.loads(row.pop("entry"))["record"]
            yield row

    def count(self, **filters: Any) -> int:
        where, params = _where(**filters)
        return self._reader.execute(f"SELECT count(*) FROM records {where}", params).fetchone()[0]

    def seal(self) -> tuple[Path, str]:
        """Close this segment (final checkpoint, seal marker) and start a new file at `path`.

        The sealed file moves to `<folder>/audit-segments/`; returns its path and final note.
        Run it in the process that owns the store, or with the gateway stopped.
        """
        with self._lock:
            final = self.checkpoint()
            sealed_at = dt.datetime.now(dt.UTC)
            retain_until = _years_later(sealed_at, self.retention_years)
            with self._transaction():
                self._conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("retain_until", retain_until.isoformat(timespec="seconds")),
                     ("final_checkpoint", final),
                     ("sealed_at", sealed_at.isoformat(timespec="seconds"))],
                )
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.close()
            folder = self.path.parent / SEGMENTS_DIR
            folder.mkdir(mode=0o700, exist_ok=True)
            stamp = sealed_at.strftime("%Y%m%dT%H%M%SZ")
            target = folder / f"{self.path.stem}-{stamp}-{self.origin.rsplit('/', 1)[-1]}.db"
            os.replace(self.path, target)
            self._open()
            return target, final

    def close(self) -> None:
        self._reader.close()
        self._conn.close()


_INSERT_RECORD = (
    "INSERT INTO records (seq, id, "
    + ", ".join(SEARCH_COLUMNS)
    + ", entry, leaf_hash) VALUES ("
    + ", ".join("?" * (len(SEARCH_COLUMNS) + 4))
    + ")"
)


def _where(
    *,
    subject: str | None = None,
    group: str | None = None,
    since: float | None = None,
    until: float | None = None,
    endpoint: str | None = None,
    entity_type: str | None = None,
    decision: str | None = None,
    status: int | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("subject", subject), ("endpoint", endpoint), ("decision", decision),
                          ("status", status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    if until is not None:
        clauses.append("time < ?")
        params.append(until)
    for column, value in (("groups", group), ("entity_types", entity_type)):
        if value is not None:
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(records.{column}) WHERE value = ?)")
            params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (nothing half-written).

    A failed COMMIT can leave the transaction open (SQLITE_BUSY) and some errors (a full disk)
    end it themselves: either way the connection comes out with no transaction, so the next
    append can work again once the fault is gone."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self.conn.execute("COMMIT")
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
