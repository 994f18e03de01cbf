"""Starting the fork server's process (:mod:`mcphost.plugins.worker.zygote`), and nothing
more: :mod:`mcphost.plugins.worker.zygote_client` talks to it once started.

The ``serve`` and ``stdio`` commands fork the first one from themselves (:func:`start_early`)
once they have imported the worker runtime and before they import the rest of the daemon or
read anything: the fork server then shares those imports with the daemon instead of importing
them again, which on one CPU was half a second on the way to ``READY=1`` (the daemon's
imports and the fork server's add up there). What the child holds of the daemon is forgotten
(:func:`mcphost.plugins.worker.zygote.forget_daemon`). A fork server started later (after an
upgrade, or when one has ended) is a fresh interpreter (:func:`launch`): by then the daemon
has read its config and credentials. This module imports nothing of the daemon's logging.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable

ENVIRONMENT = ("PATH", "HOME", "LANG")
"""What the fork server and every worker keep of the daemon's environment; the rest (secrets,
``MCPHOST_*``) stays behind (a worker adds its plugin's ``env``)."""
MALLOC_ARENA_MAX = 2
"""malloc's arenas in the fork server and so in each worker: few threads run in one."""


class Forked:
    """A fork server this process forked: what its users ask of a :class:`subprocess.Popen`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)  # readable once it has ended
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """Its exit status once it has ended (as :attr:`subprocess.Popen.returncode`), else ``None``."""
        return self._reap() if select.select([self._pidfd], [], [], 0)[0] else None

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, once it has ended; raises :class:`subprocess.TimeoutExpired` after ``timeout``."""
        if not select.select([self._pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout or 0.0)
        return self._reap()

    def kill(self) -> None:
        """SIGKILL it, unless it has been reaped (its pid may be another process's by then)."""
        with self._lock:
            if self.returncode is None:
                os.kill(self.pid, signal.SIGKILL)

    def _reap(self) -> int:
        with self._lock:
            if self.returncode is None:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode


Started = tuple[subprocess.Popen[bytes] | Forked, socket.socket]
"""A fork server's process and the daemon's end of its ``SOCK_SEQPACKET`` socket."""

_early: Started | None = None


def launch() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new fork server process and the daemon's end of its ``SOCK_SEQPACKET`` socket; raises
    :class:`OSError` when it cannot be started. Main thread only: ``PR_SET_PDEATHSIG`` fires
    when the *thread* that started a process ends."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = kept_environment() | {"PYTHONPATH": import_path(), "MALLOC_ARENA_MAX": str(MALLOC_ARENA_MAX)}
    argv = python("mcphost.plugins.worker.zygote", str(theirs.fileno()), str(os.getpid()))
    try:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=2, pass_fds=[theirs.fileno()], env=env)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return popen, ours


def kept_environment() -> dict[str, str]:
    """What this process's environment holds of :data:`ENVIRONMENT`."""
    return {key: os.environ[key] for key in ENVIRONMENT if key in os.environ}


def python(module: str, *args: str) -> list[str]:
    """The command line that runs ``module`` in a new interpreter, which is to be given
    :func:`import_path` as its ``PYTHONPATH``: ``-P`` keeps its working directory, where
    another mcphost may be, off the front of its path."""
    return [sys.executable, "-P", "-m", module, *args]


def import_path() -> str:
    """This process's import path (``sys.path``, its working directory where it has one) as
    ``PYTHONPATH``: a process started with it imports the same mcphost and SDK as this one,
    whose requests then speak its language, wherever it runs."""
    return os.pathsep.join(dict.fromkeys(os.path.abspath(entry) for entry in sys.path))


def fork(become: Callable[[socket.socket, int], None]) -> tuple[Forked, socket.socket]:
    """A fork server forked from this process: the child runs ``become`` with its end of the
    socket and this process's pid (:func:`mcphost.plugins.worker.zygote.run_forked`), which
    serves until the daemon is done with it. Raises :class:`OSError` when it cannot be forked.
    Main thread only (see :func:`launch`), and only while no other thread runs: the child
    would hold their locks forever."""
    if threading.active_count() > 1:
        raise OSError("other threads run: a fork server cannot be forked from this process")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    daemon = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        status = 1
        try:
            ours.close()
            become(theirs, daemon)
            status = 0
        except BaseException:
            traceback.print_exc()  # to the daemon's stderr, where its own output goes
        finally:
            os._exit(status)  # never back into the daemon's code
    theirs.close()
    return Forked(pid), ours


def start_early(become: Callable[[socket.socket, int], None]) -> None:
    """Fork a fork server (see :func:`fork`) for the daemon to take later (:func:`take_early`), if it can be."""
    global _early
    with contextlib.suppress(OSError):
        _early = fork(become)


def take_early() -> Started | None:
    """The fork server :func:`start_early` started, if it still runs; it is the caller's now."""
    global _early
    early, _early = _early, None
    if early is not None and early[0].poll() is not None:
        early[1].close()
        return None
    return early


def discard_early() -> None:
    """End the fork server :func:`start_early` started, if any: no plugin of this process runs isolated."""
    if (early := take_early()) is not None:
        popen, sock = early
        sock.close()
        popen.kill()
        popen.wait()
