"""A reload asked for while the daemon starts, kept instead of ending the process; an
interrupt, which ends it as SIGTERM does.

Until the daemon handles signals itself (``Daemon._handle_signals``), SIGHUP would take
Python's default action and end the process: a ``systemctl reload`` right after a restart,
or the worker master passing one on to a worker still starting. From the command's first
step the signal is only noted; the daemon reloads once it serves (after READY=1), so a change
made while it started (its config read, its plugins loading) is not missed. ``mcphost stdio``
has no reload: there the signal stays noted and nothing more.

SIGINT, until the daemon handles it (from just before ``READY=1`` until it has stopped),
takes the default action, as SIGTERM does: the process ends at once, with nothing started
yet to drain. Left to Python it raised ``KeyboardInterrupt`` wherever start-up was, and
Ctrl-C on a starting daemon printed a traceback (with ``workers = 2``, on a worker still
starting when the master, ready once one worker serves, passed the signal on).
"""

from __future__ import annotations

import signal
from types import FrameType

_requested = False


def hold_reloads() -> None:
    """Note a SIGHUP from now on instead of dying of it. Call first thing, in the main thread."""
    signal.signal(signal.SIGHUP, _note)


def take_reload_request() -> bool:
    """Whether a SIGHUP arrived since :func:`hold_reloads`; clears it."""
    global _requested
    requested, _requested = _requested, False
    return requested


def _note(_signum: int, _frame: FrameType | None) -> None:
    global _requested
    _requested = True


def end_on_interrupt() -> None:
    """SIGINT ends the process by the default action, without a traceback, until the daemon
    handles it. Call first thing, in the main thread."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
