"""End-to-end benchmark: phigate (`phigate run`, default policy) against bare mitmdump, in one run.

    .venv/bin/python scripts/bench.py [--quick] [--json FILE]

Starts the local OpenAI stand-in (TLS), a bare mitmdump (reverse mode, no addons) and
`phigate run` as separate processes on 127.0.0.1, drives both proxies with the async openai SDK
through their reverse listeners, and reads each proxy's CPU seconds and resident memory from
/proc. The bench policy is the shipped default with `rate_per_minute` raised (one caller sends
thousands of requests a minute). Also times stock Presidio on the same texts. Prints the
machine, the command and Markdown tables; `--json` writes every figure. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

import bench_detect  # noqa: E402
from bench import report, workloads  # noqa: E402
from bench.drive import Target, client_for, drive, merge, percentile, summary  # noqa: E402
from bench.procs import (  # noqa: E402
    BENCH_RATE_PER_MINUTE, mint, start_bare_mitmdump, start_phigate, start_upstream)
from bench.stock import StockPresidio, timed  # noqa: E402
from phigate.detect import Detector, TextField  # noqa: E402

M = workloads.MODEL
REPEATED = "small chat, no PHI, same text each request"
NEW_TEXT = "small chat, no PHI, new text each request"
ROUNDS = 4
NOTE_REPLY = "Noted; continue the current plan."


@dataclass(frozen=True)
class Sizes:
    concurrency: tuple[int, ...]
    small: int
    phi_2k: int
    note: int
    conversations: int
    turns: int
    streams: int
    memory: tuple[int, int]
    detect_records: int
    detect_rounds: int
    stock_conversations: int
    time_limit: float


FULL = Sizes((1, 4, 16), 400, 120, 100, 4, 20, 80, (1000, 10_000), 300, 3, 2, 30.0)
QUICK = Sizes((1, 4), 12, 4, 4, 1, 6, 4, (60, 200), 12, 1, 1, 10.0)


# --- one request of each workload (the index `i` makes a text new: never seen before) ---

async def small(client, i: int) -> None:
    await client.chat.completions.create(
        model=M, messages=[{"role": "user", "content": workloads.SMALL_PROMPT.format(i=i)}])


async def small_repeated(client, _i: int) -> None:
    await client.chat.completions.create(
        model=M, messages=[{"role": "user", "content": workloads.SMALL_PROMPT.format(i=0)}])


def chat_with(texts: list[str], reply: str | None = None):
    """`reply`: a fixed answer instead of the stand-in's echo of the prompt (which is new text
    the gateway masks on the way back too)."""
    headers = {"x-localupstream-reply": reply} if reply else None

    async def send(client, i: int) -> None:
        await client.chat.completions.create(model=M, extra_headers=headers, messages=[
            {"role": "system", "content": "You are a careful clinical assistant."},
            {"role": "user", "content": texts[i]}])
    return send


def streamed(delay_ms: int, delta_size: int):
    headers = {"x-localupstream-reply": workloads.STREAM_REPLY,
               "x-localupstream-delay-ms": str(delay_ms),
               "x-localupstream-delta-size": str(delta_size)}

    async def send(client, i: int) -> float:
        started, first, text = time.perf_counter(), None, []
        stream = await client.chat.completions.create(
            model=M, stream=True, extra_headers=headers,
            messages=[{"role": "user", "content": f"Outline HFrEF therapy ({i})."}])
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
                text.append(chunk.choices[0].delta.content)
        if "".join(text) != workloads.STREAM_REPLY:
            raise RuntimeError("streamed text differs from what the upstream sent")
        return first
    return send


def conversation_turns(inputs_by_conversation: list[list[list[dict]]]):
    """Each worker index is one conversation, whose turns go one after the other."""
    async def send(client, i: int) -> None:
        for items in inputs_by_conversation[i]:
            await client.responses.create(model=M, input=items, tools=[workloads.AGENT_TOOL])
    return send


# --- the run ---

class Bench:
    def __init__(self, sizes: Sizes, upstream_url: str, upstream_ca: Path, targets: list[Target],
                 streaming_bare: Target):
        self.sizes, self.targets, self.streaming_bare = sizes, targets, streaming_bare
        self.upstream_url, self.upstream_ca = upstream_url, upstream_ca
        self.rows: list[dict] = []

    async def clear_upstream(self) -> None:
        """The stand-in keeps every request it received; drop them so its memory stays flat."""
        async with httpx.AsyncClient(verify=str(self.upstream_ca), trust_env=False) as http:
            (await http.delete(f"{self.upstream_url}/__upstream__/received")).raise_for_status()

    async def compare(self, workload: str, send, count: int, concurrency: int, start: int = 0,
                      streaming: bool = False, **extra) -> dict:
        """The same requests to each target, alternating in up to ROUNDS rounds (bare first in
        each) so that load from other processes on the machine falls on both alike.
        `streaming`: the baseline is the bare mitmdump that streams bodies through."""
        row = {"workload": workload, "concurrency": concurrency, **extra}
        targets = [self.streaming_bare, self.targets[1]] if streaming else self.targets
        batches: dict[str, list] = {target.name: [] for target in targets}
        rounds = max(1, min(ROUNDS, count // max(concurrency, 1)))
        for round_ in range(rounds):
            begin = start + count * round_ // rounds
            size = start + count * (round_ + 1) // rounds - begin
            for target in targets:
                batches[target.name].append(await drive(
                    target, send, size, concurrency, self.sizes.time_limit / rounds, begin))
            await self.clear_upstream()
        for name, parts in batches.items():
            row[name] = summary(merge(parts))
        self.rows.append(row)
        print(report.progress(row), file=sys.stderr, flush=True)
        return row

    async def warm_up(self) -> None:
        for target in [*self.targets, self.streaming_bare]:
            await drive(target, small, 20, 4, 30, start=10_000_000)
            await drive(target, chat_with([workloads.NOTE_250]), 1, 1, 30)
        await self.clear_upstream()

    async def run(self) -> dict:
        s = self.sizes
        await self.warm_up()
        for c in s.concurrency:
            await self.compare(REPEATED, small_repeated, s.small, c)
        for c in s.concurrency:
            await self.compare(NEW_TEXT, small, s.small, c, start=c * 100_000)
        prompts = workloads.clinical_prompts(s.phi_2k * len(s.concurrency))
        for n, c in enumerate(s.concurrency):
            await self.compare("2 KB clinical prompt with PHI", chat_with(prompts), s.phi_2k, c,
                               start=n * s.phi_2k)
        notes = [workloads.note_variant(i) for i in range(s.note)]
        note_row = await self.compare("~250-char note (never seen), fixed short reply",
                                      chat_with(notes, NOTE_REPLY), s.note, 1)

        conversations = [workloads.agent_conversation(seed, s.turns)
                         for seed in range(s.conversations * 2)]
        agent_label = f"agent conversation, {s.turns} turns (latency per conversation)"
        agent = await self.compare(agent_label, conversation_turns(conversations), s.conversations,
                                   1, turns=s.turns)
        if s.conversations > 1:
            await self.compare(agent_label, conversation_turns(conversations), s.conversations,
                               s.conversations, start=s.conversations, turns=s.turns)

        stream_rows = [
            await self.compare("stream: 8-char deltas every 20 ms", streamed(20, 8), s.streams, 4,
                               streaming=True),
            await self.compare("stream: 1-char deltas, no pacing (hold-back)", streamed(0, 1),
                               s.streams, 4, streaming=True),
        ]
        memory = await self.memory()
        for target in [*self.targets, self.streaming_bare]:
            await target.client.close()
        return {"rows": self.rows, "note_row": note_row, "agent": agent, "stream_rows": stream_rows,
                "memory": memory, "conversations": conversations, "notes": notes}

    async def memory(self) -> dict:
        first, total = self.sizes.memory
        result = {"first": first, "total": total}
        for target in self.targets:
            batch = await drive(target, small, first, 16, 600, start=20_000_000)
            after_first = target.proc.memory_mb()
            rest = await drive(target, small, total - first, 16, 1200, start=20_000_000 + first)
            await self.clear_upstream()
            result[target.name] = {"after_first": after_first, "after_total": rest.memory,
                                   "completed": batch.done + rest.done,
                                   "errors": dict(batch.errors + rest.errors),
                                   "requests_per_s": rest.done / rest.wall if rest.wall else 0.0}
            print(f"memory {target.name}: {result[target.name]}", file=sys.stderr, flush=True)
        return result


def detection(sizes: Sizes, stock: StockPresidio) -> dict:
    """scripts/bench_detect.py's comparison (cold and warm), in this process."""
    records = bench_detect.load(bench_detect.DEFAULT_DATA, sizes.detect_records)
    texts = bench_detect.texts_from(records)
    notes = [f"{workloads.NOTE_250} Case {i}." for i in range(60 if sizes is FULL else 10)]
    detector = Detector.from_config(None)
    ours = lambda text: detector.analyze([TextField(text)])  # noqa: E731
    ours("warm up the pipeline")
    cold = {case: bench_detect.compare(ours, stock.analyze, material, sizes.detect_rounds)
            for case, material in (("eval texts", texts), ("~250-char note", notes))}
    fields = [TextField(t) for t in texts]
    detector.analyze(fields)
    rounds, started = 20, time.perf_counter()
    for _ in range(rounds):
        detector.analyze(fields)
    warm_ms = (time.perf_counter() - started) / (rounds * len(fields)) * 1e3
    stock_warm = bench_detect.run(stock.analyze, texts)  # stock has no cache: warm = cold
    return {"texts": len(texts), "characters": sum(map(len, texts)),
            "cold": {case: {"phigate": o, "stock": t} for case, (o, t) in cold.items()},
            "warm": {"phigate_ms_per_field": warm_ms, "stock_ms_median": stock_warm["ms_median"]}}


