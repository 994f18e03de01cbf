"""Draining: what is in flight, and how a shutdown lets it finish before cancelling the rest.

The HTTP layer counts requests in flight and, once draining starts, closes each connection
after its answer (no new connection is accepted meanwhile, :mod:`mcphost.transport.listener`); the
protocol layer runs each call inside a scope this module can cancel when the drain
deadline passes, so a cancelled call is still answered (with an error), never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
import trio

log = structlog.get_logger("mcphost.drain")


class Drain:
    """In-flight bookkeeping for one daemon."""

    def __init__(self) -> None:
        self.draining = False
        self.requests = 0
        self._calls: set[trio.CancelScope] = set()
        self._idle = trio.Event()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Count one HTTP request as in flight while the block runs."""
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1
            if self.draining and self.requests == 0:
                self._idle.set()

    def call(self) -> _Call:
        """Run one call in a scope that the drain deadline cancels; check ``cancelled_caught``."""
        return _Call(self._calls)

    async def drain(self, timeout: float) -> None:
        """Start draining, wait up to ``timeout`` seconds for requests in flight, then cancel
        the calls still running and give their error answers a moment to be sent. May be
        called again, for requests that came in since."""
        self.draining = True
        if self.requests == 0:
            return
        log.info("draining", requests=self.requests, timeout=timeout)
        with trio.move_on_after(timeout):
            await self._until_idle()
        if self.requests:
            log.warning("drain timeout: cancelling calls still running", calls=len(self._calls))
            for scope in list(self._calls):
                scope.cancel()
            with trio.move_on_after(5):
                await self._until_idle()

    async def _until_idle(self) -> None:
        # Idle once is not idle now: a request on a connection still open (answered, then the
        # connection closed) can come in between the last one ending and this task running.
        while self.requests:
            self._idle = trio.Event()
            await self._idle.wait()


class _Call:
    """The scope :meth:`Drain.call` gives a call. A class rather than a generator: every
    tool call enters one, and a generator-based context manager costs several times more."""

    __slots__ = ("_calls", "_scope")

    def __init__(self, calls: set[trio.CancelScope]):
        self._calls = calls
        self._scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        self._calls.add(self._scope)
        return self._scope.__enter__()

    def __exit__(self, *exc_info: Any) -> bool:
        try:
            return bool(self._scope.__exit__(*exc_info))
        finally:
            self._calls.discard(self._scope)
