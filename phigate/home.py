"""The state folder (`--home`, `PHIGATE_HOME`): CA, issuer and audit keys, the audit database.

Everything phigate writes lives under one folder so that ops can back it up, mount it as a
volume, and lock its permissions down (0700; key files 0600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "PHIGATE_HOME"
DEFAULT_HOME = Path("~/.phigate")


def resolve(home: str | os.PathLike[str] | None = None) -> Path:
    """The home folder: the given path, else $PHIGATE_HOME, else ~/.phigate."""
    chosen = home or os.environ.get(ENV_VAR) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def open(cls, home: str | os.PathLike[str] | None = None) -> Home:
        """Resolve and create the folder tree (private to the owner)."""
        created = cls(resolve(home))
        for folder in (created.root, created.ca_dir, created.issuer_dir, created.keys_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return created

    @property
    def ca_dir(self) -> Path:
        """mitmproxy's confdir: the gateway CA lives here."""
        return self.root / "ca"

    @property
    def issuer_dir(self) -> Path:
        """The embedded development token issuer's key pair."""
        return self.root / "issuer"

    @property
    def keys_dir(self) -> Path:
        """Audit signing and body-encryption keys."""
        return self.root / "keys"

    @property
    def audit_db(self) -> Path:
        return self.root / "audit.db"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by the owner only, created with 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
