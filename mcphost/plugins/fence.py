"""The inline fence: the one place plugin code is run, at load time and at call time.

Whatever a plugin does (raise anything, hang, block, return garbage, flood) comes out of
here as a clean, attributed outcome: a :class:`HookOutcome` at load time, and at call time
either the function's value or a :class:`FenceError` whose message is safe to show a
client. Every exception is contained, ``BaseException`` included (``KeyboardInterrupt``,
``SystemExit``, ``GeneratorExit``); only the cancellation of the caller's own scopes
passes. Unexpected exceptions are logged here with their traceback and an error id; the
client sees the id, never the traceback. Sync functions run in worker threads that hold a
token of the tool's pool, one of its plugin's share of threads and one of the process's
thread budget (:class:`Tokens`) until they really end, so a blocked plugin exhausts only
its own pool and share, and all plugins together never start more threads than the budget.

Nothing here knows the daemon: a process that runs one plugin runs the same fence.
"""

from __future__ import annotations

import functools
import inspect
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
import trio
from mcp.server.mcpserver.exceptions import ToolError as SdkToolError
from mcp.shared.exceptions import MCPError

from mcphost.core.errors import ToolError
from mcphost.plugins.client_input import InputRequired
from mcphost.plugins.damage import after_call, on_loop
from mcphost.plugins.limits import ToolLimits, take

log = structlog.get_logger("mcphost.fence")


class FenceError(Exception):
    """A call did not produce a value; ``str(self)`` is safe to show the client."""

    status = "error"


class CallTimeout(FenceError):
    """The call overran its timeout and was cancelled (or, in a thread, abandoned)."""

    status = "timeout"


class CallCancelled(FenceError):
    """The caller cancelled the call through the cancel scope it gave the fence."""

    status = "cancelled"


class CallLimited(FenceError):
    """No thread came free within the call's timeout (its plugin's share, or the process's
    budget, all taken)."""

    status = "limited"


class CallFailed(FenceError):
    """The plugin raised: its own ``ToolError`` message, or an error id for anything else."""


class LoopStalled(BaseException):
    """Raised inside plugin code that held the event loop past the stall timeout (by
    :mod:`mcphost.plugins.watchdog`); not an ``Exception``, so a plugin's ``except
    Exception`` does not swallow it."""


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """One plugin's answer to one hook at load time: a value, or the error that replaced it."""

    value: Any = None
    error: str | None = None


class Tokens:
    """What one thread running plugin code holds until it really ends: a token of its
    ``pool`` (the call's slot), then one of each of ``threads`` (its plugin's share of
    threads, the process's budget).

    It is a limiter as :func:`trio.to_thread.run_sync` takes one; make one per call, since
    it remembers whether the call is still waiting for a thread.
    """

    def __init__(self, pool: trio.CapacityLimiter, threads: Sequence[trio.CapacityLimiter]):
        self.limiters = (pool, *threads)
        self.waiting_for_thread = False

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a token of each limiter in turn (giving back those taken if one fails)."""
        # All free, they are taken at once: a limiter's acquire takes a turn of the
        # scheduler even when it does not wait (a cancelled call still stops here). After a
        # wait for the pool the other acquires keep their turns: taken without them (one by
        # one with :func:`~mcphost.plugins.limits.take`), the event loop's thread was switched
        # out twice as often per call under load, and spent more CPU.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.acquire_nowait(borrower):
            return
        taken: list[trio.CapacityLimiter] = []
        try:
            for limiter in self.limiters:
                self.waiting_for_thread = bool(taken)
                await limiter.acquire_on_behalf_of(borrower)
                taken.append(limiter)
        except BaseException:
            for limiter in reversed(taken):
                limiter.release_on_behalf_of(borrower)
            raise
        self.waiting_for_thread = False

    def acquire_nowait(self, borrower: object) -> bool:
        """Take a token of each limiter if every one is free now (else take none)."""
        taken: list[trio.CapacityLimiter] = []
        for limiter in self.limiters:
            try:
                limiter.acquire_on_behalf_of_nowait(borrower)
            except trio.WouldBlock:
                for held in reversed(taken):
                    held.release_on_behalf_of(borrower)
                return False
            taken.append(limiter)
        return True

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give every token back (the thread has ended)."""
        for limiter in reversed(self.limiters):
            limiter.release_on_behalf_of(borrower)


