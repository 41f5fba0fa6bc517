"""The Heap stage: startup objects are frozen out of full GC passes once running, and frozen
again (after a collection) when a reload replaces them, so a replaced model is not kept."""

from __future__ import annotations

import gc
import weakref

import pytest
from mitmproxy.test import taddons

from phigate.addons.heap import Heap


class Model:
    """Stands for a loaded model: a reference cycle, which only the collector frees."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def heap():
    heap = Heap()
    with taddons.context(heap) as tctx:
        yield heap, tctx
    gc.unfreeze()  # leave the test process as it was


def test_running_freezes_what_startup_loaded(heap):
    stage, tctx = heap
    model = weakref.ref(Model())
    gc.unfreeze()
    stage.running()
    assert gc.get_freeze_count() > 1000
    assert model() is None  # garbage is collected before freezing, never frozen with the rest


def test_a_reload_unfreezes_so_the_replaced_model_is_collected(heap):
    stage, tctx = heap
    loaded = Model()
    stage.running()
    replaced = weakref.ref(loaded)
    del loaded  # e.g. detect_config changed: the detector holding it is dropped
    gc.collect()
    assert replaced() is not None  # frozen: the collector does not see the cycle
    tctx.configure(stage, gc_freeze=False)
    assert replaced() is None and gc.get_freeze_count() == 0
    tctx.configure(stage, gc_freeze=True)
    assert gc.get_freeze_count() > 1000


def test_nothing_is_frozen_before_running_or_when_off(heap):
    stage, tctx = heap
    gc.unfreeze()
    tctx.configure(stage, gc_freeze=False)
    tctx.configure(stage, gc_freeze=True)  # startup: `running` has not come yet
    assert gc.get_freeze_count() == 0
    tctx.configure(stage, gc_freeze=False)
    stage.running()
    assert gc.get_freeze_count() == 0
