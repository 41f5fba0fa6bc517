"""phigate's mitmproxy addons: thin adapters over the plain modules in `phigate`."""
