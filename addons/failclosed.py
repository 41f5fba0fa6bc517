"""Fail closed: the one wrapper every security hook runs in.

mitmproxy logs an exception raised by a hook and lets the flow continue upstream (fail open).
For a PHI gateway that is the worst outcome, so every hook body runs inside `guard`: a
`Refusal` becomes the OpenAI-shaped error it describes; any other exception becomes a 500, is
recorded by class name only (an exception message may quote PHI), and the request never leaves.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable

from mitmproxy import http

from phigate import context
from phigate.errors import Refusal, error_body, error_headers

log = logging.getLogger("phigate")

STAGE_FAILED = "gateway_stage_failed"


def record_of(flow: http.HTTPFlow) -> dict:
    """The flow's record, created if a hook runs before the scope stage made it."""
    record = context.get(flow.metadata)
    if record is None:
        peer = flow.client_conn.peername
        record = context.start(
            flow.metadata,
            client=f"{peer[0]}:{peer[1]}" if peer else "",
            mode=mode_of(flow),
            method=flow.request.method,
            path=flow.request.path,
        )
    return record


def mode_of(flow: http.HTTPFlow) -> str:
    mode = getattr(flow.client_conn, "proxy_mode", None)
    return "reverse" if getattr(mode, "type_name", "") == "reverse" else "forward"


def answer(flow: http.HTTPFlow, stage: str, refusal: Refusal) -> None:
    """End the flow with the refusal's OpenAI-shaped error, and note it on the record."""
    record = record_of(flow)
    context.refuse(record, stage, refusal.status, refusal.code)
    record["local_response"] = True
    flow.response = http.Response.make(
        refusal.status,
        error_body(refusal.status, refusal.code, refusal.message),
        error_headers(record["request_id"], retry=refusal.retry),
    )


def answer_headers(flow: http.HTTPFlow, stage: str, refusal: Refusal) -> None:
    """In `responseheaders` the upstream body is still to come, and mitmproxy reads it into
    whatever response object is set: so the status and headers become the error's, and the
    body is replaced chunk by chunk as it streams in (upstream bytes are dropped)."""
    record = record_of(flow)
    context.refuse(record, stage, refusal.status, refusal.code)
    record["local_response"] = True
    body = error_body(refusal.status, refusal.code, refusal.message)
    response = flow.response
    response.status_code = refusal.status
    response.reason = ""
    response.headers.clear()
    response.headers.update(error_headers(record["request_id"], retry=refusal.retry))
    response.headers["content-length"] = str(len(body))
    response.stream = ReplacedBody(body)


class ReplacedBody:
    """A `flow.response.stream` callable that sends `body` once and drops everything else."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __call__(self, chunk: bytes) -> bytes:
        out, self.body = self.body, b""
        return out


def fail(flow: http.HTTPFlow, stage: str, exc: BaseException, hook: str = "request") -> None:
    record = record_of(flow)
    context.fail(record, stage, exc)
    # Class name and request id only: the message or traceback could quote request text.
    log.error("stage %s failed (%s), request %s refused", stage, type(exc).__name__,
              record["request_id"])
    refusal = Refusal(500, STAGE_FAILED, f"The gateway's {stage} stage failed; "
                      + ("the request was not sent." if hook == "request"
                         else "the answer was withheld."))
    (answer_headers if hook == "responseheaders" else answer)(flow, stage, refusal)


# Set on every wrapped hook: the pipeline runs as children of one addon (addons/gateway.py),
# where a hook that raised would keep the stages after it from seeing the event.
CONTAINED = "__phigate_contained__"


def guard(stage: str) -> Callable:
    """Decorate a hook `(self, flow)` so that it can only end in a decision, never fail open."""

    def wrap(hook: Callable) -> Callable:
        name = hook.__name__
        refuse = answer_headers if name == "responseheaders" else answer

        if inspect.iscoroutinefunction(hook):
            @functools.wraps(hook)
            async def run_async(self, flow: http.HTTPFlow) -> None:
                try:
                    await hook(self, flow)
                except Refusal as refusal:
                    refuse(flow, stage, refusal)
                except Exception as exc:
                    fail(flow, stage, exc, name)
            setattr(run_async, CONTAINED, True)
            return run_async

        @functools.wraps(hook)
        def run(self, flow: http.HTTPFlow) -> None:
            try:
                hook(self, flow)
            except Refusal as refusal:
                refuse(flow, stage, refusal)
            except Exception as exc:
                fail(flow, stage, exc, name)
        setattr(run, CONTAINED, True)
        return run

    return wrap


def contained(component: str) -> Callable:
    """Decorate a hook that decides nothing about the flow (metrics, logs, stage clocks): a
    fault is logged by class name and the flow goes on as it would without the hook."""

    def wrap(hook: Callable) -> Callable:
        if inspect.iscoroutinefunction(hook):
            @functools.wraps(hook)
            async def run_async(self, *args) -> None:
                try:
                    await hook(self, *args)
                except Exception as exc:
                    log.error("%s hook %s failed (%s)", component, hook.__name__, type(exc).__name__)
            setattr(run_async, CONTAINED, True)
            return run_async

        @functools.wraps(hook)
        def run(self, *args) -> None:
            try:
                hook(self, *args)
            except Exception as exc:
                log.error("%s hook %s failed (%s)", component, hook.__name__, type(exc).__name__)
        setattr(run, CONTAINED, True)
        return run

    return wrap


def settled(flow: http.HTTPFlow) -> bool:
    """True when a request hook has nothing left to do: answered, failed, or not live."""
    return bool(flow.response or flow.error or not flow.live)
