"""The SSO middleware over real sockets: login routes, the session cookie, CSRF."""

from __future__ import annotations

import base64
import contextlib
import html
import http.client
import json
import re
import threading
import time
from urllib.parse import urlencode, urlsplit

import pytest

from phigate.approvals.web import make_admin_server
from phigate.sso.oidc_login import OidcLogin, OidcLoginConfig
from phigate.sso.saml import SamlConfig, SamlServiceProvider
from phigate.sso.web import make_sso_app, safe_next
from tests.support.oidc_login_idp import OidcLoginProvider
from tests.support.saml_idp import SamlIdp, User

SESSION_KEY = b"k" * 32
REQUIRED_GROUP = "approvers"


def whoami_app(environ, start_response):
    """The inner app of these tests: shows the signed-in person; approvers only."""
    identity = environ.get("phigate.identity")
    if environ.get("PATH_INFO") != "/whoami":
        start_response("404 Not Found", [("content-type", "text/plain")])
        return [b"not found"]
    if identity is None:
        status, body = "401 Unauthorized", "<p id=status>not signed in</p>"
    elif REQUIRED_GROUP not in identity.groups:
        status, body = (
            "403 Forbidden",
            f"<p id=status>refused: {html.escape(identity.sub)} is not an approver</p>",
        )
    else:
        status = "200 OK"
        body = (
            f"<p id=status>signed in</p><p id=who>{html.escape(identity.sub)}</p>"
            f"<p id=groups>{html.escape(' '.join(identity.groups))}</p>"
            f"<p id=source>{identity.source}</p><p id=method>{environ['REQUEST_METHOD']}</p>"
        )
    page = f"<!doctype html><html><head><title>whoami</title></head><body>{body}</body></html>"
    start_response(status, [("content-type", "text/html; charset=utf-8")])
    return [page.encode()]


@contextlib.contextmanager
def serving(build):
    """Serve `build(base_url)` on 127.0.0.1 (the app may need its own URL, e.g. for its ACS)."""
    holder = []
    server = make_admin_server(lambda environ, start_response: holder[0](environ, start_response))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    holder.append(build(base))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()


