"""Readiness checks: each answers (ok, reason) and never raises; reasons name, never quote.

The audit probe is cheap on purpose (two access() calls and a statvfs): readiness is polled
every few seconds, and a real test write would grow the log.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

Check = tuple[bool, str]
# Below this much free space an append may fail at any moment (a WAL frame is one page; the
# margin covers a checkpoint and the bodies of a large request).
MIN_FREE_BYTES = 8 * 1024 * 1024


def audit_writable(db: Path, *, healthy: bool, min_free: int = MIN_FREE_BYTES) -> Check:
    if not healthy:
        return False, "the last audit append failed"
    folder = db.parent
    for path in (db, folder):
        if path.exists() and not os.access(path, os.W_OK):
            return False, f"{'audit database' if path == db else 'audit folder'} is not writable"
    try:
        stats = os.statvfs(folder)
    except OSError as exc:
        return False, f"audit folder cannot be checked ({type(exc).__name__})"
    if stats.f_bavail * stats.f_frsize < min_free:
        return False, "audit folder is (nearly) full"
    return True, "ok"


def latest_checkpoint_time(db: Path) -> float | None:
    """When the newest signed checkpoint was made (read-only connection; None if none)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return None
    try:
        (created,) = conn.execute("SELECT max(created) FROM checkpoints").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return created


def readiness(checks: dict[str, Check]) -> tuple[bool, dict]:
    """Overall readiness and the JSON body that explains it."""
    ready = all(ok for ok, _ in checks.values())
    return ready, {"ready": ready,
                   "checks": {name: {"ok": ok, "reason": reason}
                              for name, (ok, reason) in checks.items()}}
