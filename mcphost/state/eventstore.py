"""The event store behind resumable SSE streams (2025-11-25): what a client that lost its
stream gets again when it reconnects with ``Last-Event-ID``.

It lives in memory, for one process, and is bounded: each stream keeps its newest
``max_events_per_stream`` events, each caller's sessions together their newest
``max_events_per_owner`` holding at most ``max_bytes_per_owner`` (so one busy caller pushes
out its own old events, never another caller's), and all streams together the newest
``max_events`` holding at most ``max_bytes``, the oldest going first. An event's bytes are
its message's as sent: a count alone would let events of a megabyte each (a tool's result)
hold gigabytes. A client further behind than that cannot resume (it gets an empty stream
and calls again).

The SDK's ``EventStore`` interface knows streams, not sessions, and stream ids are request
ids, which every client numbers from the start. So each session uses a view of its own
(:meth:`MemoryEventStore.for_session`): one client never replays another's events.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict, deque
from typing import Protocol, runtime_checkable

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

DEFAULT_MAX_EVENTS = 10_000
"""Events kept, all sessions together, unless the config says otherwise."""
DEFAULT_MAX_EVENTS_PER_STREAM = 1_000
"""Events kept per stream (one request's, or a session's standalone stream)."""
DEFAULT_MAX_BYTES = 64 * 2**20
"""Bytes the events kept may hold, all sessions together, unless the config says otherwise."""

_scopes = itertools.count(1)


def event_data(message: JSONRPCMessage | None) -> str:
    """An event's message as the SDK's stream sends it (``""`` for a stream's priming event):
    what a store keeps, or counts."""
    return "" if message is None else message.model_dump_json(by_alias=True, exclude_unset=True)


class _Events:
    """The shared, bounded storage: events in arrival order, each stream's event ids, and
    each owner's (a caller's sessions together) event ids."""

    def __init__(
        self,
        max_events: int,
        max_events_per_stream: int,
        max_events_per_owner: int | None,
        max_bytes: int,
        max_bytes_per_owner: int | None,
    ):
        self.max_events = max_events
        self.max_events_per_stream = max_events_per_stream
        self.max_events_per_owner = max_events_per_owner or max_events
        self.max_bytes = max_bytes
        self.max_bytes_per_owner = max_bytes_per_owner or max_bytes
        self.by_id: OrderedDict[int, tuple[int, StreamId, JSONRPCMessage | None, int]] = OrderedDict()
        """Each event's view (scope), stream, message and bytes."""
        self.bytes = 0
        # Lists, not deques: most streams hold two events (priming, response), and an empty
        # deque alone costs 600 bytes; a trim shifts at most max_events_per_stream ids.
        self.streams: dict[int, dict[StreamId, list[int]]] = {}
        self.owners: dict[int, str] = {}
        """The owner of each view (scope) that has one."""
        self.owned: Counter[str] = Counter()
        self.owned_bytes: Counter[str] = Counter()
        # Each owner's event ids in arrival order, some of them gone already (dropped with
        # their stream or session): skipped when met, compacted when they are the most.
        self._owned_ids: dict[str, deque[int]] = {}
        self._ids = itertools.count(1)

    def add(self, scope: int, stream_id: StreamId, message: JSONRPCMessage | None, size: int) -> int:
        event_id = next(self._ids)
        self.by_id[event_id] = (scope, stream_id, message, size)
        self.bytes += size
        stream = self.streams.setdefault(scope, {}).setdefault(stream_id, [])
        stream.append(event_id)
        owner = self.owners.get(scope)
        if owner is not None:
            self.owned[owner] += 1
            self.owned_bytes[owner] += size
            ids = self._owned_ids.setdefault(owner, deque())
            ids.append(event_id)
            if len(ids) > 2 * self.owned[owner] + 16:
                self._owned_ids[owner] = deque(i for i in ids if i in self.by_id)
        if len(stream) > self.max_events_per_stream:
            self._remove(stream[0])
        while owner is not None and (
            self.owned[owner] > self.max_events_per_owner or self.owned_bytes[owner] > self.max_bytes_per_owner
        ):
            # The owner's oldest event is the oldest of its own stream (this one, at worst).
            ids = self._owned_ids[owner]
            while ids[0] not in self.by_id:
                ids.popleft()
            self._remove(ids.popleft())
        while len(self.by_id) > self.max_events or self.bytes > self.max_bytes:
            # The oldest event overall is the oldest of its own stream.
            self._remove(next(iter(self.by_id)))
        return event_id

    def _remove(self, event_id: int) -> None:
        """Forget an event, the oldest of its stream."""
        scope, stream_id, _, size = self.by_id.pop(event_id)
        self.bytes -= size
        streams = self.streams[scope]
        del streams[stream_id][0]
        if not streams[stream_id]:
            del streams[stream_id]
            if not streams:
                del self.streams[scope]
        self._disown(scope, 1, size)

    def _disown(self, scope: int, count: int, size: int) -> None:
        owner = self.owners.get(scope)
        if owner is not None and count:
            self.owned[owner] -= count
            self.owned_bytes[owner] -= size
            if not self.owned[owner]:
                del self.owned[owner], self.owned_bytes[owner], self._owned_ids[owner]

    def drop(self, scope: int) -> None:
        count = size = 0
        for stream in self.streams.pop(scope, {}).values():
            for event_id in stream:
                entry = self.by_id.pop(event_id, None)
                if entry is not None:
                    count, size = count + 1, size + entry[3]
        self.bytes -= size
        self._disown(scope, count, size)
        self.owners.pop(scope, None)


