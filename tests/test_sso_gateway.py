"""Human sign-in through the hospital's SAML IdP, end to end: an approver signs in to the
gateway's admin page in real Chromium and approves a request the gateway is holding; a
signed-in user without the approver group cannot."""

from __future__ import annotations

import pytest

from phigate.addons.embedded import RunningGateway
from phigate.identity import DevIssuer
from tests.support.browser import NO_BROWSER, SKIP_REASON, chromium
from tests.support.saml_idp import SamlIdp, User

from .test_approvals_gateway import Held, pending
from .test_pipeline import record_for

if NO_BROWSER:
    pytest.skip(SKIP_REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def idp():
    with SamlIdp() as running:
        yield running


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream, idp):
    home = tmp_path_factory.mktemp("sso-home")
    metadata = home / "idp-metadata.xml"
    metadata.write_bytes(idp.metadata_xml())
    with RunningGateway(home, upstream=upstream.url, upstream_ca=str(upstream.tls.ca_cert),
                        options={"admin_listen": "127.0.0.1:0",
                                 "sso_saml_idp_metadata": str(metadata)}) as running:
        yield running


@pytest.fixture
def page():
    with chromium() as browser:
        opened = browser.new_page()
        opened.set_default_timeout(10_000)
        yield opened


def sign_in(page, admin: str) -> None:
    page.goto(f"{admin}/approvals")
    page.click("#sso a")  # -> /login -> IdP -> signed Response auto-posted -> ACS -> /approvals
    page.wait_for_url(f"{admin}/approvals")


def test_an_approver_signs_in_with_saml_and_approves(gw, upstream, idp, page):
    upstream.clear()
    idp.user = User("officer-sso@hospital.example", ("phi-approvers",))
    requester = DevIssuer(gw.home.issuer_dir).mint("dr-sso", ["clinicians"])
    held = Held(gw, requester, max_tokens=5000)
    approval = pending(gw, "dr-sso")
    admin = gw.master.addons.get("admin").url()

    sign_in(page, admin)
    page.wait_for_selector("#who:has-text('officer-sso@hospital.example')")
    card = page.locator(f"[data-approval='{approval['id']}']")
    card.wait_for()
    card.locator("input.reason").fill("signed in with SAML")
    card.locator("button.approve").click()
    page.wait_for_selector(f"#status:has-text('{approval['id']}')")

    response = held.result()
    assert response.status_code == 200
    assert len(upstream.received) == 1
    decided = record_for(gw, response.headers["x-phigate-request-id"])["approval"]["decided_by"]
    assert [(d["iss"], d["sub"]) for d in decided] == [(idp.entity_id,
                                                       "officer-sso@hospital.example")]


def test_a_signed_in_user_without_the_approver_group_cannot_decide(gw, upstream, idp, page):
    upstream.clear()
    idp.user = User("dr-nosy@hospital.example", ("clinicians",))
    held = Held(gw, DevIssuer(gw.home.issuer_dir).mint("dr-sso-2", ["clinicians"]), 5000)
    approval = pending(gw, "dr-sso-2")
    admin = gw.master.addons.get("admin").url()

    sign_in(page, admin)
    page.goto(f"{admin}/approvals#{approval['id']}")
    page.wait_for_selector("#error:has-text('not_an_approver')")
    assert page.locator("button.approve").count() == 0
    assert held.response is None and upstream.received == []

