"""SSO in real headless Chromium (Debian's), driven by Playwright: the whole SAML login.

Skips only when /usr/bin/chromium is missing and PHIGATE_REQUIRE_BROWSER is unset.
"""

from __future__ import annotations

import pytest

from phigate.sso.oidc_login import OidcLogin, OidcLoginConfig
from phigate.sso.web import make_sso_app
from tests.support.browser import NO_BROWSER, SKIP_REASON, chromium
from tests.support.oidc_login_idp import OidcLoginProvider
from tests.support.saml_idp import SamlIdp, User
from tests.test_sso_web import SESSION_KEY, build_sp, serving, whoami_app

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
    yield opened
    context.close()


@pytest.fixture(scope="module")
def idp():
    with SamlIdp() as running:
        yield running


@pytest.fixture(scope="module")
def site(idp):
    def build(base):
        return make_sso_app(
            whoami_app, saml=build_sp(base, idp), session_key=SESSION_KEY, secure=False
        )

    with serving(build) as base:
        yield base


def test_an_approver_signs_in_through_the_saml_idp(page, site, idp):
    idp.user = User("dr-alice@hospital.example", ("clinicians", "approvers"))
    page.goto(site + "/whoami")
    assert page.text_content("#status") == "not signed in"
    page.goto(site + "/login?next=/whoami")  # -> IdP -> auto-posted Response -> ACS -> /whoami
    page.wait_for_url(site + "/whoami")
    assert idp.received[-1].acs_url == site + "/saml/acs"  # it went through the IdP
    assert page.text_content("#status") == "signed in"
    assert page.text_content("#who") == "dr-alice@hospital.example"
    assert page.text_content("#groups") == "clinicians approvers"
    assert page.text_content("#source") == "saml"
    session = [c for c in page.context.cookies() if c["name"] == "phigate_session"]
    assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # invisible to scripts


def test_a_user_without_the_group_is_refused_by_the_inner_app(page, site, idp):
    idp.user = User("dr-bob@hospital.example", ("clinicians",))
    page.goto(site + "/login?next=/whoami")
    page.wait_for_url(site + "/whoami")
    assert page.text_content("#status") == "refused: dr-bob@hospital.example is not an approver"


def test_an_approver_signs_in_with_oidc(page):
    with OidcLoginProvider(client_id="phigate-admin") as provider:

        def build(base):
            provider.redirect_uris.add(base + "/oidc/callback")
            oidc = OidcLogin(
                OidcLoginConfig(
                    issuer=provider.issuer,
                    client_id="phigate-admin",
                    redirect_uri=base + "/oidc/callback",
                )
            )
            return make_sso_app(whoami_app, oidc=oidc, session_key=SESSION_KEY, secure=False)

        with serving(build) as base:
            page.goto(base + "/login?next=/whoami")
            page.wait_for_url(base + "/whoami")
            assert page.text_content("#who") == "dr-alice"
            assert page.text_content("#source") == "oidc"
