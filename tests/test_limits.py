"""Which limit applies to a tool: the layers and their order."""

from __future__ import annotations

import trio
from mcp import Client

from mcphost.core.config import DefaultLimits, LimitsConfig
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
