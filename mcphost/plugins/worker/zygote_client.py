"""The daemon's side of the fork server (:mod:`mcphost.plugins.worker.zygote`): starting it,
asking it for workers, learning how each ended, and replacing it.

The fork server is started from the daemon's main thread: ``PR_SET_PDEATHSIG`` fires when
the *thread* that started a process ends, and a pool thread ends when it idles. Workers are
asked for from any thread (they start side by side); replies and exit statuses come back on
a reader thread. A fork server that ends is noticed (logged) at once and replaced when the
next worker is needed; the workers it forked serve on, only their exit status is then unknown.
When it cannot be started, or keeps ending before it is ready, workers are started as fresh
interpreters instead, as they were without it, and the log says so.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from mcphost.plugins.worker import launch

log = structlog.get_logger("mcphost.worker")

READY_TIMEOUT = 30.0
"""Seconds the fork server may take to import the runtime before a worker is started without it."""
MAX_FAILURES = 3
"""Fork servers in a row that may end before being ready before the daemon stops starting them."""
CHECK_TIMEOUT = 5.0
"""Seconds the fork server may take to say whether what it imported changed (else it is renewed)."""
MAX_MESSAGE = 1 << 16


def describe(status: int | None) -> str:
    """How a process ended, from its return code (``None``: not known)."""
    if status is None:
        return "ended, how is not known (its fork server had ended)"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


class ZygoteUnavailable(Exception):
    """No fork server can fork this worker: start it as a fresh interpreter instead."""


@dataclass(eq=False)
class ForkedChild:
    """A worker forked by the fork server: not the daemon's child, so its exit status is the
    fork server's to tell (see :meth:`wait`)."""

    pid: int
    pidfd: int
    """Readable once the worker has ended (the fork server opened it before it could reap it)."""
    status: int | None = None
    ended: threading.Event = field(default_factory=threading.Event)

    def wait(self) -> int | None:
        """The exit status once the worker has ended (as :attr:`subprocess.Popen.returncode`),
        or ``None`` when its fork server ended first, or does not say."""
        self.ended.wait(READY_TIMEOUT)
        return self.status


