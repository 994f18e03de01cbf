"""Resource subscriptions, and ``notify_resource_updated``, the way a plugin announces that
a resource changed.

A 2025-11-25 client subscribes with ``resources/subscribe`` and gets
``notifications/resources/updated`` on its session's standalone stream. A 2026-07-28
client opens a ``subscriptions/listen`` stream naming the URIs it wants; the SDK's
``ListenHandler`` serves those from the event bus here. An announcement reaches both.
"""

from __future__ import annotations

from typing import Any

import structlog
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated, ServerEvent

from mcphost.context import connection_of

log = structlog.get_logger("mcphost.subscriptions")

MAX_SUBSCRIPTIONS_PER_SESSION = 1000
"""URIs one 2025-11-25 session may be subscribed to at once; more is refused, not stored."""


class Subscriptions:
    """Who wants to hear about which resource URI, across both protocol eras."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        """The ``subscriptions/listen`` request handler (2026-07-28)."""
        # uri -> {id(connection): connection}, and the reverse for clean-up.
        self._by_uri: dict[str, dict[int, Connection]] = {}
        self._by_connection: dict[int, set[str]] = {}

    def subscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> bool:
        """Subscribe the request's session to ``uri``; ``False`` if it is at its limit."""
        connection = connection_of(ctx)
        key = id(connection)
        uris = self._by_connection.get(key)
        if uris is None:
            uris = self._by_connection[key] = set()
            # A session that ends without unsubscribing must not leave entries behind; the
            # connection unwinds its exit stack when it closes.
            connection.exit_stack.callback(self._forget, key)
        if uri not in uris and len(uris) >= MAX_SUBSCRIPTIONS_PER_SESSION:
            return False
        uris.add(uri)
        self._by_uri.setdefault(uri, {})[key] = connection
        return True

    def unsubscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> None:
        """Unsubscribe the request's session from ``uri`` (no error if it was not subscribed)."""
        key = id(connection_of(ctx))
        self._by_connection.get(key, set()).discard(uri)
        self._drop(uri, key)

    def _forget(self, key: int) -> None:
        for uri in self._by_connection.pop(key, ()):
            self._drop(uri, key)

    def _drop(self, uri: str, key: int) -> None:
        connections = self._by_uri.get(uri, {})
        connections.pop(key, None)
        if not connections:
            self._by_uri.pop(uri, None)

    async def updated(self, uri: str) -> None:
        """Tell every subscriber of ``uri`` that it changed."""
        for connection in list(self._by_uri.get(uri, {}).values()):
            await connection.send_resource_updated(uri)  # best effort: a closed stream drops it
        await self.bus.publish(ResourceUpdated(uri=uri))


_current: Subscriptions | None = None


def install(subscriptions: Subscriptions) -> None:
    """Make ``subscriptions`` the one :func:`notify_resource_updated` announces to."""
    global _current
    _current = subscriptions


async def notify_resource_updated(uri: str) -> None:
    """Announce that the resource at ``uri`` changed: every client subscribed to it gets
    ``notifications/resources/updated`` and may read it again.

    Call it from a tool, a background task the plugin started, or (through
    ``trio.from_thread.run``) a worker thread. Outside a running daemon it does nothing.
    """
    if _current is None:
        log.debug("resource update announced with no daemon running", uri=uri)
        return
    await _current.updated(str(uri))


async def announce(event: ServerEvent) -> None:
    """Publish a list change to every ``subscriptions/listen`` stream (2026-07-28 clients);
    sessions of earlier revisions are told on their own streams by the daemon."""
    if _current is not None:
        await _current.bus.publish(event)
