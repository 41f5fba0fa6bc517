"""Hot reload: the last good policy set stays active while an edit is invalid.

`reload()` is cheap when nothing changed (one stat per file); when a file's mtime or size
changed it reads and hashes the files, and only parses when the bytes really differ.
"""

from __future__ import annotations

import os
from collections.abc import Collection
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from phigate.policy.loader import PolicyError, files_digest, parse_files, policy_files, read_files
from phigate.policy.model import PolicySet


@dataclass(frozen=True)
class ReloadResult:
    changed: bool  # a new policy set is now active
    # "file:line: field: message" when this call rejected an edit (reported once per edit, so
    # that polling does not repeat it in the logs; `PolicyStore.errors` keeps it meanwhile)
    errors: tuple[str, ...] = ()


class PolicyStore:
    """The active PolicySet of a directory. Construction raises PolicyError if the directory
    is invalid: the gateway must not start without a policy."""

    def __init__(self, directory: str | os.PathLike[str], entity_types: Collection[str] | None = None) -> None:
        self.directory = Path(directory)
        self.entity_types = entity_types
        self._lock = threading.Lock()
        self._stats = self._stat()
        self.current: PolicySet = parse_files(read_files(self.directory), entity_types)
        self.loaded_at = time.time()
        self.error: PolicyError | None = None  # why the files on disk are not active

    def _stat(self) -> tuple:
        stats = []
        for path in policy_files(self.directory):
            try:
                info = path.stat()
            except OSError:  # deleted or unreadable: reading the files reports it
                continue
            stats.append((path.name, info.st_mtime_ns, info.st_size))
        return tuple(stats)

    def reload(self) -> ReloadResult:
        with self._lock:
            stats = self._stat()  # before reading, so an edit during the read is seen next time
            if stats == self._stats:
                return ReloadResult(False)
            self._stats = stats
            try:
                files = read_files(self.directory)
                if files_digest(files) == self.current.digest:
                    self.error = None  # e.g. a bad edit was reverted
                    return ReloadResult(False)
                self.current = parse_files(files, self.entity_types)
            except PolicyError as exc:
                self.error = exc
                return ReloadResult(False, self.errors)
            self.error = None
            self.loaded_at = time.time()
            return ReloadResult(True)

    @property
    def errors(self) -> tuple[str, ...]:
        """Why the files on disk are not the active policies (empty when they are)."""
        return tuple(str(problem) for problem in self.error.problems) if self.error else ()

    def status(self) -> dict:
        """For a health endpoint: what is active and whether the files on disk are rejected."""
        return {
            "policies": [
                {"name": policy.name, "version": policy.version, "source": Path(policy.source).name}
                for policy in self.current.policies
            ],
            "loaded_at": self.loaded_at,
            "ok": self.error is None,
            "errors": list(self.errors),
        }
