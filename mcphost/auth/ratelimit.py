"""Rate limits: per identity (every request a caller posts), per plugin and per tool.

:class:`RateLimits` is the policy: which rate applies to which request. The budgets live in a
:class:`~mcphost.state.limiter.Limiter` (this process's memory, or Redis for replicas), which
also holds the algorithm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcphost.core.rate import Rate
from mcphost.state.limiter import Decision, Limiter, MemoryLimiter

if TYPE_CHECKING:
    from mcphost.auth.identity import Identity
    from mcphost.core.config import RateLimitsConfig
    from mcphost.plugins.registry import Registry


@dataclass(frozen=True, slots=True)
class Refusal:
    """A plugin or tool limit a call ran into: which one, and its decision."""

    scope: str
    """``plugin 'files'`` or ``tool 'files_search'``."""
    decision: Decision

    def message(self) -> str:
        """What the client reads in the ``isError`` result."""
        return (
            f"rate limit of {self.scope} exceeded ({self.decision.rate.text} per caller); "
            f"try again in {max(1, math.ceil(self.decision.retry_after))}s"
        )


class RateLimits:
    """The configured limits, resolved once at start-up; each check is a dict lookup and a hit."""

    def __init__(
        self,
        identity: Rate | None = None,
        plugins: Mapping[str, Rate] | None = None,
        tools: Mapping[str, Rate] | None = None,
        limiter: Limiter | None = None,
    ):
        self.identity = identity
        self.plugins = dict(plugins or {})
        self.tools = dict(tools or {})
        self.limiter: Limiter = limiter or MemoryLimiter()

    @classmethod
    def from_config(cls, config: RateLimitsConfig) -> RateLimits:
        """The limits of ``[rate_limits]``, kept in memory."""
        return cls(
            Rate.parse(config.identity) if config.identity else None,
            {name: Rate.parse(text) for name, text in config.plugins.items()},
            {name: Rate.parse(text) for name, text in config.tools.items()},
            MemoryLimiter(config.max_tracked),
        )

    def unserved(self, registry: Registry) -> list[str]:
        """The plugins and tools limits are set for that ``registry`` does not serve (a typo
        there would otherwise leave a limit silently without effect)."""
        plugins = {tool.plugin for tool in registry.tools.values()}
        return [f"plugin {name!r}" for name in self.plugins if name not in plugins] + [
            f"tool {name!r}" for name in self.tools if name not in registry.tools
        ]

    async def check_request(self, identity: Identity | None) -> Decision | None:
        """Count a request against its caller's budget; ``None`` when no budget applies."""
        rate = self.identity if identity is None or identity.rate is None else identity.rate
        if rate is None:
            return None
        # Unauthenticated callers (loopback without auth) share one budget.
        return await self.limiter.hit("identity|" + (identity.key if identity else "-"), rate)

    async def check_tool(self, identity: Identity | None, plugin: str, tool: str) -> Refusal | None:
        """Count a call against the tool's and its plugin's limits for this caller; the first refusal, if any."""
        caller = identity.key if identity else "-"
        if (rate := self.tools.get(tool)) is not None:
            decision = await self.limiter.hit(f"tool|{tool}|{caller}", rate)
            if not decision.allowed:
                return Refusal(f"tool {tool!r}", decision)
        if (rate := self.plugins.get(plugin)) is not None:
            decision = await self.limiter.hit(f"plugin|{plugin}|{caller}", rate)
            if not decision.allowed:
                return Refusal(f"plugin {plugin!r}", decision)
        return None
