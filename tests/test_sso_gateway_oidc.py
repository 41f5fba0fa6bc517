"""Browser sign-in with OIDC (authorization code + PKCE) to the gateway's admin page, in real
Chromium, against a local OIDC provider: an approver approves a held request."""

from __future__ import annotations

from phigate.addons.embedded import RunningGateway
from phigate.identity import DevIssuer
from tests.support.oidc_login_idp import LoginUser, OidcLoginProvider

from .test_approvals_gateway import Held, pending
from .test_pipeline import record_for
from .test_sso_gateway import page, sign_in  # noqa: F401 (the page fixture)


def test_an_approver_signs_in_with_oidc_and_approves(tmp_path, upstream, page):
    with OidcLoginProvider(client_id="phigate-admin") as provider:
        with RunningGateway(tmp_path, upstream=upstream.url, upstream_ca=str(upstream.tls.ca_cert),
                            options={"admin_listen": "127.0.0.1:0",
                                     "sso_oidc_issuer": provider.issuer,
                                     "sso_oidc_client_id": "phigate-admin"}) as gateway:
            admin = gateway.master.addons.get("admin").url()
            provider.redirect_uris.add(admin + "/oidc/callback")
            provider.user = LoginUser("officer-oidc", ("phi-approvers",))
            upstream.clear()
            held = Held(gateway, DevIssuer(gateway.home.issuer_dir).mint("dr-oidc", ["clinicians"]),
                        5000)
            approval = pending(gateway, "dr-oidc")
            sign_in(page, admin)
            card = page.locator(f"[data-approval='{approval['id']}']")
            card.wait_for()
            card.locator("input.reason").fill("signed in with OIDC")
            card.locator("button.approve").click()
            page.wait_for_selector(f"#status:has-text('{approval['id']}')")
            response = held.result()
            assert response.status_code == 200
            decided = record_for(gateway, response.headers["x-phigate-request-id"])
            assert decided["approval"]["decided_by"][0]["sub"] == "officer-oidc"
