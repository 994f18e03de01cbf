"""One client connection: Hypercorn's own connection server (its HTTP/1.1 and HTTP/2
protocols, read timeout and close), with no task of its own for the keep-alive time.

Hypercorn's Trio server times a connection's keep-alive with a task it stops when a request
arrives and starts again (under a lock, with ``nursery.start``) when the response is done:
several turns of the scheduler and a new task for every request, which on a busy loop cost
as much as a tenth of a call. Here a request only records when the connection went idle
(:attr:`Connection.idle_since`), and the listener's one task for all connections closes
those idle too long (:meth:`Connection.close_idle`). The connection ends when the client
closes it, which Hypercorn's did not: the closed connection, its socket and its task stayed
until the keep-alive time had run out.

The connection also tells the app when the client closes it (:class:`Hangup`, in each
request's ``scope["state"]``): a 2026-07-28 client cancels a request that way, and without it
the app learns of it only by waiting on ``receive`` in a task of its own for every request.

Nothing on a request's way takes a turn of the scheduler it does not wait for: a write goes
straight to the socket when no other write holds the send lock and the socket takes it all
(trio's ``send_all`` yields once after every write, even one that did not wait), and the
request's queue between the connection and the app is put to and taken from without a turn
when it has room or holds a message (trio's channel yields once on every ``send`` and
``receive``). At one client each such turn is a wake-up of the loop with nothing else to do,
and a request took seven of them. An empty write (the end of a body whose length was given)
is not made at all. Reads likewise: trio's ``receive_some`` yields once after a read that
found data waiting, so a new connection's first request, there when the connection is taken
up, waited one more turn before the app had it, and in a burst of hundreds of new clients a
turn runs hundreds of tasks (up to 0.1 s measured at 500). Here neither the first read nor
one that waited for its data (as in trio) yields again; one that found data waiting after
another read does, so a client that sends without pause still takes its turns. Plain TCP
only: TLS terminates at the proxy.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterator

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, ConnectionState, Scope
from hypercorn.utils import parse_socket_addr

HANGUP = "mcphost.hangup"
"""The key of the connection's :class:`Hangup` in each request's ``scope["state"]``."""


class Hangup:
    """Cancels what runs in :meth:`cancelling` once the client has closed the connection."""

    def __init__(self) -> None:
        self.closed = False
        self._scopes: set[trio.CancelScope] = set()

    @contextlib.contextmanager
    def cancelling(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that is cancelled when the client closes the connection (at once if it has)."""
        with trio.CancelScope() as scope:
            if self.closed:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def close(self) -> None:
        """The client has closed the connection."""
        self.closed = True
        for scope in self._scopes:
            scope.cancel()


class _Requests(TaskGroup):
    """Hypercorn's task group, whose request queues take no turn of the scheduler when
    they need not wait (a cancelled task still stops at them, as at trio's own)."""

    async def spawn_app(
        self, app: AppWrapper, config: Config, scope: Scope, send: Callable[[ASGISendEvent | None], Awaitable[None]]
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        """Start the app on one request; return what puts the request's events to it."""
        put, take = trio.open_memory_channel[ASGIReceiveEvent](config.max_app_queue_size)

        async def receive() -> ASGIReceiveEvent:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                return take.receive_nowait()
            except trio.WouldBlock:
                return await take.receive()

        async def app_put(event: ASGIReceiveEvent) -> None:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                put.send_nowait(event)
            except trio.WouldBlock:
                await put.send(event)

        assert self._nursery is not None
        self._nursery.start_soon(
            _handle, app, config, scope, receive, send, trio.to_thread.run_sync, trio.from_thread.run
        )
        return app_put


class Connection(TCPServer):
    """Serves one accepted TCP connection until either side closes it (``await`` it)."""

    def __init__(
        self, app: AppWrapper, config: Config, context: WorkerContext, state: ConnectionState, stream: trio.SocketStream
    ):
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]
        self._socket = stream.socket
        self.idle_since: float | None = trio.current_time()
        """When the connection last went idle (no request under way), on Trio's clock; None while busy."""
        self.hangup = Hangup()

    async def run(self) -> None:
        """Serve the connection, then close it."""
        try:
            client = parse_socket_addr(self._socket.family, self._socket.getpeername())
            server = parse_socket_addr(self._socket.family, self._socket.getsockname())
            async with _Requests() as task_group:
                self._task_group = task_group
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState({**self.state, HANGUP: self.hangup}),
                    False,
                    client,
                    server,
                    self.protocol_send,
                    "http/1.1",
                )
                await self.protocol.initiate()
                await self._read_data()
                self.hangup.close()
        except OSError:
            pass
        finally:
            await self._close()

    async def _read_data(self) -> None:
        """Hypercorn's read loop (``TCPServer._read_data``), reading the socket itself: no turn
        of the scheduler after a read that needs none (see the module's docstring), and no
        cancel scope around each read unless a ``read_timeout`` is set."""
        timeout = self.config.read_timeout
        waited = True  # for the first read, the connection's accept waited
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                # The socket is non-blocking; a closed one's descriptor is -1 (EBADF).
                data = os.read(self._socket.fileno(), MAX_RECV)
            except BlockingIOError:
                try:
                    with trio.fail_after(timeout) if timeout else contextlib.nullcontext():
                        await trio.lowlevel.wait_readable(self._socket)
                except (trio.TooSlowError, trio.ClosedResourceError):
                    break
                waited = True
                continue
            except OSError:  # reset, or closed by the server
                break
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            waited = False
            await self.protocol.handle(RawData(data))
            if not data:
                break
        await self.protocol.handle(Closed())

    async def protocol_send(self, event: Event) -> None:
        """What the protocol asks of the connection: write, close, or note that it is idle or busy."""
        if isinstance(event, Updated):
            self.idle_since = trio.current_time() if event.idle else None
        elif isinstance(event, RawData):
            if event.data:
                await self._write(event.data)
        else:
            await super().protocol_send(event)

    async def _write(self, data: bytes) -> None:
        try:
            self.send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self.send_lock.acquire()
        try:
            try:
                # The socket is non-blocking; a closed one's descriptor is -1 (EBADF).
                sent = os.write(self._socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                # Shielded, as Hypercorn writes: a response is not cut off half-way.
                with trio.CancelScope(shield=True):
                    await self.stream.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.protocol.handle(Closed())
        finally:
            self.send_lock.release()

    async def _close(self) -> None:
        """Hypercorn's close (end of writes, then close), without the two turns of the
        scheduler trio's ``send_eof`` and ``aclose`` take: the connection's task ends here."""
        sock = self._socket
        if sock.fileno() != -1:
            with contextlib.suppress(OSError):  # the client may be gone already
                sock.shutdown(socket.SHUT_WR)
            sock.close()

    def close_idle(self) -> None:
        """Close the connection if it is idle and waiting for the client.

        Its own task does it: the wait for the client's next bytes ends, as if the client had
        closed. A connection caught between reading bytes and handling them is left alone
        (they are a request, so it is busy at once).
        """
        if self.idle_since is not None:
            trio.lowlevel.notify_closing(self._socket)
