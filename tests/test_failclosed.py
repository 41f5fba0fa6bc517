"""Fail closed: a stage that raises, or a gateway without an upstream key, never forwards.

Each test runs its own gateway (one at a time: mitmproxy's ctx is process-global)."""

from __future__ import annotations

import httpx
import openai
import pytest

from phigate.addons.embedded import RunningGateway
from phigate.identity import DevIssuer

from .test_pipeline import MODEL, record_for


class Explodes:
    """A stage with a bug: raises on every request."""

    def request(self, flow):
        raise RuntimeError("patient Jane Roe, MRN 12345678")  # PHI in a message must not leak


def test_a_stage_that_raises_fails_the_request_closed(tmp_path, upstream):
    from phigate.addons.failclosed import guard
    from phigate.addons.gateway import pipeline

    class Faulty(Explodes):
        request = guard("faulty")(Explodes.request)

    addons = pipeline()
    # Just before the upstream stage: a fault there must still keep the request from leaving.
    addons.insert(next(i for i, a in enumerate(addons) if type(a).__name__ == "Upstream"), Faulty())
    upstream.clear()
    with RunningGateway(tmp_path, upstream=upstream.url, upstream_ca=str(upstream.tls.ca_cert),
                        addons=addons, options={"admin_listen": ""}) as gw:
        token = DevIssuer(gw.home.issuer_dir).mint("dr-alice", ["clinicians"])
        response = httpx.post(f"{gw.reverse_url}/v1/chat/completions",
                              headers={"authorization": f"Bearer {token}"},
                              json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "gateway_stage_failed"
        assert response.headers["x-should-retry"] == "false"
        assert "Jane" not in response.text
        assert upstream.received == []
        record = record_for(gw, response.headers["x-phigate-request-id"])
        assert record["error"] == {"stage": "faulty", "kind": "RuntimeError"}
        assert "Jane" not in gw.home.audit_db.read_bytes().decode(errors="replace")


def test_without_an_upstream_key_requests_get_503(tmp_path, upstream, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    upstream.clear()
    with RunningGateway(tmp_path, upstream=upstream.url, upstream_ca=str(upstream.tls.ca_cert),
                        upstream_key=None, options={"admin_listen": ""}) as gw:
        token = DevIssuer(gw.home.issuer_dir).mint("dr-alice", ["clinicians"])
        with pytest.raises(openai.APIStatusError) as raised:
            openai.OpenAI(base_url=gw.reverse_url + "/v1", api_key=token,
                          max_retries=0).models.list()
        assert raised.value.status_code == 503
        assert raised.value.body["code"] == "upstream_key_missing"
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert upstream.received == []


def test_streaming_request_bodies_cannot_be_enabled(tmp_path, upstream):
    from mitmproxy.exceptions import OptionsError

    with pytest.raises(OptionsError, match="stream_large_bodies"):
        with RunningGateway(tmp_path, upstream=upstream.url,
                            options={"stream_large_bodies": "1m", "admin_listen": ""}):
            pass


def test_bodies_are_bounded_by_default(tmp_path, upstream):
    with RunningGateway(tmp_path, upstream=upstream.url, upstream_ca=str(upstream.tls.ca_cert),
                        options={"admin_listen": ""}) as gw:
        assert gw.master.options.body_size_limit == "32m"
        token = DevIssuer(gw.home.issuer_dir).mint("dr-big", ["clinicians"])
        upstream.clear()
        with pytest.raises(httpx.HTTPError):
            response = httpx.post(f"{gw.reverse_url}/v1/chat/completions",
                                  headers={"authorization": f"Bearer {token}",
                                           "content-type": "application/json"},
                                  content=b'{"model": "gpt-4o-mini", "messages": [], "pad": "'
                                  + b"x" * (33 * 1024 * 1024) + b'"}', timeout=30)
            response.raise_for_status()
        assert upstream.received == []


def test_every_flow_hook_of_the_pipeline_is_contained():
    """The stages run as children of one addon (addons/gateway.py): a hook that raised would
    keep the stages after it from seeing the event (e.g. masking from setting up a stream)."""
    from mitmproxy import hooks
    from mitmproxy.addonmanager import traverse

    from phigate.addons.failclosed import CONTAINED
    from phigate.addons.gateway import pipeline

    lifecycle = {"load", "configure", "running", "done"}
    checked, loose = 0, []
    for addon in traverse(pipeline()):
        for name in set(hooks.all_hooks) - lifecycle:
            hook = getattr(addon, name, None)
            if callable(hook):
                checked += 1
                if not getattr(hook, CONTAINED, False):
                    loose.append(f"{type(addon).__name__}.{name}")
    assert checked >= 20 and loose == []
