"""`python -m phigate.localupstream`: run the local OpenAI API until interrupted.

Prints one line, the base URL (e.g. `https://127.0.0.1:8443`), then serves. With `--tls-dir` it
writes a fresh test CA and leaf there (`ca.pem` is what clients and `--upstream-ca` trust).
"""

from __future__ import annotations

import argparse
import signal
import threading

from phigate.localupstream.server import LocalUpstream
from phigate.localupstream.tls import make_test_tls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m phigate.localupstream",
                                     description="A local stand-in for the OpenAI API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tls-dir", help="serve HTTPS with a test CA written to this folder")
    parser.add_argument("--record", help="append every received request to this JSONL file")
    parser.add_argument("--chunk-delay", type=float, default=0.0,
                        help="seconds between streamed events")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer <key>'")
    parser.add_argument("--gzip", action="store_true",
                        help="gzip non-streamed bodies for clients that accept it")
    args = parser.parse_args(argv)

    tls = make_test_tls(args.tls_dir) if args.tls_dir else None
    upstream = LocalUpstream(args.host, args.port, tls, args.chunk_delay,
                             api_key=args.api_key, record_to=args.record, compress=args.gzip)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with upstream:
        print(upstream.url, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
