"""`scripts/bench.py --quick` runs end to end (upstream, bare mitmdump, `phigate run`) and reports
every workload. Only the shape and the absence of errors are checked, never the timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "scripts" / "bench.py"
WORKLOADS = ["small chat, no PHI, same text each request", "small chat, no PHI, new text each request",
             "2 KB clinical prompt with PHI", "~250-char note (never seen)",
             "agent conversation", "stream: 8-char deltas every 20 ms",
             "stream: 1-char deltas, no pacing (hold-back)"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_every_workload_has_a_row_for_both_targets(quick_run):
    stdout, results = quick_run
    names = {row["workload"] for row in results["rows"]}
    for workload in WORKLOADS:
        assert any(name.startswith(workload) for name in names), workload
        assert f"| {workload}" in stdout
    for row in results["rows"]:
        for target in ("bare", "phigate"):
            assert row[target]["requests"] > 0, (row["workload"], target)
            assert row[target]["errors"] == {}, (row["workload"], target, row[target]["errors"])


def test_streams_record_first_and_last_token(quick_run):
    _, results = quick_run
    for row in results["stream_rows"]:
        for target in ("bare", "phigate"):
            assert 0 < row[target]["ttft_p50_ms"] <= row[target]["ttlt_p50_ms"]


def test_memory_detection_and_machine_are_reported(quick_run):
    stdout, results = quick_run
    memory = results["memory"]
    for target in ("bare", "phigate"):
        assert memory[target]["completed"] == memory["total"]
        assert memory[target]["after_total"]["rss_mb"] > 0
    assert set(results["detection"]["cold"]) == {"eval texts", "~250-char note"}
    assert results["stock"]["note_p50_ms"] > 0
    assert results["info"]["machine"]["nproc"] >= 1
    assert "load average at start" in stdout and "load average at end" in stdout
    assert "scripts/bench.py --quick" in results["info"]["command"]
    assert "## Targets" in stdout
    named = " ".join(t["target"] for t in results["targets"])
    for target in ("small non-PHI p50", "small non-PHI throughput", "~250-char note", "conversation",
                   "added TTFT", "after the first token", "peak RSS", "RSS growth"):
        assert target in named, target
