"""Client-side checks of the forward-proxy set-up (`phigate doctor`).

Run on a client host. Nothing but TLS handshakes go through the proxy: no HTTP request, no body,
no credential is ever sent, so the checks are safe against a production gateway.
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.x509.oid import NameOID

from phigate.ca import authority

MAX_RESPONSE_HEAD = 16 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


class ProxyError(Exception):
    pass


def diagnose(
    proxy: str,
    ca_bundle: Path | None = None,
    host: str = "api.openai.com",
    other_host: str = "example.com",
    timeout: float = 5.0,
) -> list[Check]:
    """Run the checks in order; the TLS checks are skipped when the proxy cannot be reached."""
    address = proxy_address(proxy)
    checks = [_reachable(address, timeout)]
    if checks[0].status != "ok":
        return checks
    checks.append(_intercepted(address, host, _context(ca_bundle), ca_bundle, timeout))
    if checks[-1].status == "ok" and ca_bundle is None and "SSL_CERT_FILE" not in os.environ:
        checks.append(_python_clients(address, host, timeout))
    checks.append(_out_of_scope(address, other_host, timeout))
    return checks


def proxy_address(proxy: str) -> tuple[str, int]:
    """(host, port) of an http:// proxy URL; its credentials, if any, are never used."""
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = parts.port or 80
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ProxyError("the proxy must be an http:// URL, e.g. http://gateway:8080")
    return parts.hostname, port


def _reachable(address: tuple[str, int], timeout: float) -> Check:
    try:
        socket.create_connection(address, timeout).close()
    except OSError as exc:
        return Check(
            "proxy-reachable",
            "fail",
            f"cannot connect to {address[0]}:{address[1]} ({type(exc).__name__})",
            "check the gateway runs and listens on that address, and no firewall blocks the port",
        )
    return Check("proxy-reachable", "ok", f"{address[0]}:{address[1]} accepts connections")


def _intercepted(
    address: tuple[str, int],
    host: str,
    context: ssl.SSLContext,
    ca_bundle: Path | None,
    timeout: float,
) -> Check:
    name = "tls-trust"
    store = f"the bundle {ca_bundle}" if ca_bundle else "this host's trust store"
    try:
        with _handshake(address, host, context, timeout) as tls:
            chain = [x509.load_der_x509_certificate(der) for der in tls.get_verified_chain()]
    except ProxyError as exc:
        return Check(name, "fail", str(exc), _connect_fix(host))
    except ssl.SSLCertVerificationError as exc:
        issuer = _presented_issuer(address, host, timeout)
        if _is_phigate_name(issuer):
            fix = (
                "trust the gateway CA: install it with scripts/ca/ (see certs/README.md), or "
                "point SSL_CERT_FILE/REQUESTS_CA_BUNDLE at the bundle from `phigate ca bundle`"
            )
        else:
            fix = "the proxy is not a phigate gateway, or something else intercepts TLS on the way"
        detail = (
            f"the certificate for {host} (issued by {issuer}) does not verify with {store}: "
            f"{exc.verify_message}"
        )
        return Check(name, "fail", detail, fix)
    except (OSError, ssl.SSLError) as exc:
        detail = f"TLS through the proxy failed ({type(exc).__name__})"
        return Check(name, "fail", detail, _connect_fix(host))
    ca = next((c for c in chain[1:] if _is_phigate(c)), None)
    if ca is None:
        return Check(
            name, "fail",
            f"{host} verifies, but with {_cn(chain[-1])}: the proxy tunnels it without phigate",
            "start the gateway in forward-proxy mode; clients must not reach OpenAI around it",
        )
    permitted = authority.permitted_hosts(ca)
    if not any(host == h or host.endswith("." + h) for h in permitted):
        return Check(
            name, "fail", f"{_cn(ca)} carries no name constraint for {host}",
            "replace the CA with `phigate ca rotate --hosts`",
        )
    return Check(name, "ok", f"{host} is intercepted by {_cn(ca)} and verifies with {store}")


def _python_clients(address: tuple[str, int], host: str, timeout: float) -> Check:
    context = ssl.create_default_context(cafile=certifi.where())
    try:
        with _handshake(address, host, context, timeout):
            pass
    except (OSError, ssl.SSLError, ProxyError):
        return Check(
            "python-clients", "warn",
            "the OS trust store accepts the gateway, but Python clients (openai SDK/httpx, "
            "requests) use certifi's roots, which do not",
            "export SSL_CERT_FILE and REQUESTS_CA_BUNDLE pointing at the `phigate ca bundle` file",
        )
    return Check("python-clients", "ok", "certifi's roots accept the gateway")


def _out_of_scope(address: tuple[str, int], host: str, timeout: float) -> Check:
    name = "out-of-scope"
    try:
        with _handshake(address, host, _unverified(), timeout) as tls:
            issuer = _issuer_name(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)))
    except ProxyError as exc:
        return Check(name, "ok", f"{host} is refused ({exc})")
    except (OSError, ssl.SSLError) as exc:
        detail = f"{host} is not intercepted: the TLS handshake failed ({type(exc).__name__})"
        return Check(name, "ok", detail)
    if _is_phigate_name(issuer):
        return Check(
            name, "fail", f"the gateway intercepts {host} (certificate issued by {issuer})",
            "make the gateway refuse CONNECT to hosts outside its scope; clients still reject the "
            "certificate because the CA's name constraints exclude that name",
        )
    return Check(name, "ok", f"{host} is passed through untouched (certificate issued by {issuer})")


@contextmanager
def _tunnel(address: tuple[str, int], host: str, timeout: float) -> Iterator[socket.socket]:
    sock = socket.create_connection(address, timeout)
    try:
        sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode("ascii"))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data or len(head) > MAX_RESPONSE_HEAD:
                raise ProxyError("the proxy closed the connection or sent no valid CONNECT reply")
            head += data
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ProxyError("the proxy sent no valid CONNECT reply")
        if parts[1] != "200":
            raise ProxyError(f"CONNECT {host}:443 answered {parts[1]}")
        yield sock
    finally:
        sock.close()


@contextmanager
def _handshake(
    address: tuple[str, int], host: str, context: ssl.SSLContext, timeout: float
) -> Iterator[ssl.SSLSocket]:
    with _tunnel(address, host, timeout) as sock:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            yield tls


def _presented_issuer(address: tuple[str, int], host: str, timeout: float) -> str:
    try:
        with _handshake(address, host, _unverified(), timeout) as tls:
            return _issuer_name(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)))
    except (OSError, ssl.SSLError, ProxyError):
        return "an unknown issuer"


def _unverified() -> ssl.SSLContext:
    """Only to see who answers: nothing is sent after this handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _context(ca_bundle: Path | None) -> ssl.SSLContext:
    if ca_bundle is None:
        return ssl.create_default_context()  # the OS store (OpenSSL default paths, SSL_CERT_FILE)
    return ssl.create_default_context(cafile=str(ca_bundle))


def _connect_fix(host: str) -> str:
    return (
        f"check the gateway accepts CONNECT to {host}:443; if it asks for authentication (407), "
        "the client must send a token in Proxy-Authorization"
    )


def _is_phigate(cert: x509.Certificate) -> bool:
    return _is_phigate_name(cert.subject.rfc4514_string())


def _is_phigate_name(name: str) -> bool:
    return "O=phigate" in name


def _issuer_name(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string() or "an empty issuer name"


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
