"""Resource subscriptions: who hears of a changed resource, on both protocol eras.

A 2025-11-25 client subscribes with ``resources/subscribe`` and gets
``notifications/resources/updated`` on its session's standalone stream. A 2026-07-28
client opens a ``subscriptions/listen`` stream naming the URIs it wants; the SDK's
``ListenHandler`` serves those from the event bus here, one handler per stream, so that
each stream hears only of what its caller may read and each caller holds a bounded share
of the streams. An announcement (a plugin's ``notify_resource_updated``,
:mod:`mcphost.plugins.notify`) reaches both through :meth:`Subscriptions.updated`.

The worker that serves a resource is told when the first client subscribes to it and when
the last one leaves (:meth:`~mcphost.plugins.registry.Remote.subscribe`): a hosted MCP server
that sends updates only for the URIs it was asked for then sends them, once for every client.

A 2025-11-25 session may be held by several processes (workers, replicas), and its next
request, its ``GET`` stream or an announcement may land on any of them. So, where the session
store is shared (:meth:`Subscriptions.share`), a session's subscriptions are kept in its
record (a process that rebuilds the session restores them), and the processes tell one
another, through the store's :class:`~mcphost.state.sessions.Feed`, of every subscription
made or ended and of every update announced: each then tells the subscribers it holds, in
the feed's one order, so an update announced after a subscription returned reaches it.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import mcp_types as types
import structlog
import trio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated, ServerEvent
from mcp.shared.exceptions import MCPError

from mcphost.auth.identity import Identity, current_identity
from mcphost.plugins.context import connection_of
from mcphost.state.sessions import Feed, SessionStore, StoreUnavailable

if TYPE_CHECKING:
    from mcphost.plugins.registry import Registry, Remote

log = structlog.get_logger("mcphost.subscriptions")

MAX_SUBSCRIPTIONS_PER_SESSION = 1000
"""URIs one 2025-11-25 session may be subscribed to at once; more is refused, not stored."""


class Subscriptions:
    """Who wants to hear about which resource URI, across both protocol eras."""

    def __init__(
        self,
        get_registry: Callable[[], Registry],
        max_streams: int = 1024,
        max_streams_per_identity: int | None = None,
    ) -> None:
        self.bus = InMemorySubscriptionBus()
        self.get_registry = get_registry
        self.max_streams = max_streams
        self.max_streams_per_identity = max_streams_per_identity
        # Open 2026-07-28 listen streams (one handler each) by caller (identity key, or None).
        self._listening: dict[str | None, set[ListenHandler]] = {}
        # uri -> {id(connection): connection}, and the reverse for clean-up.
        self._by_uri: dict[str, dict[int, Connection]] = {}
        self._by_connection: dict[int, set[str]] = {}
        # uri -> how many sessions and listen streams want it; and the worker that was told.
        self._holders: dict[str, int] = {}
        self._told: dict[str, Remote] = {}
        self._telling: dict[str, trio.Lock] = {}
        """A lock per URI whose worker is being told of it (see :meth:`_tell_workers`)."""
        self.store: SessionStore | None = None
        self.feed: Feed | None = None
        self.held: Callable[[str], Connection | None] = lambda session_id: None
        self._origin = secrets.token_hex(8)
        """This process's mark on the subscriptions it tells the others of (it hears them too)."""

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """``subscriptions/listen`` (2026-07-28): the SDK's handler, serving the caller only
        updates of resources in its scope, within its share of the streams."""
        identity = current_identity()
        key = identity.key if identity is not None else None
        streams = self._listening.get(key, set())
        cap = self.max_streams_per_identity
        if sum(map(len, self._listening.values())) >= self.max_streams or (
            key is not None and cap is not None and len(streams) >= cap
        ):
            raise MCPError(types.INTERNAL_ERROR, "Subscription limit reached")
        readable = self._readable(identity)
        handler = ListenHandler(_ScopedBus(self.bus, readable), max_subscriptions=1)
        self._listening.setdefault(key, set()).add(handler)
        uris = [u for u in dict.fromkeys(params.notifications.resource_subscriptions or ()) if readable(u)]
        held: list[str] = []
        try:
            for uri in uris[:MAX_SUBSCRIPTIONS_PER_SESSION]:
                held.append(uri)
                await self._hold(uri)
            return await handler(ctx, params)
        finally:
            streams = self._listening[key]
            streams.discard(handler)
            if not streams:
                del self._listening[key]
            with trio.CancelScope(shield=True):
                for uri in held:
                    await self._release(uri)

    def _readable(self, identity: Identity | None) -> Callable[[str], bool]:
        if identity is None or identity.scope.everything:
            return lambda uri: True
        return lambda uri: self.get_registry().find_resource(uri, identity.scope.allows_uri) is not None

    def revoke(self, identity_keys: Iterable[str]) -> int:
        """End the listen streams of the callers named (keys that were removed); returns how many."""
        handlers = [h for key in identity_keys for h in self._listening.get(key, ())]
        for handler in handlers:
            handler.close()  # the stream ends with its result, as the spec's graceful closure
        return len(handlers)

    def share(self, store: SessionStore | None, feed: Feed | None, held: Callable[[str], Connection | None]) -> None:
        """Keep each session's subscriptions in its record in ``store`` (a process that
        rebuilds the session :meth:`restore`-s them), and tell every process, through ``feed``,
        of each update announced and each subscription made or ended, for the copies they hold
        of the session (``held``: this process's connection of a session, or ``None``)."""
        self.store, self.feed, self.held = store, feed, held

    async def restore(self, connection: Connection, uris: Iterable[str]) -> None:
        """Subscribe a session rebuilt in this process to what its record lists."""
        for uri in uris:
            await self._add(connection, uri)

    async def hear(self) -> None:
        """Until cancelled, act on what the other processes tell (see :meth:`share`)."""
        if self.feed is not None:
            await self.feed.receive(self._heard)

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> bool:
        """Subscribe the request's session to ``uri``; ``False`` if it is at its limit."""
        connection = connection_of(ctx)
        if not await self._add(connection, uri):
            return False
        await self._share(connection.session_id, uri, subscribed=True)
        return True

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> None:
        """Unsubscribe the request's session from ``uri`` (no error if it was not subscribed),
        wherever it subscribed."""
        connection = connection_of(ctx)
        await self._remove(connection, uri)
        await self._share(connection.session_id, uri, subscribed=False)

    async def _add(self, connection: Connection, uri: str) -> bool:
        """Subscribe one session's copy here to ``uri``; ``False`` if it is at its limit."""
        key = id(connection)
        uris = self._by_connection.get(key)
        if uris is None:
            uris = self._by_connection[key] = set()
            # A session that ends without unsubscribing must not leave entries behind; the
            # connection unwinds its exit stack (shielded) when it closes.
            connection.exit_stack.push_async_callback(self._forget, key)
        if uri in uris:
            return True
        if len(uris) >= MAX_SUBSCRIPTIONS_PER_SESSION:
            return False
        uris.add(uri)
        self._by_uri.setdefault(uri, {})[key] = connection
        await self._hold(uri)
        return True

    async def _remove(self, connection: Connection, uri: str) -> None:
        key = id(connection)
        uris = self._by_connection.get(key, set())
        if uri in uris:
            uris.discard(uri)
            await self._drop(uri, key)

    async def _share(self, session_id: str | None, uri: str, *, subscribed: bool) -> None:
        """A session subscribed to ``uri`` or left it: its record says so, for the processes
        that rebuild it later, and those that hold it now are told."""
        if session_id is None:
            return
        if self.store is not None:
            try:
                record = await self.store.load(session_id)
            except StoreUnavailable:
                record = None  # the subscription holds where it was made (and is told below)
            if record is not None and (uri in record.subscriptions) != subscribed:
                # Two subscriptions of one session made at once on two processes may each write
                # the record it read: one of them is then known only where it was made.
                uris = [u for u in record.subscriptions if u != uri] + ([uri] if subscribed else [])
                await self.store.update(dataclasses.replace(record, subscriptions=uris))
        if self.feed is not None:
            kind = "subscribed" if subscribed else "unsubscribed"
            await self.feed.send(json.dumps([kind, self._origin, session_id, uri]))

    async def _heard(self, message: str) -> None:
        """What a process told: an update announced there (this one included), or a
        subscription made or ended by another, of a session this one holds a copy of."""
        try:
            kind, *args = json.loads(message)
            if kind == "updated":
                await self._tell(args[0])
            elif args[0] != self._origin and (connection := self.held(args[1])) is not None:
                if kind == "subscribed":
                    await self._add(connection, args[2])
                else:
                    await self._remove(connection, args[2])
        except Exception:
            # One message this process cannot use (from a newer version, say) must not end
            # its hearing of the others.
            log.exception("a message from another process was not understood", message=message[:200])

    async def _forget(self, key: int) -> None:
        for uri in self._by_connection.pop(key, ()):
            await self._drop(uri, key)

    async def _drop(self, uri: str, key: int) -> None:
        connections = self._by_uri.get(uri, {})
        connections.pop(key, None)
        if not connections:
            self._by_uri.pop(uri, None)
        await self._release(uri)

    async def _hold(self, uri: str) -> None:
        """One more session or stream wants ``uri``: the first has the worker that serves it
        told, and the others return once it answered."""
        self._holders[uri] = self._holders.get(uri, 0) + 1
        await self._tell_workers(uri)

    async def _release(self, uri: str) -> None:
        """One fewer wants ``uri``: the last has the worker that was told of it told again."""
        self._holders[uri] -= 1
        if not self._holders[uri]:
            del self._holders[uri]
        await self._tell_workers(uri)

    async def follow(self) -> None:
        """The catalogue changed (a reload replaced a plugin's worker, say): the URIs clients
        want are told to the workers that serve them now, and no longer to those that did."""
        for uri in list(dict.fromkeys([*self._holders, *self._told])):
            await self._tell_workers(uri)

    async def _tell_workers(self, uri: str) -> None:
        """Bring what the workers were told of ``uri`` in line with what clients want now: the
        worker serving it subscribed while anyone holds it, and no other. One change of a URI
        at a time, each looking afresh once the one before it has been answered: a subscriber
        returns only once the worker took the subscription, and a reload's moves and a last
        unsubscription at once leave no worker subscribed for nobody."""
        lock = self._telling.setdefault(uri, trio.Lock())
        try:
            async with lock:
                wanted = None
                if uri in self._holders and (found := self.get_registry().find_resource(uri)) is not None:
                    wanted = found[0].remote
                told = self._told.get(uri)
                if wanted is told:
                    return
                if told is not None:
                    del self._told[uri]
                    await told.unsubscribe(uri)
                if wanted is not None:
                    self._told[uri] = wanted
                    await wanted.subscribe(uri)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting and self._telling.get(uri) is lock:
                del self._telling[uri]

    async def announce(self, event: ServerEvent) -> None:
        """Publish a list change to every ``subscriptions/listen`` stream (2026-07-28 clients);
        sessions of earlier revisions are told on their own streams by the daemon."""
        await self.bus.publish(event)

    async def updated(self, uri: str) -> None:
        """Tell every subscriber of ``uri`` that it changed, here and in the other processes.

        With a feed, this process too acts on the update only as it hears it there: in the
        feed's one order, after the subscriptions that other processes made before it."""
        if self.feed is None or not await self.feed.send(json.dumps(["updated", uri])):
            await self._tell(uri)

    async def _tell(self, uri: str) -> None:
        """Tell this process's subscribers of ``uri`` that it changed."""
        for connection in list(self._by_uri.get(uri, {}).values()):
            await connection.send_resource_updated(uri)  # best effort: a closed stream drops it
        await self.bus.publish(ResourceUpdated(uri=uri))


class _ScopedBus:
    """A view of the bus for one listen stream: resource updates reach it only for the
    resources its caller may read (as an unknown URI's, the others never fire)."""

    def __init__(self, bus: InMemorySubscriptionBus, readable: Callable[[str], bool]):
        self.bus = bus
        self.readable = readable

    async def publish(self, event: ServerEvent) -> None:
        """Publish on the whole bus."""
        await self.bus.publish(event)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register ``listener`` for the events its caller may see."""

        def scoped(event: ServerEvent) -> None:
            if not isinstance(event, ResourceUpdated) or self.readable(event.uri):
                listener(event)

        return self.bus.subscribe(scoped)