def revision() -> str:
    """The checkout's commit, with "+changes" when the work tree differs from it."""
    root = Path(__file__).parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{' +changes' if dirty else ''}"


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (small counts)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="run in DIR and keep it (process logs, phigate's home and audit log)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    command = shlex.join([sys.executable, *sys.argv])
    info = {"machine": machine(), "command": command, "revision": revision(),
            "load_start": os.getloadavg(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "bench_policy": f"shipped default with rate_per_minute {BENCH_RATE_PER_MINUTE}",
            "mode": "quick" if args.quick else "full"}
    print(report.header(info), flush=True)

    with ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        folder = args.keep or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="phigate-bench-")))
        upstream, ca = start_upstream(folder)
        stack.callback(upstream.stop)
        upstream_url = f"https://127.0.0.1:{upstream.port}"
        bare = start_bare_mitmdump(folder, upstream.port, ca)
        stack.callback(bare.stop)
        streaming_bare = start_bare_mitmdump(folder, upstream.port, ca, stream=True)
        stack.callback(streaming_bare.stop)
        gateway, home = start_phigate(folder, upstream_url, ca)
        stack.callback(gateway.stop)
        token = mint(home, "bench")
        targets = [Target("bare", bare, client_for(bare.port, "sk-bench-client")),
                   Target("phigate", gateway, client_for(gateway.port, token))]
        streaming_target = Target("bare", streaming_bare,
                                  client_for(streaming_bare.port, "sk-bench-client"))
        results = asyncio.run(Bench(sizes, upstream_url, ca, targets, streaming_target).run())
        stock = StockPresidio()
        note_walls, _ = timed(stock.analyze_and_anonymize, results.pop("notes"))
        conversations = results.pop("conversations")[:sizes.stock_conversations]
        agent_stock_cpu = [timed(stock.analyze, [text for turn in conversation
                                                 for text in workloads.texts_of(turn)])[1]
                           for conversation in conversations]
        # What a gateway examines on a new-text small request: the prompt and the reply (the
        # stand-in answers "Received: <prompt>").
        prompts = [workloads.SMALL_PROMPT.format(i=100_000 + i) for i in range(sizes.note)]
        small_walls = [a + b for a, b in zip(
            timed(stock.analyze_and_anonymize, prompts)[0],
            timed(stock.analyze_and_anonymize, [f"Received: {p}" for p in prompts])[0])]
        results["stock"] = {
            "note_p50_ms": percentile(note_walls, 50) * 1e3,
            "small_new_p50_ms": percentile(small_walls, 50) * 1e3,
            "note_walls_ms": [w * 1e3 for w in note_walls],
            "agent_cpu_s_per_conversation": sum(agent_stock_cpu) / len(agent_stock_cpu)}
        results["detection"] = detection(sizes, stock)
        results["peak_rss_mb"] = {t.name: t.proc.memory_mb()["peak_rss_mb"] for t in targets}

    info["load_end"] = os.getloadavg()
    info["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results["targets"] = report.targets(results)
    print(report.tables(results, info))
    if args.json:
        args.json.write_text(json.dumps({"info": info, **results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
