"""The fence: the one place plugin code is run, at load time and at call time.

Whatever a plugin does (raise, hang, block, return garbage, flood) comes out of here as a
clean, attributed outcome: a :class:`HookOutcome` at load time, and at call time either
the function's value or a :class:`FenceError` whose message is safe to show a client.
Unexpected exceptions are logged here with their traceback and an error id; the client
sees the id, never the traceback. Sync functions run in worker threads that hold a token
of the tool's pool until they really end, so a blocked plugin exhausts only its own pool.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from mcp.server.mcpserver.exceptions import ToolError as SdkToolError
from mcp.shared.exceptions import MCPError

from mcphost.core.errors import ToolError
from mcphost.plugins.limits import ToolLimits

log = structlog.get_logger("mcphost.fence")


class FenceError(Exception):
    """A call did not produce a value; ``str(self)`` is safe to show the client."""

    status = "error"


class CallTimeout(FenceError):
    """The call overran its timeout and was cancelled (or, in a thread, abandoned)."""

    status = "timeout"


class CallFailed(FenceError):
    """The plugin raised: its own ``ToolError`` message, or an error id for anything else."""


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """One plugin's answer to one hook at load time: a value, or the error that replaced it."""

    value: Any = None
    error: str | None = None


async def call_hook(
    plugin: str, hook: str, fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float
) -> HookOutcome:
    """Run one plugin's hook implementation; never raises (except cancellation of the caller)."""
    try:
        with trio.fail_after(timeout):
            value = fn(**kwargs)
            if inspect.isawaitable(value):
                value = await value
        return HookOutcome(value)
    except trio.TooSlowError:
        return HookOutcome(error=f"{hook} did not finish within {timeout:g}s")
    except (Exception, SystemExit) as error:
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
    except (Exception, SystemExit) as error:
        log.error("plugin hook failed", plugin=plugin, hook=hook, exc_info=error)
        return HookOutcome(error=f"{hook} raised {type(error).__name__}: {error}")


async def run(fn: Callable[..., Any], kwargs: dict[str, Any], limits: ToolLimits, *, plugin: str, what: str) -> Any:
    """Run ``fn(**kwargs)`` under ``limits``; returns its value or raises :class:`FenceError`.

    ``what`` names the call in messages ("tool 'files_read'"). Waiting for a pool token
    counts against the timeout: a saturated plugin answers with a timeout, not a pile-up.
    """
    try:
        with trio.move_on_after(limits.timeout):
            if _is_async(fn):
                async with limits.pool:
                    return await fn(**kwargs)
            # A thread cannot be cancelled: on timeout it is abandoned, and the pool token
            # stays with it until it returns, so a wedged plugin starves only itself.
            return await trio.to_thread.run_sync(
                functools.partial(fn, **kwargs), abandon_on_cancel=True, limiter=limits.pool
            )
    except (ToolError, SdkToolError) as error:
        raise CallFailed(f"{what} failed: {error}") from None
    except MCPError:
        raise
    except (Exception, SystemExit) as error:
        error_id = uuid.uuid4().hex[:12]
        log.error("plugin raised", plugin=plugin, call=what, error_id=error_id, exc_info=error)
        raise CallFailed(f"{what} failed with an internal error (error id {error_id})") from None
    # Only a timeout leaves the block without returning.
    raise CallTimeout(f"{what} timed out after {limits.timeout:g}s and was cancelled")


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
