"""Guardrails: the caller's policy decides, before any PHI detection, whether the request may go.

Endpoints, models, limits, tools, prompt deny rules and the per-caller rate are checked here
(phigate.policy); PHI-dependent rules run in the masking stage once detection has run. The
body is parsed once here and shared with later stages through the flow's side state.
"""

from __future__ import annotations

import json

from mitmproxy import http

from phigate import context
from phigate.errors import Refusal
from phigate.policy import RateLimiter, ViewError, build_view, check_rate, evaluate, normalize_path
from phigate.wire import fields as wire_fields
from phigate.wire.types import UnsupportedContent

from . import flowstate
from .failclosed import guard, record_of, settled

STAGE = "guardrails"


class Guardrails:
    def __init__(self) -> None:
        self.rates = RateLimiter()

    @guard(STAGE)
    def request(self, flow: http.HTTPFlow) -> None:
        if settled(flow):
            return
        state = flowstate.of(flow)
        record = record_of(flow)
        policy = state.policy

        # Rules and upstream see one spelling of the path (`/v1//files`, `/v1/%66iles` ...).
        path = normalize_path(flow.request.path)
        query = flow.request.path.partition("?")[2]
        flow.request.path = f"{path}?{query}" if query else path
        endpoint = f"{flow.request.method} {path}"
        record["endpoint"] = endpoint

        # An unreadable body is refused after the policy rules, so a denied endpoint is
        # reported as denied whatever its body looks like.
        try:
            body, unreadable = parse_body(flow.request), None
        except Refusal as refusal:
            body, unreadable = None, refusal
        state.body = body
        try:
            state.fields = wire_fields.request_fields(endpoint, body) if body is not None else []
        except UnsupportedContent as e:
            state.fields, state.unsupported = [], e  # the masking stage refuses it
        texts = [(wire_fields.render(f.path), f.text) for f in state.fields]
        try:
            view = build_view(flow.request.method, path, body, len(flow.request.raw_content or b""),
                              texts)
        except ViewError as e:
            raise Refusal(400, "invalid_request_field",
                          f"The request field '{e.field}' has the wrong type.") from None
        state.view = view
        record["request"] = {
            "model": view.model, "stream": view.stream,
            "max_output_tokens": view.max_output_tokens,
            "tools": list(view.tools_declared), "body_bytes": view.body_bytes,
            "messages": view.message_count,
        }

        decision = evaluate(policy, view)
        if decision.allowed:
            identity = state.identity
            decision = check_rate(policy, self.rates, f"{identity.iss} {identity.sub}")
        if not decision.allowed:
            context.decide(record, STAGE, "refuse", rule=decision.rule)
            raise decision.refusal()
        if unreadable:
            raise unreadable
        context.decide(record, STAGE, "allow")


def parse_body(request: http.Request):
    """The JSON body, decoded from any content-encoding; None when there is no body."""
    if not request.raw_content:
        return None
    try:
        content = request.get_content(strict=True)
    except ValueError:
        raise Refusal(400, "body_undecodable",
                      "The request body's content-encoding could not be decoded.") from None
    if "json" not in request.headers.get("content-type", "application/json"):
        raise Refusal(415, "unsupported_media_type",
                      "The gateway only forwards JSON request bodies.")
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        raise Refusal(400, "body_not_json", "The request body is not valid JSON.") from None
