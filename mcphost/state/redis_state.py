"""The connection to Redis that several replicas share their state through, and whether it
is usable right now.

The client is coredis: it is built on anyio, so it runs on Trio as it is, pools and
multiplexes connections, and runs Lua scripts by hash (loading them again after a Redis
restart). redis-py's asyncio client does not run on Trio, and its sync client would cost a
worker thread per call on the request path.

Every call goes through :meth:`RedisState.call`, which bounds it by ``[state] timeout``
(connect, pool and read timeouts, and a Trio deadline over all three) and turns any failure
into :class:`StateUnavailable`. Nothing is retried on the request path: a request
that cannot reach Redis falls back or fails at once, never hangs.

Availability is one flag. A failed call lowers it; while it is down every call fails at
once without touching the network, and a watcher writes a health key every
:data:`CHECK_INTERVAL` seconds and raises it again as soon as Redis answers. Each change is
logged once (error going down, info coming back), never per request. ``/ready`` reports the
flag, so a load balancer stops sending new work to a replica that lost its state. What a
store could not write meanwhile is written when Redis answers again, before the flag is
raised (:meth:`RedisState.on_recovery`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import coredis
import structlog
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

log = structlog.get_logger("mcphost.redis")
# coredis logs each retry of a script Redis has not cached yet (after every Redis restart) at
# INFO; availability changes are logged here, once each.
logging.getLogger("coredis").setLevel(logging.WARNING)

T = TypeVar("T")

CHECK_INTERVAL = 1.0
"""Seconds between two health writes: how soon an outage shows in ``/ready``, and how soon
service resumes after one."""
MAX_CONNECTIONS = 64
"""Connections to Redis per process; coredis multiplexes most commands over few of them."""


class StateUnavailable(Exception):
    """Redis cannot be used right now; ``str(self)`` says why (never the URL's password)."""


def redacted(url: str) -> str:
    """``url`` without its credentials, for logs: ``redis://host:port/db``."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


class RedisState:
    """One process's connection to the shared Redis, its availability, and its key names."""

    def __init__(self, url: str, *, prefix: str = "mcphost:", timeout: float = 0.5):
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.available = False
        """Whether the last call (or health check) succeeded."""
        self.error: str | None = "not connected yet"
        """Why Redis is unavailable, while it is."""
        self.since = time.time()
        """When :attr:`available` last changed (Unix time)."""
        self._client: coredis.Redis[bytes] | None = None
        self._logged: bool | None = None
        self._catch_ups: list[Callable[[coredis.Redis[bytes]], Awaitable[None]]] = []

    def key(self, *parts: str) -> str:
        """A key under the configured prefix: ``key("session", id)`` is ``mcphost:session:<id>``."""
        return self.prefix + ":".join(parts)

    @property
    def client(self) -> coredis.Redis[bytes] | None:
        """The client, while :meth:`run` runs: for what :meth:`call` cannot do (a subscription)."""
        return self._client

    def on_recovery(self, catch_up: Callable[[coredis.Redis[bytes]], Awaitable[None]]) -> None:
        """Run ``catch_up`` with the client each time Redis answers after being unavailable
        (and at the first connection), before :attr:`available` is raised again: what a store
        could not write during an outage is in Redis before another replica is sent to look
        for it. It bounds each of its writes with :meth:`bound` and may raise what they raise;
        Redis then stays unavailable until the next check, which runs it again.
        """
        self._catch_ups.append(catch_up)

    def bound(self) -> contextlib.AbstractContextManager[trio.CancelScope]:
        """The deadline of one call: twice the timeout, since coredis bounds each phase (a
        connect, then a slow read) by it. Raises :class:`trio.TooSlowError` when it passes."""
        return trio.fail_after(2 * self.timeout)

    def report(self) -> dict[str, Any]:
        """What the admin ``/ready`` shows about the shared state."""
        entry: dict[str, Any] = {"backend": "redis", "url": redacted(self.url), "available": self.available}
        if not self.available:
            entry["error"] = self.error
            entry["since"] = round(self.since, 3)
        return entry

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[RedisState]:
        """Connect (lazily: a Redis that is down at start-up only makes this replica not
        ready) and watch availability until the block exits."""
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url,
            stream_timeout=self.timeout,
            connect_timeout=self.timeout,
            pool_timeout=self.timeout,
            max_connections=MAX_CONNECTIONS,
            # Retrying here would multiply the worst case a request waits; the watcher
            # below is what brings service back.
            retry_policy=NoRetryPolicy(),
        )
        async with client, trio.open_nursery() as nursery:
            self._client = client
            await self._check()
            nursery.start_soon(self._watch)
            try:
                yield self
            finally:
                self._client = None
                nursery.cancel_scope.cancel()

    async def call(self, command: Callable[[coredis.Redis[bytes]], Awaitable[T]]) -> T:
        """Run ``command`` with the client, bounded by the timeout; raises
        :class:`StateUnavailable` at once while Redis is known to be down, or when this call fails."""
        client = self._client
        if not self.available or client is None:
            raise StateUnavailable(self.error or "not connected")
        try:
            with self.bound():
                return await command(client)
        except (RedisError, OSError, trio.TooSlowError) as error:
            reason = _describe(error)
            self._set(False, reason)
            raise StateUnavailable(reason) from None

    async def _check(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            with self.bound():
                # A write, not a PING: a Redis that answers but refuses writes (out of
                # memory, a read-only replica, a wrong password) is no use either.
                await client.set(self.key("health"), str(time.time()), px=int(10_000 * CHECK_INTERVAL))
            if not self.available:
                for catch_up in self._catch_ups:
                    await catch_up(client)
        except (RedisError, OSError, trio.TooSlowError) as error:
            self._set(False, _describe(error))
        else:
            self._set(True, None)

    async def _watch(self) -> None:
        while True:
            await trio.sleep(CHECK_INTERVAL)
            await self._check()

    def _set(self, available: bool, error: str | None) -> None:
        self.available, self.error = available, error
        if available == self._logged:
            return
        # The first check is logged whatever its outcome; after that, only changes.
        self._logged = available
        self.since = time.time()
        if available:
            log.info("shared state available", backend="redis", redis=redacted(self.url))
        else:
            log.error(
                "shared state unavailable: not ready; rate limits fall back to this replica's own "
                "budgets, sessions opened now live on this replica until Redis is back, unknown sessions get 503",
                backend="redis",
                redis=redacted(self.url),
                error=error,
            )


def _describe(error: BaseException) -> str:
    if isinstance(error, trio.TooSlowError):
        return "timed out"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