class Zygote:
    """One fork server process and the daemon's connection to it."""

    def __init__(self, started: launch.Started | None = None) -> None:
        """Talk to the fork server ``started`` (forked early, see
        :func:`~mcphost.plugins.worker.launch.start_early`), or to one started now
        (:func:`~mcphost.plugins.worker.launch.launch`); raises :class:`OSError` when it
        cannot be started."""
        self.popen, self.sock = started or launch.launch()
        self.ready = threading.Event()
        """Set once it is ready to fork, or has ended."""
        self.served = False
        """Whether it ever was ready."""
        self.gone = threading.Event()
        self.retired = False
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._replies: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._children: dict[int, ForkedChild] = {}
        threading.Thread(target=self._read, name="mcphost-zygote", daemon=True).start()

    @property
    def pid(self) -> int:
        """The fork server's pid."""
        return self.popen.pid

    def fork(self, request: dict[str, Any], sock: int, output: int) -> ForkedChild:
        """A worker serving on ``sock`` and writing to ``output``, with ``request``'s ``env``,
        ``level``, ``memory_max`` and ``max_open_files`` (blocking: any thread); raises
        :class:`ZygoteUnavailable` when this fork server cannot fork it."""
        if not self.ready.wait(READY_TIMEOUT) or self.gone.is_set():
            raise ZygoteUnavailable("the fork server is not running")
        request_id = next(self._ids)
        answered: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        with self._lock:
            self._replies[request_id] = answered
        message = {"fork": request_id, **request}
        try:
            socket.send_fds(self.sock, [orjson.dumps(message)], [sock, output])
        except OSError as error:
            raise ZygoteUnavailable(f"the fork server is not answering: {error}") from None
        if not answered[0].wait(READY_TIMEOUT):
            # Ended, so that it cannot fork this worker late, beside the one started instead.
            log.error("the fork server does not answer: it is ended", pid=self.pid)
            self.popen.kill()
        if not answered[1] or not isinstance(answered[1][0], ForkedChild):
            raise ZygoteUnavailable(str(answered[1][0] if answered[1] else "the fork server ended"))
        child: ForkedChild = answered[1][0]
        return child

    def changed(self) -> bool:
        """Whether a file this fork server imported has changed (an upgrade) since it did, so
        that a worker forked from it would not run what is installed now; ``True`` when it
        cannot say. One still starting is importing what is installed now: not changed.
        Blocking (any thread): the fork server answers from its loop, in milliseconds."""
        if self.gone.is_set():
            return True
        if not self.ready.is_set():
            return False
        request_id = next(self._ids)
        answered: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        with self._lock:
            self._replies[request_id] = answered
        try:
            self.sock.send(orjson.dumps({"check": request_id}))
        except OSError:
            return True
        answered[0].wait(CHECK_TIMEOUT)
        return answered[1] != [False]

    def retire(self) -> None:
        """Let the fork server end once the workers it forked have all ended."""
        self.retired = True
        with contextlib.suppress(OSError):
            self.sock.send(orjson.dumps({"retire": True}))

    def close(self) -> None:
        """End the fork server now (its workers are stopped already, or go with it)."""
        self.retired = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5.0)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def _read(self) -> None:
        """Take each message of the fork server, until it ends."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
            except OSError:
                data, fds = b"", []
            if not data:
                break
            message = orjson.loads(data)
            if message.get("ready"):
                self.served = True
                self.ready.set()
            elif "exited" in message:
                with self._lock:
                    child = self._children.pop(message["exited"], None)
                if child is not None:
                    child.status = message["status"]
                    child.ended.set()
            elif "check" in message:
                with self._lock:
                    event, slot = self._replies.pop(message["check"], (None, []))
                slot.append(message["changed"])
                if event is not None:
                    event.set()
            elif "fork" in message:
                # Known before the next message is read, which may be this worker's end.
                answer: Any = ForkedChild(message["pid"], fds[0]) if "pid" in message else message.get("error")
                with self._lock:
                    if isinstance(answer, ForkedChild):
                        self._children[answer.pid] = answer
                    event, slot = self._replies.pop(message["fork"], (None, []))
                slot.append(answer)
                if event is not None:
                    event.set()
        self.gone.set()
        self.ready.set()
        status = self.popen.wait()
        with self._lock:
            waiting = list(self._replies.values()) + [(c.ended, []) for c in self._children.values()]
            self._replies.clear()
        for event, _ in waiting:
            event.set()
        if not self.retired:
            log.error("the fork server ended; another is started for the next worker", how=describe(status))
        self.sock.close()


class Zygotes:
    """The daemon's current fork server: started early, replaced on reload, restarted when it
    has ended, given up on (workers then start as fresh interpreters) when it cannot start."""

    def __init__(self) -> None:
        self.current: Zygote | None = None
        self.failures = 0
        self.enabled = True
        self._retired: list[Zygote] = []

    def ensure(self) -> None:
        """Have a fork server running or starting (main thread only; see the module's docstring)."""
        current = self.current
        if not self.enabled or (current is not None and not current.gone.is_set()):
            return
        if current is not None:
            self.failures = 0 if current.served else self.failures + 1
        if self.failures >= MAX_FAILURES:
            if current is not None:
                log.error("the fork server keeps ending: plugin workers are started as fresh interpreters")
                self.current = None
            return
        try:
            self.current = take_early() or Zygote()
        except OSError as error:
            log.error("cannot start the fork server: workers start as fresh interpreters", error=str(error))
            self.current, self.failures = None, MAX_FAILURES

    def stale(self) -> bool:
        """Whether :meth:`renew` must replace the current fork server: none runs, or a file it
        imported has changed since (blocking, any thread; see :meth:`Zygote.changed`)."""
        current = self.current
        return current is None or current.changed()

    def renew(self, enabled: bool, stale: bool) -> None:
        """On reload: start a fresh fork server if the current one is ``stale`` (see
        :meth:`stale`: an upgraded package is then imported anew), or none when no longer
        ``enabled``; the old one ends once the workers it forked have ended. A plugin's own
        code is never in the fork server, so a changed plugin alone keeps it."""
        if enabled and self.enabled and not stale:
            return
        if self.current is not None:
            self.current.retire()
            self._retired.append(self.current)
            self.current = None
        self._retired = [z for z in self._retired if not z.gone.is_set()]
        self.failures, self.enabled = 0, enabled
        self.ensure()

    def fork(self, request: dict[str, Any], sock: int, output: int) -> ForkedChild:
        """A worker from the current fork server (see :meth:`Zygote.fork`)."""
        current = self.current
        if current is None:
            raise ZygoteUnavailable("no fork server is running")
        return current.fork(request, sock, output)

    def close(self) -> None:
        """End every fork server (the daemon is stopping)."""
        for zygote in [*self._retired, *([self.current] if self.current else [])]:
            zygote.close()
        self.current, self._retired = None, []


def take_early() -> Zygote | None:
    """The fork server :func:`~mcphost.plugins.worker.launch.start_early` started, if it still
    runs; it is the caller's now."""
    started = launch.take_early()
    return Zygote(started) if started is not None else None
