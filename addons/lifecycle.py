"""Lifecycle: SIGTERM drains and stops the gateway cleanly; SIGHUP reloads the policies.

On SIGTERM the listeners close (new connections are refused, so a load balancer moves on),
requests that arrive afterwards on open keep-alive connections get a retryable 503 with
`connection: close`, and requests already in flight may finish until `shutdown_timeout`.
Those still running then are killed (a held approval ends as abandoned) and recorded; then
mitmproxy shuts down, which runs the recorder's final signed checkpoint. A second SIGTERM
stops at once.

Signal handlers need the main thread: an embedded gateway (tests, the demo) leaves signals to
its host process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import weakref

from mitmproxy import ctx, exceptions, http

from phigate.errors import Refusal

from .failclosed import answer, contained
from .policies import Policies

log = logging.getLogger("phigate")
STAGE = "lifecycle"
KILL_GRACE = 2.0  # seconds for killed flows to reach the recorder


class Lifecycle:
    def __init__(self, policies: Policies) -> None:
        self.policies = policies
        self.in_flight: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self.stopping_since: float | None = None
        self._drain: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "shutdown_timeout", int, 25,
            "Seconds that requests in flight may still take after SIGTERM before they are ended "
            "(keep it below the orchestrator's grace period, e.g. Kubernetes' 30 s).",
        )

    def configure(self, updated: set[str]) -> None:
        if "shutdown_timeout" in updated and ctx.options.shutdown_timeout < 0:
            raise exceptions.OptionsError("shutdown_timeout must be >= 0")

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGTERM, self.begin_shutdown)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        except (RuntimeError, ValueError):  # not the main thread: an embedded gateway
            log.debug("signal handlers not installed (not on the main thread)")

    @property
    def stopping(self) -> bool:
        return self.stopping_since is not None

    def reload(self) -> None:
        log.info("SIGHUP: reloading policies")
        self.policies.reload()

    @contained(STAGE)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Runs before every stage's request hook: a refusal here means no stage does work."""
        if self.stopping:
            answer(flow, STAGE, Refusal(503, "gateway_shutting_down",
                                        "The gateway is shutting down; retry the request.",
                                        retry=True))
            flow.response.headers["connection"] = "close"
        self.in_flight.add(flow)

    @contained(STAGE)
    def response(self, flow: http.HTTPFlow) -> None:
        self.in_flight.discard(flow)

    @contained(STAGE)
    def error(self, flow: http.HTTPFlow) -> None:
        self.in_flight.discard(flow)

    def begin_shutdown(self) -> None:
        if self.stopping:
            log.warning("second SIGTERM: stopping now")
            ctx.master.shutdown()
            return
        self.stopping_since = time.time()
        log.info("SIGTERM: listeners closed, %d request(s) in flight may finish within %d s",
                 len(self.in_flight), ctx.options.shutdown_timeout)
        ctx.options.update(server=False)  # mitmproxy closes its listening sockets
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        assert self.stopping_since is not None
        await self._wait_idle(self.stopping_since + ctx.options.shutdown_timeout)
        if self.in_flight:
            log.warning("shutdown deadline reached: ending %d request(s) still in flight",
                        len(self.in_flight))
            for flow in list(self.in_flight):
                if flow.killable:
                    flow.kill()
            await self._wait_idle(time.time() + KILL_GRACE)
        ctx.master.shutdown()  # runs every addon's `done`: the recorder's final checkpoint

    async def _wait_idle(self, deadline: float) -> None:
        while self.in_flight and time.time() < deadline:
            await asyncio.sleep(0.05)
