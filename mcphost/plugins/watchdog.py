"""The loop-stall watchdog: a thread that notices plugin code holding the event loop.

One process cannot preempt code that blocks inside an ``async def`` (``time.sleep``, a busy
loop); it can notice it and stop it where Python can. The event loop stamps a heartbeat;
a thread watches it. Once the loop has not come back for ``warn_after`` seconds, the thread
finds the fenced call the loop is in (the fence's frame on the main thread's stack names
the plugin and the call), logs it with the stack, and counts it. Past ``stall_timeout`` it
marks the plugin degraded and interrupts the call: a signal makes the main thread raise
:class:`~mcphost.plugins.fence.LoopStalled` inside the plugin's code, which the fence turns into that call's error.
``time.sleep`` and Python code both see it; code stuck in C that never checks for signals
does not (the systemd watchdog remains the last resort there).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

import structlog
import trio

from mcphost.plugins import fence

log = structlog.get_logger("mcphost.fence")

STALL_SIGNAL = signal.SIGUSR2
"""The signal that interrupts the main thread; the daemon uses it for nothing else."""
INTERVAL = 0.05
"""Seconds between heartbeats, and between the thread's looks at them."""
STACK_DEPTH = 20
"""Innermost frames of the stalled stack that the log line carries."""


def fenced_call(frame: FrameType | None) -> tuple[str, str, FrameType] | None:
    """The plugin and call whose fenced run ``frame`` is inside, and the fence's frame."""
    codes = fence.LOOP_CODES
    while frame is not None:
        if frame.f_code in codes:
            names = frame.f_locals
            return str(names.get("plugin")), str(names.get("what") or names.get("hook")), frame
        frame = frame.f_back
    return None


class Watchdog:
    """Watches the event loop of the thread that runs :meth:`run` (the main thread)."""

    def __init__(
        self,
        stall_timeout: float,
        on_stall: Callable[[str], None] = lambda plugin: None,
        on_degraded: Callable[[str, str], None] = lambda plugin, why: None,
    ):
        self.stall_timeout = stall_timeout
        """Seconds the loop may be held before the call is failed (a reload may change it)."""
        self.on_stall = on_stall
        """Called (in the watchdog's thread) with the plugin's name for each stall noticed."""
        self.on_degraded = on_degraded
        """Called (in the watchdog's thread) with the plugin's name and what happened when it is marked degraded."""
        self.degraded: dict[str, str] = {}
        """Plugins that held the loop past the stall timeout: name -> what happened."""
        self._beat = time.monotonic()
        self._victim: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Beat until cancelled, with the watching thread running beside."""
        previous = signal.signal(STALL_SIGNAL, self._interrupt)
        stop = threading.Event()  # this run's: a run after it has a thread of its own
        self._beat = time.monotonic()
        threading.Thread(target=self._watch, args=(stop,), name="mcphost-watchdog", daemon=True).start()
        task_status.started()
        try:
            while True:
                self._beat = time.monotonic()
                await trio.sleep(INTERVAL)
        finally:
            stop.set()
            signal.signal(STALL_SIGNAL, previous)

    @property
    def warn_after(self) -> float:
        """Seconds the loop may be held before the stall is logged and counted."""
        return min(1.0, self.stall_timeout / 2)

    def report(self, plugin: str, degraded: str | None) -> None:
        """A stall that a worker's own watchdog noticed in ``plugin``'s code: counted, and the
        plugin marked ``degraded`` (what happened, once its call was stopped), as one here is."""
        if degraded is None:
            self.on_stall(plugin)
        else:
            self.degraded[plugin] = degraded

    def forget(self, plugin: str) -> None:
        """``plugin`` is a new version: it is not degraded (any more)."""
        self.degraded.pop(plugin, None)

    def _watch(self, stop: threading.Event) -> None:
        noticed = None  # the heartbeat of the stall already logged
        interrupt_at = 0.0
        while not stop.wait(INTERVAL):
            beat = self._beat
            held = time.monotonic() - beat
            if held < self.warn_after:
                continue
            frame = sys._current_frames().get(threading.main_thread().ident or 0)
            call = fenced_call(frame)
            if noticed != beat:
                noticed, interrupt_at = beat, self.stall_timeout
                stack = "".join(traceback.format_stack(frame)[-STACK_DEPTH:]) if frame is not None else ""
                if call is None:
                    log.warning("the event loop is held", held_s=round(held, 2), stack=stack)
                    continue
                log.warning("plugin code is holding the event loop", plugin=call[0], call=call[1], stack=stack)
                self.on_stall(call[0])
            if call is not None and held >= interrupt_at:
                plugin, what, fenced = call
                self.degraded[plugin] = f"{what} held the event loop for more than {self.stall_timeout:g}s"
                self.on_degraded(plugin, self.degraded[plugin])
                log.error(
                    "plugin held the event loop past its stall timeout; failing the call", plugin=plugin, call=what
                )
                self._victim = id(fenced)
                signal.pthread_kill(threading.main_thread().ident or 0, STALL_SIGNAL)
                interrupt_at += self.stall_timeout  # again, should the plugin swallow it

    def _interrupt(self, signum: int, frame: Any) -> None:
        """In the main thread: raise :class:`LoopStalled` if the stalled call is still running."""
        victim, self._victim = self._victim, None
        while frame is not None:
            if id(frame) == victim and frame.f_code in fence.LOOP_CODES:
                raise fence.LoopStalled(f"held the event loop for more than {self.stall_timeout:g}s")
            frame = frame.f_back
