"""Helpers for tests in any file: a local upstream over TLS with a throwaway CA.

    from phigate.localupstream.testing import running_upstream

    def test_something(tmp_path):
        with running_upstream(tmp_path) as upstream:
            ca_file = str(upstream.tls.ca_cert)   # verify=ca_file, --upstream-ca ca_file
            ...
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from phigate.localupstream.server import LocalUpstream
from phigate.localupstream.tls import make_test_tls


@contextmanager
def running_upstream(
    directory: str | os.PathLike[str] | None = None, **options: Any
) -> Iterator[LocalUpstream]:
    """Start a `LocalUpstream` on 127.0.0.1 with fresh TLS material in `directory` (a temporary
    folder when None, removed afterwards); `options` go to `LocalUpstream` (e.g. chunk_delay)."""
    with tempfile.TemporaryDirectory(prefix="localupstream-") as scratch:
        tls = make_test_tls(Path(directory or scratch) / "localupstream-tls")
        with LocalUpstream(tls=tls, **options) as upstream:
            yield upstream
