"""The in-memory event store: replay after an event, bounded memory, one session's events
never replayed to another."""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification

from mcphost.state.eventstore import MemoryEventStore, for_session


def note(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"n": n})


def sized(n: int, size: int) -> JSONRPCNotification:
    """A notification of a little over ``size`` bytes as sent."""
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/message", params={"n": n, "data": "x" * size})


async def replay(store: MemoryEventStore, after: str) -> tuple[str | None, list[int]]:
    sent: list[EventMessage] = []

    async def send(event: EventMessage) -> None:
        sent.append(event)

    stream = await store.replay_events_after(after, send)
    return stream, [e.message.params["n"] for e in sent]  # type: ignore[union-attr,index]


async def test_replays_the_stream_after_an_event_without_its_priming_event() -> None:
    store = MemoryEventStore().for_session()
    primed = await store.store_event("1", None)
    first = await store.store_event("1", note(1))
    await store.store_event("2", note(99))  # another stream
    await store.store_event("1", note(2))
    assert await replay(store, primed) == ("1", [1, 2])
    assert await replay(store, first) == ("1", [2])


async def test_a_session_cannot_replay_another_sessions_events() -> None:
    shared = MemoryEventStore()
    mine, theirs = shared.for_session(), shared.for_session()
    # Every client numbers its requests from 1: the stream ids collide.
    primed = await mine.store_event("1", None)
    await theirs.store_event("1", note(666))
    await mine.store_event("1", note(1))
    assert await replay(mine, primed) == ("1", [1])
    assert await replay(theirs, primed) == (None, [])


async def test_each_stream_keeps_only_its_newest_events() -> None:
    store = MemoryEventStore(max_events=100, max_events_per_stream=3).for_session()
    ids = [await store.store_event("1", note(n)) for n in range(6)]
    assert await replay(store, ids[0]) == (None, [])  # evicted: cannot resume from it
    assert await replay(store, ids[3]) == ("1", [4, 5])
    assert store.size == 3


async def test_all_streams_together_keep_only_the_newest_events() -> None:
    shared = MemoryEventStore(max_events=4, max_events_per_stream=100)
    a, b = shared.for_session(), shared.for_session()
    old = await a.store_event("1", note(0))
    for n in range(1, 6):
        await b.store_event(str(n), note(n))
    assert shared.size == 4
    assert await replay(a, old) == (None, [])


async def test_a_sessions_events_go_with_it() -> None:
    shared = MemoryEventStore()
    view = shared.for_session()
    await view.store_event("1", note(1))
    assert shared.size == 1
    del view
    gc.collect()
    assert shared.size == 0


async def test_unknown_or_malformed_event_ids_replay_nothing() -> None:
    store = MemoryEventStore().for_session()
    assert await replay(store, "not-a-number") == (None, [])
    assert await replay(store, "123456") == (None, [])


def test_only_the_memory_store_is_split_per_session() -> None:
    shared = MemoryEventStore()
    assert for_session(shared, "s") is not shared and isinstance(for_session(shared, "s"), MemoryEventStore)
    assert for_session(None, "s") is None


async def test_a_callers_events_push_out_its_own_old_events_never_another_callers() -> None:
    shared = MemoryEventStore(max_events=100, max_events_per_stream=100, max_events_per_owner=10)
    quiet = shared.for_session(owner="key:quiet")
    kept = await quiet.store_event("1", note(0))
    await quiet.store_event("1", note(1))
    busy = [shared.for_session(owner="key:busy") for _ in range(3)]
    ids = [await view.store_event(str(n), note(n)) for n in range(60) for view in busy]
    assert shared.size == 12  # the busy caller's newest ten, and the quiet caller's two
    assert await replay(quiet, kept) == ("1", [1])
    assert await replay(busy[2], ids[-1]) == ("59", [])  # its newest events are kept
    assert await replay(busy[0], ids[0]) == (None, [])  # its oldest went first


async def test_a_callers_share_frees_up_as_its_sessions_end() -> None:
    shared = MemoryEventStore(max_events=100, max_events_per_stream=100, max_events_per_owner=4)
    first = shared.for_session(owner="key:a")
    for n in range(4):
        await first.store_event("1", note(n))
    del first
    gc.collect()
    second = shared.for_session(owner="key:a")
    ids = [await second.store_event("1", note(n)) for n in range(4)]
    assert shared.size == 4
    assert await replay(second, ids[0]) == ("1", [1, 2, 3])


async def test_a_view_that_stored_nothing_goes_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    raised: list[Any] = []  # an exception in __del__ is only printed, to the daemon's log
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    shared = MemoryEventStore(max_events_per_owner=10)
    kept = shared.for_session(owner="key:a")
    await kept.store_event("1", note(1))
    unused = shared.for_session(owner="key:b")
    del unused
    gc.collect()
    later = shared.for_session(owner="key:b")
    await later.store_event("1", note(2))
    assert shared.size == 2
    assert raised == []


async def test_all_streams_together_keep_only_as_many_bytes_as_allowed() -> None:
    store = MemoryEventStore(max_events=1000, max_events_per_stream=1000, max_bytes=10_000).for_session()
    ids = [await store.store_event(str(n % 2), sized(n, 3000)) for n in range(5)]
    assert store.size == 3  # the newest three fit in 10,000 bytes, a fourth would not
    assert await replay(store, ids[2]) == ("0", [4])
    assert await replay(store, ids[1]) == (None, [])  # evicted: cannot resume from it


async def test_a_callers_big_events_push_out_its_own_never_another_callers() -> None:
    shared = MemoryEventStore(max_events=100, max_events_per_stream=100, max_bytes=100_000, max_bytes_per_owner=10_000)
    quiet = shared.for_session(owner="key:quiet")
    kept = await quiet.store_event("1", note(0))
    await quiet.store_event("1", note(1))
    busy = shared.for_session(owner="key:busy")
    await busy.store_event("1", sized(0, 3000))
    # Over its share on its own: not kept, and it took the caller's older event with it.
    huge = await busy.store_event("1", sized(1, 20_000))
    assert shared.size == 2 and await replay(busy, huge) == (None, [])
    ids = [await busy.store_event("2", sized(n, 3000)) for n in range(10)]
    assert shared.size == 2 + 3  # the quiet caller's two, the busy one's newest three
    assert await replay(busy, ids[-3]) == ("2", [8, 9])
    assert await replay(quiet, kept) == ("1", [1])
