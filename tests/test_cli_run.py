"""`phigate run` as a real process, the way the README uses it: tokens from `phigate token
mint`, the openai SDK through both listeners, per-policy upstream keys from the environment."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from phigate.addons.settings import SHIPPED_POLICIES

PHIGATE = str(Path(sys.executable).parent / "phigate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"phigate run exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("phigate run did not start listening")


@pytest.fixture(scope="module")
def running(tmp_path_factory, upstream):
    home = tmp_path_factory.mktemp("cli-home")
    policies = tmp_path_factory.mktemp("cli-policies")
    text = (SHIPPED_POLICIES / "default.yaml").read_text()
    # Re-identifying clinicians bill to a separate OpenAI project key.
    text = text.replace("    groups: [clinicians-reid]\n",
                        "    groups: [clinicians-reid]\n    upstream_key: research\n")
    assert "upstream_key: research" in text
    (policies / "default.yaml").write_text(text)
    key_file = home / "openai.key"
    key_file.write_text("sk-gateway-default-key\n")
    forward, reverse = free_port(), free_port()
    env = dict(os.environ, PHIGATE_HOME=str(home),
               PHIGATE_UPSTREAM_KEY_RESEARCH="sk-gateway-research-key")
    env.pop("OPENAI_API_KEY", None)
    process = subprocess.Popen(
        [PHIGATE, "run", "--listen", f"127.0.0.1:{forward}", "--reverse", f"127.0.0.1:{reverse}",
         "--policies", str(policies), "--upstream", upstream.url,
         "--upstream-ca", str(upstream.tls.ca_cert), "--upstream-key-file", str(key_file),
         "--set", "admin_listen="],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_listening(reverse, process)
        yield {"home": home, "env": env, "forward": forward, "reverse": reverse,
               "process": process}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output[-3000:]
    assert "frozen out of full GC passes" in output  # addons/heap.py ran once started
    # What the gateway logged must not hold the keys or the callers' tokens.
    assert "sk-gateway-" not in output
    assert "eyJ" not in output


def mint(running, group: str) -> str:
    done = subprocess.run([PHIGATE, "token", "mint", "--sub", "dr-cli", "--group", group,
                           "--ttl", "5m"], env=running["env"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_minted_tokens_work_against_phigate_run(running, upstream):
    upstream.clear()
    token = mint(running, "clinicians")
    oa = openai.OpenAI(base_url=f"http://127.0.0.1:{running['reverse']}/v1", api_key=token,
                       max_retries=0)
    assert oa.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]).choices
    (sent,) = upstream.received
    assert sent.headers["authorization"] == "Bearer sk-gateway-default-key"


def test_a_policy_selects_its_own_upstream_key(running, upstream):
    upstream.clear()
    token = mint(running, "clinicians-reid")
    oa = openai.OpenAI(base_url=f"http://127.0.0.1:{running['reverse']}/v1", api_key=token,
                       max_retries=0)
    oa.chat.completions.create(model="gpt-4o-mini",
                               messages=[{"role": "user", "content": "hello"}])
    (sent,) = upstream.received
    assert sent.headers["authorization"] == "Bearer sk-gateway-research-key"


def test_the_ca_bundle_works_for_the_forward_proxy(running, upstream):
    """SSL_CERT_FILE with the bundle `phigate run` wrote, HTTPS_PROXY, no code change."""
    upstream.clear()
    bundle = running["home"] / "ca" / "phigate-ca-bundle.pem"
    assert bundle.exists()
    script = ("import openai; print(openai.OpenAI(max_retries=0).models.list().data[0].id)")
    env = dict(running["env"], HTTPS_PROXY=f"http://127.0.0.1:{running['forward']}",
               SSL_CERT_FILE=str(bundle), OPENAI_API_KEY=mint(running, "clinicians"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(upstream.received) == 1


def test_a_bad_option_stops_phigate_run_before_it_listens(tmp_path):
    """mitmproxy keeps serving when a script fails to load; phigate must not."""
    port = free_port()
    process = subprocess.Popen(
        [PHIGATE, "run", "--home", str(tmp_path), "--listen", f"127.0.0.1:{port}",
         "--reverse", "off", "--set", "admin_listen=", "--set", "masking_timeout=soon"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listened = False
    while process.poll() is None:
        with socket.socket() as s:
            listened |= s.connect_ex(("127.0.0.1", port)) == 0
        time.sleep(0.05)
    _, stderr = process.communicate()
    assert process.returncode == 1
    assert "masking_timeout" in stderr
    assert not listened


def test_curl_trusts_the_gateway_with_the_bundle(running, upstream):
    upstream.clear()
    bundle = running["home"] / "ca" / "phigate-ca-bundle.pem"
    done = subprocess.run(
        ["curl", "-sS", "--fail", "-x", f"http://127.0.0.1:{running['forward']}",
         "--cacert", str(bundle), "https://api.openai.com/v1/models",
         "-H", f"authorization: Bearer {mint(running, 'clinicians')}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"object"' in done.stdout
    # Another name signed by nobody curl trusts: CONNECT is refused outright.
    other = subprocess.run(["curl", "-sS", "-x", f"http://127.0.0.1:{running['forward']}",
                            "--cacert", str(bundle), "https://example.com/"],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode != 0 and "403" in other.stderr


@pytest.mark.parametrize("option", ["modify_body=/~q/Margaret/Jane", "save_stream_file=flows.mitm",
                                    "map_remote=|api.openai.com|evil.example"])
def test_options_of_traffic_rewriting_addons_are_refused(tmp_path, option):
    """`phigate run` does not load mitmproxy's rewriting and dumping addons (they would act on
    traffic outside the pipeline): their options are unknown, and it stops before listening."""
    done = subprocess.run(
        [PHIGATE, "run", "--home", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}",
         "--reverse", "off", "--set", "admin_listen=", "--set", option],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"unknown options: {option.split('=')[0]}" in done.stderr


def test_the_gateway_master_leaves_out_the_unused_addons():
    from mitmproxy.options import Options

    from phigate.addons.master import UNUSED, gateway_master

    async def build():
        return gateway_master(Options(), with_termlog=False)

    master = asyncio.run(build())
    loaded = {type(a).__name__ for a in master.addons.chain}
    assert not loaded & UNUSED
    assert {"Core", "Proxyserver", "NextLayer", "TlsConfig", "Block", "Dumper"} <= loaded
    assert "modify_body" not in master.options and "body_size_limit" in master.options


def test_phigate_web_starts_with_the_pipeline(tmp_path):
    """mitmweb has no flow dumper: options that only `phigate run` sets must not reach it."""
    reverse, web = free_port(), free_port()
    process = subprocess.Popen(
        [PHIGATE, "web", "--home", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}",
         "--reverse", f"127.0.0.1:{reverse}", "--web", f"127.0.0.1:{web}", "--set", "admin_listen="],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        listening = False
        while not listening and process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as s:
                listening = s.connect_ex(("127.0.0.1", reverse)) == 0
            time.sleep(0.1)
        assert listening, process.stderr.read()[-2000:] if process.poll() is not None else "timeout"
    finally:
        process.terminate()
        process.wait(30)
