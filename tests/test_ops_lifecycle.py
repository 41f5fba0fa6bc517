"""A real `phigate run` process: SIGTERM under load, SIGHUP reload, an unwritable audit log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from phigate.addons.settings import SHIPPED_POLICIES
from phigate.audit.verify import verify
from phigate.home import Home
from phigate.identity import DevIssuer

PHIGATE = Path(sys.executable).with_name("phigate")
# A streamed answer of 30 events 0.1 s apart: in flight when SIGTERM comes 1 s in.
SLOW_STREAM = {"x-localupstream-reply": " ".join(["HbA1c reflects average glucose."] * 5),
               "x-localupstream-delta-size": "5", "x-localupstream-delay-ms": "100"}
PROMPT = "Patient Margaret Whitfield, MRN 4452817: what is a normal HbA1c?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    """`phigate run` as a child process on free loopback ports; `prefix` wraps the command."""

    def __init__(self, home: Path, upstream, *, prefix: list[str] = (), sets: dict = None):
        self.home = Home.open(home)
        key_file = home / "upstream.key"
        key_file.write_text("sk-phigate-test-gateway-key")
        self.reverse = f"127.0.0.1:{free_port()}"
        self.admin = f"http://127.0.0.1:{free_port()}"
        self.log = (home / "gateway.log").open("w")
        options = {"admin_listen": self.admin[7:], "policy_reload_interval": "0",
                   **(sets or {})}
        command = [*prefix, str(PHIGATE), "run", "--home", str(home),
                   "--listen", f"127.0.0.1:{free_port()}", "--reverse", self.reverse,
                   "--upstream", upstream.url, "--upstream-ca", str(upstream.tls.ca_cert),
                   "--upstream-key-file", str(key_file)]
        for name, value in options.items():
            command += ["--set", f"{name}={value}"]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.token = DevIssuer(self.home.issuer_dir).mint("dr-ops", ["clinicians"])

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(self.admin + "/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("gateway not ready in time:\n" + self.output())

    def ready(self) -> httpx.Response:
        return httpx.get(self.admin + "/readyz")

    def chat(self, http: httpx.Client, content: str = PROMPT, **extra) -> httpx.Response:
        return http.post(f"http://{self.reverse}/v1/chat/completions",
                         headers={"authorization": f"Bearer {self.token}"},
                         json={"model": "gpt-4o-mini",
                               "messages": [{"role": "user", "content": content}], **extra})

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def audit(home: Path) -> tuple[set[str], int, int | None]:
    """(record ids, record count, size of the newest checkpoint) read with plain SQLite."""
    with sqlite3.connect(Home.open(home).audit_db) as db:
        ids = {row[0] for row in db.execute("SELECT id FROM records")}
        last = db.execute("SELECT size FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return ids, len(ids), last[0] if last else None


def test_sigterm_under_load_drains_records_everything_and_checkpoints(tmp_path, upstream):
    gateway = Gateway(tmp_path, upstream)
    try:
        gateway.wait_ready()
        answers: list[httpx.Response] = []
        streams: list[tuple[int, str]] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    try:
                        answers.append(gateway.chat(http))
                    except httpx.TransportError:
                        return  # listener closed / connection closed: the gateway is going
                    time.sleep(0.25)  # stay under the policy's 60 requests a minute

        def stream() -> None:
            with httpx.Client(timeout=30) as http:
                with http.stream("POST", f"http://{gateway.reverse}/v1/chat/completions",
                                 headers={"authorization": f"Bearer {gateway.token}",
                                          **SLOW_STREAM},
                                 json={"model": "gpt-4o-mini", "stream": True, "messages": [
                                     {"role": "user", "content": "Explain HbA1c at length."}]}) as r:
                    streams.append((r.status_code, r.read().decode()))

        workers = [threading.Thread(target=load) for _ in range(3)]
        workers += [threading.Thread(target=stream) for _ in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.ready().status_code == 503  # not ready while draining
        assert gateway.process.wait(30) == 0, gateway.output()
        stop.set()
        for worker in workers:
            worker.join(30)
    finally:
        gateway.stop()

    served = [a for a in answers if a.status_code == 200]
    assert len(served) >= 8, gateway.output()
    # In-flight streams finished whole, though SIGTERM came in the middle of them.
    assert [status for status, _ in streams] == [200, 200]
    assert all(body.rstrip().endswith("data: [DONE]") for _, body in streams)
    # Requests on open connections after SIGTERM: a retryable refusal, recorded too.
    late = [a for a in answers if a.status_code != 200]
    assert {(a.status_code, a.json()["error"]["code"]) for a in late} <= {
        (503, "gateway_shutting_down")}, [a.text for a in late][:3]
    ids, count, checkpoint_size = audit(tmp_path)
    answered = {a.headers["x-phigate-request-id"] for a in answers}
    assert answered <= ids  # no answered request is missing from the audit log
    assert count >= len(answers) + len(streams)
    assert checkpoint_size == count  # the final signed checkpoint covers every record
    vkey = (Home.open(tmp_path).keys_dir / "checkpoint.vkey").read_text().strip()
    report = verify(Home.open(tmp_path).audit_db, verifier_key=vkey)
    assert report.ok and report.unsigned_tail == 0
    # The process's whole output (mitmdump's log, the JSON lines) holds no PHI and no token.
    output = gateway.output()
    assert "SIGTERM" in output
    assert [v for v in ("Whitfield", "4452817", gateway.token) if v in output] == []


def test_sighup_reloads_policies_and_readiness_follows(tmp_path, upstream):
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES, policies)
    gateway = Gateway(tmp_path / "home", upstream, sets={"policies": str(policies)})
    try:
        gateway.wait_ready()
        default = policies / "default.yaml"
        good = default.read_text()
        default.write_text(good + "\nnot: [valid\n")
        assert gateway.ready().status_code == 200  # no reload without SIGHUP (interval 0)
        gateway.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: gateway.ready().status_code == 503)
        checks = gateway.ready().json()["checks"]
        assert checks["policies"]["ok"] is False
        with httpx.Client() as http:  # the last good policies still serve
            assert gateway.chat(http, "What is a normal HbA1c?").status_code == 200
        default.write_text(good)
        gateway.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: gateway.ready().status_code == 200)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(30) == 0
    finally:
        gateway.stop()


def wait_for(condition, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def can_mount_privately() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=1m t /mnt"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount_privately(),
                    reason="needs unshare and mount (root or CAP_SYS_ADMIN) for a private tmpfs")
def test_full_audit_filesystem_flips_readiness_and_refuses_requests(tmp_path, upstream):
    """The audit database lives on a small tmpfs in the gateway's own mount namespace; filling
    it makes real SQLite appends fail with 'database or disk is full' (a chmod would not: the
    tests run as root and the connection is already open)."""
    folder = tmp_path / "auditfs"
    folder.mkdir()
    mount = ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs -o size=16m phigate-audit "$0" && exec "$@"', str(folder)]
    gateway = Gateway(tmp_path / "home", upstream, prefix=mount,
                      sets={"audit_db": str(folder / "audit.db")})
    try:
        gateway.wait_ready()
        inside = Path(f"/proc/{gateway.process.pid}/root{folder}")  # the gateway's view
        with httpx.Client() as http:
            assert gateway.chat(http).status_code == 200
            with (inside / "filler").open("wb") as filler:
                with pytest.raises(OSError):
                    while True:
                        filler.write(b"\0" * (1 << 20))
                        filler.flush()
            ready = gateway.ready()
            assert ready.status_code == 503
            assert ready.json()["checks"]["audit"]["ok"] is False
            withheld = gateway.chat(http)  # its record cannot be written: no answer leaves
            assert (withheld.status_code, withheld.json()["error"]["code"]) == (
                500, "audit_write_failed")
            refused = gateway.chat(http)
            assert (refused.status_code, refused.json()["error"]["code"]) == (
                503, "audit_unavailable")
            assert gateway.ready().json()["checks"]["audit"]["reason"] == (
                "the last audit append failed")

            (inside / "filler").unlink()
            recovering = gateway.chat(http)  # refused, but its record is written again
            assert recovering.status_code == 503
            assert wait_for(lambda: gateway.ready().status_code == 200)
            assert gateway.chat(http).status_code == 200
        # SQLite resolves the /proc/PID/root link to the host's view: read a copy instead.
        copy = tmp_path / "copy"
        copy.mkdir()
        for name in ("audit.db", "audit.db-wal"):
            shutil.copyfile(inside / name, copy / name)
        with sqlite3.connect(copy / "audit.db") as db:
            ids = {row[0] for row in db.execute("SELECT id FROM records")}
        assert recovering.headers["x-phigate-request-id"] in ids
        assert withheld.headers["x-phigate-request-id"] not in ids  # and it got no answer
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(30) == 0
    finally:
        gateway.stop()
