"""The rollout scripts in scripts/ca/, run for real against temporary roots: install twice,
uninstall twice, and check what a client using the resulting trust store accepts."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from phigate import ca
from phigate.home import Home
from tests.test_ca_support import PERMITTED_VIOLATION, TLSServer, dns, issue_leaf, pem, read_ca, self_signed_ca

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "ca"
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")


def run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env},
    )


@pytest.fixture
def two_cas(tmp_path):
    """Two gateway CAs (say, before and after a rotation), each exported as a single PEM; the
    home returned holds the first one's key."""
    homes = [Home.open(tmp_path / name) for name in ("first", "second")]
    exported = []
    for home in homes:
        ca.ensure_ca(home)
        exported.append(ca.export(home, "pem", tmp_path / f"{home.root.name}.pem"))
    return homes[0], *exported


@pytest.fixture
def debian_root(tmp_path):
    root = tmp_path / "root"
    for folder in ("certs", "local", "etc", "hooks"):
        (root / folder).mkdir(parents=True)
    # one stand-in for the distribution's roots (with none at all the tool keeps a stale bundle)
    _, system_root = self_signed_ca("Stand-in public root")
    (root / "certs" / "public.crt").write_bytes(pem(system_root))
    (root / "ca-certificates.conf").write_text("public.crt\n")
    update = (
        f"update-ca-certificates --certsconf {root}/ca-certificates.conf --certsdir {root}/certs "
        f"--localcertsdir {root}/local --etccertsdir {root}/etc --hooksdir {root}/hooks"
    )
    return root, {"PHIGATE_CA_DIR": str(root / "local" / "phigate"), "UPDATE_CA_CERTIFICATES": update}


@pytest.mark.skipif(not shutil.which("update-ca-certificates"), reason="needs Debian's ca-certificates")
def test_debian_install_uninstall_for_real(two_cas, debian_root, tmp_path):
    home, first, second = two_cas
    root, env = debian_root
    system_bundle = root / "etc" / "ca-certificates.crt"

    assert run("debian.sh", "install", str(first), env=env).stdout.splitlines()[-1].startswith("installed")
    assert first.read_text() in system_bundle.read_text()
    mtime = system_bundle.stat().st_mtime_ns
    again = run("debian.sh", "install", str(first), env=env)
    assert again.returncode == 0 and again.stdout.splitlines()[-1].startswith("already installed")
    assert system_bundle.stat().st_mtime_ns == mtime  # nothing was rebuilt

    # a client of the system store trusts the gateway's leaves, and only for api.openai.com
    key, chain = read_ca(home.ca_dir)
    for host, expected in (("api.openai.com", None), ("example.com", PERMITTED_VIOLATION)):
        leaf_key, leaf = issue_leaf(key, chain[0], [dns(host)])
        with TLSServer(tmp_path, leaf_key, [leaf, chain[0]]) as server:
            context = ssl.create_default_context(capath=str(root / "etc"))  # the hash links
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                    context.wrap_socket(sock, server_hostname=host).close()
                code = None
            except ssl.SSLCertVerificationError as exc:
                code = exc.verify_code
        assert code == expected, host

    assert run("debian.sh", "install", str(second), env=env).returncode == 0  # rotation: both
    assert first.read_text() in system_bundle.read_text() and second.read_text() in system_bundle.read_text()
    removed = run("debian.sh", "uninstall", str(first), env=env)
    assert removed.returncode == 0 and removed.stdout.splitlines()[-1].startswith("removed"), removed.stderr
    assert first.read_text() not in system_bundle.read_text() and second.read_text() in system_bundle.read_text()
    assert not [p for p in (root / "etc").iterdir() if p.is_symlink() and not p.exists()]
    assert run("debian.sh", "uninstall", str(first), env=env).stdout.splitlines()[-1].startswith("not installed")
    assert run("debian.sh", "uninstall", str(second), env=env).returncode == 0
    assert not (root / "local" / "phigate").exists()
    assert system_bundle.read_text().count("BEGIN CERTIFICATE") == 1  # the stand-in root alone


def test_scripts_refuse_bad_input(tmp_path, two_cas):
    _, first, second = two_cas
    both = tmp_path / "both.pem"
    both.write_text(first.read_text() + second.read_text())
    for script in ("debian.sh", "rhel.sh", "macos.sh", "java.sh"):
        assert run(script, "install", str(both), env={}).returncode == 2, script
        assert run(script, "remove", str(first), env={}).returncode == 2, script
    assert run("python.sh", "install", str(tmp_path / "missing.pem"), env={}).returncode == 2


