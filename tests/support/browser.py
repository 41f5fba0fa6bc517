"""Debian's Chromium for browser tests, driven by Playwright (never `playwright install`).

Tests skip only when /usr/bin/chromium is missing and PHIGATE_REQUIRE_BROWSER is unset; CI
sets it, so there a missing browser fails instead. The flags keep Chromium from reaching out to
the network on its own (the machines here allow none).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
NO_BROWSER = not CHROMIUM.exists() and not os.environ.get("PHIGATE_REQUIRE_BROWSER")
SKIP_REASON = "no /usr/bin/chromium (apt-get install chromium)"


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium with a fresh temporary profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