async def in_thread(fn: Callable[[], Any], tokens: Tokens) -> Any:
    """``fn()`` in a worker thread holding ``tokens``; on cancellation the thread is
    abandoned (a thread cannot be cancelled) and keeps its tokens until it returns."""
    # Trio takes any object with the two limiter methods, though its type says CapacityLimiter.
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=cast(trio.CapacityLimiter, tokens))


def own_cancellation(error: BaseException) -> bool:
    """Whether ``error`` is the caller's own scopes being cancelled (the one exception a
    plugin's call lets through), not a ``Cancelled`` a plugin raised of its own accord."""
    return isinstance(error, trio.Cancelled) and trio.current_effective_deadline() == -math.inf


async def call_hook(
    plugin: str, hook: str, fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float, tokens: Tokens
) -> HookOutcome:
    """Run one plugin's hook implementation; never raises (except cancellation of the caller).

    A plain function runs in a thread holding ``tokens`` (the plugin's hook lane), so a hook
    that blocks holds up neither the event loop nor, past ``timeout``, its caller."""
    try:
        with trio.fail_after(timeout):
            if is_async(fn):
                with on_loop(plugin, hook):
                    value = await fn(**kwargs)
            else:
                value = await in_thread(functools.partial(fn, **kwargs), tokens)
                if inspect.isawaitable(value):
                    with on_loop(plugin, hook):
                        value = await value
        return HookOutcome(value)
    except trio.TooSlowError:
        return HookOutcome(error=f"{hook} did not finish within {timeout:g}s")
    except BaseException as error:
        if own_cancellation(error):
            raise
        log.error("plugin hook failed", plugin=plugin, hook=hook, exc_info=error)
        return HookOutcome(error=f"{hook} raised {type(error).__name__}: {error}")


