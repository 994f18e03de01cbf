"""What replicas share, in Redis: rate-limit budgets, session records, and the events of
resumable SSE streams. Each class implements the interface its in-memory or file
counterpart does (:class:`~mcphost.state.limiter.Limiter`, :class:`~mcphost.state.sessions.SessionStore`,
the SDK's ``EventStore``), so the rest of mcphost cannot tell them apart.

Keys (under ``[state] key_prefix``, ``mcphost:`` by default):

- ``rate:<limit key>``: a GCRA "theoretical arrival time" in milliseconds of Redis's clock,
  expiring when the budget is whole again;
- ``session:<session id>``: a session record (JSON), expiring one idle timeout (plus the touch
  interval) after the session was last seen;
- ``ended`` (a pub/sub channel): the id of each session deleted, so every replica holding it
  drops its copy at once;
- ``feed`` (a pub/sub channel): the replicas' messages to one another (resource updates and
  subscriptions);
- ``events:<session id>:<stream>``: a Redis stream of one SSE stream's events, capped and
  expiring with the session.

When Redis is unavailable (:class:`~mcphost.state.redis_state.RedisState`), each falls back as
documented on its class; none raises into the request path except a session lookup, which
answers 503 because it cannot tell a live session from a dead one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio
from coredis.commands import Script
from coredis.retry import NoRetryPolicy
from coredis.tokens import PureToken
from mcp.server.streamable_http import GET_STREAM_KEY, EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCError, JSONRPCMessage, JSONRPCResponse, jsonrpc_message_adapter

from mcphost.core.rate import Rate
from mcphost.state.eventstore import DEFAULT_MAX_EVENTS_PER_STREAM, MemoryEventStore, event_data
from mcphost.state.limiter import Decision, Limiter
from mcphost.state.redis_state import CHECK_INTERVAL, RedisState, StateUnavailable
from mcphost.state.sessions import SessionRecord, StoreUnavailable, record_lifetime

log = structlog.get_logger("mcphost.redis")

# GCRA as in mcphost.state.limiter.MemoryLimiter, on Redis's clock (replicas' clocks may differ)
# and atomically: one round trip per check. Times are milliseconds; numbers go back as
# strings because Redis truncates Lua numbers to integers.
_GCRA: Script[bytes] = Script(
    script="""