def test_rhel_is_idempotent(tmp_path, two_cas):
    _, first, _ = two_cas
    log = tmp_path / "updates.log"
    update = tmp_path / "update-ca-trust"
    update.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    update.chmod(0o755)
    env = {"PHIGATE_CA_DIR": str(tmp_path / "anchors"), "UPDATE_CA_TRUST": f"{update} extract"}
    for _ in range(2):
        assert run("rhel.sh", "install", str(first), env=env).returncode == 0
    assert log.read_text() == "extract\n" and len(list((tmp_path / "anchors").iterdir())) == 1
    for _ in range(2):
        assert run("rhel.sh", "uninstall", str(first), env=env).returncode == 0
    assert log.read_text() == "extract\nextract\n" and not list((tmp_path / "anchors").iterdir())


FAKE_SECURITY = """#!/bin/sh
# A stand-in for macOS `security`: the keychain is a file of SHA-1 hashes.
state={state}
case $1 in
find-certificate) sed 's/^/SHA-1 hash: /' "$state" 2>/dev/null ;;
add-trusted-cert) for last; do :; done
    openssl x509 -in "$last" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g' >> "$state" ;;
remove-trusted-cert) ;;
delete-certificate) grep -v "^$3$" "$state" > "$state.new" || true; mv "$state.new" "$state" ;;
esac
"""


def test_macos_is_idempotent_with_a_stand_in_keychain(tmp_path, two_cas):
    _, first, second = two_cas
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "keychain"
    (bin_dir / "security").write_text(FAKE_SECURITY.format(state=state))
    (bin_dir / "security").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PHIGATE_KEYCHAIN": str(tmp_path / "kc")}
    assert run("macos.sh", "install", str(first), env=env).stdout.splitlines()[-1].startswith("installed")
    assert run("macos.sh", "install", str(first), env=env).stdout.splitlines()[-1].startswith("already installed")
    assert run("macos.sh", "install", str(second), env=env).stdout.splitlines()[-1].startswith("installed")
    assert len(state.read_text().split()) == 2
    assert run("macos.sh", "uninstall", str(first), env=env).stdout.splitlines()[-1].startswith("removed")
    assert run("macos.sh", "uninstall", str(first), env=env).stdout.splitlines()[-1].startswith("not installed")
    assert len(state.read_text().split()) == 1


JAVA_PROBE = """
import java.util.List;
import javax.net.ssl.*;

public class Probe {
    public static void main(String[] args) throws Exception {
        SSLSocket socket = (SSLSocket) SSLSocketFactory.getDefault().createSocket("127.0.0.1", Integer.parseInt(args[0]));
        SSLParameters params = socket.getSSLParameters();
        params.setServerNames(List.of(new SNIHostName(args[1])));
        params.setEndpointIdentificationAlgorithm("HTTPS");
        socket.setSSLParameters(params);
        socket.startHandshake();
        socket.close();
    }
}
"""


@pytest.mark.skipif(not (shutil.which("keytool") and shutil.which("java")), reason="needs a JDK")
def test_java_truststore_for_real(tmp_path, two_cas):
    home, first, second = two_cas
    store = tmp_path / "truststore.p12"
    # a JVM starts per keytool call: start it lean, the test is about the script's logic
    fast = {"JAVA_TOOL_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData"}
    env = {"JAVA_TRUSTSTORE": str(store), "JAVA_STOREPASS": "test-store-pass", **fast}
    assert run("java.sh", "install", str(first), env=env).stdout.splitlines()[-1].startswith("installed")
    assert run("java.sh", "install", str(first), env=env).stdout.splitlines()[-1].startswith("already installed")

    # Java's PKIX ignores name constraints in a trust anchor, but enforces them in the signing
    # CA below it: the reason phigate never signs with its root
    (tmp_path / "Probe.java").write_text(JAVA_PROBE)
    key, chain = read_ca(home.ca_dir)
    outcomes = {}
    for host in ("api.openai.com", "example.com"):
        leaf_key, leaf = issue_leaf(key, chain[0], [dns(host)])
        with TLSServer(tmp_path, leaf_key, [leaf, chain[0]]) as server:
            outcomes[host] = subprocess.run(
                ["java", f"-Djavax.net.ssl.trustStore={store}",
                 "-Djavax.net.ssl.trustStorePassword=test-store-pass",
                 str(tmp_path / "Probe.java"), str(server.port), host],
                capture_output=True, text=True, timeout=60, env={**os.environ, **fast},
            )
    assert outcomes["api.openai.com"].returncode == 0, outcomes["api.openai.com"].stderr
    assert "name constraints check failed" in outcomes["example.com"].stderr

    assert run("java.sh", "install", str(second), env=env).returncode == 0  # rotation: side by side
    assert run("java.sh", "uninstall", str(first), env=env).stdout.splitlines()[-1].startswith("removed")
    assert run("java.sh", "uninstall", str(first), env=env).stdout.splitlines()[-1].startswith("not installed")
    listing = subprocess.run(["keytool", "-list", "-keystore", str(store), "-storepass", "test-store-pass"],
                             capture_output=True, text=True, check=True, env={**os.environ, **fast}).stdout
    assert listing.count("trustedCertEntry") == 1
    # the p12 export is a Java truststore as it is
    exported = ca.export(home, "p12", tmp_path / "ca.p12", password=b"p12-pass")
    listing = subprocess.run(["keytool", "-list", "-keystore", str(exported), "-storepass", "p12-pass"],
                             capture_output=True, text=True, check=True, env={**os.environ, **fast}).stdout
    assert "trustedCertEntry" in listing


