"""A faithful local OpenAI API for tests, the demo and benchmarks (never the real one).

    from phigate.localupstream import LocalUpstream, make_test_tls

    tls = make_test_tls(tmp_path)
    with LocalUpstream(tls=tls) as upstream:
        trust = ssl.create_default_context(cafile=tls.ca_cert)
        client = OpenAI(base_url=upstream.url + "/v1", api_key="test",
                        http_client=httpx.Client(verify=trust))
        ...
        upstream.received  # every request that arrived, with headers and body

The replies come from a deterministic scripted model (see `phigate.localupstream.model`), and
request headers steer it for tests (see `phigate.localupstream.api`).
"""

from phigate.localupstream.server import (
    ADMIN_PATH,
    LocalUpstream,
    ReceivedRequest,
    credential_fingerprint,
)
from phigate.localupstream.tls import TlsFiles, make_test_tls

__all__ = [
    "ADMIN_PATH",
    "LocalUpstream",
    "ReceivedRequest",
    "TlsFiles",
    "credential_fingerprint",
    "make_test_tls",
]
