"""What plugins leave behind when the process stops: child processes and threads.

A plugin may start a subprocess and never wait for it, or a thread that never ends. The
process serving plugins ends their children's process groups once the plugins are shut
down (:func:`end_children`), and does not let a lingering thread keep it from exiting
(:func:`exit_past_threads`). It owns no child of its own, so every child is a plugin's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import structlog

log = structlog.get_logger("mcphost.fence")


def children() -> list[tuple[int, int]]:
    """This process's live children, as ``(pid, process group)``."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may hold spaces and parentheses: the fields start after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
            if ppid == me and state != "Z":
                found.append((int(stat.parent.name), pgrp))
    return found


def end_children(grace: float) -> list[int]:
    """SIGTERM each child's process group (the child alone when it shares this process's
    group), SIGKILL what is still there after ``grace`` seconds, and reap them; returns the
    children's pids."""
    found = children()
    if not found:
        return []
    own_group = os.getpgrp()
    log.warning("ending processes plugins left behind", pids=[pid for pid, _ in found])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, group in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group != own_group:
                    os.killpg(group, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _reap(found):
            time.sleep(0.05)
    return [pid for pid, _ in found]


def _reap(found: list[tuple[int, int]]) -> bool:
    """Reap those of ``found`` that have ended; whether any is still running."""
    running = False
    for pid, _ in found:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                running = True
    return running


def exit_past_threads(status: int) -> None:
    """Exit with ``status`` now if a thread that is not a daemon thread still runs (a
    plugin's, which the interpreter would otherwise wait for forever); else return."""
    lingering = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if lingering:
        log.warning("exiting past threads plugins left running", threads=lingering)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
