"""CA rotation: a new CA signs while the old one stays trusted for an overlap, then retires.

mitmproxy reads its CA when it starts, so the gateway signs with the new CA from its next
restart; ops distribute the refreshed bundle first (certs/README.md gives the procedure).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from phigate.ca import authority, history, trust
from phigate.ca.authority import CAError, CAInfo
from phigate.home import Home


def rotate(
    home: Home,
    overlap_days: int,
    hosts: Sequence[str] | None = None,
    days: int = authority.DEFAULT_DAYS,
    org_ca_key: CertificateIssuerPrivateKeyTypes | None = None,
    org_ca_certs: Sequence[x509.Certificate] = (),
) -> CAInfo:
    """Replace the active CA (destroying its key); it stays in the bundle for `overlap_days`.

    An intermediate is renewed under the organisation CA, whose key must then be given again.
    """
    if overlap_days < 0:
        raise CAError("the overlap cannot be negative")
    ca_dir = Path(home.ca_dir)
    old = authority.read(ca_dir)  # an expired CA may be rotated: that is the point
    if old.kind == "intermediate" and org_ca_key is None:
        raise CAError(
            "the active CA is an intermediate: give the organisation CA key and certificate"
        )
    hosts = hosts or old.hosts or authority.DEFAULT_HOSTS
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    history.add(
        ca_dir,
        [old.cert, *old.chain],
        {
            "fingerprint": old.fingerprint,
            "anchor_fingerprint": authority.fingerprint(old.anchor),
            "rotated_at": now.isoformat(),
            "retire_after": (now + datetime.timedelta(days=overlap_days)).isoformat(),
        },
    )
    if org_ca_key is not None:
        new = authority.create_intermediate(ca_dir, org_ca_key, org_ca_certs, hosts, days)
    else:
        new = authority.create_root(ca_dir, hosts, days)
    trust.bundle(home)
    return new


def retire(home: Home, force: bool = False) -> list[str]:
    """Drop replaced CAs whose overlap has ended (all of them with `force`) from the bundle and
    return their fingerprints. Raises when CAs overlap and none is due yet."""
    ca_dir = Path(home.ca_dir)
    now = datetime.datetime.now(datetime.UTC)
    entries = history.overlapping(ca_dir)
    due = [e for e in entries if force or datetime.datetime.fromisoformat(e["retire_after"]) <= now]
    if entries and not due:
        ends = min(e["retire_after"] for e in entries)
        raise CAError(f"the overlap runs until {ends}: retire then, or pass --force")
    history.remove(ca_dir, due)
    trust.bundle(home)
    return [e["fingerprint"] for e in due]
