"""Rate limits: per identity (every request a caller posts), per plugin and per tool.

The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket stored as one
timestamp per key): ``N/period`` lets a caller burst up to N requests, then one more every
``period / N``. A check is O(1) and a key costs one float, and a key whose timestamp has
passed is the same as no key at all, so idle keys are simply dropped.

:class:`Limiter` is the storage interface: :class:`MemoryLimiter` keeps the state in this
process; a shared store (for several daemons behind one balancer) implements the same
method. :class:`RateLimits` is the policy: which rate applies to which request.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mcphost.config import RateLimitsConfig
    from mcphost.identity import Identity
    from mcphost.registry import Registry

_UNITS = {
    **dict.fromkeys(("s", "sec", "second"), 1.0),
    **dict.fromkeys(("m", "min", "minute"), 60.0),
    **dict.fromkeys(("h", "hour"), 3600.0),
    **dict.fromkeys(("d", "day"), 86400.0),
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per ``period`` seconds, as configured (``text``)."""

    limit: int
    period: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"100/minute"``, ``"5/second"``, ``"1000/hour"``, ``"10/30s"``; raises ValueError otherwise."""
        match = _RATE.match(text.lower())
        if not match or match[3] not in _UNITS:
            raise ValueError(f"{text!r} is not a rate like '100/minute' (units: second, minute, hour, day)")
        limit, period = int(match[1]), float(match[2] or 1) * _UNITS[match[3]]
        if limit < 1 or period <= 0:
            raise ValueError(f"{text!r}: the count and the period must be positive")
        return cls(limit, period, text.strip())


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one check, with what the ``X-RateLimit-*`` headers report."""

    allowed: bool
    rate: Rate
    remaining: int
    """Requests still allowed right now."""
    reset_after: float
    """Seconds until the whole budget is back."""
    retry_after: float
    """Seconds until the next request is allowed (0 when this one was)."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``X-RateLimit-Limit/Remaining/Reset`` (reset in seconds from now), and ``Retry-After`` when refused."""
        headers = [
            (b"x-ratelimit-limit", str(self.rate.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(math.ceil(self.reset_after)).encode()),
        ]
        if not self.allowed:
            headers.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        return headers


class Limiter(Protocol):
    """Where rate-limit state lives. Implementations must make :meth:`hit` atomic per key."""

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request against ``key`` under ``rate``; a refused request is not counted."""
        ...


class MemoryLimiter:
    """GCRA in a dict of "theoretical arrival times", in this process.

    Memory is bounded: each hit drops up to two keys whose time has passed from the front of
    the least-recently-hit order, and past ``max_keys`` the least recently hit key goes
    whatever its state (that caller starts over with a full budget: the limit fails open for
    one key rather than the daemon growing without bound).
    """

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self.max_keys = max_keys
        self.clock = clock
        self._tat: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request (see :class:`Limiter`)."""
        now = self.clock()
        interval = rate.period / rate.limit
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + interval
        # Not new_tat - period: with one request per period, (tat + period) - period may
        # round to a hair past tat, and a fresh key's first request would be refused.
        allowed_at = tat - (rate.period - interval)
        if allowed_at > now:
            return Decision(False, rate, 0, tat - now, allowed_at - now)
        tats = self._tat
        tats[key] = new_tat
        tats.move_to_end(key)
        for _ in range(2):
            oldest = next(iter(tats))
            if tats[oldest] > now and len(tats) <= self.max_keys:
                break
            del tats[oldest]
        # The small epsilon keeps float rounding from costing a whole request.
        remaining = int((rate.period - (new_tat - now)) / interval + 1e-9)
        return Decision(True, rate, remaining, new_tat - now, 0.0)


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