def call_hook_sync(plugin: str, hook: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> HookOutcome:
    """Run a hook that must be synchronous (it builds definitions); never raises."""
    try:
        value = fn(**kwargs)
        if inspect.isawaitable(value):
            close = getattr(value, "close", None)
            if close:
                close()
            return HookOutcome(error=f"{hook} must be a plain function, not async")
        return HookOutcome(value)
    except BaseException as error:
        log.error("plugin hook failed", plugin=plugin, hook=hook, exc_info=error)
        return HookOutcome(error=f"{hook} raised {type(error).__name__}: {error}")


@dataclass(frozen=True, slots=True)
class Then:
    """A step applied to a call's value inside the same fenced run (a tool's value made its
    result, where a validator of the plugin's return type may run): ``fn(value)`` runs in the
    call's own thread after a sync function; after an async one it runs on the event loop
    when ``quick(value)`` says it may (still watched as the call), else in a thread."""

    fn: Callable[[Any], Any]
    quick: Callable[[Any], bool]


async def run(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    limits: ToolLimits,
    *,
    plugin: str,
    what: str,
    then: Then | None = None,
    budget: float | None = None,
    scope: trio.CancelScope | None = None,
) -> Any:
    """Run ``fn(**kwargs)`` (and ``then`` on its value) under ``limits``; returns the value
    or raises :class:`FenceError`.

    ``what`` names the call in messages ("tool 'files_read'"). Waiting for a pool token or a
    thread counts against the timeout: a saturated plugin answers with a timeout, not a
    pile-up, and a saturated process with a limit error. A call that already waited
    elsewhere for its slot has only ``budget``, the rest of its timeout (its messages still
    name the whole timeout). Standard streams the call closed are put back (and logged)
    whatever it did (in a worker, by the end of the loop's tick: :func:`damage.after_call`).

    ``scope``, a cancel scope of the caller's not yet entered, is the one the call runs in
    under its timeout, rather than one scope for each (a worker cancels its calls so): a
    call the caller cancels through it raises :class:`CallCancelled`.
    """
    timeout = limits.timeout if budget is None else min(budget, limits.timeout)
    if scope is None:
        scope = trio.move_on_after(timeout)
    else:
        scope.deadline = trio.current_time() + timeout
    try:
        return await _run(fn, kwargs, limits, scope, plugin=plugin, what=what, then=then)
    finally:
        after_call(plugin, what)


async def _run(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    limits: ToolLimits,
    scope: trio.CancelScope,
    *,
    plugin: str,
    what: str,
    then: Then | None,
) -> Any:
    tokens: Tokens | None = None  # only a thread holds them: an async call needs none
    try:
        with scope:
            if not is_async(fn):
                tokens = Tokens(limits.pool, limits.threads)
                # On timeout the thread is abandoned, and the pool token stays with it until
                # it returns, so a wedged plugin starves only itself.
                call = functools.partial(fn, **kwargs)
                return await in_thread(call if then is None else functools.partial(_then, then.fn, call), tokens)
            # A call that returns without awaiting runs in the task's first turn.
            await take(limits.pool)
            try:
                with on_loop(plugin, what):
                    value = await fn(**kwargs)
                    if then is None:
                        return value
                    if then.quick(value):
                        return then.fn(value)
            finally:
                limits.pool.release()
            tokens = Tokens(limits.pool, limits.threads)
            return await in_thread(functools.partial(then.fn, value), tokens)
    except (ToolError, SdkToolError) as error:
        raise CallFailed(f"{what} failed: {error}") from None
    except (MCPError, InputRequired):
        raise
    except LoopStalled as error:
        raise CallFailed(f"{what} {error} and was stopped") from None
    except BaseException as error:
        if own_cancellation(error):
            raise
        raise failure(error, plugin, what) from None
    # Only a timeout, or the caller's cancelling the scope before it, leaves the block without returning.
    if trio.current_time() < scope.deadline:
        raise CallCancelled(f"{what} was cancelled")
    raise overran(limits, what, waiting_for_thread=tokens is not None and tokens.waiting_for_thread)


def overran(limits: ToolLimits, what: str, *, waiting_for_thread: bool) -> FenceError:
    """The error of a call that reached its timeout: waiting for a thread, or (waiting for
    its pool, or running) a timeout."""
    if waiting_for_thread:
        plugin_share, budget = (t.total_tokens for t in limits.threads)
        return CallLimited(
            f"{what} found no free thread within {limits.timeout:g}s: its plugin's {plugin_share} "
            f"or all {budget} of the process's plugin threads are busy"
        )
    return CallTimeout(f"{what} timed out after {limits.timeout:g}s and was cancelled")


def _then(then: Callable[[Any], Any], call: Callable[[], Any]) -> Any:
    return then(call())


LOOP_CODES = frozenset({_run.__code__, call_hook.__code__})
"""The code of the fence's frames that plugin code on the event loop runs under: what the
loop-stall watchdog looks for on the main thread's stack (their ``plugin`` and ``what`` or
``hook`` name the call)."""


def failure(error: BaseException, plugin: str, what: str) -> CallFailed:
    """``error``, raised by ``plugin``'s code in ``what``, logged with its traceback under a
    new error id, as the error the client sees (the id, not the traceback)."""
    error_id = uuid.uuid4().hex[:12]
    log.error("plugin raised", plugin=plugin, call=what, error_id=error_id, exc_info=error)
    return CallFailed(f"{what} failed with an internal error (error id {error_id})")


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (it runs on the event loop, not in a thread)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