local now_parts = redis.call('TIME')
local now = now_parts[1] * 1000 + now_parts[2] / 1000
local period = tonumber(ARGV[1])
local interval = period / tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = tat - (period - interval)
if allowed_at > now then
    return {0, tostring(tat - now), tostring(allowed_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
return {1, tostring(new_tat - now), '0'}
"""
)

# Append an event to its stream, cap the stream, and keep it as long as its session.
_STORE_EVENT: Script[bytes] = Script(
    script="""
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return id
"""
)

# Forget a session and tell every replica, in one step: a replica that hears of it finds
# the record gone too. Only the deletion that finds the record tells, so a session several
# replicas end (a removed key's, each on its own reload) is announced once.
_DELETE_SESSION: Script[bytes] = Script(
    script="""
if redis.call('DEL', KEYS[1]) == 1 then
    redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return 0
"""
)

# The events after ARGV[1], or nil when that event is not (or no longer) in the stream: a
# client must not be told it missed nothing when what it missed was trimmed.
_REPLAY: Script[bytes] = Script(
    script="""
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
"""
)


class RedisLimiter:
    """Rate-limit budgets shared by every replica: a key limited to 100/minute gets 100 a
    minute in total, wherever its requests land.

    While Redis is unavailable, ``fallback`` (this replica's :class:`MemoryLimiter`) decides:
    each replica then grants the whole budget on its own, so a caller may get up to N times
    its limit across N replicas, but nobody is locked out by an outage of the limiter.
    """

    def __init__(self, state: RedisState, fallback: Limiter):
        self.state = state
        self.fallback = fallback

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request (see :class:`~mcphost.state.limiter.Limiter`)."""
        try:
            allowed, reset_ms, retry_ms = await _run(
                self.state, _GCRA, self.state.key("rate", key), [rate.period * 1000, rate.limit]
            )
        except StateUnavailable:
            return await self.fallback.hit(key, rate)
        reset, retry = float(reset_ms) / 1000, float(retry_ms) / 1000
        if not int(allowed):
            return Decision(False, rate, 0, reset, retry)
        interval = rate.period / rate.limit
        # As in MemoryLimiter: the epsilon keeps float rounding from costing a whole request.
        return Decision(True, rate, int((rate.period - reset) / interval + 1e-9), reset, 0.0)


class RedisSessionStore:
    """Session records shared by every replica, so a 2025-11-25 session opened on one
    replica goes on on any other (and after the first one stopped).

    A record lives one idle timeout, plus the interval at which an active session is
    touched, after the session was last seen; Redis expires it, so :meth:`expire` has nothing
    to do. While Redis is unavailable, :meth:`load` raises :class:`StoreUnavailable` (503),
    :meth:`touch` does nothing, and :meth:`save` and :meth:`delete` are kept in this
    replica's memory: a session opened then lives on its own replica until Redis answers
    again, and one deleted then lives on elsewhere until then, when the record is written
    or deleted before the replica counts Redis as available (:meth:`RedisState.on_recovery`).

    A deletion is published on the ``ended`` channel as the record goes; each replica listens
    (:meth:`watch`) and drops its copy. Pub/sub keeps nothing for a replica that was not
    listening, so after each (re)subscription :meth:`ended` answers ``None``: the sessions the
    replica holds are each looked up once more on their next request.

    It is also the :class:`~mcphost.state.sessions.Feed` between replicas, on the ``feed``
    channel: what is sent while Redis is unavailable reaches no other replica.
    """

    def __init__(self, state: RedisState, idle_timeout: float):
        self.state = state
        self.ttl_ms = _session_ttl_ms(idle_timeout)
        self._unsaved: dict[str, str] = {}
        """Records (JSON) that could not be written, by session id."""
        self._undeleted: set[str] = set()
        """Sessions deleted while Redis could not be told."""
        self._ended: set[str] = set()
        """Deletions heard of and not yet taken by :meth:`ended`."""
        self._missed = False
        state.on_recovery(self._catch_up)

    async def save(self, record: SessionRecord) -> None:
        """Create a record (once per session, when it is initialized)."""
        value = record.to_json()
        try:
            await self.state.call(lambda client: client.set(self._key(record.id), value, px=self.ttl_ms))
        except StateUnavailable:
            self._unsaved[record.id] = value

    async def load(self, session_id: str) -> SessionRecord | None:
        """The record of ``session_id``, or ``None``; :class:`StoreUnavailable` without Redis."""
        try:
            value = await self.state.call(lambda client: client.get(self._key(session_id)))
        except StateUnavailable as error:
            raise StoreUnavailable(str(error)) from None
        return None if value is None else SessionRecord.from_json(value)

    async def touch(self, session_id: str, seen: float) -> None:
        """Keep the record another idle timeout."""
        await self._quietly(lambda client: client.pexpire(self._key(session_id), self.ttl_ms))

    async def delete(self, session_id: str) -> None:
        """Forget a session and tell every replica (once Redis answers, if it does not now)."""
        self._unsaved.pop(session_id, None)
        try:
            await _run(self.state, _DELETE_SESSION, self._key(session_id), [self._channel, session_id])
        except StateUnavailable:
            self._undeleted.add(session_id)

    async def expire(self, before: float) -> int:
        """Nothing to do: Redis expires idle records itself."""
        return 0

    def ended_unseen(self) -> bool:
        """Whether a deletion was heard of (or may have been missed) and not taken yet."""
        return bool(self._ended) or self._missed

    async def ended(self) -> set[str] | None:
        """The deletions heard of since the last call; ``None`` after a gap in listening."""
        if self._missed:
            self._missed = False
            self._ended.clear()
            return None
        ended, self._ended = self._ended, set()
        return ended

    async def watch(self, changed: Callable[[], Awaitable[None]]) -> None:
        """Listen on the ``ended`` channel, subscribing again after each failure."""

        async def subscribed() -> None:
            # Deletions published before this subscription (nobody listened, or this replica
            # was starting) reached nobody here.
            self._missed = True
            await changed()

        async def heard(session_id: str) -> None:
            self._ended.add(session_id)
            await changed()

        await self._listen(self._channel, subscribed, heard)

    async def update(self, record: SessionRecord) -> None:
        """Replace a record that is still there, keeping its expiry."""
        value = record.to_json()
        key = self._key(record.id)
        await self._quietly(lambda client: client.set(key, value, condition=PureToken.XX, keepttl=True))

    async def send(self, message: str) -> bool:
        """Publish ``message`` on the ``feed`` channel."""
        try:
            await self.state.call(lambda client: client.publish(self._feed, message))
        except StateUnavailable:
            return False
        return True

    async def receive(self, heard: Callable[[str], Awaitable[None]]) -> None:
        """Listen on the ``feed`` channel, subscribing again after each failure (what is
        published in between reaches other replicas only)."""
        await self._listen(self._feed, _nothing, heard)

    async def _listen(
        self, channel: str, subscribed: Callable[[], Awaitable[None]], heard: Callable[[str], Awaitable[None]]
    ) -> None:
        """Await ``heard`` with each message published on ``channel``, and ``subscribed`` at
        each (re)subscription, subscribing again after each failure, until cancelled."""
        while True:
            client = self.state.client
            if client is not None and self.state.available:
                try:
                    async with client.pubsub(
                        channels=[channel], ignore_subscribe_messages=True, retry_policy=NoRetryPolicy()
                    ) as subscription:
                        await subscribed()
                        async for message in subscription:
                            if isinstance(data := message["data"], str | bytes):
                                await heard(_text(data))
                except Exception:
                    # Whatever breaks a subscription (a lost connection, a keep-alive PING
                    # timing out, raised from coredis's task group as an exception group)
                    # ends only this one: RedisState notices the outage by itself, and this
                    # listens again once Redis answers.
                    pass
            await trio.sleep(CHECK_INTERVAL)

    @property
    def _channel(self) -> str:
        return self.state.key("ended")

    @property
    def _feed(self) -> str:
        return self.state.key("feed")

    def _key(self, session_id: str) -> str:
        return self.state.key("session", session_id)

    async def _catch_up(self, client: Any) -> None:
        # Oldest first; each one written is forgotten at once, so a check that times out
        # half-way leaves only the rest for the next one.
        for session_id, value in list(self._unsaved.items()):
            with self.state.bound():
                await client.set(self._key(session_id), value, px=self.ttl_ms)
            # Gone from the list only if the session was deleted during the write, whose
            # delete may have reached Redis first: delete again.
            if self._unsaved.pop(session_id, None) is None:
                self._undeleted.add(session_id)
        for session_id in list(self._undeleted):
            with self.state.bound():
                await _DELETE_SESSION(keys=[self._key(session_id)], args=[self._channel, session_id], client=client)
            self._undeleted.discard(session_id)

    async def _quietly(self, command: Any) -> None:
        # RedisState logged the outage once; a record that misses a touch expires by itself.
        with contextlib.suppress(StateUnavailable):
            await self.state.call(command)


class RedisEventStore(EventStore):
    """Events of resumable SSE streams shared by every replica: a client whose stream broke
    reconnects with ``Last-Event-ID`` to any replica and gets what it missed.

    As :class:`~mcphost.state.eventstore.MemoryEventStore`, each session uses a view of its own
    (:meth:`for_session`), since stream ids are request ids that every client numbers alike:
    a view reads and writes only its session's keys. An event id is the stream id (base64url)
    and the Redis stream entry id, dot-joined, so a replay needs no lookup table. Each stream
    keeps its newest ``max_events_per_stream`` events (approximately: Redis trims whole
    blocks) as long as a session record would after its last event.

    A request's stream resumed here goes on with the events still to come, wherever its call
    runs: after the replay, this replica follows the Redis stream (``XREAD BLOCK``) until the
    request's response has been sent, then ends the SSE response. (The session's own GET
    stream carries what this replica sends it, as the SDK does.)

    While Redis is unavailable, events go to ``fallback`` (this replica's memory) under ids
    without a dot, so the live stream never breaks and a client reconnecting to the same
    replica still resumes; one reconnecting elsewhere starts afresh.
    """

    def __init__(
        self,
        state: RedisState,
        fallback: MemoryEventStore,
        *,
        idle_timeout: float,
        max_events_per_stream: int = DEFAULT_MAX_EVENTS_PER_STREAM,
    ):
        self.state = state
        self.fallback = fallback
        self.ttl_ms = _session_ttl_ms(idle_timeout)
        self.max_events_per_stream = max_events_per_stream
        self._session = "-"

    def for_session(self, session_id: str, owner: str | None = None) -> RedisEventStore:
        """The view of one session, in Redis under its id and in the fallback under a view of
        its own (counted against ``owner``'s part of it)."""
        view = copy.copy(self)
        view._session = session_id
        view.fallback = self.fallback.for_session(session_id, owner)
        return view

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Keep ``message`` (``None`` for a stream's priming event); returns its event id."""
        stream = _encode(stream_id)
        data = event_data(message)
        try:
            entry = await _run(
                self.state, _STORE_EVENT, self._key(stream), [data, self.max_events_per_stream, self.ttl_ms]
            )
        except StateUnavailable:
            return await self.fallback.store_event(stream_id, message)
        return f"{stream}.{_text(entry)}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        """Send this session's events that followed ``last_event_id`` on its stream, and for a
        request's stream those still to come, until its response; returns the stream id
        (the session's GET stream goes on live here), or ``None`` when there is nothing more
        to send: the event is unknown (never stored, trimmed, expired, another session's, or
        Redis is unavailable) or the request's stream is complete."""
        stream, dot, entry = last_event_id.partition(".")
        if not dot:
            return await self.fallback.replay_events_after(last_event_id, send_callback)
        stream_id = _decode(stream)
        if stream_id is None:
            return None
        try:
            entries = await _run(self.state, _REPLAY, self._key(stream), [entry])
        except StateUnavailable:
            return None
        if entries is None:
            return None
        if stream_id == GET_STREAM_KEY:
            await self._send(stream, entries, send_callback)
            return stream_id
        # The stream ends with the request's response: follow it until then, wherever the call runs.
        while not await self._send(stream, entries, send_callback):
            entry = _text(entries[-1][0]) if entries else entry
            try:
                entries = await self._read_after(stream, entry)
            except StateUnavailable:
                return None  # the client reconnects with the last event it got, and resumes
            if entries is None:
                return None  # expired with its session: nothing more will come
        return None

    async def _read_after(self, stream: str, entry: str) -> Any:
        """The entries of ``stream`` after ``entry``, waiting a little for one to come (less
        than Redis's timeout: the wait is no outage); ``None`` once the stream is gone."""
        key, block_ms = self._key(stream), max(1, int(self.state.timeout * 500))
        read = await self.state.call(lambda client: client.xread({key: entry}, count=100, block=block_ms))
        if read:
            return next(iter(read.values()))
        return () if await self.state.call(lambda client: client.exists([key])) else None

    async def _send(self, stream: str, entries: Any, send_callback: EventCallback) -> bool:
        """Send ``entries`` of ``stream``; whether they include the request's response."""
        stream_id = _decode(stream)
        answered = False
        # Each an (id, fields) pair, or a coredis StreamEntry (which has more fields) from XREAD.
        for entry_id, fields, *_ in entries:
            data = _field(fields, b"m")
            if data:  # priming events have no message
                message = jsonrpc_message_adapter.validate_json(data, by_name=False)
                await send_callback(EventMessage(message, f"{stream}.{_text(entry_id)}"))
                answered = answered or (
                    isinstance(message, JSONRPCResponse | JSONRPCError) and str(message.id) == stream_id
                )
        return answered

    def _key(self, stream: str) -> str:
        return self.state.key("events", self._session, stream)


async def _nothing() -> None:
    pass


def _session_ttl_ms(idle_timeout: float) -> int:
    return int(record_lifetime(idle_timeout) * 1000)


async def _run(state: RedisState, script: Script[bytes], key: str, args: list[str | int | float]) -> Any:
    """One script on one key, in one round trip (coredis loads it first if Redis lost it)."""
    return await state.call(lambda client: script(keys=[key], args=args, client=client))


def _encode(stream_id: StreamId) -> str:
    return base64.urlsafe_b64encode(str(stream_id).encode()).rstrip(b"=").decode()


def _decode(stream: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(stream + "=" * (-len(stream) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: Any, name: bytes) -> bytes | None:
    # RESP3 may answer a stream entry's fields as a flat list or as a map.
    if isinstance(fields, dict):
        return fields.get(name) or fields.get(name.decode())
    pairs = list(fields)
    for index in range(0, len(pairs) - 1, 2):
        if _text(pairs[index]) == name.decode():
            return pairs[index + 1]
    return None
