"""Starting the fork server's process (:mod:`mcphost.plugins.worker.zygote`), and nothing
more: :mod:`mcphost.plugins.worker.zygote_client` talks to it once started.

The ``serve`` and ``stdio`` commands start it as their first step (:func:`start_early`), so
that it imports the worker runtime while the daemon imports the rest of itself and reads its
config: its start-up is on the way to ``READY=1`` for every isolated plugin. That is why this
module imports only what starting a process takes, never the daemon's logging or the SDK.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

ENVIRONMENT = ("PATH", "HOME", "LANG")
"""What the fork server keeps of the daemon's environment, besides :func:`import_path` as its
``PYTHONPATH`` (each worker's environment is the one the daemon asks for, without it)."""

_early: tuple[subprocess.Popen[bytes], socket.socket] | None = None


def launch() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new fork server process and the daemon's end of its ``SOCK_SEQPACKET`` socket; raises
    :class:`OSError` when it cannot be started. Main thread only: ``PR_SET_PDEATHSIG`` fires
    when the *thread* that started a process ends."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {k: os.environ[k] for k in ENVIRONMENT if k in os.environ}
    env |= {"PYTHONPATH": import_path(), "MALLOC_ARENA_MAX": "2"}
    argv = python("mcphost.plugins.worker.zygote", str(theirs.fileno()), str(os.getpid()))
    try:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=2, pass_fds=[theirs.fileno()], env=env)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return popen, ours


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


def start_early() -> None:
    """Start a fork server for the daemon to take later (:func:`take_early`), if it can be."""
    global _early
    with contextlib.suppress(OSError):
        _early = launch()


def take_early() -> tuple[subprocess.Popen[bytes], socket.socket] | None:
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
