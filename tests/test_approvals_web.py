"""The admin app's JSON API and page, served by the stdlib threaded server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from phigate.approvals import SqliteApprovalStore, make_admin_app, make_admin_server, masked_summary
from phigate.identity import DEV_ISSUER, DevIssuer, TokenVerifier


@contextmanager
def admin_server(store, verify: Callable[[str], Any], clock=None) -> Iterator[str]:
    """Serve the admin app as the gateway does; yields its base URL."""
    server = make_admin_server(lambda environ, start_response: [], "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{server.server_port}"
    extra = {"clock": clock} if clock else {}
    server.set_app(make_admin_app(store, verify, base_url=base_url, **extra))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


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


@pytest.fixture
def tokens(issuer) -> dict[str, str]:
    return {
        "alice": issuer.mint("alice", ["clinicians"]),
        "bob": issuer.mint("bob", ["privacy-officers"]),
        "carol": issuer.mint("carol", ["privacy-officers"]),
        "mallory": issuer.mint("mallory", ["clinicians"]),
    }


def hold(store, *, required: int = 1, timeout: float = 300.0):
    return store.create(
        request_id="req-1",
        requester={"iss": DEV_ISSUER, "sub": "alice", "groups": ["clinicians"]},
        rule="phi-to-external-tool",
        approver_groups=["privacy-officers"],
        approvals_required=required,
        summary=masked_summary(endpoint="POST /v1/responses", model="gpt-5",
                               entities={"PERSON": 1}, excerpt="Fax <PERSON_1>"),
        timeout=timeout,
    )  # fmt: skip


def call(base: str, path: str, token: str | None = None, body: Any = None,
         raw: bytes | None = None, method: str | None = None) -> tuple[int, dict, Any]:  # fmt: skip
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers_out, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers_out, payload = error.code, dict(error.headers), error.read()
    kind = headers_out.get("content-type", "")
    return status, headers_out, json.loads(payload) if kind == "application/json" else payload


def assert_error(result, status: int, code: str) -> None:
    got_status, _, body = result
    assert (got_status, body["error"]["code"]) == (status, code), body
    assert set(body["error"]) == {"message", "type", "code", "param"}


def test_every_api_call_needs_a_valid_token(base, store, issuer, tmp_path):
    approval = hold(store)
    status, headers, body = call(base, "/api/approvals")
    assert (status, body["error"]["code"], body["error"]["type"]) == (
        401, "token_missing", "authentication_error",
    )  # fmt: skip
    assert headers["www-authenticate"] == "Bearer"
    assert_error(call(base, "/api/approvals", "not-a-jwt"), 401, "token_malformed")
    stranger = DevIssuer(tmp_path / "other-issuer").mint("bob", ["privacy-officers"])
    assert_error(call(base, f"/api/approvals/{approval.id}/approve", stranger, {}), 401, "key_unknown")
    assert store.get(approval.id).state == "pending"


def test_an_opaque_verifier_failure_is_a_401_without_its_message(store):
    def verify(token: str):
        raise RuntimeError(f"boom {token}")

    with admin_server(store, verify) as url:
        status, _, body = call(url, "/api/me", "secret-token-value")
    assert (status, body["error"]["code"]) == (401, "token_invalid")
    assert "secret-token-value" not in json.dumps(body)


def test_approvers_list_and_read_what_they_may_decide(base, store, tokens):
    approval = hold(store)
    status, _, body = call(base, "/api/approvals", tokens["bob"])
    assert status == 200 and [a["id"] for a in body["data"]] == [approval.id]
    item = body["data"][0]
    assert item["can_decide"] is True and item["summary"]["excerpt"] == "Fax <PERSON_1>"
    assert 0 < item["expires_in"] <= 300 and item["url"] == f"{base}/approvals#{approval.id}"
    assert call(base, f"/api/approvals/{approval.id}", tokens["bob"])[2]["id"] == approval.id
    # The requester sees their own request but cannot decide it; others see nothing.
    mine = call(base, f"/api/approvals/{approval.id}", tokens["alice"])[2]
    assert mine["can_decide"] is False
    assert call(base, "/api/approvals", tokens["mallory"])[2]["data"] == []
    assert_error(call(base, f"/api/approvals/{approval.id}", tokens["mallory"]), 403, "not_an_approver")
    assert_error(call(base, "/api/approvals/apr_aaaaaaaaaaaa", tokens["bob"]), 404, "not_found")
    assert call(base, "/api/me", tokens["bob"])[2] == {
        "iss": DEV_ISSUER, "sub": "bob", "groups": ["privacy-officers"],
    }  # fmt: skip


def test_approve_records_the_verified_approver(base, store, tokens):
    approval = hold(store)
    status, _, body = call(base, f"/api/approvals/{approval.id}/approve", tokens["bob"],
                           {"reason": "routine referral"})  # fmt: skip
    assert (status, body["state"], body["can_decide"]) == (200, "approved", False)
    decision = store.get(approval.id).decisions[0]
    assert (decision["iss"], decision["sub"], decision["reason"]) == (DEV_ISSUER, "bob", "routine referral")
    assert_error(call(base, f"/api/approvals/{approval.id}/approve", tokens["carol"], {}), 409, "not_pending")
    listed = call(base, "/api/approvals?state=approved", tokens["bob"])[2]["data"]
    assert [a["id"] for a in listed] == [approval.id]
    assert call(base, "/api/approvals", tokens["bob"])[2]["data"] == []


def test_decision_rules_map_to_statuses(base, store, tokens):
    approval = hold(store, required=2)
    path = f"/api/approvals/{approval.id}"
    assert_error(call(base, path + "/approve", tokens["alice"], {}), 403, "self_approval")
    assert_error(call(base, path + "/approve", tokens["mallory"], {}), 403, "not_an_approver")
    assert_error(call(base, path + "/deny", tokens["bob"], {"reason": " "}), 400, "reason_required")
    no_body = call(base, path + "/approve", tokens["bob"], method="POST")
    assert no_body[2]["state"] == "pending"  # a reason is optional for approvals
    assert_error(call(base, path + "/approve", tokens["bob"], {}), 409, "already_decided")
    status, _, body = call(base, path + "/deny", tokens["carol"], {"reason": "wrong patient"})
    assert (status, body["state"]) == (200, "denied")
    assert [d["decision"] for d in store.get(approval.id).decisions] == ["approve", "deny"]


def test_an_expired_approval_cannot_be_decided(store, issuer, tokens):
    approval = hold(store, timeout=60)
    later = lambda: approval.expires_at + 1  # noqa: E731
    verifier = TokenVerifier([issuer.trusted_issuer()])
    with admin_server(store, verifier.verify, clock=later) as url:
        assert_error(call(url, f"/api/approvals/{approval.id}/approve", tokens["bob"], {}), 409, "expired")
    assert store.get(approval.id).state == "expired"


def test_malformed_requests_are_refused(base, store, tokens):
    approval = hold(store)
    path = f"/api/approvals/{approval.id}"
    assert_error(call(base, path + "/approve", tokens["bob"], raw=b"{not json"), 400, "invalid_json")
    assert_error(call(base, path + "/deny", tokens["bob"], {"reason": 7}), 400, "invalid_body")
    too_big = json.dumps({"reason": "x" * 20_000}).encode()
    assert_error(call(base, path + "/deny", tokens["bob"], raw=too_big), 413, "body_too_large")
    assert_error(call(base, path + "/approve", tokens["bob"]), 405, "method_not_allowed")
    assert_error(call(base, path, tokens["bob"], {}), 405, "method_not_allowed")
    assert_error(call(base, "/api/approvals?state=maybe", tokens["bob"]), 400, "invalid_state")
    assert_error(call(base, "/api/nothing", tokens["bob"]), 404, "not_found")
    assert_error(call(base, "/nothing"), 404, "not_found")
    assert store.get(approval.id).decisions == ()


def test_the_page_is_static_and_locked_down(base):
    status, headers, html = call(base, "/approvals")
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    page = html.decode()
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/approvals/app.js" defer>']
    assert not re.search(r"\son[a-z]+\s*=", page) and "<style" not in page and "http" not in page
    status, headers, script = call(base, "/approvals/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert b"innerHTML" not in script and b"localStorage" not in script
    assert call(base, "/approvals/app.css")[0] == 200
