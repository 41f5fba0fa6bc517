"""Just-in-time approvals end to end: a real client is held by the gateway until an approver
decides through the CLI (a separate process) or the admin page (real Chromium)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from phigate.addons.embedded import RunningGateway
from phigate.addons.settings import SHIPPED_POLICIES
from phigate.identity import DevIssuer
from tests.support.browser import NO_BROWSER, SKIP_REASON, chromium

from .test_pipeline import MODEL, audit_rows, record_for

PHIGATE = str(Path(sys.executable).parent / "phigate")


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> Path:
    """The shipped policy with short waits, plus a two-approver rule for very large outputs."""
    folder = tmp_path_factory.mktemp("policies")
    text = (SHIPPED_POLICIES / "default.yaml").read_text()
    text = text.replace("    timeout: 120 ", "    timeout: 6 ")
    text = text.replace(
        "          max_output_tokens_above: 4096\n        approvals_required: 1\n",
        "          max_output_tokens_above: 4096\n        approvals_required: 1\n"
        "      - name: very-large-output\n        when:\n"
        "          max_output_tokens_above: 16000\n        approvals_required: 2\n")
    assert "timeout: 6 " in text and "very-large-output" in text
    (folder / "default.yaml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream, policies):
    with RunningGateway(tmp_path_factory.mktemp("aphome"), upstream=upstream.url,
                        upstream_ca=str(upstream.tls.ca_cert),
                        options={"policies": str(policies), "admin_listen": "127.0.0.1:0"}) as running:
        yield running


@pytest.fixture(scope="module")
def issuer(gw):
    return DevIssuer(gw.home.issuer_dir)


class Held:
    """A chat completion sent in the background; it blocks while the gateway holds it."""

    def __init__(self, gw, token: str, max_tokens: int, timeout: float = 30) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

        def send() -> None:
            try:
                self.response = httpx.post(
                    f"{gw.reverse_url}/v1/chat/completions", timeout=timeout,
                    headers={"authorization": f"Bearer {token}"},
                    json={"model": MODEL, "max_tokens": max_tokens,
                          "messages": [{"role": "user", "content": "Summarise the chart."}]})
            except Exception as e:  # reported to the test
                self.error = e

        self.thread = threading.Thread(target=send, daemon=True)
        self.thread.start()

    def result(self) -> httpx.Response:
        self.thread.join(30)
        assert self.response is not None, self.error
        return self.response


def cli(gw, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PHIGATE, "approvals", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PHIGATE_HOME=str(gw.home.root)))


def pending(gw, requester: str, timeout: float = 10) -> dict:
    """Wait until the CLI lists a pending approval for `requester`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = json.loads(cli(gw, "list", "--json").stdout)
        mine = [a for a in listed if a["requester"]["sub"] == requester]
        if mine:
            return mine[0]
        time.sleep(0.1)
    raise AssertionError(f"no pending approval for {requester}")


def test_held_then_approved_by_cli_completes(gw, upstream, issuer):
    upstream.clear()
    held = Held(gw, issuer.mint("dr-held-1", ["clinicians"]), max_tokens=5000)
    approval = pending(gw, "dr-held-1")
    assert approval["rule"] == "large-output"
    assert approval["summary"]["max_tokens"] == 5000
    assert upstream.received == []  # nothing left while held
    done = cli(gw, "approve", approval["id"], "--reason", "discharge summary",
               "--token", issuer.mint("officer-ann", ["phi-approvers"]))
    assert done.returncode == 0, done.stderr
    response = held.result()
    assert response.status_code == 200
    assert len(upstream.received) == 1
    record = record_for(gw, response.headers["x-phigate-request-id"])
    assert record["approval"]["state"] == "approved"
    assert [(d["sub"], d["decision"], d["reason"]) for d in record["approval"]["decided_by"]] == [
        ("officer-ann", "approve", "discharge summary")]


