"""The gateway's name-constrained CA and how clients come to trust it (no mitmproxy import)."""

from phigate.ca.authority import (
    DEFAULT_HOSTS,
    CAError,
    CAInfo,
    create_intermediate,
    create_root,
    ensure_ca,
    load,
)
from phigate.ca.rotation import retire, rotate
from phigate.ca.trust import anchors, bundle, export

__all__ = [
    "DEFAULT_HOSTS",
    "CAError",
    "CAInfo",
    "anchors",
    "bundle",
    "create_intermediate",
    "create_root",
    "ensure_ca",
    "export",
    "load",
    "retire",
    "rotate",
]
