"""Shared test fixtures that run real parts on 127.0.0.1 (e.g. `oidc.OidcProvider`)."""
