"""Which limit applies to a tool: the layers and their order."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from mcp import Client

from mcphost.core.plugin_tables import DefaultLimits, LimitsConfig
from mcphost.plugins.definitions import ToolDef
from mcphost.plugins.limits import ToolLimits


def _resolve(definition: ToolDef, plugin: LimitsConfig, tool: LimitsConfig | None = None) -> ToolLimits:
    pool = trio.CapacityLimiter(4)
    return ToolLimits.resolve(DefaultLimits(timeout=30), plugin, definition, tool, pool, (pool, pool))


def test_author_default_beats_the_global_default() -> None:
    limits = _resolve(ToolDef(fn=print, timeout=60), LimitsConfig())
    assert limits.timeout == 60 and limits.max_result_bytes == DefaultLimits().max_result_bytes


def test_sysadmin_plugin_setting_beats_the_author() -> None:
    assert _resolve(ToolDef(fn=print, timeout=60), LimitsConfig(timeout=5)).timeout == 5


def test_sysadmin_tool_setting_beats_everything() -> None:
    assert _resolve(ToolDef(fn=print, timeout=60), LimitsConfig(timeout=5), LimitsConfig(timeout=2)).timeout == 2


def test_tools_share_the_plugin_pool_unless_they_set_their_own() -> None:
    pool = trio.CapacityLimiter(4)
    shared = ToolLimits.resolve(DefaultLimits(), LimitsConfig(), ToolDef(fn=print), None, pool, (pool, pool))
    own = ToolLimits.resolve(
        DefaultLimits(), LimitsConfig(), ToolDef(fn=print), LimitsConfig(max_concurrency=1), pool, (pool, pool)
    )
    assert shared.pool is pool
    assert own.pool is not pool and own.pool.total_tokens == 1


async def test_config_overrides_reach_the_running_tool(mcphost_daemon) -> None:
    daemon = mcphost_daemon({"plugins": {"enable": ["faulty"], "faulty": {"timeout": 0.5}}})
    async with Client(daemon.url, mode="2026-07-28") as client:
        result = await client.call_tool("faulty_hang", {})
    assert result.is_error and "timed out after 0.5s" in result.content[0].text


class _OwnSteps(trio.abc.Instrument):
    """Counts the steps of one task."""

    def __init__(self, task: trio.lowlevel.Task):
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_thread_call_takes_its_free_tokens_without_a_turn_and_waits_for_a_taken_one() -> None:
    from mcphost.plugins.fence import Tokens, in_thread

    pool, lane, threads = trio.CapacityLimiter(1), trio.CapacityLimiter(1), trio.CapacityLimiter(1)
    steps = _OwnSteps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        assert await in_thread(lambda: 7, Tokens(pool, (lane, threads))) == 7
    finally:
        trio.lowlevel.remove_instrument(steps)
    # Two steps: up to the thread's start, and on from its end. Each limiter's acquire
    # would add one more, though none waits.
    assert steps.steps <= 2, f"a call with every token free took {steps.steps} steps"
    assert (pool.borrowed_tokens, lane.borrowed_tokens, threads.borrowed_tokens) == (0, 0, 0)

    async with trio.open_nursery() as nursery:
        await lane.acquire()
        done = trio.Event()

        async def call() -> None:
            await in_thread(lambda: None, Tokens(pool, (lane, threads)))
            done.set()

        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set(), "the call ran without its lane's token"
        lane.release()
        with trio.fail_after(10):  # a generous bound on "does not freeze"
            await done.wait()

    with trio.CancelScope() as scope:
        scope.cancel()
        await in_thread(lambda: pytest.fail("ran though cancelled"), Tokens(pool, (lane, threads)))
    assert scope.cancelled_caught
