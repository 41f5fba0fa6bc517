"""The processes under test: the local upstream, bare mitmdump and `phigate run`, and what
/proc says about them (CPU seconds, resident memory)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from phigate.addons.settings import SHIPPED_POLICIES

BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
BENCH_RATE_PER_MINUTE = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    argv: list[str]
    process: subprocess.Popen
    port: int  # where clients connect (plain HTTP for the proxies, TLS for the upstream)
    log: Path

    def cpu_seconds(self) -> float:
        """utime + stime of every thread of the process, from /proc/<pid>/stat."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (now) and VmHWM (peak resident set) in MiB."""
        values = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
        return {"rss_mb": values["VmRSS"], "peak_rss_mb": values["VmHWM"]}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _start(name: str, argv: list[str], port: int, folder: Path, env: dict | None = None,
           timeout: float = 90) -> Proc:
    log = folder / f"{name}.log"
    process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               env=env or os.environ.copy(), cwd=folder)
    proc = Proc(name, argv, process, port, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout} s")


def start_upstream(folder: Path) -> tuple[Proc, Path]:
    """`python -m phigate.localupstream` over TLS; returns it and the CA file clients trust."""
    tls_dir, port = folder / "upstream-tls", free_port()
    argv = [sys.executable, "-m", "phigate.localupstream", "--host", "127.0.0.1",
            "--port", str(port), "--tls-dir", str(tls_dir)]
    return _start("localupstream", argv, port, folder), tls_dir / "ca.pem"


def start_bare_mitmdump(folder: Path, upstream_port: int, upstream_ca: Path, *,
                        stream: bool = False) -> Proc:
    """mitmdump without addons, reverse mode to the upstream, verifying it with its CA.
    `stream`: pass bodies through as they arrive (`stream_large_bodies=1`); without it mitmdump
    holds a text/event-stream reply until it ends, which is no baseline for streaming."""
    name = "mitmdump-streaming" if stream else "mitmdump"
    port, confdir = free_port(), folder / f"{name}-confdir"
    confdir.mkdir(exist_ok=True)
    argv = [str(BIN / "mitmdump"), "-q",
            "--mode", f"reverse:https://127.0.0.1:{upstream_port}@127.0.0.1:{port}",
            "--set", f"confdir={confdir}",
            "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}",
            "--set", "connection_strategy=lazy"]
    if stream:
        argv += ["--set", "stream_large_bodies=1"]
    return _start(name, argv, port, folder)


def bench_policies(folder: Path) -> Path:
    """The shipped policies with `rate_per_minute` raised: the bench sends thousands of
    requests a minute from a handful of callers; everything else is the default policy."""
    target = folder / "policies"
    target.mkdir(exist_ok=True)
    text = (SHIPPED_POLICIES / "default.yaml").read_text()
    raised = text.replace("rate_per_minute: 60", f"rate_per_minute: {BENCH_RATE_PER_MINUTE}")
    if raised == text:
        raise RuntimeError("policies/default.yaml no longer sets rate_per_minute: 60")
    (target / "default.yaml").write_text(raised)
    return target


def start_phigate(folder: Path, upstream_url: str, upstream_ca: Path) -> tuple[Proc, Path]:
    """`phigate run` as its own process with the bench policies; returns it and its home."""
    home, key_file = folder / "phigate-home", folder / "openai.key"
    key_file.write_text("sk-bench-gateway-key\n")
    forward, reverse = free_port(), free_port()
    argv = [str(BIN / "phigate"), "run", "--home", str(home), "--policies",
            str(bench_policies(folder)), "--upstream", upstream_url, "--upstream-ca",
            str(upstream_ca), "--upstream-key-file", str(key_file),
            "--listen", f"127.0.0.1:{forward}", "--reverse", f"127.0.0.1:{reverse}",
            "--set", "admin_listen="]
    env = os.environ.copy()
    env.pop("OPENAI_API_KEY", None)
    return _start("phigate", argv, reverse, folder, env=env, timeout=120), home


def mint(home: Path, subject: str) -> str:
    """A token from `phigate token mint` (the development issuer in the gateway's home)."""
    done = subprocess.run([str(BIN / "phigate"), "token", "mint", "--home", str(home),
                           "--sub", subject, "--group", "clinicians", "--ttl", "60m"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"phigate token mint failed: {done.stderr[-500:]}")
    return done.stdout.strip()
