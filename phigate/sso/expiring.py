"""A bounded, thread-safe map whose entries expire: outstanding logins and replay caches.

When it is full of live entries it refuses new ones (`Full`) rather than evict a live entry:
evicting would forget an outstanding request (harmless) or a seen assertion (a replay window).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class Full(RuntimeError):
    """Every slot holds a live entry."""


class ExpiringMap:
    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()  # insertion order
        self._lock = threading.Lock()

    def add(self, key: str, value: Any, expires_at: float) -> bool:
        """Store a new key; False if it is already present and live (a replay)."""
        with self._lock:
            now = self._clock()
            self._drop_expired(now)
            held = self._entries.get(key)
            if held is not None and held[0] > now:
                return False
            if len(self._entries) >= self._max:
                self._sweep(now)
            if len(self._entries) >= self._max:
                raise Full("too many live entries")
            self._entries[key] = (expires_at, value)
            return True

    def pop(self, key: str) -> Any | None:
        """Remove and return a live entry's value (so it can be used once), else None."""
        with self._lock:
            held = self._entries.pop(key, None)
            if held is None or held[0] <= self._clock():
                return None
            return held[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _drop_expired(self, now: float) -> None:
        # Cheap and usually enough: entries mostly expire in insertion order.
        while self._entries:
            key, (expires_at, _) = next(iter(self._entries.items()))
            if expires_at > now:
                break
            del self._entries[key]

    def _sweep(self, now: float) -> None:
        # Entries with different lifetimes expire out of order: reclaim every expired one.
        for key in [key for key, (expires_at, _) in self._entries.items() if expires_at <= now]:
            del self._entries[key]
