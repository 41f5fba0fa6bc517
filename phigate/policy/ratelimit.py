"""A per-caller rate limiter: one token bucket per caller, refilled continuously.

A caller may burst up to `rate_per_minute` requests, then gets one more every 60/rate seconds.
The clock is injectable so tests need no sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateResult:
    allowed: bool
    retry_after: float = 0.0  # seconds until one request is available again


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_callers: int = 100_000) -> None:
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill)
        self._lock = threading.Lock()

    def check(self, caller: str, rate_per_minute: int) -> RateResult:
        """Take one request from `caller`'s bucket if there is one."""
        per_second = rate_per_minute / 60.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(caller, (float(rate_per_minute), now))
            tokens = min(float(rate_per_minute), tokens + (now - last) * per_second)
            if tokens >= 1.0:
                self._store(caller, tokens - 1.0, now)
                return RateResult(True)
            self._store(caller, tokens, now)
            return RateResult(False, (1.0 - tokens) / per_second)

    def _store(self, caller: str, tokens: float, now: float) -> None:
        if caller not in self._buckets and len(self._buckets) >= self._max_callers:
            # Forget the caller idle longest: its bucket is the fullest, so forgetting it
            # (a fresh caller starts full) loses the least.
            oldest = min(self._buckets, key=lambda key: self._buckets[key][1])
            del self._buckets[oldest]
        self._buckets[caller] = (tokens, now)