CLIENTS = {
    "python.sh": [
        "python3", "-c",
        "import socket, ssl, sys; c = ssl.create_default_context(); "
        "c.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[1]))), server_hostname=sys.argv[2])",
    ],
    "node.sh": [
        "node", "-e",
        "require('tls').connect({host: '127.0.0.1', port: +process.argv[1], servername: process.argv[2]})"
        ".on('secureConnect', function () { this.end(); }).on('error', e => { console.error(e.code, e.message); process.exit(1); })",
    ],
}


@pytest.mark.parametrize("script", ["python.sh", "node.sh"])
def test_env_snippets_make_clients_trust_the_gateway(tmp_path, script):
    if not shutil.which(CLIENTS[script][0]):
        pytest.skip(f"needs {CLIENTS[script][0]}")
    home = Home.open(tmp_path / "home")
    ca.ensure_ca(home)
    bundle = ca.bundle(home)
    env = {"PHIGATE_TRUST_DIR": str(tmp_path / "etc-phigate"), "PHIGATE_PROFILE": str(tmp_path / "profile.d" / "p.sh")}
    assert run(script, "install", str(bundle), env=env).stdout.splitlines()[-1].startswith("installed")
    assert run(script, "install", str(bundle), env=env).stdout.splitlines()[-1].startswith("already installed")

    key, chain = read_ca(home.ca_dir)
    results = {}
    for host in ("api.openai.com", "example.com"):
        leaf_key, leaf = issue_leaf(key, chain[0], [dns(host)])
        with TLSServer(tmp_path, leaf_key, [leaf, chain[0]]) as server:
            results[host] = subprocess.run(
                ["sh", "-c", f'. "{env["PHIGATE_PROFILE"]}" && exec "$@"', "client", *CLIENTS[script],
                 str(server.port), host],
                capture_output=True, text=True, timeout=30,
                env={k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")},
            )
    assert results["api.openai.com"].returncode == 0, results["api.openai.com"].stderr
    assert results["example.com"].returncode != 0
    # rejected by the CA's name constraint (Node has no code of its own for it), not the hostname
    assert "permitted subtree violation" in results["example.com"].stderr, results["example.com"].stderr

    assert run(script, "uninstall", env=env).stdout.splitlines()[-1].startswith("removed")
    assert run(script, "uninstall", env=env).stdout.splitlines()[-1].startswith("not installed")
    assert not Path(env["PHIGATE_PROFILE"]).exists() and not (tmp_path / "etc-phigate").exists()


def test_kubernetes_example_matches_the_app_env():
    import yaml

    certs = SCRIPTS.parent.parent / "certs"
    config_map, deployment = yaml.safe_load_all((certs / "kubernetes-configmap.example.yaml").read_text())
    assert config_map["kind"] == "ConfigMap" and "phigate-ca-bundle.pem" in config_map["data"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mount = container["volumeMounts"][0]
    assert "subPath" not in mount  # a subPath mount never sees a refreshed bundle
    k8s_env = {e["name"]: e["value"] for e in container["env"]}
    app_env = dict(
        line.split("=", 1) for line in (certs / "app.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(k8s_env) == set(app_env)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        assert k8s_env[name] == app_env[name] == f"{mount['mountPath']}/phigate-ca-bundle.pem"
