"""Content decoding: every coding the upstream may use, whole or streamed; the rest refused."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from phigate.wire.compression import StreamDecoder, UndecodableBody, decode

BODY = b'{"choices": [{"message": {"content": "Patient John Smith"}}]}' * 50


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


ENCODED = {
    "gzip": gzip.compress(BODY),
    "x-gzip": gzip.compress(BODY),
    "deflate": zlib.compress(BODY),
    "br": brotli.compress(BODY),
    "zstd": zstandard.ZstdCompressor().compress(BODY),
    "identity": BODY,
    "": BODY,
}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_whole_and_streamed_bodies_decode(encoding):
    data = ENCODED[encoding]
    assert decode(data, encoding) == BODY
    for size in (1, 7, 4096):
        decoder = StreamDecoder(encoding)
        parts = [decoder.decode(data[i:i + size]) for i in range(0, len(data), size)]
        assert b"".join(parts) + decoder.decode(b"", final=True) == BODY


def test_raw_deflate_concatenated_gzip_and_stacked_codings():
    assert decode(raw_deflate(BODY), "deflate") == BODY
    assert decode(gzip.compress(BODY[:100]) + gzip.compress(BODY[100:]), "gzip") == BODY
    stacked = brotli.compress(gzip.compress(BODY))
    assert decode(stacked, "gzip, br") == BODY
    assert decode(stacked, "GZIP , Br") == BODY


@pytest.mark.parametrize("encoding, data", [
    ("compress", b"\x1f\x9d..."),
    ("gzip", b"not gzip at all"),
    ("br", b"\xff\xff\xff\xff"),
    ("zstd", b"\x00\x01\x02\x03"),
    ("gzip", gzip.compress(BODY)[:-12]),  # truncated
    ("zstd", zstandard.ZstdCompressor().compress(BODY)[:-8]),
    ("br", brotli.compress(BODY)[:-4]),
    ("deflate", zlib.compress(BODY)[:-6]),
])
def test_unknown_corrupt_or_truncated_bodies_raise(encoding, data):
    with pytest.raises(UndecodableBody) as caught:
        decode(data, encoding)
    assert "John" not in str(caught.value)


def test_bodies_that_inflate_past_the_limit_raise():
    bomb = gzip.compress(b"\0" * 1_000_000)
    with pytest.raises(UndecodableBody):
        decode(bomb, "gzip", max_size=100_000)
    assert len(decode(bomb, "gzip")) == 1_000_000
