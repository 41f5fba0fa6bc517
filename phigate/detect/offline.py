"""Keep Presidio's e-mail validation offline.

Presidio's EmailRecognizer calls ``tldextract.extract``, whose default extractor downloads the
Public Suffix List on first use and caches it under the user's home. In a hospital network that
is a hung or refused outbound connection. We replace the module-level extractor with one that
reads only the snapshot bundled inside tldextract and writes no cache.
"""

from __future__ import annotations

import tldextract.tldextract as _tldextract


def use_bundled_suffix_list() -> None:
    """Idempotent; safe to call at import time of phigate.detect."""
    current = _tldextract.TLD_EXTRACTOR
    if current.suffix_list_urls or current._cache.enabled:
        _tldextract.TLD_EXTRACTOR = _tldextract.TLDExtract(
            cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True
        )
