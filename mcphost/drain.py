"""Draining: what is in flight, and how a shutdown lets it finish before cancelling the rest.

The HTTP layer counts requests in flight and refuses new ones once draining starts; the
protocol layer runs each call inside a scope this module can cancel when the drain
deadline passes, so a cancelled call is still answered (with an error), never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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

    @contextmanager
    def call(self) -> Iterator[trio.CancelScope]:
        """Run one call in a scope that the drain deadline cancels; check ``cancelled_caught``."""
        with trio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                yield scope
            finally:
                self._calls.discard(scope)

    async def drain(self, timeout: float) -> None:
        """Stop taking work, wait up to ``timeout`` seconds for requests in flight, then cancel
        the calls still running and give their error answers a moment to be sent."""
        self.draining = True
        if self.requests == 0:
            return
        log.info("draining", requests=self.requests, timeout=timeout)
        with trio.move_on_after(timeout):
            await self._idle.wait()
        if self.requests:
            log.warning("drain timeout: cancelling calls still running", calls=len(self._calls))
            for scope in list(self._calls):
                scope.cancel()
            with trio.move_on_after(5):
                await self._idle.wait()
