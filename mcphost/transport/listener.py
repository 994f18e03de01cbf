"""Serving the ASGI app on Hypercorn's Trio HTTP server, with the accept loop under our control.

``hypercorn.trio.serve`` stops accepting connections only when it shuts down, and then gives
the open ones a short grace before cutting them. A draining daemon needs the two apart: it
stops accepting at once (:meth:`Listener.stop_accepting`), so connections wait in the
listening socket's queue for the next process when systemd or the worker master holds the
socket, or are refused (and a proxy retries them on another replica) when the daemon bound
it itself; the requests on connections already open are answered, each with
``Connection: close``, for as long as the drain lasts. Only then are the connections closed
(:meth:`Listener.close`).

Each connection is served by :class:`mcphost.transport.connection.Connection` (Hypercorn's
own per-connection server); only the loop around it, which ``hypercorn.trio.run.worker_serve``
is, and one task that closes the connections idle past the keep-alive time, live here. Plain
TCP only: TLS terminates at the proxy.

Each time the listening socket is readable, the accept loop takes every connection waiting
there (up to :data:`ACCEPT_BATCH`), not one: Trio's own loop accepts one connection per
turn of the scheduler, so under load a burst of new clients (a restart, a proxy opening its
pool) waited in the kernel's queue for as many turns as there were clients before them, each
turn as long as every busy connection's work, and their first requests took seconds.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import socket
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from mcphost.transport.connection import Connection

log = logging.getLogger("mcphost.listener")

ACCEPT_BATCH = 128
"""Connections taken per wake-up of a listening socket (asyncio's default backlog is 100): a
bound, so that a flood of connections still lets the open ones be served between batches."""

_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""``accept`` errors that say the process or system is out of something: retried after
:data:`_EXHAUSTED_PAUSE` seconds, as Trio's own loop does."""
_EXHAUSTED_PAUSE = 0.1
_GONE = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO, errno.ENETDOWN, errno.EHOSTUNREACH})
"""``accept`` errors about one connection that went away before it was taken (Trio's list)."""


class Listener:
    """Hypercorn serving one app on the sockets of one config, stopped in two steps."""

    def __init__(self, app: ASGIFramework, config: Config):
        self.app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self.config = config
        self._context = WorkerContext(None)
        self._accepting = trio.CancelScope()
        self._closing = trio.Event()
        self._connections: set[Connection] = set()
        self._none_open = trio.Event()

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._connections)

    async def serve(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and serve connections until :meth:`close`; reports the binds once listening."""
        sockets = self.config.create_sockets()
        for sock in sockets.insecure_sockets:
            # Hypercorn calls listen() on every socket, systemd's too: so do we, with the
            # config's backlog (the kernel caps it at net.core.somaxconn).
            sock.listen(self.config.backlog)
            sock.setblocking(False)
        listening = sockets.insecure_sockets
        binds = [f"http://{repr_socket_addr(s.family, s.getsockname())}" for s in listening]
        handler = functools.partial(self._serve_connection, ConnectionState({}))
        async with trio.open_nursery() as connections:
            connections.start_soon(self._close_idle)
            with self._accepting:
                async with trio.open_nursery() as accepting:
                    for sock in listening:
                        accepting.start_soon(_accept, sock, handler, connections)
                    task_status.started(binds)
            # Our descriptors only: a socket systemd or the worker master holds stays open
            # (connections queue there for the next process); one we bound is gone (refused).
            for sock in listening:
                trio.lowlevel.notify_closing(sock)
                sock.close()
            await self._closing.wait()
            # Hypercorn's connections close when idle, or after their current response, once
            # terminated; what still runs after the grace is cancelled.
            await self._context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + self.config.graceful_timeout

    async def _serve_connection(self, state: ConnectionState, stream: trio.SocketStream) -> None:
        connection = Connection(self.app, self.config, self._context, state, stream)
        self._connections.add(connection)
        try:
            await connection  # closes its socket however it ends
        finally:
            self._connections.discard(connection)
            if not self._connections:
                self._none_open.set()
                self._none_open = trio.Event()

    async def _close_idle(self) -> None:
        """Close every connection idle for ``keep_alive_timeout``, looking every eighth of it
        (so one stays open up to an eighth longer), and every idle one at once when the
        server terminates (a busy one its protocol closes once its response is done).

        One task for all connections, rather than a timer task for each (Hypercorn's way, and
        ours before): starting and cancelling that task and its timer cost about 130 µs of CPU
        per connection, an eighth of all a connection that carries one request cost.
        """
        timeout = self.config.keep_alive_timeout
        terminated = self._context.terminated
        while not terminated.is_set():
            with trio.move_on_after(timeout / 8):
                await terminated.wait()
            expired = math.inf if terminated.is_set() else trio.current_time() - timeout
            for connection in self._connections:
                since = connection.idle_since
                if since is not None and since <= expired:
                    connection.close_idle()

    async def wait_closed(self) -> None:
        """Until no connection is open (at once if none is)."""
        if self.open:
            await self._none_open.wait()

    def stop_accepting(self) -> None:
        """Take no new connection from now on; the open ones go on."""
        self._accepting.cancel()

    def close(self) -> None:
        """Stop accepting, then close the open connections (within the config's ``graceful_timeout``)."""
        self.stop_accepting()
        self._closing.set()


async def _accept(
    sock: socket.socket, handler: Callable[[trio.SocketStream], Awaitable[None]], connections: trio.Nursery
) -> None:
    """Start ``handler`` in ``connections`` for each connection ``sock`` (listening, non-blocking)
    takes, every waiting one at each wake-up, until cancelled."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno in _GONE:
                    continue
                if error.errno not in _EXHAUSTED:
                    raise
                log.error("accept failed (%s); retrying in %s s", error.strerror, _EXHAUSTED_PAUSE)
                await trio.sleep(_EXHAUSTED_PAUSE)
                break
            connections.start_soon(handler, trio.SocketStream(trio.socket.from_stdlib_socket(conn)))
