"""Work left for the end of the event loop's scheduler tick: run once the tasks runnable now
have run, just before the loop waits for I/O.

Whatever such work wakes (the other end of a socket, a thread) then finds this process's
loop asleep instead of contending with it for the CPU or the GIL, and work that several
tasks of one tick leave (frames to send) is done once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

log = structlog.get_logger("mcphost.worker")


class _BatchEnd(trio.abc.Instrument):
    """Runs what the loop's tasks left for the end of their scheduler tick, just before the
    loop waits for I/O."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def before_io_wait(self, timeout: float) -> None:
        """Trio's hook: the tasks runnable have run; the loop is about to wait for I/O."""
        while self.pending:
            pending, self.pending = self.pending, []
            for fn in pending:
                try:
                    fn()
                except Exception:  # an instrument that raises is removed for good
                    log.exception("work left for the end of a scheduler tick failed")


_BATCH_END: trio.lowlevel.RunVar[_BatchEnd] = trio.lowlevel.RunVar("mcphost_batch_end")


def at_batch_end(fn: Callable[[], None]) -> None:
    """Run ``fn`` on the event loop once the tasks runnable now have run, just before the
    loop waits for I/O: what it wakes (the other end, a thread) then finds this loop asleep
    rather than contending with it. ``fn`` must not reschedule tasks (the loop has chosen
    how long to sleep): it wakes the loop with ``run_sync_soon`` instead."""
    try:
        batch_end = _BATCH_END.get()
    except LookupError:
        batch_end = _BatchEnd()
        _BATCH_END.set(batch_end)
        trio.lowlevel.add_instrument(batch_end)
    batch_end.pending.append(fn)
