"""The wire between the daemon and a plugin's worker: JSON-RPC 2.0, one message per line
(MCP's stdio framing), over a socket pair; the same code on both ends.

Messages are encoded with orjson (stdlib ``json`` costs a fifth of a call's budget). A
frame is sent at once when nothing is queued; under load, frames queue and a writer task
sends each scheduler tick's frames in one system call.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import outcome
import trio

Message = dict[str, Any]
RequestHandler = Callable[[Message], Awaitable[None]]
"""Called (in a task of its own) with each request that arrives; it answers with :meth:`Channel.respond`."""
NotificationHandler = Callable[[Message], Awaitable[None]]
"""Called (in a task of its own) with each notification that arrives."""

_READ_SIZE = 1 << 18


class ChannelClosed(Exception):
    """The other end went away (or this end was closed) before the answer came."""


class RemoteError(Exception):
    """The other end answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.data = data


def encode(message: Message) -> bytes:
    """One frame: the message and its newline."""
    return orjson.dumps(message) + b"\n"


class Framer:
    """Splits received bytes into messages; a partial line waits for the rest."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[Message]:
        """The complete messages that ``data`` finishes; raises ValueError on a frame that is not a JSON object."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        messages = [orjson.loads(line) for line in lines if line.strip()]
        if not all(isinstance(m, dict) for m in messages):
            raise ValueError("a frame is not a JSON object")
        return messages


class Channel:
    """One end of the wire: requests matched to answers by id, notifications, and requests
    from the other end handed to ``on_request``."""

    def __init__(
        self,
        sock: socket.socket,
        on_request: RequestHandler | None = None,
        on_notification: NotificationHandler | None = None,
    ):
        sock.setblocking(False)
        self.sock = sock
        self.on_request = on_request
        self.on_notification = on_notification
        self.closed = False
        self.broken: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, trio.lowlevel.Task] = {}
        self._queue: list[bytes] = []
        self._writer: trio.lowlevel.Task | None = None

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch until the other end closes or a frame is garbage (``broken``
        then says what was wrong); then every request waiting for an answer raises
        :class:`ChannelClosed`."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                task_status.started()
                framer = Framer()
                while True:
                    await trio.lowlevel.wait_readable(self.sock)
                    try:
                        data = self.sock.recv(_READ_SIZE)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:  # the peer died with our bytes unread: same as EOF
                        data = b""
                    if not data:
                        break
                    try:
                        messages = framer.feed(data)
                    except ValueError as error:
                        self.broken = f"it sent what is not JSON-RPC: {error}"
                        break
                    for message in messages:
                        self._dispatch(message, nursery)
                nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            pending, self._pending = self._pending, {}
            for task in pending.values():
                trio.lowlevel.reschedule(task, outcome.Error(ChannelClosed("the other end closed the connection")))

    def _dispatch(self, message: Message, nursery: trio.Nursery) -> None:
        if "method" not in message:
            task = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if task is not None:
                trio.lowlevel.reschedule(task, outcome.Value(message))
        elif "id" in message:
            if self.on_request is not None:
                nursery.start_soon(self.on_request, message)
        elif self.on_notification is not None:
            nursery.start_soon(self.on_notification, message)

    async def request(self, method: str, params: Message) -> Any:
        """Send a request and wait for its result; raises :class:`RemoteError` or
        :class:`ChannelClosed`. Cancelled, it tells the other end (``notifications/cancelled``)."""
        if self.closed:
            raise ChannelClosed("the connection is closed")
        request_id = next(self._ids)
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        self._pending[request_id] = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._pending.pop(request_id, None)
            self.notify("notifications/cancelled", {"requestId": request_id})
            return trio.lowlevel.Abort.SUCCEEDED

        reply: Message = await trio.lowlevel.wait_task_rescheduled(abort)
        if "error" in reply:
            error = reply["error"]
            raise RemoteError(error.get("code", 0), str(error.get("message", "")), error.get("data"))
        return reply.get("result")

    def notify(self, method: str, params: Message) -> None:
        """Send a notification."""
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def respond(self, request_id: Any, result: Any) -> None:
        """Answer the other end's request ``request_id``."""
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def respond_error(self, request_id: Any, code: int, message: str, data: Any = None) -> None:
        """Refuse the other end's request ``request_id``."""
        error = {"code": code, "message": message} if data is None else {"code": code, "message": message, "data": data}
        self.send({"jsonrpc": "2.0", "id": request_id, "error": error})

    def send(self, message: Message) -> None:
        """Send ``message`` now if the socket takes it, else queue it for the writer task."""
        if self.closed:
            return
        data = encode(message)
        if not self._queue:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the peer is gone; the reader sees it and ends the channel
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._queue.append(data)
        if self._writer is not None:
            task, self._writer = self._writer, None
            trio.lowlevel.reschedule(task)

    def _stop_waiting(self, _: Any) -> trio.lowlevel.Abort:
        self._writer = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def _write(self) -> None:
        while True:
            if not self._queue:
                self._writer = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._stop_waiting)
            # Let every task runnable in this tick add its frame first: one send for all.
            await trio.lowlevel.cancel_shielded_checkpoint()
            data = b"".join(self._queue)
            self._queue.clear()
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return
            if sent < len(data):
                self._queue.insert(0, data[sent:])
                await trio.lowlevel.wait_writable(self.sock)
