"""Replaced CAs, kept in the CA folder next to mitmproxy's files:

  rotation.json      {"previous": [{"fingerprint", "anchor_fingerprint", "rotated_at",
                     "retire_after"}]}
  previous/<fp>.pem  a replaced CA still in its overlap: certificate and chain (public; the key
                     was destroyed when the new CA overwrote mitmproxy-ca.pem)
  retired/<fp>.pem   the same after `retire`, kept so ops can export it and uninstall it
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

STATE_NAME = "rotation.json"


def overlapping(ca_dir: Path) -> list[dict]:
    return list(_read(ca_dir)["previous"])


def overlapping_chains(ca_dir: Path) -> list[list[x509.Certificate]]:
    """Chains of the CAs in their overlap: still trusted, no longer signing."""
    folder = ca_dir / "previous"
    return [
        x509.load_pem_x509_certificates((folder / f"{e['fingerprint']}.pem").read_bytes())
        for e in overlapping(ca_dir)
    ]


def replaced_chains(ca_dir: Path) -> list[list[x509.Certificate]]:
    """Every replaced CA, overlapping or retired."""
    return [
        x509.load_pem_x509_certificates(p.read_bytes())
        for folder in ("previous", "retired")
        for p in sorted((ca_dir / folder).glob("*.pem"))
    ]


def add(ca_dir: Path, chain: list[x509.Certificate], entry: dict) -> None:
    folder = ca_dir / "previous"
    folder.mkdir(mode=0o700, exist_ok=True)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    (folder / f"{entry['fingerprint']}.pem").write_bytes(pem)
    _write(ca_dir, {"previous": [*overlapping(ca_dir), entry]})


def remove(ca_dir: Path, entries: list[dict]) -> None:
    retired = ca_dir / "retired"
    retired.mkdir(mode=0o700, exist_ok=True)
    for entry in entries:
        name = f"{entry['fingerprint']}.pem"
        os.replace(ca_dir / "previous" / name, retired / name)
    _write(ca_dir, {"previous": [e for e in overlapping(ca_dir) if e not in entries]})


def _read(ca_dir: Path) -> dict:
    path = ca_dir / STATE_NAME
    return json.loads(path.read_text()) if path.exists() else {"previous": []}


def _write(ca_dir: Path, state: dict) -> None:
    path = ca_dir / STATE_NAME
    staging = path.with_name(path.name + ".new")
    staging.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(staging, path)