def test_held_then_denied_is_refused(gw, upstream, issuer):
    upstream.clear()
    held = Held(gw, issuer.mint("dr-held-2", ["clinicians"]), max_tokens=5000)
    approval = pending(gw, "dr-held-2")
    done = cli(gw, "deny", approval["id"], "--reason", "not needed",
               "--token", issuer.mint("officer-ann", ["phi-approvers"]))
    assert done.returncode == 0, done.stderr
    response = held.result()
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "approval_denied"
    assert response.headers["x-should-retry"] == "false"
    assert upstream.received == []
    record = record_for(gw, response.headers["x-phigate-request-id"])
    assert record["approval"]["decided_by"][0]["sub"] == "officer-ann"


def test_held_then_timed_out_is_refused(gw, upstream, issuer):
    upstream.clear()
    started = time.time()
    response = Held(gw, issuer.mint("dr-held-3", ["clinicians"]), max_tokens=5000).result()
    assert 5.5 < time.time() - started < 12
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "approval_expired"
    assert upstream.received == []


def test_requester_cannot_approve_their_own_request(gw, upstream, issuer):
    upstream.clear()
    both = issuer.mint("dr-both", ["clinicians", "phi-approvers"])
    held = Held(gw, both, max_tokens=5000)
    approval = pending(gw, "dr-both")
    refused = cli(gw, "approve", approval["id"], "--token", both)
    assert refused.returncode != 0
    assert "self_approval" in refused.stdout + refused.stderr
    assert cli(gw, "approve", approval["id"],
               "--token", issuer.mint("officer-ann", ["phi-approvers"])).returncode == 0
    assert held.result().status_code == 200


def test_two_approver_rule_needs_two_people(gw, upstream, issuer):
    upstream.clear()
    held = Held(gw, issuer.mint("dr-held-4", ["clinicians"]), max_tokens=20000)
    approval = pending(gw, "dr-held-4")
    assert approval["approvals_required"] == 2
    first = issuer.mint("officer-ann", ["phi-approvers"])
    assert cli(gw, "approve", approval["id"], "--token", first).returncode == 0
    time.sleep(0.6)
    assert held.response is None and upstream.received == []  # still held after one
    again = cli(gw, "approve", approval["id"], "--token", first)
    assert again.returncode != 0 and "already_decided" in again.stdout + again.stderr
    assert cli(gw, "approve", approval["id"],
               "--token", issuer.mint("officer-ben", ["phi-approvers"])).returncode == 0
    response = held.result()
    assert response.status_code == 200
    record = record_for(gw, response.headers["x-phigate-request-id"])
    assert [d["sub"] for d in record["approval"]["decided_by"]] == ["officer-ann", "officer-ben"]


def test_client_that_goes_away_abandons_the_approval(gw, upstream, issuer):
    upstream.clear()
    held = Held(gw, issuer.mint("dr-gone", ["clinicians"]), max_tokens=5000, timeout=1.0)
    approval = pending(gw, "dr-gone")
    held.thread.join(5)
    assert isinstance(held.error, httpx.TimeoutException)
    deadline = time.time() + 5
    while time.time() < deadline:
        state = json.loads(cli(gw, "show", approval["id"], "--json").stdout)["state"]
        if state != "pending":
            break
        time.sleep(0.2)
    assert state == "abandoned"
    assert upstream.received == []


@pytest.mark.skipif(NO_BROWSER, reason=SKIP_REASON)
def test_approval_from_the_admin_page_in_chromium(gw, upstream, issuer):
    upstream.clear()
    held = Held(gw, issuer.mint("dr-held-web", ["clinicians"]), max_tokens=5000)
    approval = pending(gw, "dr-held-web")
    admin = gw.master.addons.get("admin").url()
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{admin}/approvals")
        page.fill("#token", issuer.mint("officer-web", ["phi-approvers"]))
        page.click("#use-token")
        card = page.locator(f"[data-approval='{approval['id']}']")
        card.wait_for()
        assert "dr-held-web" in card.inner_text()
        card.locator("input.reason").fill("ward round")
        card.locator("button.approve").click()
        page.wait_for_selector(f"#status:has-text('{approval['id']}')")
    response = held.result()
    assert response.status_code == 200
    record = record_for(gw, response.headers["x-phigate-request-id"])
    assert record["approval"]["decided_by"][0]["sub"] == "officer-web"
    assert len(upstream.received) == 1
