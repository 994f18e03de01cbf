"""Where rate-limit budgets live, and the algorithm that spends them.

The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket stored as one
timestamp per key): ``N/period`` lets a caller burst up to N requests, then one more every
``period / N``. A check is O(1) and a key costs one float, and a key whose timestamp has
passed is the same as no key at all, so idle keys are simply dropped.

:class:`Limiter` is the storage interface: :class:`MemoryLimiter` keeps the state in this
process; Redis (:class:`~mcphost.state.redis_stores.RedisLimiter`, for several daemons
behind one balancer) implements the same method. Which rate applies to which request is
the policy's business (:mod:`mcphost.auth.ratelimit`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mcphost.core.rate import Rate


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
