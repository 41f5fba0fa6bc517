"""Helpers shared by the tests/test_ca*.py files (no tests here): leaves, a local TLS server,
the two client verifiers (Python ssl, curl) and a guard that fails any non-loopback connection."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PERMITTED_VIOLATION = 47  # X509_V_ERR_PERMITTED_VIOLATION
EXCLUDED_VIOLATION = 48  # X509_V_ERR_EXCLUDED_VIOLATION
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def read_ca(ca_dir: Path):
    raw = (ca_dir / "mitmproxy-ca.pem").read_bytes()
    return serialization.load_pem_private_key(raw, None), x509.load_pem_x509_certificates(raw)


def issue_leaf(ca_key, ca_cert: x509.Certificate, names: list[x509.GeneralName]):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def self_signed_ca(common_name: str, constraints: x509.NameConstraints | None = None):
    """An organisation CA for tests: unconstrained unless told otherwise."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if constraints:
        builder = builder.add_extension(constraints, critical=True)
    return key, builder.sign(key, hashes.SHA256())


def dns(name: str) -> x509.DNSName:
    return x509.DNSName(name)


def ip(address: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(address))


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class TLSServer:
    """Serves one certificate chain on 127.0.0.1 and answers any request with 200 "ok"."""

    def __init__(self, tmp: Path, key, chain: list[x509.Certificate]):
        chain_file, key_file = tmp / "served-chain.pem", tmp / "served-key.pem"
        chain_file.write_bytes(pem(*chain))
        key_file.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain_file, key_file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TLSServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        self.listener.close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        data = tls.recv(4096)
                        if not data:
                            break
                        head += data
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (OSError, ssl.SSLError):
                pass  # the client rejected our certificate: that is what many tests expect
            finally:
                conn.close()


def python_handshake(port: int, cafile: Path, server_hostname: str) -> None:
    """Raises ssl.SSLCertVerificationError when the served chain is rejected."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=server_hostname):
            pass


def curl(port: int, cafile: Path, host: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "10",
         "--cacert", str(cafile), "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/"],
        capture_output=True, text=True, timeout=20,
    )


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail any DNS lookup or connection that is not to the loopback interface; the list it
    yields records every attempt so a test can assert there were none."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK and not _is_loopback(host):
            attempts.append(f"resolve {host}")
            raise socket.gaierror(socket.EAI_NONAME, "blocked by the test's loopback guard")
        return real_getaddrinfo(host, *args, **kwargs)

    def checked(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
                attempts.append(f"connect {address[0]}")
                raise ConnectionRefusedError("blocked by the test's loopback guard")
            return real(self, address)
        return connect

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", checked(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", checked(real_connect_ex))
    yield attempts


def _is_loopback(host) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in LOOPBACK