class Client:
    """A tiny browser: keeps cookies per name (all on 127.0.0.1), follows nothing."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.set_cookie_lines: list[str] = []

    def request(self, method, url, body=None, headers=None):
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        path = parts.path + ("?" + parts.query if parts.query else "")
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        for line in response.headers.get_all("set-cookie") or []:
            self.set_cookie_lines.append(line)
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in line:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        connection.close()
        return response.status, response.headers, data

    def post_form(self, url, fields, headers=None):
        return self.request(
            "POST",
            url,
            urlencode(fields),
            {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )


@pytest.fixture(scope="module")
def saml_idp():
    with SamlIdp() as running:
        yield running


@pytest.fixture
def saml_site(saml_idp):
    saml_idp.user = User()

    def build(base):
        sp = SamlServiceProvider(
            SamlConfig(
                entity_id=base + "/saml/metadata",
                acs_url=base + "/saml/acs",
                idp=saml_idp.metadata(),
            )
        )
        return make_sso_app(whoami_app, saml=sp, session_key=SESSION_KEY, secure=False)

    with serving(build) as base:
        yield base


def saml_login(client, base, idp, next_path="/whoami"):
    """Run the browser side of a SAML login; returns the ACS response."""
    status, headers, _ = client.request("GET", f"{base}/login/saml?next={next_path}")
    assert status == 303
    status, _, page = client.request("GET", headers["location"])
    assert status == 200
    acs = html.unescape(re.search(rb'action="([^"]+)"', page).group(1).decode())
    response = re.search(rb'name="SAMLResponse" value="([^"]+)"', page).group(1).decode()
    return client.post_form(acs, {"SAMLResponse": response})


def test_a_saml_login_gives_a_session_the_inner_app_sees(saml_site, saml_idp):
    client = Client()
    status, _, page = saml_login(client, saml_site, saml_idp)
    assert status == 200 and b'url=/whoami"' in page
    session_line = next(
        line for line in client.set_cookie_lines if line.startswith("phigate_session=")
    )
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in session_line
    max_age = int(re.search(r"Max-Age=(\d+)", session_line).group(1))
    assert 0 < max_age <= 900
    sealed = client.cookies["phigate_session"].split(".", 1)[1]
    assert b"dr-alice" not in base64.urlsafe_b64decode(
        sealed + "=" * (-len(sealed) % 4)
    )  # sealed, not just signed
    status, _, page = client.request("GET", saml_site + "/whoami")
    assert status == 200
    assert b"<p id=who>dr-alice@hospital.example</p>" in page and b"<p id=source>saml</p>" in page
    assert "phigate_login" not in client.cookies  # the binding is used up


def test_without_a_session_the_inner_app_sees_no_identity(saml_site):
    client = Client()
    assert client.request("GET", saml_site + "/whoami")[0] == 401
    client.cookies["phigate_session"] = "v1.AAAAforgedAAAA"
    assert client.request("GET", saml_site + "/whoami")[0] == 401


def test_a_user_without_the_required_group_is_refused_by_the_inner_app(saml_site, saml_idp):
    saml_idp.user = User("dr-bob@hospital.example", ("clinicians",))
    client = Client()
    assert saml_login(client, saml_site, saml_idp)[0] == 200
    status, _, page = client.request("GET", saml_site + "/whoami")
    assert status == 403 and b"dr-bob@hospital.example is not an approver" in page


def test_the_acs_needs_the_login_cookie_of_this_browser(saml_site, saml_idp):
    victim, attacker = Client(), Client()
    status, headers, _ = attacker.request("GET", f"{saml_site}/login/saml?next=/whoami")
    _, _, page = attacker.request("GET", headers["location"])
    response = re.search(rb'name="SAMLResponse" value="([^"]+)"', page).group(1).decode()
    # Login CSRF: the attacker's own valid response posted through the victim's browser.
    status, _, page = victim.post_form(saml_site + "/saml/acs", {"SAMLResponse": response})
    assert status == 401 and b"saml_request_unknown" in page
    assert "phigate_session" not in victim.cookies


def test_state_changing_requests_need_the_csrf_token(saml_site, saml_idp):
    client = Client()
    saml_login(client, saml_site, saml_idp)
    status, _, body = client.request("POST", saml_site + "/whoami")
    assert status == 403 and json.loads(body)["error"]["code"] == "csrf_failed"
    status, _, body = client.request(
        "POST", saml_site + "/whoami", headers={"X-CSRF-Token": "guess"}
    )
    assert status == 403
    status, _, body = client.request("GET", saml_site + "/api/csrf")
    token = json.loads(body)
    assert status == 200 and token["header"] == "X-CSRF-Token"
    status, _, page = client.request(
        "POST", saml_site + "/whoami", headers={"X-CSRF-Token": token["csrf_token"]}
    )
    assert status == 200 and b"<p id=method>POST</p>" in page
    assert Client().request("GET", saml_site + "/api/csrf")[0] == 401


def test_a_bearer_request_never_borrows_the_session(saml_site, saml_idp):
    client = Client()
    saml_login(client, saml_site, saml_idp)
    status, _, _ = client.request(
        "GET", saml_site + "/whoami", headers={"Authorization": "Bearer x.y.z"}
    )
    assert status == 401  # the inner app would check the bearer token itself


def test_logout_clears_the_session(saml_site, saml_idp):
    client = Client()
    saml_login(client, saml_site, saml_idp)
    status, _, page = client.request("GET", saml_site + "/logout")
    token = html.unescape(re.search(rb'name="csrf_token" value="([^"]*)"', page).group(1).decode())
    assert client.post_form(saml_site + "/logout", {"csrf_token": "wrong"})[0] == 403
    assert client.request("GET", saml_site + "/whoami")[0] == 200
    assert client.post_form(saml_site + "/logout", {"csrf_token": token})[0] == 200
    assert "phigate_session" not in client.cookies
    assert client.request("GET", saml_site + "/whoami")[0] == 401


def test_sessions_expire(saml_idp):
    now = [time.time()]

    def build(base):
        sp = SamlServiceProvider(
            SamlConfig(
                entity_id=base + "/saml/metadata",
                acs_url=base + "/saml/acs",
                idp=saml_idp.metadata(),
            )
        )
        return make_sso_app(
            whoami_app, saml=sp, session_key=SESSION_KEY, secure=False, ttl=60, clock=lambda: now[0]
        )

    with serving(build) as base:
        client = Client()
        saml_login(client, base, saml_idp)
        assert client.request("GET", base + "/whoami")[0] == 200
        now[0] += 61
        assert client.request("GET", base + "/whoami")[0] == 401


def test_a_session_sealed_with_another_key_is_ignored(saml_idp):
    def build_with(key):
        def build(base):
            sp = SamlServiceProvider(
                SamlConfig(
                    entity_id=base + "/saml/metadata",
                    acs_url=base + "/saml/acs",
                    idp=saml_idp.metadata(),
                )
            )
            return make_sso_app(whoami_app, saml=sp, session_key=key, secure=False)

        return build

    client = Client()
    with serving(build_with(b"a" * 32)) as base:
        saml_login(client, base, saml_idp)
        assert client.request("GET", base + "/whoami")[0] == 200
    with serving(build_with(b"b" * 32)) as base:
        assert client.request("GET", base + "/whoami")[0] == 401


def test_secure_cookies_and_the_loopback_rule(saml_idp):
    def build(base):
        sp = SamlServiceProvider(
            SamlConfig(
                entity_id=base + "/saml/metadata",
                acs_url=base + "/saml/acs",
                idp=saml_idp.metadata(),
            )
        )
        return make_sso_app(whoami_app, saml=sp, session_key=SESSION_KEY, secure=True)

    with serving(build) as base:
        client = Client()
        status, _, _ = client.request("GET", f"{base}/login/saml?next=/whoami")
        login_line = client.set_cookie_lines[-1]
        assert status == 303 and login_line.startswith("__Host-phigate_login=")
        assert "Secure" in login_line and "SameSite=None" in login_line and "HttpOnly" in login_line
    with serving(
        lambda base: make_sso_app(
            whoami_app, saml=build_sp(base, saml_idp), session_key=SESSION_KEY, secure=False
        )
    ) as base:
        status, _, page = Client().request(
            "GET", base + "/whoami", headers={"Host": "admin.hospital.test"}
        )
        assert status == 403 and b"insecure_cookies" in page


def build_sp(base, idp):
    return SamlServiceProvider(
        SamlConfig(
            entity_id=base + "/saml/metadata", acs_url=base + "/saml/acs", idp=idp.metadata()
        )
    )


def test_metadata_and_the_login_chooser(saml_site):
    status, headers, body = Client().request("GET", saml_site + "/saml/metadata")
    assert status == 200 and headers["content-type"] == "application/samlmetadata+xml"
    assert f'entityID="{saml_site}/saml/metadata"'.encode() in body
    status, headers, _ = Client().request("GET", saml_site + "/login?next=/whoami")
    assert status == 303 and headers["location"] == "/login/saml?next=%2Fwhoami"
    assert Client().request("GET", saml_site + "/oidc/callback")[0] == 404  # OIDC is not set up


@pytest.mark.parametrize(
    "value",
    [
        "//evil.test/x",
        "https://evil.test",
        "/\\evil.test",
        "evil",
        "",
        None,
        "/ok\r\nSet-Cookie: x=1",
    ],
)
def test_return_paths_stay_on_this_site(value):
    assert safe_next(value) == "/"


def test_return_paths_keep_local_targets():
    assert safe_next("/approvals/apr_abc?x=1") == "/approvals/apr_abc?x=1"


@pytest.fixture
def oidc_site(saml_idp):
    idp = OidcLoginProvider(client_id="phigate-admin").start()

    def build(base):
        idp.redirect_uris.add(base + "/oidc/callback")
        oidc = OidcLogin(
            OidcLoginConfig(
                issuer=idp.issuer, client_id="phigate-admin", redirect_uri=base + "/oidc/callback"
            )
        )
        saml = build_sp(base, saml_idp)  # a second method, to get the chooser
        return make_sso_app(whoami_app, saml=saml, oidc=oidc, session_key=SESSION_KEY, secure=False)

    try:
        with serving(build) as base:
            yield base, idp
    finally:
        idp.stop()


def test_an_oidc_login_gives_a_session(oidc_site):
    base, idp = oidc_site
    client = Client()
    status, _, page = client.request("GET", base + "/login?next=/whoami")
    assert status == 200 and b"/login/oidc?next=%2Fwhoami" in page and b"/login/saml" in page
    status, headers, _ = client.request("GET", base + "/login/oidc?next=/whoami")
    assert status == 303
    status, headers, _ = client.request("GET", headers["location"])
    assert status == 302
    callback = headers["location"]
    status, _, page = client.request("GET", callback)
    assert status == 200 and b'url=/whoami"' in page
    status, _, page = client.request("GET", base + "/whoami")
    assert status == 200 and b"<p id=who>dr-alice</p>" in page and b"<p id=source>oidc</p>" in page
    # The callback again (the code and state are spent): refused, and no new session.
    replay = Client()
    status, _, page = replay.request("GET", callback)
    assert (
        status == 401 and b"oidc_state_invalid" in page and "phigate_session" not in replay.cookies
    )
