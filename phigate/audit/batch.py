"""Group commit: one writer thread that appends whatever has queued in one transaction.

A transaction per record pays a BEGIN IMMEDIATE/COMMIT (a WAL fsync with durability "full")
and a thread hand-off per record. Here callers queue their record and get a future; the writer
thread takes everything that queued while the previous commit ran (up to `max_batch`) and
appends it with one `append_many`. Nothing waits to fill a batch: a lone record is committed at
once, and batches only grow when records arrive faster than commits, which is when they pay.

A batch is all or nothing, so when one fails its records are retried one by one: a bad record
fails only its own future, never its neighbours'. Other store work (checkpoint, close, reopen)
runs on the same thread, in queue order, so it never interleaves with a batch. `close()` drains
the queue: every record submitted before it is committed (or its future fails).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from phigate.audit.store import AuditStore

DEFAULT_MAX_BATCH = 256


@dataclass
class _Append:
    record: dict
    bodies: dict[str, bytes] | None
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    future: Future = field(default_factory=Future)


class GroupCommitter:
    """Owns the audit store's writer thread; `store` is only touched from that thread."""

    def __init__(self, store: AuditStore | None = None, *, max_batch: int = DEFAULT_MAX_BATCH,
                 name: str = "phigate-audit") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.store = store
        self.max_batch = max_batch
        self._queue: deque[_Append | _Call] = deque()
        self._wakeup = threading.Condition()
        self._closed = False
        # Daemon: a committer nobody closes must not hang interpreter exit; close() drains.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def submit(self, record: dict, bodies: dict[str, bytes] | None = None) -> Future[int]:
        """Queue a record for the next commit; the future gives its seq once committed."""
        return self._put(_Append(record, bodies)).future

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run `fn(*args, **kwargs)` on the writer thread after everything queued before it."""
        return self._put(_Call(fn, args, kwargs)).future

    def replace(self, opener: Callable[[], AuditStore]) -> Future[AuditStore]:
        """Close the current store and use the one `opener()` returns, in queue order."""
        return self.call(self._replace, opener)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, commit everything already queued, and stop the thread."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        if self._started and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _put(self, item: _Append | _Call) -> _Append | _Call:
        # Running from the start: a caller that stops waiting (a cancelled asyncio task)
        # cannot take a record back out of the log; it is written all the same.
        item.future.set_running_or_notify_cancel()
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            self._queue.append(item)
            if not self._started:
                self._started = True
                self._thread.start()
            self._wakeup.notify()
        return item

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._closed:
                    self._wakeup.wait()
                if not self._queue:
                    return  # closed and drained
                work = self._take()
            if isinstance(work, _Call):
                _settle(work.future, work.fn, *work.args, **work.kwargs)
            else:
                self._commit(work)

    def _take(self) -> _Call | list[_Append]:
        """The next call alone, or the run of appends at the head of the queue (bounded)."""
        if isinstance(self._queue[0], _Call):
            return self._queue.popleft()
        batch: list[_Append] = []
        while self._queue and len(batch) < self.max_batch and isinstance(self._queue[0], _Append):
            batch.append(self._queue.popleft())
        return batch

    def _commit(self, batch: list[_Append]) -> None:
        if len(batch) == 1:
            _settle(batch[0].future, self._append_one, batch[0])
            return
        try:
            seqs = self.store.append_many([(a.record, a.bodies) for a in batch])
        except Exception:
            for item in batch:  # nothing of the batch was written: find the bad record(s)
                _settle(item.future, self._append_one, item)
            return
        for item, seq in zip(batch, seqs):
            item.future.set_result(seq)

    def _append_one(self, item: _Append) -> int:
        return self.store.append_many([(item.record, item.bodies)])[0]

    def _replace(self, opener: Callable[[], AuditStore]) -> AuditStore:
        if self.store is not None:
            old, self.store = self.store, None
            old.close()
        self.store = opener()
        return self.store


def _settle(future: Future, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run fn and hand its result or exception to the future (the thread never dies of it)."""
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the caller of the future decides
        future.set_exception(exc)
    else:
        future.set_result(result)
