"""The append-only, tamper-evident audit log (no mitmproxy import).

    store = open_store(Home.open())
    seq = store.append(flow_record, {"request": body_bytes})
    note = store.checkpoint()

`batch.GroupCommitter(store)` is the gateway's writer thread: records submitted while a commit
runs share the next transaction (`store.append_many`).

`verify.verify()` checks a database file end to end; `verify.prove()` and `verify.check_proof()`
give third parties an inclusion proof they can check with only the log's verifier key.
"""

from __future__ import annotations

import os
from typing import Any

from phigate.audit.store import AuditStore, SqliteAuditStore
from phigate.home import Home


def open_store(
    home: Home, path: str | os.PathLike[str] | None = None, **options: Any
) -> AuditStore:
    """The configured audit store (today: SQLite at `path`, default `home.audit_db`).

    Options: sinks, durability ("normal" | "full"), retention_years.
    """
    return SqliteAuditStore.open(home, path, **options)


__all__ = ["AuditStore", "open_store"]
