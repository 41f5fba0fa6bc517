"""Identity: verify the caller's short-lived OIDC token and choose its policy.

The token comes from `Authorization: Bearer` (the app's OPENAI_API_KEY is its token, so SDKs need
no change) or from `Proxy-Authorization` on the CONNECT (HTTPS_PROXY=http://user:TOKEN@host).
The token itself is never stored: the record keeps issuer, subject, groups, jti and expiry.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from urllib.parse import parse_qsl, urlencode

from mitmproxy import connection, ctx, exceptions, http

from phigate import context
from phigate.errors import Refusal
from phigate.identity import (
    DevIssuer,
    Identity as Caller,
    IdentityError,
    TokenVerifier,
    extract_token,
    load_issuers,
)

from . import flowstate
from .failclosed import guard, record_of, settled
from .policies import Policies
from .settings import home

STAGE = "identity"
_JWT_SHAPED = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
REPLAY_OF = "phigate.replay_of"

# Flows that `phigate replay` injected in this process, with the recorded caller each runs as.
# Only in-process code can add to it: a flow read from a file, replayed from mitmweb or sent
# with any header is never in it, so no client can borrow a recorded identity.
_replays: weakref.WeakKeyDictionary[http.HTTPFlow, Caller] = weakref.WeakKeyDictionary()


def authorize_replay(flow: http.HTTPFlow, caller: Caller, original_id: str) -> None:
    """Let `flow` (about to be injected with `replay.client`) run once as the recorded caller."""
    flow.metadata[REPLAY_OF] = original_id
    _replays[flow] = caller


def replay_caller(flow: http.HTTPFlow) -> Caller | None:
    """The recorded caller of a flow `authorize_replay` marked (used up here); else None."""
    if flow.is_replay != "request" or not flow.metadata.get(REPLAY_OF):
        return None
    return _replays.pop(flow, None)


class Identity:
    def __init__(self, policies: Policies) -> None:
        self.policies = policies
        self.verifier: TokenVerifier | None = None
        self.saml = None  # a phigate.sso SamlServiceProvider when SAML callers are enabled
        # Proxy-Authorization arrives once, on the CONNECT; later requests in the tunnel need it.
        self.tunnel_auth: weakref.WeakKeyDictionary[connection.Client, str] = (
            weakref.WeakKeyDictionary())

    def load(self, loader) -> None:
        loader.add_option(
            "identity_issuers", str, "",
            "YAML file listing trusted OIDC issuers (issuer, audience, groups_claim, "
            "max_lifetime, ...). Empty: only the embedded development issuer.",
        )
        loader.add_option(
            "identity_dev_issuer", bool, True,
            "Trust the embedded development issuer in the home folder "
            "(tokens from `phigate token mint`). Turn off in production.",
        )
        loader.add_option(
            "identity_refresh_interval", int, 30,
            "Minimum seconds between JWKS refreshes per issuer (an unknown key id triggers one; "
            "the limit stops a flood of forged key ids from hammering the identity provider).",
        )
        loader.add_option(
            "identity_saml_idp_metadata", str, "",
            "SAML IdP metadata XML: service callers may then present a signed assertion as "
            "`Authorization: SAML <base64>` (same group mapping and audit fields). Empty: off.",
        )
        loader.add_option(
            "identity_saml_audience", str, "",
            "The SP entity ID such assertions must name as their Audience.",
        )
        loader.add_option(
            "identity_saml_recipient", str, "",
            "The Recipient such assertions must name. Empty: the audience.",
        )
        loader.add_option(
            "identity_saml_groups_attribute", str, "groups",
            "SAML attribute holding the caller's groups.",
        )

    def configure(self, updated: set[str]) -> None:
        self._configure_saml(updated)
        if not updated & {"identity_issuers", "identity_dev_issuer", "phigate_home",
                          "identity_refresh_interval"}:
            return
        issuers = []
        if ctx.options.identity_issuers:
            try:
                issuers.extend(load_issuers(ctx.options.identity_issuers))
            except (OSError, ValueError) as e:
                raise exceptions.OptionsError(f"identity_issuers: {e}") from None
        if ctx.options.identity_dev_issuer:
            issuers.append(DevIssuer(home().issuer_dir).trusted_issuer())
        if not issuers:
            raise exceptions.OptionsError(
                "no token issuer is trusted: set identity_issuers or identity_dev_issuer")
        self.verifier = TokenVerifier(
            issuers, refresh_interval=ctx.options.identity_refresh_interval)

    def _configure_saml(self, updated: set[str]) -> None:
        """Signed SAML assertions for service callers that have no OIDC for workloads."""
        names = {"identity_saml_idp_metadata", "identity_saml_audience",
                 "identity_saml_recipient", "identity_saml_groups_attribute"}
        if not updated & names:
            return
        metadata = ctx.options.identity_saml_idp_metadata
        if not metadata:
            self.saml = None
            return
        audience = ctx.options.identity_saml_audience
        if not audience:
            raise exceptions.OptionsError("identity_saml_idp_metadata needs identity_saml_audience")
        from phigate.sso import MetadataError, SamlConfig, SamlServiceProvider, load_idp_metadata

        try:
            idp = load_idp_metadata(metadata)
        except MetadataError as e:
            raise exceptions.OptionsError(f"identity_saml_idp_metadata: {e}") from None
        self.saml = SamlServiceProvider(SamlConfig(
            entity_id=audience, acs_url=ctx.options.identity_saml_recipient or audience, idp=idp,
            groups_attribute=ctx.options.identity_saml_groups_attribute))

    @guard(STAGE)
    def http_connect(self, flow: http.HTTPFlow) -> None:
        value = flow.request.headers.get("proxy-authorization")
        if value:
            self.tunnel_auth[flow.client_conn] = value

    @guard(STAGE)
    async def request(self, flow: http.HTTPFlow) -> None:
        if settled(flow):
            return
        record = record_of(flow)
        drop_query_tokens(flow.request)
        identity = replay_caller(flow)
        if identity is not None:
            record["replay_of"] = flow.metadata[REPLAY_OF]
        else:
            record.pop("replay_of", None)  # only this stage may mark a replay
            identity = await self._verify(flow)
        record["identity"] = identity.to_record()

        policy = self.policies.current().select(identity.groups)
        if policy is None:
            raise Refusal(403, "no_policy_for_groups",
                          "No policy on this gateway covers the caller's groups.")
        # Later stages use this exact policy object, even if a reload happens mid-flight.
        state = flowstate.of(flow)
        state.identity, state.policy = identity, policy
        record["policy"] = {"name": policy.name, "version": policy.version,
                            "upstream_key": policy.upstream_key}
        context.decide(record, STAGE, "allow", rule=policy.name)

    async def _verify(self, flow: http.HTTPFlow) -> Caller:
        proxy_auth = (flow.request.headers.get("proxy-authorization")
                      or self.tunnel_auth.get(flow.client_conn))
        authorization = flow.request.headers.get("authorization")
        assert self.verifier is not None
        try:
            if self.saml is not None and (authorization or "")[:5].lower() == "saml ":
                return await asyncio.to_thread(self.saml.verify_assertion_header, authorization)
            token, source = extract_token(authorization, proxy_auth)
            # A token seen before is answered from the verifier's cache on the loop; only a
            # new one (signature check, perhaps a JWKS fetch) goes to a worker thread.
            return (self.verifier.cached(token, source)
                    or await asyncio.to_thread(self.verifier.verify, token, source))
        except IdentityError as e:
            raise Refusal(e.status, e.code, e.message, retry=e.retry) from None


def drop_query_tokens(request: http.Request) -> None:
    """Tokens never travel in URLs: a JWT-shaped query value is removed before anything else
    (the caller must use a header), so it reaches neither upstream nor the audit log."""
    if "?" not in request.path:
        return
    path, query = request.path.split("?", 1)
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
            if not _JWT_SHAPED.match(v)]
    request.path = f"{path}?{urlencode(kept)}" if kept else path
