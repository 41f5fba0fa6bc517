"""Benchmark the audit log: append rate with periodic checkpoints, then a full verify.

    .venv/bin/python scripts/bench_audit.py --records 100000 --checkpoint-every 1000
    .venv/bin/python scripts/bench_audit.py --records 20000 --threads 16 --writer group

Prints a Markdown table. Records look like the gateway's (identity, policy, masking actions)
and carry an encrypted request and response body each. Without --threads, one thread calls
`append` directly. With --threads N, N callers each append a record and wait for its commit,
as concurrent flows do in the recorder: through the group committer (`--writer group`, one
transaction for whatever queued meanwhile) or through one executor thread with a transaction
per record (`--writer executor`, the recorder before group commit).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from phigate.audit.batch import GroupCommitter
from phigate.audit.store import SqliteAuditStore
from phigate.audit.verify import check_proof, prove, verify
from phigate.home import Home


def sample_record(n: int) -> dict:
    return {
        "request_id": f"{n:032x}",
        "started": time.time(),
        "client": "10.0.0.7:51514",
        "mode": "reverse",
        "endpoint": "POST /v1/chat/completions",
        "identity": {"iss": "https://idp.example", "sub": f"user{n % 500}",
                     "groups": ["clinicians"], "jti": f"{n:016x}", "exp": 1_795_000_000,
                     "source": "authorization"},
        "policy": {"name": "default", "version": "0123456789abcdef"},
        "request": {"model": "gpt-4o-mini", "stream": False, "max_tokens": 256, "tools": [],
                    "body_bytes": 900},
        "decisions": [{"stage": "guardrails", "decision": "allow", "rule": "", "detail": ""}],
        "masking": [{"direction": "request", "path": "messages[1].content", "entity": "PERSON",
                     "operator": "pseudonym", "count": 2, "score": 0.85}],
        "upstream": {"status": 200, "latency_ms": 412.3, "usage": {"total_tokens": 310}},
    }


def direct(store: SqliteAuditStore, args, bodies) -> tuple[list[float], list[float]]:
    """One thread, `append` then (every N records) `checkpoint`, each timed."""
    latencies, checkpoint_latencies = [], []
    for n in range(args.records):
        t0 = time.perf_counter()
        store.append(sample_record(n), bodies)
        latencies.append(time.perf_counter() - t0)
        if (n + 1) % args.checkpoint_every == 0:
            t0 = time.perf_counter()
            store.checkpoint()
            checkpoint_latencies.append(time.perf_counter() - t0)
    return latencies, checkpoint_latencies


def concurrent(store: SqliteAuditStore, args, bodies) -> tuple[list[float], list[float]]:
    """`--threads` callers, each submitting a record and waiting for its commit, as flows do."""
    if args.writer == "group":
        committer = GroupCommitter(store)
        submit: Callable[..., Future] = committer.submit
        run, stop = committer.call, committer.close
    else:
        executor = ThreadPoolExecutor(max_workers=1)
        submit = lambda record, bodies: executor.submit(store.append, record, bodies)  # noqa: E731
        run, stop = executor.submit, executor.shutdown
    latencies, checkpoint_latencies = [], []
    numbers, lock = iter(range(args.records)), threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            t0 = time.perf_counter()
            submit(sample_record(n), bodies).result()
            latencies.append(time.perf_counter() - t0)
            if (n + 1) % args.checkpoint_every == 0:
                t0 = time.perf_counter()
                run(store.checkpoint).result()
                checkpoint_latencies.append(time.perf_counter() - t0)

    callers = [threading.Thread(target=caller) for _ in range(args.threads)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    stop()
    return latencies, checkpoint_latencies


def count_transactions(store: SqliteAuditStore) -> list[int]:
    """The number of records of every append transaction, from now on."""
    batches: list[int] = []
    append_many = store.append_many

    def counted(items):
        batches.append(len(items))
        return append_many(items)

    store.append_many = counted
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--body-bytes", type=int, default=1000)
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    parser.add_argument("--threads", type=int, default=0,
                        help="concurrent callers that each wait for their commit "
                             "(0: one thread calling append directly)")
    parser.add_argument("--writer", choices=["group", "executor"], default="group",
                        help="with --threads: the group committer, or a transaction per record "
                             "on one executor thread")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        home = Home.open(Path(folder))
        store = SqliteAuditStore.open(home, durability=args.durability)
        bodies = {"request": b"r" * args.body_bytes, "response": b"s" * args.body_bytes}
        batches = count_transactions(store)
        cpu, started = time.process_time(), time.perf_counter()
        latencies, checkpoint_latencies = (
            concurrent if args.threads else direct)(store, args, bodies)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        store.checkpoint()
        store.close()
        db_bytes = home.audit_db.stat().st_size

        vkey = (home.keys_dir / "checkpoint.vkey").read_text()
        t0 = time.perf_counter()
        report = verify(home.audit_db, None, vkey)
        verify_seconds = time.perf_counter() - t0
        if not report.ok:
            sys.exit(f"verify failed: {report.first_failure}")
        if report.records != args.records:
            sys.exit(f"verify found {report.records} records, not {args.records}")
        t0 = time.perf_counter()
        check_proof(prove(home.audit_db, args.records // 2), vkey)
        prove_seconds = time.perf_counter() - t0

    latencies.sort()
    callers = (f"{args.threads} threads, {args.writer} writer" if args.threads
               else "1 thread, append")
    rows = [
        ("records", f"{args.records:,}"),
        ("callers", callers),
        ("checkpoint every", f"{args.checkpoint_every:,} records"),
        ("durability", f"synchronous={args.durability.upper()}"),
        ("append rate", f"{args.records / elapsed:,.0f} records/s"),
        ("append p50 / p99", f"{statistics.median(latencies) * 1e3:.3f} / "
                             f"{latencies[int(len(latencies) * 0.99)] * 1e3:.3f} ms"),
        ("CPU per record (all threads)", f"{cpu / args.records * 1e6:,.0f} µs"),
        ("transactions (records per one: mean / max)",
         f"{len(batches):,} ({args.records / len(batches):.1f} / {max(batches)})"),
        ("checkpoint (sign + store) p50",
         f"{statistics.median(checkpoint_latencies or [0]) * 1e3:.2f} ms"),
        ("database size", f"{db_bytes / 1e6:,.1f} MB"),
        ("verify (all records, checkpoints)", f"{verify_seconds:.2f} s"),
        ("prove + check one record", f"{prove_seconds * 1e3:.0f} ms"),
    ]
    print(f"`{shlex.join([Path(sys.executable).name, *sys.argv])}`\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
