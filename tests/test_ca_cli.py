"""`phigate ca ...` and `phigate doctor`, through click's CliRunner.

doctor runs against a bare mitmproxy (DumpMaster) that uses our confdir, listens on 127.0.0.1,
connects upstream lazily and answers any request itself; a socket guard fails any lookup or
connection that is not to the loopback interface, and each test asserts there was none.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import certifi
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from mitmproxy import http
from mitmproxy.options import Options
from mitmproxy.tools.dump import DumpMaster

from phigate import ca
from phigate.cli.ca import ca_group, doctor_command
from phigate.home import Home
from tests.test_ca_support import loopback_only, pem, self_signed_ca  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")


class LocalOnly:
    """Refuses CONNECT to other hosts (as the gateway's scope addon does) and answers every
    request locally, so nothing could leave the machine even if a client sent one."""

    def __init__(self) -> None:
        self.refuse_other_hosts = True
        self.answer_locally = True

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self.refuse_other_hosts and flow.request.host != "api.openai.com":
            flow.response = http.Response.make(403, b"out of scope")

    def request(self, flow: http.HTTPFlow) -> None:
        if self.answer_locally:
            flow.response = http.Response.make(200, b"answered locally")


class Mitmproxy:
    def __init__(self, confdir: Path) -> None:
        self.addon = LocalOnly()
        self.confdir = confdir
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        options = Options(listen_host="127.0.0.1", listen_port=0, mode=["regular"], confdir=str(self.confdir))
        self.master = DumpMaster(options, with_termlog=False, with_dumper=False)
        # addon options exist only once the addons are loaded
        options.update(connection_strategy="lazy", upstream_cert=False)
        self.master.addons.add(self.addon)
        self.loop = asyncio.get_running_loop()
        running = asyncio.create_task(self.master.run())
        while not (addrs := self.master.addons.get("proxyserver").listen_addrs()):
            await asyncio.sleep(0.01)
        self.port = addrs[0][1]
        self.ready.set()
        await running

    def __enter__(self) -> Mitmproxy:
        self.thread.start()
        assert self.ready.wait(15), "mitmproxy did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.master.shutdown)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Home:
    home = Home.open(tmp_path_factory.mktemp("home"))
    ca.ensure_ca(home)
    return home


@pytest.fixture
def gateway(home):
    # one per test: mitmproxy keeps its master in module globals (mitmproxy.ctx), so two
    # masters alive in one process would share options and addons
    with Mitmproxy(home.ca_dir) as proxy:
        yield proxy


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "PHIGATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def test_doctor_all_good(gateway, home, runner, loopback_only):
    result = runner.invoke(doctor_command, ["--proxy", gateway.url, "--ca-bundle", str(ca.bundle(home))])
    assert result.exit_code == 0, result.output
    assert "[  ok] proxy-reachable" in result.output
    assert "[  ok] tls-trust: api.openai.com is intercepted by phigate gateway signing CA" in result.output
    assert "[  ok] out-of-scope: example.com is refused (CONNECT example.com:443 answered 403)" in result.output
    assert loopback_only == []


def test_doctor_untrusted_ca_says_what_to_fix(gateway, runner, loopback_only):
    result = runner.invoke(doctor_command, ["--proxy", gateway.url], env={"SSL_CERT_FILE": certifi.where()})
    assert result.exit_code == 1
    assert "[fail] tls-trust" in result.output and "issued by O=phigate" in result.output
    assert "fix: trust the gateway CA" in result.output
    assert loopback_only == []


def test_doctor_warns_when_only_the_os_store_trusts_the_ca(gateway, home, runner, tmp_path, loopback_only):
    store = tmp_path / "os-store"
    store.mkdir()
    ca.export(home, "pem", store / "phigate.pem")
    subprocess.run(["openssl", "rehash", str(store)], check=True, capture_output=True)
    result = runner.invoke(doctor_command, ["--proxy", gateway.url], env={"SSL_CERT_DIR": str(store)})
    assert result.exit_code == 0, result.output
    assert "[  ok] tls-trust" in result.output
    assert "[warn] python-clients" in result.output and "SSL_CERT_FILE" in result.output
    assert loopback_only == []


def test_doctor_flags_a_gateway_that_intercepts_other_hosts(gateway, home, runner, loopback_only):
    gateway.addon.refuse_other_hosts = False
    result = runner.invoke(doctor_command, ["--proxy", gateway.url, "--ca-bundle", str(ca.bundle(home))])
    assert result.exit_code == 1
    assert "[fail] out-of-scope: the gateway intercepts example.com" in result.output
    assert loopback_only == []


def test_doctor_unreachable_proxy(runner, loopback_only):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    result = runner.invoke(doctor_command, ["--proxy", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "[fail] proxy-reachable" in result.output and "fix:" in result.output
    assert "tls-trust" not in result.output


def test_doctor_with_an_intermediate_served_by_mitmproxy(tmp_path, runner, loopback_only):
    """mitmproxy sends the intermediate with each leaf: clients trusting the org root verify."""
    org_key, org_cert = self_signed_ca("Example Hospital Root CA")
    ca.create_intermediate(tmp_path / "ca", org_key, [org_cert])
    (tmp_path / "org-root.pem").write_bytes(pem(org_cert))
    with Mitmproxy(tmp_path / "ca") as proxy:
        result = runner.invoke(doctor_command, ["--proxy", proxy.url, "--ca-bundle", str(tmp_path / "org-root.pem")])
    assert result.exit_code == 0, result.output
    assert "intercepted by phigate gateway signing CA" in result.output
    assert loopback_only == []


def test_cli_init_show_export_bundle(tmp_path, runner):
    home = str(tmp_path / "home")
    result = runner.invoke(ca_group, ["init", "--home", home, "--hosts", "api.openai.com,gw.example.org", "--days", "90"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(ca_group, ["init", "--home", home])
    assert again.exit_code == 1 and "use `phigate ca rotate`" in again.output

    shown = json.loads(runner.invoke(ca_group, ["show", "--home", home, "--json"]).output)
    assert shown["permitted_hosts"] == ["api.openai.com", "gw.example.org"]
    assert shown["kind"] == "root" and shown["overlapping"] == []

    out = tmp_path / "ca.cer"
    result = runner.invoke(ca_group, ["export", "--home", home, "--format", "der", "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = x509.load_der_x509_certificate(out.read_bytes())
    assert exported.fingerprint(hashes.SHA256()).hex() == shown["anchor_fingerprint_sha256"]

    copy = tmp_path / "bundle.pem"
    result = runner.invoke(ca_group, ["bundle", "--out", str(copy)], env={"PHIGATE_HOME": home})
    assert result.exit_code == 0 and copy.read_bytes() == (Path(home) / "ca" / "phigate-ca-bundle.pem").read_bytes()


def test_cli_rotate_and_retire(tmp_path, runner):
    home = str(tmp_path / "home")
    assert runner.invoke(ca_group, ["init", "--home", home]).exit_code == 0
    before = json.loads(runner.invoke(ca_group, ["show", "--home", home, "--json"]).output)
    result = runner.invoke(ca_group, ["rotate", "--home", home, "--overlap-days", "14"])
    assert result.exit_code == 0, result.output
    after = json.loads(runner.invoke(ca_group, ["show", "--home", home, "--json"]).output)
    assert [e["fingerprint"] for e in after["overlapping"]] == [before["fingerprint_sha256"]]
    early = runner.invoke(ca_group, ["retire", "--home", home])
    assert early.exit_code == 1 and "overlap runs until" in early.output
    forced = runner.invoke(ca_group, ["retire", "--home", home, "--force"])
    assert forced.exit_code == 0 and f"retired {before['fingerprint_sha256']}" in forced.output


def test_cli_init_intermediate_with_an_encrypted_org_key(tmp_path, runner):
    org_key, org_cert = self_signed_ca("Org Root")
    (tmp_path / "org.pem").write_bytes(pem(org_cert))
    (tmp_path / "org.key").write_bytes(org_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"org-pass"),
    ))
    args = ["init", "--home", str(tmp_path / "home"), "--intermediate",
            "--org-ca-cert", str(tmp_path / "org.pem"), "--org-ca-key", str(tmp_path / "org.key")]
    denied = runner.invoke(ca_group, args)
    assert denied.exit_code == 1 and "PHIGATE_ORG_CA_KEY_PASSWORD" in denied.output
    assert "org-pass" not in denied.output
    result = runner.invoke(ca_group, args, env={"PHIGATE_ORG_CA_KEY_PASSWORD": "org-pass"})
    assert result.exit_code == 0, result.output
    assert ca.load(tmp_path / "home" / "ca").anchor == org_cert


def test_the_guard_catches_mitmproxy_going_upstream(gateway, home, loopback_only):
    """Proof that the guard's empty list in the doctor tests means something: a request the
    addon lets through makes mitmproxy look api.openai.com up, and the guard stops it."""
    gateway.addon.answer_locally = False
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(ca.bundle(home)))
        with context.wrap_socket(sock, server_hostname="api.openai.com") as tls:
            tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
            assert tls.recv(1000).startswith(b"HTTP/1.1 502")
    assert loopback_only == ["resolve api.openai.com"]


def test_the_guard_blocks_what_leaves_the_machine(loopback_only):
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("api.openai.com", 443)
    with pytest.raises(ConnectionRefusedError), socket.socket() as sock:
        sock.connect(("192.0.2.1", 443))
    assert loopback_only == ["resolve api.openai.com", "connect 192.0.2.1"]
