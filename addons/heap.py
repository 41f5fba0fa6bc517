"""Keeps what the gateway loads at startup (the spaCy model above all) out of Python's full
garbage-collection passes.

A full pass walks every tracked object. With the detector loaded the gateway holds ~170,000
of them, and a pass, which comes whenever enough new objects have survived (caches filling),
stopped the event loop, and every request in flight with it, for ~100 ms (scripts/bench.py's
note row: p99 110-150 ms against a p50 of 10). `gc.freeze()` once startup is done moves those
objects to a generation the collector never walks; garbage they later become is still freed by
reference counting, and a pass then walks only what was made since. A new detector
(`detect_config` changed while running) is frozen again after the old one has been collected:
frozen cycles are never collected.
"""

from __future__ import annotations

import gc
import logging
import time

from mitmproxy import ctx

log = logging.getLogger("phigate")

# Options whose change replaces a large object graph loaded at startup.
RELOADS = frozenset({"detect_config", "gc_freeze"})


class Heap:
    """Last stage of the pipeline: its hooks run after every other stage's."""

    def __init__(self) -> None:
        self.started = False  # `running` has come: startup is over

    def load(self, loader) -> None:
        loader.add_option(
            "gc_freeze", bool, True,
            "Once started, move every object loaded so far (the NER model, policies, rules) out "
            "of Python's full garbage-collection passes, which otherwise stop the event loop for "
            "~100 ms each with the model loaded.",
        )

    def running(self) -> None:
        self.started = True
        if ctx.options.gc_freeze:
            self._freeze()

    def configure(self, updated: set[str]) -> None:
        if not self.started or not (updated & RELOADS):
            return  # before `running`: startup is not over yet
        gc.unfreeze()  # the replaced objects can be collected again
        if ctx.options.gc_freeze:
            self._freeze()
        else:
            gc.collect()

    def _freeze(self) -> None:
        started = time.perf_counter()
        gc.collect()  # garbage frozen now would never be collected
        gc.freeze()
        log.info("heap: %d objects loaded at startup frozen out of full GC passes (%.0f ms)",
                 gc.get_freeze_count(), (time.perf_counter() - started) * 1000)
