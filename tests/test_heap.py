"""The collector settings of a long-running daemon (:mod:`mcphost.ops.heap`)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from mcphost.ops import heap


@pytest.fixture
def collector() -> Iterator[None]:
    """Give the test process its collector back as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.enable()


class Node:
    """Something that lives in a reference cycle, as a plugin module and its functions do."""

    def __init__(self) -> None:
        self.me = self


def test_settle_freezes_what_is_alive_and_raises_the_young_threshold(collector: None) -> None:
    gc.unfreeze()
    heap.settle()
    assert gc.get_freeze_count() > 1000  # this process's modules, at least
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD


def test_settle_resumes_a_paused_collector(collector: None) -> None:
    heap.pause()
    assert not gc.isenabled()
    heap.settle()
    assert gc.isenabled()


def test_settling_with_a_collection_frees_cycles_that_died_while_frozen(collector: None) -> None:
    """What start-up's first settle froze and start-up no longer needs is freed by the
    settle a second later, not kept for the life of the process."""
    node = Node()
    dead = weakref.ref(node)
    heap.settle()
    del node
    gc.collect()
    assert dead() is not None  # frozen: no collection visits it
    heap.settle(collect=True)
    assert dead() is None
