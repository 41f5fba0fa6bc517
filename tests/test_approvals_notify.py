"""The webhook notifier against a real HTTP server on 127.0.0.1 that fails on purpose."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from phigate.approvals import Approval, WebhookNotifier, slack_message

SECRET_PATH = "/services/T000/B000/s3cr3t-webhook-token"
EXCERPT = "Fax <PERSON_1>'s chart & labs"


def approval(**changes) -> Approval:
    fields = dict(
        id="apr_abcdefghijkl", request_id="req-1", created_at=100.0, expires_at=220.0,
        state="pending", requester={"iss": "https://idp.example", "sub": "alice", "groups": []},
        rule="phi-to-external-tool", approvals_required=2,
        approver_groups=("privacy-officers",),
        summary={"endpoint": "POST /v1/responses", "model": "gpt-5", "max_tokens": 512,
                 "tools": ["send_fax"], "entities": {"PERSON": 2}, "excerpt": EXCERPT},
    )  # fmt: skip
    return Approval(**{**fields, **changes})


class Webhook:
    """Records POSTs; answers the first `failures` of them with `status`."""

    def __init__(self, failures: int, status: int = 503, delay: float = 0.0) -> None:
        self.failures, self.status, self.delay = failures, status, delay
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.received = threading.Condition()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self.received:
            assert self.received.wait_for(lambda: len(self.bodies) >= count, timeout)


@contextmanager
def webhook_server(hook: Webhook) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            time.sleep(hook.delay)
            with hook.received:
                hook.bodies.append(body)
                hook.paths.append(self.path)
                failing = len(hook.bodies) <= hook.failures
                hook.received.notify_all()
            self.send_response(hook.status if failing else 200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{SECRET_PATH}"
    finally:
        server.shutdown()
        server.server_close()


def test_retries_with_backoff_until_delivered(caplog):
    caplog.set_level(logging.INFO, logger="phigate.approvals.notify")
    hook = Webhook(failures=2)
    with webhook_server(hook) as url:
        notifier = WebhookNotifier(url, base_url="https://gw.example:8082/", attempts=4, backoff=0.05)
        started = time.monotonic()
        assert notifier.notify(approval())
        hook.wait_for(3)
        notifier.close()
    assert time.monotonic() - started >= 0.05 + 0.1  # two backoffs, doubling
    assert len(hook.bodies) == 3 and hook.paths == [SECRET_PATH] * 3
    message = hook.bodies[-1]
    assert "https://gw.example:8082/approvals#apr_abcdefghijkl" in message["text"]
    actions = [b for b in message["blocks"] if b["type"] == "actions"][0]
    assert actions["elements"][0]["url"] == "https://gw.example:8082/approvals#apr_abcdefghijkl"
    logged = [r.getMessage() for r in caplog.records]
    assert sum("failed" in line and "HTTP 503" in line for line in logged) == 2
    assert any("delivered (attempt 3)" in line for line in logged)
    assert not any("s3cr3t" in line or "PERSON" in line for line in logged)


def test_gives_up_after_the_last_attempt(caplog):
    hook = Webhook(failures=100)
    with webhook_server(hook) as url:
        notifier = WebhookNotifier(url, base_url="http://127.0.0.1:8082", attempts=3, backoff=0.01)
        notifier.notify(approval())
        hook.wait_for(3)
        notifier.close()
    assert len(hook.bodies) == 3
    assert any("given up" in r.getMessage() for r in caplog.records)


def test_a_client_error_is_not_retried():
    hook = Webhook(failures=100, status=404)
    with webhook_server(hook) as url:
        notifier = WebhookNotifier(url, base_url="http://127.0.0.1:8082", attempts=4, backoff=0.01)
        notifier.notify(approval())
        hook.wait_for(1)
        notifier.close()
    assert len(hook.bodies) == 1


def test_an_unreachable_webhook_is_retried_and_logged_by_kind(caplog):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notifier = WebhookNotifier(
        f"http://127.0.0.1:{port}{SECRET_PATH}", base_url="http://127.0.0.1:8082",
        attempts=2, backoff=0.01,
    )  # fmt: skip
    notifier.notify(approval())
    deadline = time.monotonic() + 10
    while not any("given up" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    notifier.close()
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2 and all("ConnectionRefusedError" in f for f in failures)
    assert not any("s3cr3t" in r.getMessage() for r in caplog.records)


def test_notify_never_waits_for_a_slow_webhook():
    hook = Webhook(failures=0, delay=0.5)
    with webhook_server(hook) as url:
        notifier = WebhookNotifier(url, base_url="http://127.0.0.1:8082", backoff=0.01)
        started = time.monotonic()
        for _ in range(2):
            assert notifier.notify(approval())
        assert time.monotonic() - started < 0.2
        hook.wait_for(1)
        notifier.close(timeout=5)


def test_close_cuts_a_backoff_short():
    hook = Webhook(failures=100)
    with webhook_server(hook) as url:
        notifier = WebhookNotifier(url, base_url="http://127.0.0.1:8082", attempts=5, backoff=30)
        notifier.notify(approval())
        hook.wait_for(1)
        started = time.monotonic()
        notifier.close(timeout=5)
        assert time.monotonic() - started < 2
    assert len(hook.bodies) == 1


def test_the_message_is_slack_shaped_and_escapes_user_text():
    message = slack_message(approval(), "https://gw.example/approvals#apr_abcdefghijkl", now=100.0)
    assert message["blocks"][0] == {
        "type": "header", "text": {"type": "plain_text", "text": "Approval needed: phi-to-external-tool"},
    }  # fmt: skip
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in message["blocks"][1]["fields"]}
    assert fields["*Requester*"] == "alice (https://idp.example)"
    assert fields["*Masked entities*"] == "PERSON ×2"
    assert fields["*Needs*"] == "2 approvals from privacy-officers"
    assert fields["*Expires in*"] == "120 s"
    excerpt = message["blocks"][2]["text"]["text"]
    assert excerpt == "> Fax &lt;PERSON_1&gt;'s chart &amp; labs"


def test_only_http_webhooks_are_accepted():
    with pytest.raises(ValueError):
        WebhookNotifier("file:///etc/passwd", base_url="http://127.0.0.1:8082")
