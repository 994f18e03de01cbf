"""A worker's sync tools without a ``ToolContext``, run on plain threads that write their
own replies.

Such a call needs nothing of the event loop while it runs, and the loop's round trip to a
thread and back (``trio.to_thread``) costs more than the whole hop between daemon and
worker. So the loop only takes the call's tokens (a call whose tokens are not free waits in
line behind the others here, or, when none of them runs to give tokens back, takes the
fenced path, which queues it), hands it to a thread, and keeps its deadline; the thread
validates, runs, converts and measures as the fence does, and sends the reply itself (while
other calls run, at the loop's next flush, so that answers under load leave in one send).
Whichever comes first answers the call: the thread's reply, the timeout, or the daemon's
cancellation; the thread keeps its tokens until it really ends, as a fenced thread does.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
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


@dataclass
class ThreadCalls:
    """The calls of a worker running on plain threads, those waiting for their tokens, and
    the task that times them out."""

    channel: Channel
    threads: int
    """The most threads (the process's budget: every call holds one of its tokens)."""
    fenced: Callable[[Message], None]
    """Runs a request in the fence instead (which queues it for its tokens)."""
    _pool: concurrent.futures.ThreadPoolExecutor = field(init=False)
    _calls: dict[Any, _Call] = field(init=False, default_factory=dict)
    _waiting: collections.deque[_Call] = field(init=False, default_factory=collections.deque)
    _running: int = field(init=False, default=0)
    _by_timeout: dict[float, collections.deque[_Call]] = field(init=False, default_factory=dict)
    _answering: threading.Lock = field(init=False, default_factory=threading.Lock)
    _changed: trio.Event = field(init=False, default_factory=trio.Event)
    _trio: trio.lowlevel.TrioToken = field(init=False)
    _borrowers: itertools.count[int] = field(init=False, default_factory=itertools.count)
    _waking_at: float = field(init=False, default=-math.inf)
    """When :meth:`expire` wakes next (``-inf`` until it first sleeps)."""

    def __post_init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="mcphost-call")
        self._trio = trio.lowlevel.current_trio_token()

    def start(self, message: Message, tool: RegisteredTool, arguments: Message, meta: Message) -> bool:
        """Run the call ``message`` on a thread once its tokens are free; ``False`` when they
        are not and no call here will give any back (the fence then queues it)."""
        limits = tool.limits
        tokens = fence.Tokens(limits.pool, limits.threads)
        deadline = trio.current_time() + limits.timeout
        request_id = message["id"]
        call = _Call(request_id, tool, deadline, tokens, next(self._borrowers), message, arguments, meta)
        if self._waiting or not tokens.acquire_nowait(call.borrower):
            if not self._running:
                return False
            self._waiting.append(call)
        else:
            self._launch(call)
        self._by_timeout.setdefault(limits.timeout, collections.deque()).append(call)
        if call.deadline < self._waking_at:
            self._changed.set()
        self._calls[request_id] = call
        return True

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
            earliest = math.inf
            for queue in self._by_timeout.values():
                while queue and (queue[0].answered or queue[0].deadline <= now):
                    call = queue.popleft()
                    if not call.answered:
                        limits, what = call.tool.limits, f"tool {call.tool.name!r}"
                        short = not call.started and limits.pool.available_tokens > 0
                        error = fence.overran(limits, what, waiting_for_thread=short)
                        self._answer(call, {"status": error.status, "message": str(error)})
                        if not call.started:
                            del self._calls[call.request_id]
                if queue:
                    earliest = min(earliest, queue[0].deadline)
            # Calls that end leave the wake-up where it was: a stale one finds nothing due.
            self._waking_at = earliest
            with trio.move_on_at(earliest):
                await self._changed.wait()
            self._changed = trio.Event()

    def _launch(self, call: _Call) -> None:
        call.started = True
        self._running += 1
        self._pool.submit(self._run, call)

    def _answer(self, call: _Call, reply: Message, *, later: bool = False) -> None:
        with self._answering:
            if call.answered:
                return
            call.answered = True
        self.channel.respond(call.request_id, reply, later=later)

    def _run(self, call: _Call) -> None:
        tool, meta = call.tool, call.meta
        record = logs.RequestRecord(request_id=str(meta.get("id", call.request_id)), session_id=meta.get("session"))
        token = logs.current_request.set(record)
        try:
            try:
                reply = _call(tool, call.arguments)
            finally:
                logs.current_request.reset(token)
                check_std_streams(tool.plugin, f"tool {tool.name!r}")
            # While other calls run, the answer waits for the loop's flush in _ended, which
            # sends every answer ready by then at once.
            self._answer(call, reply, later=self._running > 1)
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                self._trio.run_sync_soon(self._ended, call)

    def _ended(self, call: _Call) -> None:
        """On the loop: the call's thread is done; give back its tokens, start the calls
        waiting for them, forget answered calls."""
        self.channel.flush()
        call.tokens.release_on_behalf_of(call.borrower)
        self._running -= 1
        if self._calls.get(call.request_id) is call:
            del self._calls[call.request_id]
        while self._waiting:
            waiting = self._waiting[0]
            if not waiting.answered:
                if not waiting.tokens.acquire_nowait(waiting.borrower):
                    break
                self._launch(waiting)
            self._waiting.popleft()
        if not self._running:
            # No call here will give tokens back (fenced calls hold them): the fence queues the rest.
            for waiting in self._waiting:
                if not waiting.answered:
                    waiting.answered = True
                    del self._calls[waiting.request_id]
                    self.fenced(waiting.message)
            self._waiting.clear()
        queue = self._by_timeout[call.tool.limits.timeout]
        while queue and queue[0].answered:
            queue.popleft()


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
        outcome, result = results.convert(fn_meta.convert_result, tool.fn(**kwargs), limit=tool.limits.max_result_bytes)
    except (ToolError, SdkToolError) as error:
        return {"status": "error", "message": f"{what} failed: {error}"}
    except client_input.InputRequired:
        return {"status": "input_required"}
    except MCPError as error:
        return {"status": "error", "message": error.error.message, "code": error.error.code}
    except BaseException as error:
        return {"status": "error", "message": str(fence.failure(error, tool.plugin, what))}
    return reply_of(tool, outcome, result)
