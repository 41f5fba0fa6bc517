"""Policy hot reload and per-caller rate limits through a running gateway."""

from __future__ import annotations

import time

import httpx
import pytest

from phigate.addons.embedded import RunningGateway
from phigate.addons.settings import SHIPPED_POLICIES
from phigate.identity import DevIssuer

from .test_pipeline import MODEL, record_for


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("live-policies")
    text = (SHIPPED_POLICIES / "default.yaml").read_text()
    text = text.replace("rate_per_minute: 60", "rate_per_minute: 3")
    assert "rate_per_minute: 3" in text
    (path / "default.yaml").write_text(text)
    return path


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream, folder):
    with RunningGateway(tmp_path_factory.mktemp("reload-home"), upstream=upstream.url,
                        upstream_ca=str(upstream.tls.ca_cert),
                        options={"policies": str(folder), "policy_reload_interval": 1,
                                 "admin_listen": ""}) as running:
        yield running


def ask(gw, token: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{gw.reverse_url}/v1/chat/completions",
                      headers={"authorization": f"Bearer {token}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_rate_limit_per_caller(gw):
    issuer = DevIssuer(gw.home.issuer_dir)
    busy = issuer.mint("dr-busy", ["clinicians"])
    statuses = [ask(gw, busy).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = ask(gw, busy)
    assert limited.json()["error"]["code"] == "rate_limited"
    assert limited.headers["x-should-retry"] == "true"  # waiting helps
    assert ask(gw, issuer.mint("dr-calm", ["clinicians"])).status_code == 200  # per caller


def test_bad_edit_keeps_the_last_good_policy_and_a_good_edit_applies(gw, folder):
    issuer = DevIssuer(gw.home.issuer_dir)
    policy_file = folder / "default.yaml"
    good = policy_file.read_text()
    version = record_for(gw, ask(gw, issuer.mint("dr-r1", ["clinicians"])).headers[
        "x-phigate-request-id"])["policy"]["version"]

    policy_file.write_text(good.replace("policies:\n", "policies:\n  - name: [broken\n", 1))
    time.sleep(2.2)  # two reload intervals
    still = ask(gw, issuer.mint("dr-r2", ["clinicians"]))
    assert still.status_code == 200
    assert record_for(gw, still.headers["x-phigate-request-id"])["policy"]["version"] == version

    # A valid edit takes effect without a restart: gpt-4o models are no longer allowed.
    policy_file.write_text(good.replace('allow: ["gpt-4o*", ', 'allow: ['))
    assert wait_for(lambda: ask(gw, issuer.mint("dr-r3", ["clinicians"])).status_code == 403)
    changed = ask(gw, issuer.mint("dr-r4", ["clinicians"]))
    assert changed.json()["error"]["code"] == "model_not_allowed"
    assert record_for(gw, changed.headers["x-phigate-request-id"])["policy"]["version"] != version
    policy_file.write_text(good)
