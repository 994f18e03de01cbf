"""The wire between the daemon and a plugin's worker: JSON-RPC 2.0, one message per line
(MCP's stdio framing), over a socket pair; the same code on both ends.

Messages are encoded and read with orjson (stdlib ``json`` costs a fifth of a call's
budget), and with the standard library where orjson would lose or refuse something (see
:func:`encode` and :func:`decode`), so a worker's plugin gets what an inline one gets. The
event loop's frames are sent when its tasks runnable now have run, just before it waits for
I/O (:func:`at_batch_end`): one system call for every frame of a scheduler tick, and the
other end, woken by it, finds this end's loop asleep instead of taking the CPU from it
mid-tick (daemon and worker often share one). Threads may send too (a worker's sync calls
answer from their own threads): at once when nothing is queued, else through a writer
task, which also sends what the socket did not take at once. Queued frames go out with one
``sendmsg`` of many buffers, never joined: what the socket does not take stays queued as
it is, so a backlog costs what is sent of it, however slowly the other end reads.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import outcome
import trio

from mcphost.core.errors import INTERNAL_ERROR
from mcphost.plugins.worker.ticks import at_batch_end

Message = dict[str, Any]
RequestHandler = Callable[[Message], Awaitable[None]]
"""Called (in a task of its own) with each request that arrives; it answers with :meth:`Channel.respond`."""
NotificationHandler = Callable[[Message], Awaitable[None]]
"""Called (in a task of its own) with each notification that arrives."""
RequestTaker = Callable[[Message], bool]
"""Called first, on the event loop, with each request that arrives: ``True`` when it took the
request on (and will answer it) without a task."""

_READ_SIZE = 1 << 18
_BUFFERS_PER_SEND = 1024
"""The most buffers one ``sendmsg`` is given (Linux's ``IOV_MAX``)."""


class ChannelClosed(Exception):
    """The other end went away (or this end was closed) before the answer came."""


class RemoteError(Exception):
    """The other end answered a request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.data = data


def encode(message: Message) -> bytes:
    """One frame: the message and its newline. A value orjson does not take (an integer past
    64 bits, which JSON allows and a client may send) goes through the standard library."""
    try:
        return orjson.dumps(message) + b"\n"
    except TypeError:
        return json.dumps(message, separators=(",", ":")).encode() + b"\n"


_DIGITS = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_RUN = b"0" * 19
"""As many digits as the shortest integer past 64 bits (``-9223372036854775809``) has."""


def decode(frame: bytes) -> Any:
    """The value of one frame, exactly as the standard library reads it: with orjson, unless
    the frame holds a run of 19 digits or more (orjson rounds an integer past 64 bits to a
    float, where an inline plugin gets the exact int) or is what orjson refuses and
    :func:`encode`'s fallback may write (a lone surrogate, say); raises ValueError on what is
    not JSON."""
    # 19 digits in a row hold two of every 9th byte, one after the other: those bytes alone
    # are looked at first, and the whole frame only when two of them in a row are digits.
    if b"00" not in frame[::9].translate(_DIGITS) or _LONG_RUN not in frame.translate(_DIGITS):
        try:
            return orjson.loads(frame)
        except orjson.JSONDecodeError:
            pass
    return json.loads(frame)


def request(request_id: int, method: str, params: Message) -> Message:
    """A JSON-RPC request."""
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def notification(method: str, params: Message | None = None) -> Message:
    """A JSON-RPC notification (``params`` left out when there are none)."""
    message: Message = {"jsonrpc": "2.0", "method": method}
    return message if params is None else message | {"params": params}


def response(request_id: Any, result: Any) -> Message:
    """The answer to the request ``request_id``."""
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> Message:
    """The refusal of the request ``request_id``."""
    error = {"code": code, "message": message} if data is None else {"code": code, "message": message, "data": data}
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def result_of(reply: Message) -> Any:
    """The result of an answer to a request; raises :class:`RemoteError` when it is an error.

    The other end may be a hosted server we do not control: an error that is not a JSON-RPC
    error object, or whose code is not an integer, is an internal error (its value is not
    repeated), never an exception of another kind in the daemon."""
    if "error" not in reply:
        return reply.get("result")
    error = reply["error"]
    if not isinstance(error, dict):
        raise RemoteError(INTERNAL_ERROR, "it answered with an error that is not a JSON-RPC error object")
    code = error_code(error.get("code"))
    raise RemoteError(INTERNAL_ERROR if code is None else code, str(error.get("message", "")), error.get("data"))


def error_code(value: Any) -> int | None:
    """``value`` if it can be a JSON-RPC error code (an integer; JSON's ``true`` is not one), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Framer:
    """Splits received bytes into messages; a partial line waits for the rest, kept as the
    chunks it came in and joined once, when its newline comes (joining it again with each
    chunk would cost the square of its length). ``limit`` bounds one message's length, so
    what the other end sends without a newline cannot take this end's memory; by default
    there is none (a worker reading the daemon, which it trusts).

    A line that is not a JSON object is an error, unless ``stray`` is given: it is handed
    each such line, and reading goes on (an existing MCP server that prints a banner to its
    stdout, which MCP's own stdio clients skip too)."""

    def __init__(self, limit: int = sys.maxsize, stray: Callable[[bytes], None] | None = None) -> None:
        self._limit = limit
        self._stray = stray
        self._partial: list[bytes] = []
        self._waiting = 0
        """The bytes of the partial line."""

    def feed(self, data: bytes) -> list[Message]:
        """The complete messages that ``data`` finishes; raises ValueError on a line longer
        than the limit, or one that is not a JSON object (without ``stray``)."""
        return [message for message, _ in self.frames(data)]

    def frames(self, data: bytes) -> list[tuple[Message, int]]:
        """As :meth:`feed`, each message with the length of its line."""
        lines, limit = data.split(b"\n"), self._limit
        # Only when what waits and this chunk together pass the limit can a line be over it.
        if self._waiting + len(data) > limit and max(self._waiting + len(lines[0]), *map(len, lines)) > limit:
            raise ValueError(f"a message longer than {limit} bytes, the most one may hold")
        if len(lines) == 1:
            self._partial.append(data)
            self._waiting += len(data)
            return []
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial.clear()
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        self._waiting = len(tail)
        if self._stray is not None:
            return self._skipping_strays(lines, self._stray)
        frames = [(decode(line), len(line)) for line in lines if line.strip()]
        if not all(isinstance(m, dict) for m, _ in frames):
            raise ValueError("a frame is not a JSON object")
        return frames

    @staticmethod
    def _skipping_strays(lines: list[bytes], stray: Callable[[bytes], None]) -> list[tuple[Message, int]]:
        frames = []
        for line in lines:
            if not line.strip():
                continue
            try:
                message = decode(line)
            except ValueError:
                message = None
            if isinstance(message, dict):
                frames.append((message, len(line)))
            else:
                stray(line)
        return frames


class Handling:
    """The other end's requests and notifications a :class:`Channel` is handling: at most
    ``count`` of them, their frames ``size`` bytes together (one fits whatever its size when
    none is being handled, or a message up to the channel's bound could never be)."""

    def __init__(self, count: int, size: int):
        self.count, self.size = count, size
        self.messages = self.bytes = 0
        self._room = trio.lowlevel.ParkingLot()

    def fits(self, size: int) -> bool:
        """Whether a message of ``size`` bytes may be handled now."""
        return not self.messages or (self.messages < self.count and self.bytes + size <= self.size)

    async def wait(self, size: int) -> None:
        """Until a message of ``size`` bytes fits (one task waits: the channel's reader)."""
        while not self.fits(size):
            await self._room.park()

    def take(self, size: int) -> None:
        """A message of ``size`` bytes is being handled."""
        self.messages += 1
        self.bytes += size

    def give(self, size: int) -> None:
        """A message of ``size`` bytes is handled."""
        self.messages -= 1
        self.bytes -= size
        self._room.unpark_all()


class Channel:
    """One end of the wire: requests matched to answers by id, notifications, and requests
    from the other end handed to ``on_request``; ``max_message`` bounds the length of a
    message the other end sends, and ``stray`` is handed the lines that are not messages
    (see :class:`Framer`). With ``max_handling``, at most that many of the other end's
    requests and notifications are handled at once, their frames ``max_handling_bytes``
    together (see :class:`Handling`): past it, nothing more is read from it until one is
    done, so an end that sends them without end, or big ones to a client that reads slowly,
    is held up by its own full socket, not answered by ever more tasks and memory on this one."""

    def __init__(
        self,
        sock: socket.socket,
        on_request: RequestHandler | None = None,
        on_notification: NotificationHandler | None = None,
        take: RequestTaker | None = None,
        max_message: int = sys.maxsize,
        stray: Callable[[bytes], None] | None = None,
        max_handling: int | None = None,
        max_handling_bytes: int = sys.maxsize,
    ):
        sock.setblocking(False)
        self.sock = sock
        self.on_request = on_request
        self.on_notification = on_notification
        self.take = take
        self.max_message = max_message
        self.stray = stray
        self.closed = False
        self.broken: str | None = None
        self._handling = Handling(max_handling, max_handling_bytes) if max_handling is not None else None
        self.held_back = 0
        """Times reading stopped for ``max_handling`` or ``max_handling_bytes`` (counting the one going on, if any)."""
        self.holding_back = False
        """Whether reading waits for a request or notification to be handled now."""
        self._ids = itertools.count(1)
        self._pending: dict[int, trio.lowlevel.Task] = {}
        self._queue: deque[bytes | memoryview] = deque()
        self._queuing = threading.Lock()
        """Held while the queue is read or written, or a frame is being sent past it."""
        self._writer: trio.lowlevel.Task | None = None
        self._sending = False
        """Whether :meth:`_send_queued` is due at the end of this scheduler tick."""
        self._trio: trio.lowlevel.TrioToken | None = None
        self._loop_thread = threading.get_ident()

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and dispatch until the other end closes or sends a frame that is garbage or
        too long (``broken`` then says what was wrong); then every request waiting for an
        answer raises :class:`ChannelClosed`."""
        try:
            self._trio = trio.lowlevel.current_trio_token()
            self._loop_thread = threading.get_ident()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                task_status.started()
                framer = Framer(self.max_message, self.stray)
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
                        frames = framer.frames(data)
                    except ValueError as error:
                        self.broken = f"it sent what is not JSON-RPC: {error}"
                        break
                    for message, size in frames:
                        if self._handling is not None and "method" in message:
                            await self._handling_room(self._handling, size)
                        self._dispatch(message, size, nursery)
                nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            pending, self._pending = self._pending, {}
            for task in pending.values():
                trio.lowlevel.reschedule(task, outcome.Error(ChannelClosed("the other end closed the connection")))

    async def _handling_room(self, handling: Handling, size: int) -> None:
        if not handling.fits(size):
            self.held_back += 1
            self.holding_back = True
            try:
                await handling.wait(size)
            finally:
                self.holding_back = False
        handling.take(size)

    def _dispatch(self, message: Message, size: int, nursery: trio.Nursery) -> None:
        if "method" not in message:
            task = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if task is not None:
                trio.lowlevel.reschedule(task, outcome.Value(message))
            return
        handler = self.on_request if "id" in message else self.on_notification
        if "id" in message and self.take is not None and self.take(message):
            handler = None
        if handler is None:
            if self._handling is not None:
                self._handling.give(size)
        elif self._handling is None:
            nursery.start_soon(handler, message)
        else:
            nursery.start_soon(self._handle, self._handling, handler, message, size)

    @staticmethod
    async def _handle(handling: Handling, handler: RequestHandler, message: Message, size: int) -> None:
        try:
            await handler(message)
        finally:
            handling.give(size)

    async def request(self, method: str, params: Message) -> Any:
        """Send a request and wait for its result; raises :class:`RemoteError` or
        :class:`ChannelClosed`. Cancelled, it tells the other end (``notifications/cancelled``)."""
        if self.closed:
            raise ChannelClosed("the connection is closed")
        request_id = self.start_request(method, params, trio.lowlevel.current_task())

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.abandon(request_id)
            return trio.lowlevel.Abort.SUCCEEDED

        return result_of(await trio.lowlevel.wait_task_rescheduled(abort))

    def start_request(self, method: str, params: Message, task: trio.lowlevel.Task) -> int:
        """Send a request on behalf of ``task``, which waits in ``wait_task_rescheduled``: its
        answer (or :class:`ChannelClosed`) reschedules it (see :func:`result_of`); the request's
        id. The channel must be open (on a closed one nothing would ever answer)."""
        request_id = next(self._ids)
        self.send(request(request_id, method, params))
        self._pending[request_id] = task
        return request_id

    def abandon(self, request_id: int) -> None:
        """Stop waiting for the answer to ``request_id``, and tell the other end (``notifications/cancelled``)."""
        self._pending.pop(request_id, None)
        self.notify("notifications/cancelled", {"requestId": request_id})

    def notify(self, method: str, params: Message) -> None:
        """Send a notification."""
        self.send(notification(method, params))

    def respond(self, request_id: Any, result: Any, *, later: bool = False) -> None:
        """Answer the other end's request ``request_id`` (``later``: see :meth:`send`)."""
        self.send(response(request_id, result), later=later)

    def respond_error(self, request_id: Any, code: int, message: str, data: Any = None) -> None:
        """Refuse the other end's request ``request_id``."""
        self.send(error_response(request_id, code, message, data))

    def send(self, message: Message, *, later: bool = False) -> None:
        """Send ``message``: from the event loop at the end of the scheduler tick; from any
        other thread now if the socket takes it, else through the writer task. With
        ``later`` it is queued until the next :meth:`flush` (from a thread whose caller
        flushes soon: one send for many)."""
        if self.closed:
            return
        data = encode(message)
        on_loop = self._trio is not None and threading.get_ident() == self._loop_thread
        with self._queuing:
            if later or on_loop:
                self._queue.append(data)
                if later:
                    return
            else:
                sent = 0
                if not self._queue:
                    try:
                        sent = self.sock.send(data)
                    except BlockingIOError:
                        pass
                    except OSError:  # the peer is gone; the reader sees it and ends the channel
                        return
                    if sent == len(data):
                        return
                self._queue.append(memoryview(data)[sent:] if sent else data)
        if on_loop:
            self.flush()
        elif self._trio is None:
            self._kick()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                self._trio.run_sync_soon(self._kick)

    @property
    def queued(self) -> bool:
        """Whether frames wait to be sent."""
        return bool(self._queue)

    def flush(self) -> None:
        """Send what is queued at the end of this scheduler tick (on the event loop)."""
        if self._queue and not self._sending:
            self._sending = True
            at_batch_end(self._send_queued)

    def _send_queued(self) -> None:
        self._sending = False
        if self._send_some() and self._trio is not None:  # the writer task waits until the socket takes the rest
            self._trio.run_sync_soon(self._kick)

    def _send_some(self) -> bool | None:
        """Send what is queued, as much as the socket takes now: whether some is left
        (``None``: the peer is gone, and the reader sees it and ends the channel)."""
        with self._queuing:
            queue = self._queue
            if not queue:
                return False
            try:
                if len(queue) == 1:
                    sent = self.sock.send(queue[0])
                else:
                    sent = self.sock.sendmsg(itertools.islice(queue, _BUFFERS_PER_SEND))
            except BlockingIOError:
                return True
            except OSError:
                return None
            # What is left of a frame stays first in the queue, so no frame is sent past it.
            while sent:
                if sent < len(queue[0]):
                    queue[0] = memoryview(queue[0])[sent:]
                    break
                sent -= len(queue.popleft())
            return bool(queue)

    def _kick(self) -> None:
        """Wake the writer task, if it is waiting (on the event loop)."""
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
            left = self._send_some()
            if left is None:
                return
            if left:
                await trio.lowlevel.wait_writable(self.sock)
