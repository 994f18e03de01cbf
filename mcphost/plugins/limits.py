"""Per-plugin and per-tool call limits: what they are for one tool, and the pools that enforce concurrency.

Precedence, last wins: ``[limits]``, then the author's ``@mcphost.tool(...)`` defaults,
then ``[plugins.<name>]``, then ``[plugins.<name>.tools.<tool>]``. An author may ask for more
than the global default (a slow tool), but whatever the sysadmin sets for the plugin or the
tool is final.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from mcphost.core.plugin_tables import DefaultLimits, LimitsConfig
from mcphost.plugins.definitions import ToolDef


@dataclass(frozen=True, slots=True)
class ToolLimits:
    """The limits one tool's calls run under."""

    timeout: float
    max_concurrency: int
    max_result_bytes: int
    pool: trio.CapacityLimiter
    """Calls (and their worker threads) hold a token of this pool while they run; it is the
    plugin's pool unless the tool has a concurrency limit of its own."""
    threads: tuple[trio.CapacityLimiter, trio.CapacityLimiter]
    """The plugin's share of threads and the process's thread budget: a sync call's thread
    holds a token of each too, so no author's ``max_concurrency`` starts more threads than
    the sysadmin allows."""

    @classmethod
    def resolve(
        cls,
        defaults: DefaultLimits,
        plugin: LimitsConfig,
        definition: ToolDef,
        tool: LimitsConfig | None,
        plugin_pool: trio.CapacityLimiter,
        threads: tuple[trio.CapacityLimiter, trio.CapacityLimiter],
    ) -> ToolLimits:
        """Combine the layers for one tool (see the module docstring for the order)."""
        layers = (defaults, definition, plugin, tool or LimitsConfig())
        values = {}
        for field in ("timeout", "max_concurrency", "max_result_bytes"):
            values[field] = next(v for layer in reversed(layers) if (v := getattr(layer, field)) is not None)
        own_pool = (definition.max_concurrency, (tool or LimitsConfig()).max_concurrency) != (None, None)
        pool = trio.CapacityLimiter(values["max_concurrency"]) if own_pool else plugin_pool
        return cls(pool=pool, threads=threads, **values)


def plugin_pool(defaults: DefaultLimits, plugin: LimitsConfig) -> trio.CapacityLimiter:
    """The concurrency pool shared by a plugin's tools."""
    return trio.CapacityLimiter(plugin.max_concurrency or defaults.max_concurrency)


_QUEUES: weakref.WeakKeyDictionary[trio.CapacityLimiter, deque[Any]] = weakref.WeakKeyDictionary()


def queue_of(limiter: trio.CapacityLimiter) -> deque[Any]:
    """The calls waiting for a token of ``limiter`` outside it, first come first served: whoever
    gives a token back hands it on to the first of them (a worker's calls, which
    :mod:`~mcphost.plugins.worker.supervisor` sends on their behalf)."""
    queue = _QUEUES.get(limiter)
    if queue is None:
        queue = _QUEUES[limiter] = deque()
    return queue


def waiting(limiter: trio.CapacityLimiter) -> int:
    """Calls waiting for a token of ``limiter``: in it, and in its :func:`queue_of`."""
    return limiter.statistics().tasks_waiting + len(_QUEUES.get(limiter, ()))


async def take(limiter: trio.CapacityLimiter) -> None:
    """Take a token of ``limiter`` for the current task: at once when one is free, else
    waiting for one.

    A free token is taken without the scheduler turn that ``acquire`` spends yielding even
    when it does not wait (a token given back goes straight to a waiter, so none is free
    while any waits); a call already cancelled still stops here, as in ``acquire``.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        await limiter.acquire()
