"""Independent verification of an audit segment, and inclusion proofs for third parties.

`verify` trusts nothing in the file: it re-hashes every canonical entry, re-derives every search
column from it, checks seq is gapless and matches the entry, checks body ciphertext hashes,
rebuilds the Merkle tree, and checks every signed checkpoint (stored and externally kept) against
the rebuilt tree. Each signed checkpoint's root must equal the rebuilt root at its size, which is
strictly stronger than a consistency proof between two signed heads: it proves every pair of
checkpoints consistent with each other and with the records. A checkpoint for more records than
the file holds is a truncated tail.

Where an attacker rewrote an entry and its stored leaf hash consistently, only a signature can
tell; the failure then names the first record after the last checkpoint that still matches.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phigate.audit import merkle, note
from phigate.audit.store import derive_columns

@dataclass(frozen=True)
class Failure:
    reason: str
    seq: int | None = None
    id: str | None = None


@dataclass
class Report:
    origin: str | None = None
    records: int = 0
    root: str | None = None
    checkpoints: int = 0
    external_checkpoints: int = 0
    external_skipped: int = 0
    latest_signed_size: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def first_failure(self) -> Failure | None:
        """The failure at the lowest seq (failures without a seq come last)."""
        ranked = sorted(self.failures, key=lambda f: (f.seq is None, f.seq or 0))
        return ranked[0] if ranked else None

    @property
    def unsigned_tail(self) -> int:
        """Records appended since the last signed checkpoint (not yet covered by a signature)."""
        return max(self.records - self.latest_signed_size, 0)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            **asdict(self),
            "ok": self.ok,
            "unsigned_tail": self.unsigned_tail,
            "first_failure": asdict(first) if first else None,
        }


def _connect_readonly(db_path: str | Path) -> sqlite3.Connection:
    path = Path(db_path)
    if not path.exists():
        raise FileNotFoundError(f"no audit database at {path}")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _entry_bytes(row: sqlite3.Row) -> bytes:
    raw = row["entry"]
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw or b"")


def _check_row(
    row: sqlite3.Row, expected_seq: int, bodies: dict[str, tuple[str, bytes]]
) -> str | None:
    """Why this row is not a faithful record at `expected_seq`, or None."""
    if not isinstance(row["entry"], str):
        return "entry is not text"
    try:
        entry = json.loads(row["entry"])
        columns = derive_columns(entry)
    except (ValueError, TypeError, KeyError, AttributeError):
        return "entry is not a valid canonical record"
    if entry.get("seq") != expected_seq:
        return f"entry says seq {entry.get('seq')!r}: rows were moved or reordered"
    for column, value in columns.items():
        if row[column] != value:
            return f"column {column} differs from the canonical entry"
    if row["leaf_blob"] != merkle.leaf_hash(_entry_bytes(row)):
        return "stored leaf hash differs from the entry"
    declared = entry.get("bodies") or {}
    if set(declared) != set(bodies):
        return "body rows differ from the bodies the entry declares"
    for kind, (key_id, blob) in bodies.items():
        meta = declared[kind]
        if meta.get("sha256") != hashlib.sha256(blob).hexdigest() or meta.get("key_id") != key_id:
            return f"body {kind} was altered"
    return None


def verify(
    db_path: str | Path,
    trusted_checkpoints: list[str] | None = None,
    verifier_key: str | note.Verifier = "",
) -> Report:
    """Check a segment file; `trusted_checkpoints` are signed notes kept outside the file."""
    verifier = (
        verifier_key
        if isinstance(verifier_key, note.Verifier)
        else note.Verifier.from_vkey(verifier_key)
    )
    report = Report()
    conn = _connect_readonly(db_path)
    conn.row_factory = sqlite3.Row
    # Tampered text may not be UTF-8: read it anyway, so it fails a check instead of the run.
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    try:
        meta = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}
        report.origin = meta.get("origin")
        claims = _signed_claims(conn, trusted_checkpoints or [], verifier, report)
        wanted_sizes = {size for size, _, _ in claims}
        tree, roots, ids = _rebuild(conn, report, wanted_sizes)
        _check_claims(claims, roots, ids, report)
        _check_tree_state(conn, tree, report)
    except sqlite3.DatabaseError as exc:  # dropped tables or columns, a damaged file
        report.failures.append(Failure(f"database structure is damaged ({type(exc).__name__})"))
    finally:
        conn.close()
    return report


def _rebuild(conn: sqlite3.Connection, report: Report, wanted_sizes: set[int]):
    """Check every record in seq order; the rebuilt roots at the wanted sizes (+ the last)."""
    tree = merkle.CompactRange()
    roots = {0: merkle.EMPTY_ROOT}
    ids: dict[int, str] = {}
    bodies_rows = conn.execute(
        "SELECT seq, kind, key_id, CAST(sealed AS BLOB) AS sealed FROM bodies ORDER BY seq, kind"
    )
    pending_body = next(bodies_rows, None)
    expected = 0
    for row in conn.execute(
        "SELECT *, CAST(leaf_hash AS BLOB) AS leaf_blob FROM records ORDER BY seq"
    ):
        seq = row["seq"]
        bodies: dict[str, tuple[str, bytes]] = {}
        while pending_body is not None and pending_body["seq"] <= seq:
            if pending_body["seq"] == seq:
                bodies[pending_body["kind"]] = (pending_body["key_id"], pending_body["sealed"])
            else:
                report.failures.append(Failure("body rows without a record", pending_body["seq"]))
            pending_body = next(bodies_rows, None)
        if seq != expected:
            report.failures.append(Failure(f"records {expected}..{seq - 1} are missing", expected))
        problem = _check_row(row, seq, bodies)
        if problem:
            report.failures.append(Failure(problem, seq, row["id"]))
        expected = seq + 1
        ids[tree.size] = row["id"]
        # Keep hashing what is there: the checkpoints then show how far the damage goes.
        tree.append(merkle.leaf_hash(_entry_bytes(row)))
        if tree.size in wanted_sizes:
            roots[tree.size] = tree.root()
    if pending_body is not None:
        report.failures.append(Failure("body rows without a record", pending_body["seq"]))
    report.records = tree.size
    roots[tree.size] = tree.root()
    report.root = roots[tree.size].hex()
    return tree, roots, ids


def _signed_claims(conn, external: list[str], verifier: note.Verifier, report: Report):
    """(size, root, source) of every checkpoint with a valid signature for this log."""
    claims: list[tuple[int, bytes, str]] = []
    previous = -1
    for row in conn.execute("SELECT id, size, note FROM checkpoints ORDER BY id"):
        try:
            head = note.open_checkpoint(row["note"], verifier)
        except note.NoteError as exc:
            report.failures.append(Failure(f"stored checkpoint {row['id']}: {exc}"))
            continue
        if head.origin != report.origin or head.size != row["size"]:
            reason = f"stored checkpoint {row['id']} is for another log or size"
            report.failures.append(Failure(reason))
            continue
        if head.size < previous:
            report.failures.append(Failure(f"stored checkpoint {row['id']} goes back in size"))
        previous = max(previous, head.size)
        claims.append((head.size, head.root, f"stored checkpoint {row['id']}"))
        report.checkpoints += 1
    for i, text in enumerate(external):
        try:
            head = note.open_checkpoint(text, verifier)
        except note.NoteError as exc:
            report.failures.append(Failure(f"external checkpoint {i}: {exc}"))
            continue
        if head.origin != report.origin:
            report.external_skipped += 1  # another segment's checkpoint in a shared sink file
            continue
        claims.append((head.size, head.root, f"external checkpoint {i}"))
        report.external_checkpoints += 1
    report.latest_signed_size = max((size for size, _, _ in claims), default=0)
    return claims


def _check_claims(claims, roots: dict[int, bytes], ids: dict[int, str], report: Report) -> None:
    good_sizes = sorted({0} | {s for s, r, _ in claims if roots.get(s) == r})
    named = {f.seq for f in report.failures if f.seq is not None}
    for size, root, source in sorted(claims):
        if size > report.records:
            report.failures.append(
                Failure(f"{source} covers {size} records, the file has {report.records}: "
                        "the tail was truncated", report.records)
            )
        elif roots[size] != root:
            start = max(s for s in good_sizes if s < size)
            reason = f"records {start}..{size - 1} do not match the signed root of {source}"
            if any(start <= seq < size for seq in named):
                report.failures.append(Failure(reason))  # already pinned to a record
            else:
                report.failures.append(Failure(reason, start, ids.get(start)))


def _check_tree_state(conn, tree: merkle.CompactRange, report: Report) -> None:
    row = conn.execute("SELECT size, frontier FROM tree_state WHERE id = 1").fetchone()
    if row is None or row["size"] != tree.size or bytes(row["frontier"]) != tree.to_bytes():
        report.failures.append(Failure("tree state differs from the records"))


# -- inclusion proofs --------------------------------------------------------------------------


class ProofError(ValueError):
    """An inclusion proof does not check out (names the failing step)."""


def prove(db_path: str | Path, seq: int) -> dict[str, Any]:
    """An inclusion proof of record `seq` under the newest stored checkpoint that covers it.

    The result holds everything a third party needs: the record's canonical JSON, the signed
    checkpoint and the audit path; check it with `check_proof` and the log's verifier key.
    """
    conn = _connect_readonly(db_path)
    try:
        row = conn.execute("SELECT entry FROM records WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise ProofError(f"no record {seq}")
        cp = conn.execute(
            "SELECT size, note FROM checkpoints WHERE size > ? ORDER BY id DESC LIMIT 1", (seq,)
        ).fetchone()
        if cp is None:
            raise ProofError(f"no checkpoint covers record {seq} yet: run checkpoint first")
        size, checkpoint = cp
        leaves = [bytes(h) for (h,) in conn.execute(
            "SELECT leaf_hash FROM records WHERE seq < ? ORDER BY seq", (size,)
        )]
    finally:
        conn.close()
    if len(leaves) != size:
        raise ProofError("the file holds fewer records than its checkpoint")
    return {
        "seq": seq,
        "tree_size": size,
        "leaf_hash": merkle.leaf_hash(row[0].encode()).hex(),
        "inclusion_path": [h.hex() for h in merkle.inclusion_proof(seq, leaves)],
        "canonical": row[0],
        "checkpoint": checkpoint,
    }


def check_proof(
    proof: dict[str, Any],
    verifier_key: str,
    canonical: str | None = None,
    checkpoint: str | None = None,
) -> note.Checkpoint:
    """Check an inclusion proof; raises ProofError, returns the checkpoint it is proven under.

    `canonical` and `checkpoint` default to the copies inside `proof`; pass your own to check
    the record text you hold against a checkpoint you kept.
    """
    canonical = proof["canonical"] if canonical is None else canonical
    checkpoint = proof["checkpoint"] if checkpoint is None else checkpoint
    try:
        head = note.open_checkpoint(checkpoint, note.Verifier.from_vkey(verifier_key))
        path = [bytes.fromhex(h) for h in proof["inclusion_path"]]
        seq, size = int(proof["seq"]), int(proof["tree_size"])
    except note.NoteError as exc:
        raise ProofError(f"checkpoint: {exc}") from None
    except (KeyError, ValueError, TypeError):
        raise ProofError("proof is malformed") from None
    if size != head.size:
        raise ProofError("proof is for another tree size than the checkpoint")
    if json.loads(canonical).get("seq") != seq:
        raise ProofError("record text is for another seq")
    leaf = merkle.leaf_hash(canonical.encode())
    if not merkle.verify_inclusion(seq, size, leaf, path, head.root):
        raise ProofError("record is not included under the checkpoint's root")
    return head
