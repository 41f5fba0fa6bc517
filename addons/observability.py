"""Observability: Prometheus metrics and structured JSON log lines from each flow's record.

`StageClock.after(stage)` makes a tiny addon placed right after a request stage in the pipeline;
mitmproxy runs hooks in registration order, one flow at a time through the chain, so the
difference between two marks is the time the stage in between took. `Observability` sits right
after the recorder: it sees the final status (the recorder may withhold a response it could
not record) and, with the mark before the recorder, the audit append time.
"""

from __future__ import annotations

import logging
import time
import weakref

from mitmproxy import ctx, http

from phigate import context
from phigate.ops.health import latest_checkpoint_time
from phigate.ops.logs import LOGGER, StderrHandler, flow_event
from phigate.ops.metrics import STAGES, GatewayMetrics

from .failclosed import contained

events = logging.getLogger(LOGGER)
RECORDING = "recording"
COMPONENT = "observability"


class StageClock:
    """Per-flow timestamps taken between stages (weakly keyed: nothing outlives its flow)."""

    def __init__(self) -> None:
        self.marks: weakref.WeakKeyDictionary[http.HTTPFlow, dict[str, float]] = (
            weakref.WeakKeyDictionary())

    def after(self, stage: str) -> StageMark:
        return StageMark(self, stage)

    def before_recording(self) -> RecordingMark:
        return RecordingMark(self)

    def stamp(self, flow: http.HTTPFlow, name: str) -> None:
        self.marks.setdefault(flow, {})[name] = time.time()

    def stages(self, flow: http.HTTPFlow, record: dict) -> dict[str, float]:
        """Seconds per request stage that decided something on this flow, and upstream time."""
        marks = self.marks.get(flow, {})
        decided = {d.get("stage") for d in record.get("decisions") or []}
        durations, previous = {}, record.get("started")
        for stage in STAGES:
            if stage in marks:
                if stage in decided and previous is not None:
                    durations[stage] = max(0.0, marks[stage] - previous)
                previous = marks[stage]
        response, request = flow.response, flow.request
        if (record.get("upstream") and not record.get("local_response") and response
                and response.timestamp_start and request.timestamp_end):
            durations["upstream"] = max(0.0, response.timestamp_start - request.timestamp_end)
        return durations


class StageMark:
    def __init__(self, clock: StageClock, stage: str) -> None:
        self.clock, self.stage = clock, stage
        self.name = f"stagemark-{stage}"  # mitmproxy needs a unique name per addon

    @contained(COMPONENT)
    def request(self, flow: http.HTTPFlow) -> None:
        self.clock.stamp(flow, self.stage)


class RecordingMark:
    name = "stagemark-recording"

    def __init__(self, clock: StageClock) -> None:
        self.clock = clock

    @contained(COMPONENT)
    def response(self, flow: http.HTTPFlow) -> None:
        self.clock.stamp(flow, RECORDING)

    @contained(COMPONENT)
    def error(self, flow: http.HTTPFlow) -> None:
        self.clock.stamp(flow, RECORDING)

    @contained(COMPONENT)
    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        self.clock.stamp(flow, RECORDING)


class Observability:
    def __init__(self, clock: StageClock) -> None:
        self.clock = clock
        self.metrics = GatewayMetrics(checkpoint_time=self._checkpoint_time)
        self.handler = StderrHandler()
        self._in_flight: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self._ended: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self.recorder = None

    def load(self, loader) -> None:
        loader.add_option(
            "log_json", bool, True,
            "Write one JSON line per finished request to stderr (request id, endpoint template, "
            "status, policy, each stage's decision, masked-entity counts, timings; never "
            "bodies, subjects, tokens or keys).",
        )

    def configure(self, updated: set[str]) -> None:
        if "log_json" in updated:
            events.propagate = False  # mitmproxy's own log output must not repeat the lines
            events.setLevel(logging.INFO)
            if ctx.options.log_json:
                events.addHandler(self.handler)
            else:
                events.removeHandler(self.handler)

    def done(self) -> None:
        events.removeHandler(self.handler)

    @contained(COMPONENT)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.live and flow not in self._in_flight:
            self._in_flight.add(flow)
            self.metrics.in_flight.inc()

    @contained(COMPONENT)
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.live:  # not flows loaded from a file into mitmweb
            self._finish(flow)

    @contained(COMPONENT)
    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    @contained(COMPONENT)
    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        """Observe a flow once (a flow whose client left after its response gets `error` too)."""
        record = context.get(flow.metadata)
        if record is None or flow in self._ended:
            return
        self._ended.add(flow)
        if flow in self._in_flight:
            self._in_flight.discard(flow)
            self.metrics.in_flight.dec()
        now = time.time()
        recording = self.clock.marks.get(flow, {}).get(RECORDING)
        if recording is not None:
            self.metrics.audit_append.observe(max(0.0, now - recording))
        status = flow.response.status_code if flow.response else None
        stages = self.clock.stages(flow, record)
        duration = now - record["started"] if "started" in record else None
        self.metrics.observe_flow(record, status, stages, duration)
        if ctx.options.log_json:
            events.info("flow", flow_event(record, status, stages, duration))

    def running(self) -> None:
        self.recorder = ctx.master.addons.get("recorder")

    def _checkpoint_time(self) -> float | None:
        """Called on the scraping thread; reads with its own connection."""
        store = getattr(self.recorder, "store", None)
        path = getattr(store, "path", None)  # the SQLite store's file; other stores: no age
        return latest_checkpoint_time(path) if path else None