class MemoryEventStore(EventStore):
    """A bounded in-memory ``EventStore``; give each session its own view with :meth:`for_session`."""

    def __init__(
        self,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_events_per_stream: int = DEFAULT_MAX_EVENTS_PER_STREAM,
        max_events_per_owner: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_bytes_per_owner: int | None = None,
    ):
        self._events = _Events(max_events, max_events_per_stream, max_events_per_owner, max_bytes, max_bytes_per_owner)
        self._scope = 0

    def for_session(self, session_id: str | None = None, owner: str | None = None) -> MemoryEventStore:
        """A view for one session, sharing this store's memory and limits; its events go
        when the view does (with the session's transport). Views are told apart by a number
        of their own, not by ``session_id``: a session rebuilt here after a restart has no
        events of its previous life in this memory anyway. The views of one ``owner`` (the
        caller, :attr:`mcphost.auth.identity.Identity.key`) share its part of the store."""
        scope = next(_scopes)
        if owner is not None:
            self._events.owners[scope] = owner
        return _SessionView(self._events, scope)

    @property
    def size(self) -> int:
        """Events held, all sessions together."""
        return len(self._events.by_id)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Keep ``message`` (``None`` for a stream's priming event); returns its event id."""
        return str(self._events.add(self._scope, stream_id, message, len(event_data(message))))

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        """Send this session's events that followed ``last_event_id`` on its stream; returns
        the stream id, or ``None`` if the event is unknown (never stored, evicted, or another
        session's)."""
        try:
            last = int(last_event_id)
        except ValueError:
            return None
        entry = self._events.by_id.get(last)
        if entry is None or entry[0] != self._scope:
            return None
        stream_id = entry[1]
        later = [i for i in self._events.streams[self._scope][stream_id] if i > last]
        for event_id in later:
            stored = self._events.by_id.get(event_id)  # may have been evicted while we sent
            if stored is not None and stored[2] is not None:
                await send_callback(EventMessage(stored[2], str(event_id)))
        return stream_id


class _SessionView(MemoryEventStore):
    """One session's part of a :class:`MemoryEventStore`. Every idle session holds one, so
    it is two slots and a ``__del__`` (a ``weakref.finalize`` costs more than the view)."""

    __slots__ = ("_events", "_scope")

    def __init__(self, events: _Events, scope: int):
        self._events, self._scope = events, scope

    def __del__(self) -> None:
        self._events.drop(self._scope)


@runtime_checkable
class PerSession(Protocol):
    """An event store that gives each session a view of its own (this module's, and
    :class:`mcphost.state.redis_stores.RedisEventStore`)."""

    def for_session(self, session_id: str, owner: str | None = None) -> EventStore:
        """The view of session ``session_id``, of the caller ``owner``."""
        ...


def for_session(store: EventStore | None, session_id: str, owner: str | None = None) -> EventStore | None:
    """The event store one session's transport should use: its own view of a store that
    has views (:class:`PerSession`), any other store as is."""
    return store.for_session(session_id, owner) if isinstance(store, PerSession) else store
