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
"""

from __future__ import annotations

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

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> bool:
        """Subscribe the request's session to ``uri``; ``False`` if it is at its limit."""
        connection = connection_of(ctx)
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

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> None:
        """Unsubscribe the request's session from ``uri`` (no error if it was not subscribed)."""
        key = id(connection_of(ctx))
        uris = self._by_connection.get(key, set())
        if uri in uris:
            uris.discard(uri)
            await self._drop(uri, key)

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
        """One more session or stream wants ``uri``: the first tells the worker that serves it."""
        self._holders[uri] = self._holders.get(uri, 0) + 1
        if self._holders[uri] == 1:
            found = self.get_registry().find_resource(uri)
            if found is not None and (remote := found[0].remote) is not None:
                self._told[uri] = remote
                await remote.subscribe(uri)

    async def _release(self, uri: str) -> None:
        """One fewer wants ``uri``: the last tells the worker that was told of the first."""
        self._holders[uri] -= 1
        if not self._holders[uri]:
            del self._holders[uri]
            if (remote := self._told.pop(uri, None)) is not None:
                await remote.unsubscribe(uri)

    async def follow(self) -> None:
        """The catalogue changed (a reload replaced a plugin's worker, say): the URIs clients
        want are told to the workers that serve them now, and no longer to those that did."""
        moves = []
        registry = self.get_registry()
        for uri in self._holders:
            found = registry.find_resource(uri)
            remote, told = found[0].remote if found is not None else None, self._told.get(uri)
            if remote is not told:
                moves.append((uri, told, remote))
                if remote is None:
                    del self._told[uri]
                else:
                    self._told[uri] = remote
        for uri, told, remote in moves:
            if told is not None:
                await told.unsubscribe(uri)
            if remote is not None:
                await remote.subscribe(uri)

    async def announce(self, event: ServerEvent) -> None:
        """Publish a list change to every ``subscriptions/listen`` stream (2026-07-28 clients);
        sessions of earlier revisions are told on their own streams by the daemon."""
        await self.bus.publish(event)

    async def updated(self, uri: str) -> None:
        """Tell every subscriber of ``uri`` that it changed."""
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
