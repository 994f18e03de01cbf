"""``notify_resource_updated``: the way a plugin announces that a resource changed.

Who hears of it is the protocol layer's business (:mod:`mcphost.protocol.subscriptions`),
which installs itself here when the daemon builds its server; this side knows only that
something may be listening.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("mcphost.subscriptions")

Announce = Callable[[str], Awaitable[None]]
"""Tells every subscriber of a URI that it changed."""

_announce: Announce | None = None


def install(announce: Announce) -> None:
    """Make ``announce`` what :func:`notify_resource_updated` calls."""
    global _announce
    _announce = announce


async def notify_resource_updated(uri: str) -> None:
    """Announce that the resource at ``uri`` changed: every client subscribed to it gets
    ``notifications/resources/updated`` and may read it again.

    Call it from a tool, a background task the plugin started, or (through
    ``trio.from_thread.run``) a worker thread. Outside a running daemon it does nothing.
    """
    if _announce is None:
        log.debug("resource update announced with no daemon running", uri=uri)
        return
    await _announce(str(uri))
