"""Custody of the gateway's OpenAI keys: the application never holds one.

A policy names the key it uses (`upstream_key: default`, `upstream_key: research`). Keys are read
from the gateway's environment or from files, cached in memory, and never logged or echoed: the
repr of a key is its name. Missing keys are a configuration problem (503), not a crash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from phigate.errors import Refusal

DEFAULT = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class UpstreamKeys:
    """Resolves key names: `default` from $OPENAI_API_KEY or the key file; `NAME` from
    $PHIGATE_UPSTREAM_KEY_<NAME> or `<keys_dir>/<NAME>`."""

    def __init__(self, default_file: str | None, keys_dir: Path, environ=os.environ) -> None:
        self._default_file = default_file
        self._keys_dir = keys_dir
        self._environ = environ
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"UpstreamKeys(names={sorted(self._cache)})"

    def get(self, name: str = DEFAULT) -> str:
        if name in self._cache:
            return self._cache[name]
        if not _NAME.match(name):
            raise Refusal(503, "upstream_key_invalid_name",
                          "The policy names an upstream key with an invalid name.", retry=False)
        key = self._read(name)
        if not key:
            raise Refusal(503, "upstream_key_missing",
                          f"The gateway has no OpenAI key configured for '{name}'. "
                          "Ask the gateway operator to set it.", retry=False)
        self._cache[name] = key
        return key

    def has(self, name: str = DEFAULT) -> bool:
        try:
            self.get(name)
        except Refusal:
            return False
        return True

    def _read(self, name: str) -> str:
        if name == DEFAULT:
            if self._default_file:
                return _read_file(Path(self._default_file))
            return self._environ.get("OPENAI_API_KEY", "").strip()
        env = self._environ.get(f"PHIGATE_UPSTREAM_KEY_{name.upper().replace('-', '_')}", "")
        return env.strip() or _read_file(self._keys_dir / name)


def _read_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
