"""The gateway end to end: real openai / openai-agents SDKs, real mitmproxy, real TLS, real
SQLite, the local OpenAI stand-in recording what actually left the gateway."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import httpx
import openai
import pytest
from agents import Agent, Runner, function_tool
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel

from phigate.addons.embedded import GATEWAY_KEY, RunningGateway

MODEL = "gpt-4o-mini"


def client(gateway, token: str, mode: str) -> openai.OpenAI:
    if mode == "reverse":
        return openai.OpenAI(base_url=gateway.reverse_url + "/v1", api_key=token, max_retries=0)
    http = httpx.Client(proxy=gateway.forward_url, verify=str(gateway.ca_cert))
    return openai.OpenAI(api_key=token, http_client=http, max_retries=0)


def async_client(gateway, token: str, mode: str) -> openai.AsyncOpenAI:
    if mode == "reverse":
        return openai.AsyncOpenAI(base_url=gateway.reverse_url + "/v1", api_key=token,
                                  max_retries=0)
    http = httpx.AsyncClient(proxy=gateway.forward_url, verify=str(gateway.ca_cert))
    return openai.AsyncOpenAI(api_key=token, http_client=http, max_retries=0)


def audit_rows(gateway, **where) -> list[dict]:
    """Audit records as an auditor reads them: any SQLite client, no gateway code."""
    time.sleep(0.05)  # the recorder commits before the response is released; this is margin
    with sqlite3.connect(gateway.home.audit_db) as db:
        db.row_factory = sqlite3.Row
        rows = [json.loads(r["entry"])["record"] for r in db.execute(
            "SELECT entry FROM records ORDER BY seq")]
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def record_for(gateway, request_id: str) -> dict:
    (record,) = audit_rows(gateway, request_id=request_id)
    return record


def assert_only_gateway_key(received, token: str) -> None:
    assert received, "the upstream received nothing"
    for request in received:
        assert request.headers["authorization"] == f"Bearer {GATEWAY_KEY}"
        assert "proxy-authorization" not in request.headers
        assert token not in json.dumps(request.headers) + request.body.decode(errors="replace")


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_chat_completion_reaches_upstream_with_the_gateway_key(gateway, fresh_upstream, mint,
                                                                mode):
    token = mint("dr-alice", "clinicians")
    raw = client(gateway, token, mode).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "What is a normal HbA1c?"}])
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert_only_gateway_key(fresh_upstream.received, token)
    (sent,) = fresh_upstream.received
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["host"].startswith("127.0.0.1")

    record = record_for(gateway, raw.headers["x-phigate-request-id"])
    assert record["identity"]["sub"] == "dr-alice"
    assert record["identity"]["groups"] == ["clinicians"]
    assert record["policy"]["name"] == "clinicians"
    assert record["mode"] == mode
    assert record["upstream"]["status"] == 200
    assert record["upstream"]["usage"]["total_tokens"] == completion.usage.total_tokens > 0
    assert record["request"]["model"] == MODEL
    assert token not in json.dumps(record)


@function_tool
def lookup_lab(test: str) -> str:
    """Look up the patient's latest value for a lab test."""
    return json.dumps({"test": test, "value": 6.1, "unit": "%"})


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["reverse", "forward"])
@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("streamed", [False, True])
async def test_agent_with_a_tool_completes_through_the_gateway(gateway, fresh_upstream, mint,
                                                               mode, api, streamed):
    token = mint("dr-bob", "clinicians")
    oa = async_client(gateway, token, mode)
    model = (OpenAIResponsesModel(MODEL, oa) if api == "responses"
             else OpenAIChatCompletionsModel(MODEL, oa))
    agent = Agent(name="clinical assistant", instructions="Answer using the lab tool.",
                  model=model, tools=[lookup_lab])
    async with oa:
        if streamed:
            run = Runner.run_streamed(agent, "test: HbA1c")
            async for _ in run.stream_events():
                pass
            output = run.final_output
        else:
            output = (await Runner.run(agent, "test: HbA1c")).final_output
    assert output and "6.1" in output  # the tool ran and its result went round the model
    assert len(fresh_upstream.received) == 2  # tool call turn, then the answer turn
    assert_only_gateway_key(fresh_upstream.received, token)
    path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    assert {r.path for r in fresh_upstream.received} == {path}


def test_connect_to_another_host_is_refused_and_recorded(gateway, fresh_upstream, mint):
    token = mint()
    http = httpx.Client(proxy=gateway.forward_url, verify=str(gateway.ca_cert))
    with pytest.raises(httpx.ProxyError, match="403"):
        http.get("https://example.com/", headers={"authorization": f"Bearer {token}"})
    assert fresh_upstream.received == []
    refused = [r for r in audit_rows(gateway) if r.get("endpoint") == "CONNECT example.com:443"]
    assert refused and refused[-1]["refusal"]["code"] == "host_not_allowed"


def test_plain_proxy_request_to_another_host_is_refused(gateway, fresh_upstream, mint):
    http = httpx.Client(proxy=gateway.forward_url)
    response = http.get("http://example.com/v1/models",
                        headers={"authorization": f"Bearer {mint()}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "host_not_allowed"
    assert response.headers["x-should-retry"] == "false"
    assert fresh_upstream.received == []


def test_missing_token_is_refused_and_recorded(gateway, fresh_upstream):
    with pytest.raises(openai.AuthenticationError) as raised:
        client(gateway, "sk-not-a-token", "reverse").models.list()
    response = raised.value.response
    assert response.status_code == 401
    assert response.headers["x-should-retry"] == "false"
    assert raised.value.body["code"] == "token_missing"
    assert fresh_upstream.received == []
    record = record_for(gateway, response.headers["x-phigate-request-id"])
    assert record["refusal"] == {"status": 401, "code": "token_missing", "stage": "identity"}
    assert "sk-not-a-token" not in json.dumps(record)


def test_groups_without_a_policy_are_refused(gateway, fresh_upstream, mint):
    with pytest.raises(openai.PermissionDeniedError) as raised:
        client(gateway, mint("mallory", "visitors"), "reverse").models.list()
    assert raised.value.body["code"] == "no_policy_for_groups"
    assert fresh_upstream.received == []


def test_token_in_the_query_string_is_dropped(gateway, fresh_upstream, mint):
    token = mint()
    response = httpx.get(f"{gateway.reverse_url}/v1/models?limit=5&access_token={token}",
                         headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200
    (sent,) = fresh_upstream.received
    assert sent.query == "limit=5"
    record = record_for(gateway, response.headers["x-phigate-request-id"])
    assert token not in json.dumps(record)


def test_https_proxy_environment_with_token_in_the_proxy_url(gateway, fresh_upstream, mint):
    """What an application does: HTTPS_PROXY with the token as proxy password, SSL_CERT_FILE
    with the gateway CA, and no change to its code (the OpenAI key it holds is a dummy)."""
    token = mint("svc-summaries", "clinicians")
    proxy = gateway.forward_url.replace("http://", f"http://svc:{token}@")
    script = ("import openai; c = openai.OpenAI(max_retries=0); "
              "print(c.chat.completions.create(model='gpt-4o-mini', "
              "messages=[{'role': 'user', 'content': 'hello'}]).choices[0].message.content)")
    env = dict(os.environ, HTTPS_PROXY=proxy, SSL_CERT_FILE=str(gateway.ca_cert),
               OPENAI_API_KEY="placeholder-not-a-key", NO_PROXY="")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hello" in done.stdout
    assert_only_gateway_key(fresh_upstream.received, token)
    assert "placeholder-not-a-key" not in json.dumps(fresh_upstream.received[0].headers)
