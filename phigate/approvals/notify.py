"""Telling approvers that a request waits: a Slack-compatible webhook, posted in the background.

Delivery never blocks the held request or the decision: `notify` queues the message and returns;
a daemon thread posts it with bounded retries and exponential backoff. Failures are logged by
approval id and failure kind only: the webhook URL is a secret (Slack puts its token in the
path) and the message body stays out of logs.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from phigate.approvals.model import Approval

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
# Statuses worth another try; any other 4xx means the webhook is misconfigured.
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def approval_link(base_url: str, approval_id: str) -> str:
    """The approval page with this approval selected."""
    return f"{base_url.rstrip('/')}/approvals#{approval_id}"


def slack_message(approval: Approval, link: str, now: float) -> dict[str, Any]:
    """`{"text", "blocks"}` for a Slack incoming webhook (other chat tools read `text`)."""
    summary = approval.summary
    requester = f"{approval.requester['sub']} ({approval.requester['iss']})"
    entities = ", ".join(f"{kind} ×{count}" for kind, count in summary["entities"].items())
    left = max(0, round(approval.expires_at - now))
    needed = "1 approval" if approval.approvals_required == 1 else "2 approvals"
    fields = {
        "Requester": requester,
        "Endpoint": summary["endpoint"],
        "Model": summary["model"] or "–",
        "Max tokens": "–" if summary["max_tokens"] is None else str(summary["max_tokens"]),
        "Tools": ", ".join(summary["tools"]) or "none",
        "Masked entities": entities or "none",
        "Needs": f"{needed} from {', '.join(approval.approver_groups)}",
        "Expires in": f"{left} s",
    }
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Approval needed: {approval.rule}"}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"} for name, value in fields.items()
            ],
        },
    ]  # fmt: skip
    if summary["excerpt"]:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "> " + _escape(summary["excerpt"])}}
        )
    blocks.append(
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Review"},
                          "url": link, "style": "primary"}],
        }  # fmt: skip
    )
    text = (
        f"Approval needed: {approval.rule} for {requester} on {summary['endpoint']}, "
        f"expires in {left} s: {link}"
    )
    return {"text": _escape(text), "blocks": blocks}


def _escape(text: str) -> str:
    """Slack mrkdwn control characters; also keeps `<url|label>` links out of user data."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookNotifier:
    """Posts one message per new approval to a webhook, from a background thread."""

    def __init__(
        self,
        url: str,
        *,
        base_url: str,
        attempts: int = 4,
        backoff: float = 1.0,
        timeout: float = 5.0,
        queue_size: int = 256,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError("the webhook URL must be an http(s) URL")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._url = url
        self._base_url = base_url
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(queue_size)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="approval-webhook", daemon=True)
        self._thread.start()

    def notify(self, approval: Approval) -> bool:
        """Queue the message; False (and a log line) if the queue is full. Never blocks."""
        message = slack_message(approval, approval_link(self._base_url, approval.id), time.time())
        try:
            self._queue.put_nowait((approval.id, json.dumps(message).encode()))
        except queue.Full:
            log.warning("approval webhook for %s dropped: queue full", approval.id)
            return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the queued messages (each tried once more at most, no more waiting)."""
        self._closing.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass  # the worker is a daemon; it dies with the process
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._deliver(*item)

    def _deliver(self, approval_id: str, body: bytes) -> None:
        for attempt in range(1, self._attempts + 1):
            failure = self._post(body)
            if failure is None:
                log.info("approval webhook for %s delivered (attempt %d)", approval_id, attempt)
                return
            kind, retryable = failure
            log.warning(
                "approval webhook for %s failed (attempt %d/%d): %s",
                approval_id, attempt, self._attempts, kind,
            )  # fmt: skip
            if not retryable or attempt == self._attempts:
                break
            delay = min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
            if self._closing.wait(delay):
                break
        log.error("approval webhook for %s given up", approval_id)

    def _post(self, body: bytes) -> tuple[str, bool] | None:
        """None on success, else (failure kind, whether a retry may help)."""
        request = urllib.request.Request(
            self._url, data=body, method="POST", headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}", error.code in _RETRYABLE
        except (OSError, ValueError) as error:
            # URLError and timeouts are OSErrors; the message may echo the URL, the type cannot.
            reason = getattr(error, "reason", None)
            return type(reason if isinstance(reason, BaseException) else error).__name__, True
        return None
