"""Places outside the database where signed checkpoints are exported.

A checkpoint only proves the log was not truncated or rewritten if a copy lives where the
gateway cannot rewrite it: a file opened append-only (ideally on another host or with
`chattr +a`), and/or a webhook run by someone else (a SIEM, a witness, a ticketing system).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol


# Connect directly: proxy variables in the gateway's environment must not reroute checkpoints.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SinkError(Exception):
    """A checkpoint could not be exported (the message names the sink, not the payload)."""


class CheckpointSink(Protocol):
    def publish(self, note: str) -> None: ...


class AppendOnlyFile:
    """Appends each note followed by a blank line; never seeks, never truncates."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def publish(self, note: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (note + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class Webhook:
    """POSTs each note as text/plain; retries transport errors and 5xx with backoff."""

    def __init__(self, url: str, *, attempts: int = 4, timeout: float = 5.0, backoff: float = 0.5):
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook URL must be http(s)")
        self.url, self.attempts, self.timeout, self.backoff = url, attempts, timeout, backoff

    def publish(self, note: str) -> None:
        request = urllib.request.Request(
            self.url,
            data=note.encode(),
            method="POST",
            headers={"content-type": "text/plain; charset=utf-8"},
        )
        for attempt in range(self.attempts):
            try:
                with _DIRECT.open(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise SinkError(f"checkpoint webhook refused it (HTTP {exc.code})") from None
            except (urllib.error.URLError, OSError):
                pass
            if attempt + 1 < self.attempts:
                time.sleep(self.backoff * 2**attempt)
        raise SinkError(f"checkpoint webhook unreachable after {self.attempts} attempts")
