"""A worker's sync tools without a ``ToolContext``, run on plain threads that write their
own replies.

Such a call needs nothing of the event loop while it runs, and the loop's round trip to a
thread and back (``trio.to_thread``) costs more than the whole hop between daemon and
worker. So the loop only takes the call's tokens (a call whose tokens are not free waits in
line behind the others here, or, when none of them runs to give tokens back, takes the
fenced path, which queues it), hands it to an idle thread of its own, and keeps its
deadline; the thread validates, runs, converts and measures as the fence does, and sends
the reply itself (while other calls run, at the loop's next flush, so that answers under
load leave in one send). Whichever comes first answers the call: the thread's reply, the
timeout, or the daemon's cancellation; the thread keeps its tokens until it really ends, as
a fenced thread does.

A thread that ends does not wake the loop to give its tokens back: the loop takes back the
tokens of the calls that ended the next time it looks (the next call, say), and is woken
only when a call waits for them or replies wait for its flush. At one call at a time the
event loop then wakes once per call, for the request, and the thread once, for its run; and
it is always the same thread (the one that ran the last call, whose state is still in the
CPU's caches), however many an earlier burst of calls started.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio
from mcp.server.mcpserver.exceptions import ToolError as SdkToolError
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcphost.core.errors import ToolError
from mcphost.ops import log as logs
from mcphost.plugins import client_input, fence, results
from mcphost.plugins.damage import check_std_streams
from mcphost.plugins.registry import RegisteredTool, invalid_arguments
from mcphost.plugins.worker.ticks import at_batch_end
from mcphost.plugins.worker.wire import Channel, Message

log = structlog.get_logger("mcphost.worker")


def reply_of(tool: RegisteredTool, outcome: str, result: Any) -> Message:
    """What the daemon is told of a call whose value was shaped (:func:`results.convert`)."""
    if outcome != "ok":
        message, status = results.refusal(tool, outcome, result)
        return {"status": status, "message": message}
    return {"status": "ok", "result": result.model_dump(mode="json", by_alias=True, exclude_none=True)}


def on_thread(tool: RegisteredTool) -> bool:
    """Whether calls of ``tool`` take this path."""
    return tool.context_param is None and not fence.is_async(tool.fn)


@dataclass(eq=False)
class _Call:
    request_id: Any
    tool: RegisteredTool
    deadline: float
    tokens: fence.Tokens
    borrower: int
    message: Message
    arguments: Message
    meta: Message
    started: bool = False
    answered: bool = False


@dataclass(eq=False)
class _Seat:
    """Where a parked thread waits for its next call."""

    wake: threading.Lock = field(default_factory=threading.Lock)
    """Held but while the thread is woken: released, :attr:`call` set, to wake it."""
    call: _Call | None = None


@dataclass
class ThreadCalls:
    """The calls of a worker running on plain threads, those waiting for their tokens, and
    the task that times them out."""

    channel: Channel
    threads: int
    """The most threads (the process's budget: every call holds one of its tokens)."""
    fenced: Callable[[Message], None]
    """Runs a request in the fence instead (which queues it for its tokens)."""
    _jobs: collections.deque[_Call] = field(init=False, default_factory=collections.deque)
    """Calls handed over when no thread was parked: a thread ending its call takes them."""
    _parked: list[_Seat] = field(init=False, default_factory=list)
    """The threads waiting for a call, the one parked last at the end."""
    _finishing: int = field(init=False, default=0)
    """Threads counted idle that have not yet taken a call from :attr:`_jobs` or parked."""
    _calls: dict[Any, _Call] = field(init=False, default_factory=dict)
    _waiting: collections.deque[_Call] = field(init=False, default_factory=collections.deque)
    _running: int = field(init=False, default=0)
    """Calls started whose tokens the loop has not taken back yet."""
    _deadlines: list[tuple[float, int, _Call]] = field(init=False, default_factory=list)
    """The calls not yet known answered, by deadline (a heap: a call that waited in the daemon
    for its slot has only the rest of its timeout, so calls do not come in deadline order)."""
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    """Held by the loop and the threads around what both read: whether a call is answered,
    the calls that ended, the threads idle and busy, whether calls wait for tokens."""
    _ended: list[_Call] = field(init=False, default_factory=list)
    """Calls whose threads ended, their tokens not yet taken back (:meth:`_reap`)."""
    _busy: int = field(init=False, default=0)
    """Threads running a call now."""
    _idle: int = field(init=False, default=0)
    """Threads waiting for a call, less those the loop has just handed one."""
    _started_threads: int = field(init=False, default=0)
    _new_threads: int = field(init=False, default=0)
    """Threads to start, for calls that found none idle."""
    _handing: list[_Call] = field(init=False, default_factory=list)
    """Calls to hand to the threads at the end of the scheduler tick."""
    _fencing: int = field(init=False, default=0)
    """Requests the loop serves now (:meth:`fencing`)."""
    _changed: trio.Event = field(init=False, default_factory=trio.Event)
    _trio: trio.lowlevel.TrioToken = field(init=False)
    _borrowers: itertools.count[int] = field(init=False, default_factory=itertools.count)
    _waking_at: float = field(init=False, default=-math.inf)
    """When :meth:`expire` wakes next (``-inf`` until it first sleeps)."""

    def __post_init__(self) -> None:
        self._trio = trio.lowlevel.current_trio_token()

    def start(self, message: Message, tool: RegisteredTool, arguments: Message, meta: Message) -> bool:
        """Run the call ``message`` on a thread once its tokens are free; ``False`` when they
        are not and no call here will give any back (the fence then queues it)."""
        self._reap()
        limits = tool.limits
        tokens = fence.Tokens(limits.pool, limits.threads)
        # A call that waited in the daemon for a slot of its pool has the rest of its timeout.
        deadline = trio.current_time() + float(meta.get("budget", limits.timeout))
        request_id = message["id"]
        call = _Call(request_id, tool, deadline, tokens, next(self._borrowers), message, arguments, meta)
        if self._waiting or not tokens.acquire_nowait(call.borrower):
            if not self._running:
                return False
            with self._lock:
                self._waiting.append(call)
                missed = bool(self._ended)
            if missed:  # a thread ended since the reap above, and saw no call waiting
                self._reap()
        else:
            self._launch(call)
        heapq.heappush(self._deadlines, (deadline, call.borrower, call))
        if call.deadline < self._waking_at:
            self._changed.set()
        self._calls[request_id] = call
        return True

    def fencing(self) -> None:
        """Before a request the loop serves (in the fence, which may wait for the tokens that
        calls here hold): until :meth:`fenced_done`, a thread that ends wakes the loop to
        give its tokens back at once. (A pair of calls, not a context manager: it is paid
        on every request.)"""
        with self._lock:
            self._fencing += 1
            # Taken back after the count is up: a thread that ended before it is reaped
            # here, one that ends after it sees the count.
            ended = bool(self._ended)
        if ended:
            self._reap()

    def fenced_done(self) -> None:
        """After a request the loop served (see :meth:`fencing`)."""
        with self._lock:
            self._fencing -= 1

    def cancel(self, request_id: Any) -> bool:
        """The daemon cancelled ``request_id``: answer it so, if it is a call here."""
        call = self._calls.get(request_id)
        if call is None:
            return False
        self._answer(call, {"status": "cancelled", "message": f"tool {call.tool.name!r} was cancelled"})
        if not call.started:
            del self._calls[request_id]
        return True

    async def expire(self) -> None:
        """Answer the calls that overran their timeout (their threads run on), until cancelled."""
        while True:
            now = trio.current_time()
            deadlines = self._deadlines
            while deadlines and (deadlines[0][2].answered or deadlines[0][0] <= now):
                call = heapq.heappop(deadlines)[2]
                if not call.answered:
                    limits, what = call.tool.limits, f"tool {call.tool.name!r}"
                    short = not call.started and limits.pool.available_tokens > 0
                    error = fence.overran(limits, what, waiting_for_thread=short)
                    self._answer(call, {"status": error.status, "message": str(error)})
                    if not call.started:
                        del self._calls[call.request_id]
            earliest = deadlines[0][0] if deadlines else math.inf
            # Calls that end leave the wake-up where it was: a stale one finds nothing due.
            self._waking_at = earliest
            with trio.move_on_at(earliest):
                await self._changed.wait()
            self._changed = trio.Event()

    def _launch(self, call: _Call) -> None:
        call.started = True
        self._running += 1
        with self._lock:
            self._busy += 1
            if self._idle:
                self._idle -= 1
            else:
                self._new_threads += 1
        # Handed over as the loop goes to sleep: the thread then finds the GIL free.
        if not self._handing:
            at_batch_end(self._hand_over)
        self._handing.append(call)

    def _hand_over(self) -> None:
        handing, self._handing = self._handing, []
        for call in handing:
            with self._lock:
                # A thread ending its call takes it without being woken; else the thread
                # parked last: at one call at a time every call then runs on one thread,
                # whose stack and state are still in the CPU's caches.
                seat = None
                if self._finishing <= len(self._jobs) and self._parked:
                    seat = self._parked.pop()
                else:  # for a thread ending its call, or a new one
                    self._jobs.append(call)
            if seat is not None:
                seat.call = call
                seat.wake.release()
        while self._new_threads:
            self._new_threads -= 1
            self._started_threads += 1
            threading.Thread(target=self._serve, name=f"mcphost-call-{self._started_threads}", daemon=True).start()

    def _answer(self, call: _Call, reply: Message, *, later: bool = False) -> None:
        with self._lock:
            if call.answered:
                return
            call.answered = True
        self.channel.respond(call.request_id, reply, later=later)

    def _serve(self) -> None:
        """A thread's life: run the calls it is handed, one at a time."""
        seat, finishing = _Seat(), False
        seat.wake.acquire()
        while True:
            with self._lock:
                self._finishing -= finishing
                call = self._jobs.popleft() if self._jobs else None
                if call is None:
                    self._parked.append(seat)
            if call is None:
                seat.wake.acquire()
                call, seat.call = seat.call, None
                assert call is not None
            try:
                self._run(call)  # counts this thread finishing as it ends
            except Exception:  # the thread stays, counted idle, for the next call
                log.exception("a call's thread failed", tool=call.tool.name)
            finishing = True

    def _run(self, call: _Call) -> None:
        tool, meta = call.tool, call.meta
        record = logs.RequestRecord(request_id=str(meta.get("id", call.request_id)), session_id=meta.get("session"))
        token = logs.current_request.set(record)
        reply: Message | None = None
        try:
            try:
                reply = _call(tool, call.arguments)
            finally:
                logs.current_request.reset(token)
                check_std_streams(tool.plugin, f"tool {tool.name!r}")
        finally:
            # Counted idle before its answer leaves: the call the daemon sends on that answer
            # then goes to this thread rather than to a new one.
            with self._lock:
                self._busy -= 1
                self._idle += 1
                self._finishing += 1
                self._ended.append(call)
                others = self._busy > 0
            if reply is not None:
                # While other calls run, the answer waits for the flush it asks of the loop
                # below, which sends every answer ready by then at once.
                self._answer(call, reply, later=others)
            with self._lock:
                wake = bool(self._waiting or self._fencing) or self.channel.queued
            if wake:
                with contextlib.suppress(trio.RunFinishedError):
                    self._trio.run_sync_soon(self._reap)

    def _reap(self) -> None:
        """On the loop: take back the tokens of the calls whose threads ended, start the calls
        waiting for them, forget answered calls, send the answers waiting for a flush."""
        with self._lock:
            ended, self._ended = self._ended, []
        self.channel.flush()
        for call in ended:
            call.tokens.release_on_behalf_of(call.borrower)
            self._running -= 1
            if self._calls.get(call.request_id) is call:
                del self._calls[call.request_id]
        while self._deadlines and self._deadlines[0][2].answered:
            heapq.heappop(self._deadlines)
        while self._waiting:
            waiting = self._waiting[0]
            if not waiting.answered:
                if not waiting.tokens.acquire_nowait(waiting.borrower):
                    break
                self._launch(waiting)
            with self._lock:
                self._waiting.popleft()
        if not self._running:
            # No call here will give tokens back (fenced calls hold them): the fence queues the rest.
            with self._lock:
                waiting_calls, self._waiting = list(self._waiting), collections.deque()
            for waiting in waiting_calls:
                if not waiting.answered:
                    waiting.answered = True
                    del self._calls[waiting.request_id]
                    self.fenced(waiting.message)


def _call(tool: RegisteredTool, arguments: Message) -> Message:
    """Validate, run, convert and measure, in this thread: what the fence does around a sync tool."""
    assert tool.sdk_tool is not None
    fn_meta = tool.sdk_tool.fn_metadata
    what = f"tool {tool.name!r}"
    try:
        try:
            kwargs = fn_meta.validate_arguments(arguments)
        except ValidationError as error:
            return {"status": "invalid_arguments", "message": invalid_arguments(tool.name, error)}
        # The daemon measures the result it gets, whole (it does not trust this process to).
        limit = tool.limits.max_result_bytes
        outcome, result = results.convert(fn_meta.convert_result, tool.fn(**kwargs), limit=limit, whole=False)
    except (ToolError, SdkToolError) as error:
        return {"status": "error", "message": f"{what} failed: {error}"}
    except client_input.InputRequired:
        return {"status": "input_required"}
    except MCPError as error:
        return {"status": "error", "message": error.error.message, "code": error.error.code}
    except BaseException as error:
        return {"status": "error", "message": str(fence.failure(error, tool.plugin, what))}
    return reply_of(tool, outcome, result)
