"""The Redis-backed limiter, session store and event store against a real ``redis-server``,
and what each does while Redis is down or hung."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification, JSONRPCResponse

from mcphost.core.rate import Rate
from mcphost.state.eventstore import MemoryEventStore
from mcphost.state.limiter import MemoryLimiter
from mcphost.state.redis_state import RedisState, StateUnavailable, redacted
from mcphost.state.redis_stores import RedisEventStore, RedisLimiter, RedisSessionStore
from mcphost.state.sessions import SessionRecord, StoreUnavailable
from tests.services import RedisServer, redis_server

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def state(redis: RedisServer) -> AsyncIterator[RedisState]:
    # A prefix per test: the tests share one server and must not see each other's keys.
    async with RedisState(redis.url, prefix=f"t{next(_prefixes)}:", timeout=0.3).run() as state:
        yield state


def note(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"progress": n})


async def replayed(store: RedisEventStore, last: str) -> tuple[str | None, list[EventMessage]]:
    sent: list[EventMessage] = []

    async def collect(event: EventMessage) -> None:
        sent.append(event)

    return await store.replay_events_after(last, collect), sent


async def test_limiter_grants_the_burst_then_refuses_with_a_retry_time(state: RedisState) -> None:
    limiter, rate = RedisLimiter(state, MemoryLimiter()), Rate.parse("3/minute")
    decisions = [await limiter.hit("k", rate) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 19 < decisions[3].retry_after <= 20  # one request back every 20 s
    assert 59 < decisions[3].reset_after <= 60
    assert (await limiter.hit("other", rate)).allowed  # budgets are per key


async def test_limiter_budget_is_shared_by_every_process(redis: RedisServer) -> None:
    rate = Rate.parse("4/minute")
    async with (
        RedisState(redis.url, prefix="shared:").run() as one,
        RedisState(redis.url, prefix="shared:").run() as two,
    ):
        replicas = [RedisLimiter(one, MemoryLimiter()), RedisLimiter(two, MemoryLimiter())]
        allowed = [(await replicas[i % 2].hit("caller", rate)).allowed for i in range(6)]
    assert allowed == [True] * 4 + [False] * 2


async def test_session_records_round_trip_and_expire_with_the_idle_timeout(state: RedisState) -> None:
    store = RedisSessionStore(state, idle_timeout=0.4)
    owner = {"client_id": "c", "issuer": None, "subject": "alice"}
    record = SessionRecord("s1.sig", "2025-11-25", {"clientInfo": {"name": "t"}}, owner, time.time())  # type: ignore[arg-type]
    await store.save(record)
    assert await store.load("s1.sig") == record
    await trio.sleep(0.3)
    await store.touch("s1.sig", time.time())  # another 0.5 s from now
    await trio.sleep(0.3)
    assert await store.load("s1.sig") == record
    await trio.sleep(0.4)
    assert await store.load("s1.sig") is None
    await store.save(record)
    await store.delete("s1.sig")
    assert await store.load("s1.sig") is None
    assert await store.expire(time.time()) == 0


async def test_an_update_replaces_a_record_only_while_it_lives(state: RedisState) -> None:
    """A session's subscriptions are written to its record as they change: never bringing back
    a session deleted meanwhile, nor keeping one longer than its last touch would."""
    store = RedisSessionStore(state, idle_timeout=0.4)
    record = SessionRecord("s2.sig", "2025-11-25", {}, None, time.time())
    await store.save(record)
    subscribed = dataclasses.replace(record, subscriptions=["jobs://queue"])
    await store.update(subscribed)
    assert await store.load("s2.sig") == subscribed
    await trio.sleep(0.6)
    assert await store.load("s2.sig") is None, "the update extended the record's life"
    await store.save(record)
    await store.delete("s2.sig")
    await store.update(subscribed)
    assert await store.load("s2.sig") is None


async def test_a_record_a_later_version_wrote_is_read_without_what_this_one_does_not_know(state: RedisState) -> None:
    """During a rolling upgrade the replicas of two versions share the records: a field added
    later is left out by the earlier version, which serves the session on, rather than refuse it."""
    store = RedisSessionStore(state, idle_timeout=60)
    record = SessionRecord("s3.sig", "2025-11-25", {}, None, time.time())
    written = {**dataclasses.asdict(record), "added_later": {"any": "thing"}}
    assert state.client is not None
    await state.client.set(state.key("session", "s3.sig"), json.dumps(written))
    assert await store.load("s3.sig") == record


async def test_events_replay_after_an_id_within_their_session_only(state: RedisState) -> None:
    store = RedisEventStore(state, MemoryEventStore(), idle_timeout=60)
    alice, bob = store.for_session("alice"), store.for_session("bob")
    priming = await alice.store_event("7", None)
    ids = [await alice.store_event("7", note(n)) for n in range(3)]
    ids.append(await alice.store_event("7", JSONRPCResponse(jsonrpc="2.0", id=7, result={})))
    await bob.store_event("7", note(99))  # the same request id in another session
    stream, sent = await replayed(alice, priming)
    assert stream is None  # the request was answered: its stream is complete, nothing follows
    assert [e.event_id for e in sent] == ids
    assert [e.message.params["progress"] for e in sent[:3]] == [0, 1, 2]  # type: ignore[union-attr, index]
    assert (await replayed(alice, ids[1]))[1][0].event_id == ids[2]
    assert await replayed(bob, ids[0]) == (None, [])  # alice's event means nothing to bob
    assert await replayed(alice, "garbage") == (None, [])
    assert await replayed(alice, "!!.1-0") == (None, [])


async def test_a_reply_survives_the_round_trip_and_trimmed_events_are_unknown(state: RedisState) -> None:
    store = RedisEventStore(state, MemoryEventStore(), idle_timeout=60, max_events_per_stream=10).for_session("s")
    first = await store.store_event("_GET_stream", None)
    for n in range(500):
        await store.store_event("_GET_stream", note(n))
    reply = JSONRPCResponse(jsonrpc="2.0", id=1, result={"content": [], "isError": False})
    last = await store.store_event("_GET_stream", note(500))
    await store.store_event("_GET_stream", reply)
    assert await replayed(store, first) == (None, [])  # trimmed long ago: cannot resume
    stream, sent = await replayed(store, last)
    assert stream == "_GET_stream"
    assert [e.message for e in sent] == [reply]


async def test_while_redis_is_down_everything_falls_back_at_once(redis: RedisServer) -> None:
    down = RedisServer(redis.binary)  # a port nothing listens on
    async with RedisState(down.url, timeout=0.3).run() as state:
        assert not state.available and "Connection" in str(state.error)
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await state.call(lambda client: client.ping())
        assert (await RedisLimiter(state, MemoryLimiter()).hit("k", Rate.parse("1/minute"))).allowed
        sessions = RedisSessionStore(state, 60)
        record = SessionRecord("s", "2025-11-25", {}, None, time.time())
        await sessions.save(record)
        await sessions.touch("s", time.time())
        await sessions.delete("s")
        with pytest.raises(StoreUnavailable):
            await sessions.load("s")
        events = RedisEventStore(state, MemoryEventStore(), idle_timeout=60).for_session("s")
        first = await events.store_event("1", None)
        await events.store_event("1", note(1))
        assert "." not in first  # kept in this replica's memory
        stream, sent = await replayed(events, first)
        assert stream == "1" and len(sent) == 1
        assert time.monotonic() - started < 0.3  # nothing waited for a timeout


async def test_a_hung_redis_costs_one_timeout_then_recovery_is_automatic(redis: RedisServer) -> None:
    async with RedisState(redis.url, prefix="hung:", timeout=0.2).run() as state:
        limiter, rate = RedisLimiter(state, MemoryLimiter()), Rate.parse("1/minute")
        assert (await limiter.hit("k", rate)).allowed
        redis.freeze()
        try:
            started = time.monotonic()
            assert (await limiter.hit("k", rate)).allowed  # the fallback's own budget
            assert time.monotonic() - started < 0.5
            assert not state.available and state.report()["error"]
            started = time.monotonic()
            assert not (await limiter.hit("k", rate)).allowed  # now at once, from memory
            assert time.monotonic() - started < 0.05
        finally:
            redis.thaw()
        for _ in range(100):  # the watcher notices within a second
            if state.available:
                break
            await trio.sleep(0.05)
        assert state.available
        assert not (await limiter.hit("k", rate)).allowed  # Redis's budget again: still spent


async def test_a_record_saved_during_an_outage_is_written_before_redis_counts_as_back(redis: RedisServer) -> None:
    async with RedisState(redis.url, prefix="catchup:", timeout=0.2).run() as state:
        store = RedisSessionStore(state, 60)
        kept = SessionRecord("kept", "2025-11-25", {"clientInfo": {"name": "t"}}, None, time.time())
        ended = SessionRecord("ended", "2025-11-25", {}, None, time.time())
        redis.freeze()
        try:
            with pytest.raises(StateUnavailable):  # the one call that waits for the timeout
                await state.call(lambda client: client.ping())
            await store.save(kept)  # refused at once: nothing reaches Redis, kept in memory
            await store.save(ended)
            await store.delete("ended")  # ended during the outage: never written
        finally:
            redis.thaw()
        for _ in range(200):  # the watcher's next check, within a second
            if state.available:
                break
            await trio.sleep(0.01)
        assert state.available
        # Already written when the flag went up: no other replica is sent to look too early.
        assert redis.command("EXISTS", "catchup:session:kept") == "1"
        assert await store.load("kept") == kept
        assert await store.load("ended") is None


async def test_a_session_deleted_during_an_outage_is_deleted_and_announced_once_redis_answers(
    redis: RedisServer,
) -> None:
    async with RedisState(redis.url, prefix="undeleted:", timeout=0.2).run() as state:
        store, other = RedisSessionStore(state, 60), RedisSessionStore(state, 60)
        await store.save(SessionRecord("gone", "2025-11-25", {}, None, time.time()))

        async def nothing() -> None:
            pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other.watch, nothing)  # another replica, listening
            await trio.sleep(0.2)
            assert await other.ended() is None  # it could not hear of what came before it listened
            redis.freeze()
            try:
                with pytest.raises(StateUnavailable):
                    await state.call(lambda client: client.ping())
                await store.delete("gone")  # Redis cannot be told now
            finally:
                redis.thaw()
            for _ in range(100):  # once Redis answers (within a second): deleted, and the listener told
                if other.ended_unseen() and redis.command("EXISTS", "undeleted:session:gone") == "0":
                    break
                await trio.sleep(0.05)
            assert other.ended_unseen()
            heard = await other.ended()
            # By name, or (its subscription broke with the outage) as "look each one up again".
            assert heard is None or "gone" in heard
            nursery.cancel_scope.cancel()
        assert await store.load("gone") is None


def test_urls_are_logged_without_credentials() -> None:
    assert redacted("redis://user:s3cret@redis.internal:6380/2") == "redis://redis.internal:6380/2"
    assert redacted("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock"
