"""A worker's output, in the daemon: each line it writes to its stdout and stderr (or, for a
hosted server, to its stderr, to its stdout where that is not a message, and each log
message it sends) is logged, tagged with its plugin, at most ``[plugins.<name>] output_rate``
lines a period.

A worker is not trusted, and every line it writes costs the daemon: parsing and logging it
on the event loop every other plugin's calls are served from, then room in the journal,
which drops a service's messages past a rate of its own (journald's ``RateLimitBurst``), the
daemon's and every other plugin's with them. So a worker's lines past its rate are not
logged, only counted (``mcphost_plugin_output_dropped_lines_total``), and the count is logged
before the first line of the next period (or as the worker ends), as journald says what it
suppressed. While a worker is over its rate, its output is read :data:`PAUSE` apart: what
it writes waits in its pipe meanwhile, so a worker writing without end is held up by its own
full pipe, and the daemon reads a pipeful at a time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import orjson
import structlog
import trio

from mcphost.core.rate import Rate

log = structlog.get_logger("mcphost.worker")

MAX_LOG_LINE = 65536
"""Bytes of a line without its end that are kept: the last (stderr) or first (stray stdout) ones."""
PAUSE = 0.1
"""Seconds between reads of the output of a worker over its rate."""
LEVELS = frozenset(("debug", "info", "warning", "error", "critical"))
"""The levels a worker's own log entry may name; another is logged at ``info``."""


class WorkerOutput:
    """The lines of one worker process, logged up to its rate."""

    def __init__(self, plugin: str, pid: int, rate: Rate, clock: Callable[[], float] = time.monotonic):
        self.plugin = plugin
        self.pid = pid
        self.rate = rate
        self.clock = clock
        self.dropped = 0
        """Lines not logged for being over the rate, in all."""
        self._period_end = -math.inf
        self._logged = 0
        """Lines logged in the current period."""
        self._unreported = 0
        """Lines dropped in the current period, not yet logged as a count."""

    async def relay(self, fd: int) -> None:
        """Log what the worker writes to the pipe ``fd`` until the worker (and everything it
        started) has closed it; what it leaves unreported is reported then."""
        stream = trio.lowlevel.FdStream(os.dup(fd))
        partial = b""
        try:
            async with stream:
                while chunk := await stream.receive_some(1 << 16):
                    data = partial + chunk
                    end = data.rfind(b"\n") + 1
                    partial = data[end:][-MAX_LOG_LINE:]
                    self.lines(data[:end])
                    if self._logged >= self.rate.limit:
                        await trio.sleep(PAUSE)  # its rate is spent: let the pipe hold what comes
                if partial:
                    self.lines(partial + b"\n")
        finally:
            self.report()

    def lines(self, data: bytes) -> None:
        """Log the lines of ``data``, each ended by a newline, while the rate allows; count the rest."""
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            line = data[start:end]
            start = end + 1
            if not line.strip():
                continue
            if not self._admits():
                # A flood is counted, never split into lines: one pass over the bytes.
                self._drop(1 + data.count(b"\n", start))
                return
            self._log(line)

    def stray(self, line: bytes) -> None:
        """A hosted server's stdout line that is not a message (a banner, a log line): logged as
        its stderr is, rather than taken for a broken server, as MCP's stdio clients do."""
        if line.strip():
            if self._admits():
                text = line[:MAX_LOG_LINE].decode(errors="replace")
                log.warning("plugin output", plugin=self.plugin, pid=self.pid, stream="stdout", line=text)
            else:
                self._drop(1)

    def message(self, level: object, data: object) -> None:
        """A hosted server's log message (``notifications/message``): logged with its level and
        data, within the same rate as its output."""
        if self._admits():
            log.info("plugin log message", plugin=self.plugin, pid=self.pid, level=level, data=data)
        else:
            self._drop(1)

    def report(self) -> None:
        """Log how many lines were dropped since the last report, if any were."""
        if self._unreported:
            log.warning(
                "plugin output over its rate: lines dropped",
                plugin=self.plugin,
                pid=self.pid,
                lines=self._unreported,
                output_rate=self.rate.text,
            )
            self._unreported = 0

    def _admits(self) -> bool:
        now = self.clock()
        if now >= self._period_end:
            self.report()
            self._period_end, self._logged = now + self.rate.period, 0
        if self._logged < self.rate.limit:
            self._logged += 1
            return True
        return False

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._unreported += count

    def _log(self, line: bytes) -> None:
        """One line: a JSON object as the worker runtime writes its log entries (its event and
        level kept, tagged with the plugin), anything else as the text it is."""
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            log.warning("plugin output", plugin=self.plugin, pid=self.pid, line=line.decode(errors="replace"))
            return
        event = str(entry.pop("event", "plugin output"))
        level = str(entry.pop("level", "info"))
        entry.pop("timestamp", None)
        entry.update(plugin=self.plugin, pid=self.pid)
        getattr(log, level if level in LEVELS else "info")(event, **entry)
