"""Shared fixtures: a local OpenAI stand-in over TLS and the real gateway in front of it."""

from __future__ import annotations

import pytest

from phigate.addons.embedded import GATEWAY_KEY, RunningGateway
from phigate.identity import DevIssuer
from phigate.localupstream.testing import running_upstream


def pytest_configure(config):
    # The Agents SDK exports traces to api.openai.com by default; no test may reach it.
    try:
        import agents

        agents.set_tracing_disabled(True)
    except ImportError:
        pass


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    with running_upstream(tmp_path_factory.mktemp("upstream")) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstream):
    with RunningGateway(tmp_path_factory.mktemp("home"), upstream=upstream.url,
                        upstream_ca=str(upstream.tls.ca_cert),
                        options={"admin_listen": "127.0.0.1:0"}) as running:
        yield running


@pytest.fixture(scope="module")
def mint(gateway):
    """mint(sub, *groups) -> a token the gateway accepts (the embedded development issuer)."""
    issuer = DevIssuer(gateway.home.issuer_dir)

    def mint_token(sub: str = "dr-alice", *groups: str, ttl: int = 600) -> str:
        return issuer.mint(sub, groups or ("clinicians",), ttl_seconds=ttl)

    return mint_token


@pytest.fixture(autouse=False)
def fresh_upstream(upstream):
    upstream.clear()
    return upstream


__all__ = ["GATEWAY_KEY"]
