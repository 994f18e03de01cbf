"""What plugin code can break of the whole process, and how the fence notices and repairs it.

Signal handlers: plugin code on the event loop (an import, an async hook or tool) runs on
the main thread, where ``signal.signal`` works; the handlers the daemon relies on are put
back after each such run, and the change is logged with the plugin's name. (In a worker
thread ``signal.signal`` raises, so sync code cannot change them at all.)

Standard streams: a plugin that closes fd 0, 1 or 2 would take the daemon's log (or, in
stdio mode, its protocol channel) with it. :func:`keep_std_streams` keeps a copy of each;
:func:`check_std_streams` finds one closed or replaced and puts the copy back (after each
call; a worker checks after the calls its event loop runs once per tick: :func:`check_once_per_tick`).
(In stdio mode the SDK's transport has moved the protocol channel off fd 1 before any
plugin is imported, so a plugin's ``print`` ends up in the log, not in the protocol stream.)
"""

from __future__ import annotations

import _signal
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import structlog

log = structlog.get_logger("mcphost.fence")

WATCHED_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGPIPE")
    if hasattr(signal, name)
)
"""Signals whose handlers plugin code may not change."""

_kept: dict[int, tuple[int, os.stat_result]] = {}
"""fd -> (a private duplicate of it, what it was when kept)."""
_at_tick_end: Callable[[Callable[[], None]], None] | None = None
"""Where :func:`after_call` leaves its check (see :func:`check_once_per_tick`), if anywhere."""
_unchecked: dict[str, str] = {}
"""The calls (``where`` -> plugin) that ended since the streams were last checked."""


def signal_handlers() -> dict[int, Any]:
    """The current handlers of :data:`WATCHED_SIGNALS`, as the interpreter holds them."""
    # ``signal.getsignal`` turns each into an enum member first, which costs 15 times the
    # look-up, twice around every call on the event loop; the raw value compares the same.
    return {sig: _signal.getsignal(sig) for sig in WATCHED_SIGNALS}


def restore_signals(before: dict[int, Any], plugin: str, where: str) -> list[str]:
    """Put back every handler that differs from ``before``; returns the signals' names."""
    changed = []
    for sig, handler in before.items():
        if _signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
            changed.append(signal.Signals(sig).name)
    if changed:
        log.warning("plugin changed signal handlers; restored", plugin=plugin, call=where, signals=changed)
    return changed


@contextlib.contextmanager
def on_loop(plugin: str, where: str) -> Iterator[None]:
    """Around plugin code run on the event loop: restores the signal handlers it changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal_handlers()
    try:
        yield
    finally:
        restore_signals(before, plugin, where)


def keep_std_streams() -> None:
    """Keep a private duplicate of fds 0, 1 and 2 (once), for :func:`check_std_streams`."""
    for fd in (0, 1, 2):
        if fd not in _kept:
            with contextlib.suppress(OSError):
                _kept[fd] = (os.dup(fd), os.fstat(fd))


def check_std_streams(plugin: str, where: str) -> list[str]:
    """Find fds 0, 1 and 2 closed or pointed elsewhere since :func:`keep_std_streams`, put
    each back, and say which (the log line is written once stderr works again)."""
    damaged = []
    for fd, (copy, was) in _kept.items():
        try:
            now = os.fstat(fd)
            same = (now.st_dev, now.st_ino) == (was.st_dev, was.st_ino)
        except OSError:
            same = False
        if not same:
            os.dup2(copy, fd)
            damaged.append({0: "stdin", 1: "stdout", 2: "stderr"}[fd])
    if damaged:
        log.error("plugin closed or replaced standard streams; restored", plugin=plugin, call=where, streams=damaged)
    return damaged


def check_once_per_tick(at_tick_end: Callable[[Callable[[], None]], None]) -> None:
    """From now on, :func:`after_call` checks the streams once per tick of the event loop,
    at its end (``at_tick_end`` runs a function then), for every call that ended in it.

    For a process that hosts one plugin (a worker): whichever of its calls did the damage,
    it is that plugin's, and the streams are put back before the loop sleeps, as the answers
    of the tick's calls leave. A check's three ``fstat`` calls are about a tenth of what a
    worker spends on a small async call, and at load one tick ends many calls."""
    global _at_tick_end
    _at_tick_end = at_tick_end


def after_call(plugin: str, where: str) -> None:
    """After plugin code ran on the event loop: :func:`check_std_streams`, now or at the end
    of the loop's tick (:func:`check_once_per_tick`)."""
    if _at_tick_end is None:
        check_std_streams(plugin, where)
        return
    if not _unchecked:
        _at_tick_end(_check_ended)
    _unchecked[where] = plugin


def _check_ended() -> None:
    ended = dict(_unchecked)
    _unchecked.clear()
    check_std_streams(", ".join(sorted(set(ended.values()))), ", ".join(ended))
