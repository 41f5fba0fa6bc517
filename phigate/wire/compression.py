"""Content-encoding: decode gzip, deflate, br and zstd bodies (whole or streamed).

Anything else, a corrupt body, or one that inflates beyond the limit raises `UndecodableBody`:
a body the gateway cannot read is a body it cannot examine.
"""

from __future__ import annotations

import zlib

import brotli
import zstandard

MAX_DECODED = 64 * 1024 * 1024


class UndecodableBody(Exception):
    def __init__(self, encoding: str) -> None:
        super().__init__(f"cannot decode content-encoding {encoding!r}")
        self.encoding = encoding


def _encodings(header: str | None) -> list[str]:
    """The codings in the order to undo them (the header lists them in the order applied)."""
    names = [name.strip().lower() for name in (header or "").split(",")]
    return [name for name in reversed(names) if name and name != "identity"]


class _Deflate:
    """`deflate` is zlib-wrapped by the RFC but raw in some servers: the first two bytes tell."""

    def __init__(self) -> None:
        self._head = b""
        self._inner = None

    def process(self, data: bytes) -> bytes:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            wrapped = (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inner = zlib.decompressobj(15 if wrapped else -15)
        return self._inner.decompress(data)

    def finish(self) -> bytes:
        if self._inner is None or not self._inner.eof:
            raise zlib.error("truncated")
        return self._inner.flush()


class _Gzip:
    def __init__(self) -> None:
        self._inner = zlib.decompressobj(31)

    def process(self, data: bytes) -> bytes:
        out = b""
        while data:
            out += self._inner.decompress(data)
            data = self._inner.unused_data
            if data:  # concatenated gzip members
                self._inner = zlib.decompressobj(31)
        return out

    def finish(self) -> bytes:
        if not self._inner.eof:
            raise zlib.error("truncated")
        return self._inner.flush()


class _Brotli:
    def __init__(self) -> None:
        self._inner = brotli.Decompressor()

    def process(self, data: bytes) -> bytes:
        return self._inner.process(data) if data else b""

    def finish(self) -> bytes:
        if not self._inner.is_finished():
            raise brotli.error("truncated")
        return b""


class _Zstd:
    def __init__(self) -> None:
        self._inner = zstandard.ZstdDecompressor().decompressobj()

    def process(self, data: bytes) -> bytes:
        return self._inner.decompress(data) if data else b""

    def finish(self) -> bytes:
        if not self._inner.eof:
            raise zstandard.ZstdError("truncated")
        return b""


_DECODERS = {"gzip": _Gzip, "x-gzip": _Gzip, "deflate": _Deflate, "br": _Brotli,
             "zstd": _Zstd}
_ERRORS = (zlib.error, brotli.error, zstandard.ZstdError, ValueError)


class StreamDecoder:
    """Incremental decoding for streamed bodies; `decode(b"", final=True)` checks the end."""

    def __init__(self, content_encoding: str | None, *, max_size: int = MAX_DECODED) -> None:
        self._header = content_encoding or ""
        names = _encodings(content_encoding)
        for name in names:
            if name not in _DECODERS:
                raise UndecodableBody(name)
        self._stages = [_DECODERS[name]() for name in names]
        self._max = max_size
        self._total = 0

    def decode(self, chunk: bytes, *, final: bool = False) -> bytes:
        data = chunk
        try:
            for stage in self._stages:
                data = stage.process(data)
                if final:
                    data += stage.finish()
        except _ERRORS:
            raise UndecodableBody(self._header) from None
        self._total += len(data)
        if self._total > self._max:
            raise UndecodableBody(self._header)
        return data


def decode(body: bytes, content_encoding: str | None, *, max_size: int = MAX_DECODED) -> bytes:
    """A whole body, decoded."""
    return StreamDecoder(content_encoding, max_size=max_size).decode(body, final=True)
