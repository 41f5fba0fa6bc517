"""The approval page in real headless Chromium (Debian's), driven by Playwright.

Skips only when /usr/bin/chromium is missing and PHIGATE_REQUIRE_BROWSER is unset; CI sets it,
so there a missing browser fails instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from phigate.approvals import SqliteApprovalStore, masked_summary
from phigate.identity import DEV_ISSUER, DevIssuer, TokenVerifier
from tests.support.browser import NO_BROWSER, SKIP_REASON, chromium
from tests.test_approvals_web import admin_server

TOKEN_KEY = "phigate.approverToken"

if NO_BROWSER:
    pytest.skip(SKIP_REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser):
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    violations: list[str] = []
    opened.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    yield opened
    context.close()
    assert violations == []  # the page lives within its own CSP


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "issuer")


@pytest.fixture
def store(tmp_path: Path):
    opened = SqliteApprovalStore(tmp_path / "approvals.db")
    yield opened
    opened.close()


@pytest.fixture
def base(store, issuer):
    with admin_server(store, TokenVerifier([issuer.trusted_issuer()]).verify) as url:
        yield url


def hold(store):
    return store.create(
        request_id="req-1",
        requester={"iss": DEV_ISSUER, "sub": "dr-alice", "groups": ["clinicians"]},
        rule="phi-to-external-tool",
        approver_groups=["privacy-officers"],
        summary=masked_summary(endpoint="POST /v1/responses", model="gpt-5", tools=["send_fax"],
                               entities={"PERSON": 2}, excerpt="Fax <PERSON_1>'s chart"),
        timeout=600,
    )  # fmt: skip


def sign_in(page, base: str, token: str, fragment: str = "") -> None:
    page.goto(f"{base}/approvals{fragment}")
    page.fill("#token", token)
    page.click("#use-token")


def test_an_approver_approves_from_the_page(page, base, store, issuer):
    approval = hold(store)
    token = issuer.mint("officer-bob", ["privacy-officers"])
    sign_in(page, base, token)
    page.wait_for_selector("#who:has-text('Signed in as officer-bob')")
    card = page.locator(f"[data-approval='{approval.id}']")
    card.wait_for()
    text = card.inner_text()
    assert "dr-alice" in text and "phi-to-external-tool" in text and "PERSON ×2" in text
    assert "Fax <PERSON_1>'s chart" in text  # shown as text, not parsed as markup
    assert card.locator(".time-left").inner_text().endswith(" s")
    # The token lives in this tab's sessionStorage only.
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == token
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []

    card.locator("input.reason").fill("referral letter is routine")
    card.locator("button.approve").click()
    page.wait_for_selector(f"#status:has-text('Approval of {approval.id} recorded; it is now approved')")

    decided = store.get(approval.id)
    assert decided.state == "approved"
    assert [(d["iss"], d["sub"], d["decision"], d["reason"]) for d in decided.decisions] == [
        (DEV_ISSUER, "officer-bob", "approve", "referral letter is routine"),
    ]
    # The list is re-rendered after the status line: wait for the decided card's button to go.
    page.locator(f"[data-approval='{approval.id}'] button.approve").wait_for(state="detached",
                                                                           timeout=10_000)


def test_a_non_approver_gets_an_error_on_the_page(page, base, store, issuer):
    approval = hold(store)
    sign_in(page, base, issuer.mint("dr-mallory", ["clinicians"]), fragment=f"#{approval.id}")
    error = page.locator("#error")
    error.wait_for()
    assert "not_an_approver" in error.inner_text()
    assert page.locator("button.approve").count() == 0
    assert store.get(approval.id).state == "pending" and store.get(approval.id).decisions == ()


def test_a_refused_token_is_shown_and_forgotten(page, base, tmp_path):
    forged = DevIssuer(tmp_path / "elsewhere").mint("officer-bob", ["privacy-officers"])
    sign_in(page, base, forged)
    page.wait_for_selector("#error:has-text('key_unknown')")
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    assert page.is_visible("#signin") and not page.is_visible("#queue")
