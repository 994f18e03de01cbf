"""A request rate as the configuration writes it (``"100/minute"``): a count per period.

Config models, the rate limiter's stores and the limits' policy all speak of rates, so the
type lives at the bottom, with the configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

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


def _valid(text: str) -> str:
    Rate.parse(text)
    return text


RateText = Annotated[str, AfterValidator(_valid)]
"""A rate in a config table, such as ``"100/minute"`` (see :meth:`Rate.parse`)."""
