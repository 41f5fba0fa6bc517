"""The HTTP(S) server: HTTP/1.1 with keep-alive, chunked SSE, and a record of every request.

`GET /__upstream__/received` returns the record as a JSON list and `DELETE` clears it, so a test
in another process (or the demo) can see what reached the upstream. Those two paths are not
recorded themselves. The record holds request bodies as they arrived (whatever PHI the gateway
let through): it is test and demo material, never a production log. Credentials are written out
only as fingerprints.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import secrets
import socket
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from phigate.localupstream.api import ApiError, OpenAIApi, Reply
from phigate.localupstream.tls import TlsFiles

ADMIN_PATH = "/__upstream__/received"
_MAX_BODY = 64 * 1024 * 1024
# Headers that carry credentials: written out (JSONL, admin endpoint) only as fingerprints.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"}
)


def credential_fingerprint(value: str) -> str:
    """`Bearer sk-abc` -> `Bearer sha256:<16 hex of "sk-abc">`: comparable, not reusable."""
    scheme, _, credential = value.partition(" ") if " " in value else ("", "", value)
    digest = hashlib.sha256(credential.encode()).hexdigest()[:16]
    return f"{scheme} sha256:{digest}".lstrip()


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str  # without the query string
    query: str  # the raw query string, "" when absent
    headers: dict[str, str]  # lowercased names; repeated headers joined with ", "
    body: bytes
    json: object | None  # the parsed body, None when it is not JSON
    time: float  # unix time the request arrived

    def to_dict(self) -> dict:
        """JSON-ready: the body as UTF-8 text when it is, else base64 (see `body_encoding`);
        credential headers replaced by `credential_fingerprint`."""
        record = asdict(self)
        record["headers"] = {
            name: credential_fingerprint(value) if name in CREDENTIAL_HEADERS else value
            for name, value in self.headers.items()
        }
        try:
            record["body"], record["body_encoding"] = self.body.decode(), "utf-8"
        except UnicodeDecodeError:
            record["body"] = base64.b64encode(self.body).decode()
            record["body_encoding"] = "base64"
        return record

    @classmethod
    def from_dict(cls, record: dict) -> ReceivedRequest:
        text = record["body"]
        body = base64.b64decode(text) if record["body_encoding"] == "base64" else text.encode()
        return cls(record["method"], record["path"], record["query"], dict(record["headers"]),
                   body, record["json"], record["time"])


class _Record:
    """The received requests, shared by handler threads; optionally mirrored to a JSONL file."""

    def __init__(self, jsonl: Path | None) -> None:
        self._lock = threading.Lock()
        self._items: list[ReceivedRequest] = []
        self._jsonl = jsonl.open("a", encoding="utf-8") if jsonl else None

    def add(self, item: ReceivedRequest) -> None:
        with self._lock:
            self._items.append(item)
            if self._jsonl:
                self._jsonl.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")
                self._jsonl.flush()

    def snapshot(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def close(self) -> None:
        with self._lock:
            if self._jsonl:
                self._jsonl.close()
                self._jsonl = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default of 5 drops connects under benchmark load

    def __init__(self, address: tuple[str, int], api: OpenAIApi, record: _Record,
                 tls: ssl.SSLContext | None, compress: bool) -> None:
        self.api, self.record, self.tls, self.compress = api, record, tls, compress
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address) -> None:  # type: ignore[override]
        # Runs in the connection's own thread: the TLS handshake happens here, so a slow or
        # broken client cannot stall accept() for everyone else.
        request.settimeout(_Handler.timeout)
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        with self._open_lock:
            self._open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            request.close()

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections."""
        with self._open_lock:
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        if not isinstance(sys.exc_info()[1], (OSError, ssl.SSLError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "localupstream"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go in separate writes
    timeout = 120  # idle keep-alive connections end after this many seconds
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the record is the log

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def _handle(self) -> None:
        arrived = time.time()
        try:
            body = self._read_body()
        except ApiError as error:
            self.close_connection = True
            self._send(error.reply())
            return
        target = urlsplit(self.path)
        if target.path == ADMIN_PATH:
            self._admin()
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            parsed = json.loads(body) if body else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            parsed = None
        self.server.record.add(ReceivedRequest(
            self.command, target.path, target.query, headers, body, parsed, arrived
        ))
        started = time.perf_counter()
        reply = self.server.api.respond(self.command, target.path, parsed, headers)
        gzip_ok = self.server.compress and _accepts_gzip(headers.get("accept-encoding", ""))
        self._send(reply, int((time.perf_counter() - started) * 1000), gzip_ok)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("content-length", "0"))
        except ValueError:
            raise ApiError(400, "Invalid Content-Length header.") from None
        if not 0 <= length <= _MAX_BODY:
            raise ApiError(413, "Request body too large.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";")[0], 16)
            except ValueError:
                raise ApiError(400, "Invalid chunked request body.") from None
            if size < 0:
                raise ApiError(400, "Invalid chunked request body.")
            total += size
            if total > _MAX_BODY:
                raise ApiError(413, "Request body too large.")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _admin(self) -> None:
        if self.command == "GET":
            items = [item.to_dict() for item in self.server.record.snapshot()]
            self._send(Reply(200, json.dumps(items, ensure_ascii=False).encode()))
        elif self.command == "DELETE":
            self.server.record.clear()
            self._send(Reply(204, content_type=None))
        else:
            self._send(ApiError(405, "Use GET or DELETE.").reply())

    def _send(self, reply: Reply, processing_ms: int = 0, gzip_ok: bool = False) -> None:
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("content-type", reply.content_type)
        self.send_header("x-request-id", "req_" + secrets.token_hex(16))
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms", str(processing_ms))
        if reply.frames is None:
            body = reply.body
            if gzip_ok and body:
                body = gzip.compress(body, compresslevel=5)
                self.send_header("content-encoding", "gzip")
            if reply.status != 204:
                self.send_header("content-length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        for index, frame in enumerate(reply.frames):
            if index == reply.drop_after:
                self.close_connection = True  # the body stays unterminated
                return
            if index and reply.delay:
                time.sleep(reply.delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        self.wfile.write(b"0\r\n\r\n")


def _accepts_gzip(accept_encoding: str) -> bool:
    for coding in accept_encoding.lower().split(","):
        name, _, params = coding.partition(";")
        if name.strip() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class LocalUpstream:
    """A local OpenAI API on a real socket (HTTPS when `tls` is given).

    `chunk_delay`: seconds between streamed events. `api_key`: when set, requests must carry
    `Authorization: Bearer <api_key>` (401 otherwise). `record_to`: also append every request to
    this JSONL file. `compress`: gzip non-streamed bodies for clients that accept it, as
    api.openai.com compresses its responses.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: TlsFiles | None = None,
                 chunk_delay: float = 0.0, *, api_key: str | None = None,
                 record_to: str | Path | None = None, compress: bool = False) -> None:
        self.host, self.tls, self.compress = host, tls, compress
        self._requested_port = port
        self._api = OpenAIApi(api_key=api_key, chunk_delay=chunk_delay)
        self._record_to = Path(record_to) if record_to else None
        self._record = _Record(None)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LocalUpstream:
        if self._server is not None:
            raise RuntimeError("LocalUpstream already started")
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            context.set_alpn_protocols(["http/1.1"])
        self._record = _Record(self._record_to)
        self._server = _Server(
            (self.host, self._requested_port), self._api, self._record, context, self.compress
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"localupstream:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._record.close()
        self._server = self._thread = None

    def __enter__(self) -> LocalUpstream:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalUpstream not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Scheme, host and port, e.g. https://127.0.0.1:PORT (append /v1 for an SDK base_url)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def received(self) -> list[ReceivedRequest]:
        """A snapshot of every request received so far, oldest first."""
        return self._record.snapshot()

    def clear(self) -> None:
        self._record.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least `count` requests arrived (e.g. background trace exports)."""
        deadline = time.monotonic() + timeout
        while len(items := self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(items)} of {count} requests arrived in {timeout} s")
            time.sleep(0.01)
        return items
