"""Human sign-in to the admin pages with the hospital's SSO (SAML 2.0 or OIDC), as plain modules.

`SamlServiceProvider` and `OidcLogin` turn a finished browser login into a `Login` (an
`Identity` and where to return); `make_sso_app` wraps a WSGI app with the login routes, a
sealed session cookie and CSRF checks. No mitmproxy import.
"""

from phigate.sso.oidc_login import OidcLogin, OidcLoginConfig
from phigate.sso.saml import SamlConfig, SamlServiceProvider
from phigate.sso.saml_metadata import IdpMetadata, MetadataError, load_idp_metadata
from phigate.sso.session import Login, Session, SessionCodec
from phigate.sso.web import CSRF_HEADER, CSRF_KEY, IDENTITY_KEY, make_sso_app, safe_next

__all__ = [
    "CSRF_HEADER",
    "CSRF_KEY",
    "IDENTITY_KEY",
    "IdpMetadata",
    "Login",
    "MetadataError",
    "OidcLogin",
    "OidcLoginConfig",
    "SamlConfig",
    "SamlServiceProvider",
    "Session",
    "SessionCodec",
    "load_idp_metadata",
    "make_sso_app",
    "safe_next",
]
