"""The client side: the openai SDK (async) sending bounded batches of requests to one target."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import openai

from .procs import Proc

# One request; returns the time to the first streamed text (seconds) or None when not streamed.
Send = Callable[[openai.AsyncOpenAI, int], Awaitable[float | None]]


@dataclass
class Target:
    name: str
    proc: Proc
    client: openai.AsyncOpenAI


def client_for(port: int, api_key: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                             timeout=120, trust_env=False)
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key,
                              max_retries=0, http_client=http)


@dataclass
class Batch:
    """Latencies (and first-text times) of one batch, with the gateway's CPU and memory."""
    latencies: list[float] = field(default_factory=list)
    first_text: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    wall: float = 0.0
    cpu: float = 0.0
    memory: dict = field(default_factory=dict)

    @property
    def done(self) -> int:
        return len(self.latencies)


async def drive(target: Target, send: Send, count: int, concurrency: int, time_limit: float,
                start: int = 0) -> Batch:
    """Send requests `start`..`start+count-1` from `concurrency` workers; stop early at
    `time_limit` seconds (what finished is reported)."""
    batch, indexes = Batch(), itertools.count(start)
    deadline = time.perf_counter() + time_limit

    async def worker() -> None:
        for index in indexes:
            if index >= start + count or time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            try:
                first = await send(target.client, index)
            except openai.APIStatusError as error:
                batch.errors[f"{error.status_code} {error.code or type(error).__name__}"] += 1
                continue
            except (openai.APIError, httpx.HTTPError) as error:
                batch.errors[type(error).__name__] += 1
                continue
            batch.latencies.append(time.perf_counter() - started)
            if first is not None:
                batch.first_text.append(first)

    cpu_before, started = target.proc.cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    batch.wall = time.perf_counter() - started
    batch.cpu = target.proc.cpu_seconds() - cpu_before
    batch.memory = target.proc.memory_mb()
    return batch


def merge(batches: list[Batch]) -> Batch:
    """Several batches of one target as one (memory: the last reading)."""
    merged = Batch(memory=batches[-1].memory)
    for batch in batches:
        merged.latencies += batch.latencies
        merged.first_text += batch.first_text
        merged.errors += batch.errors
        merged.wall += batch.wall
        merged.cpu += batch.cpu
    return merged


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(batch: Batch) -> dict:
    ms = [v * 1e3 for v in batch.latencies]
    result = {"requests": batch.done, "errors": dict(batch.errors),
              "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
              "requests_per_s": batch.done / batch.wall if batch.wall else 0.0,
              "cpu_ms_per_request": batch.cpu / batch.done * 1e3 if batch.done else float("nan"),
              "cpu_s": batch.cpu, "wall_s": batch.wall, **batch.memory}
    if batch.first_text:
        first = [v * 1e3 for v in batch.first_text]
        result |= {"ttft_p50_ms": percentile(first, 50), "ttft_p95_ms": percentile(first, 95),
                   "ttlt_p50_ms": result["p50_ms"], "ttlt_p95_ms": result["p95_ms"]}
    return result
