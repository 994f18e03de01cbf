"""Prometheus metrics and the ``/status`` report: what the daemon counts, and how it shows it
(served over HTTP by :mod:`mcphost.transport.metrics_endpoint`).

Every series lives in the daemon's own :class:`~prometheus_client.CollectorRegistry`, so
several daemons (or tests) in one process never share a counter. Label values come only
from fixed sets below or from the names the registry serves: a client calling a thousand
made-up tools, methods or protocol versions adds no series (unknown tools are counted
under ``_unknown``, anything else under ``other``).

The request path pays little. Counting is plain integer arithmetic on per-tool objects made
once when a registry is published (:meth:`Metrics.bind`): every count is changed and read on
the event loop's thread (plugins' worker threads never touch them), so the locks of
prometheus_client's own metric classes would buy nothing. A :class:`_Collector` turns the
counts into Prometheus families when scraped, and reads what other parts already keep
(plugin status, the occupancy of each concurrency pool, open sessions) at the same moment.
What it reads of them it declares here (:class:`PluginState`, :class:`Sources`): it knows
nothing of the plugin host, the registry or authentication.
"""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Protocol

import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.methods import SPEC_CLIENT_METHODS, SPEC_CLIENT_NOTIFICATION_METHODS
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from pydantic import ValidationError

from mcphost.core import errors
from mcphost.ops import log

NOT_RUN = frozenset({"invalid_arguments", "rate_limited", "denied"})
"""Calls refused before the plugin's code ran: counted, but kept out of the latencies."""
FAILED = frozenset({"error", "timeout", "too_large", "limited"})
"""Calls the ``/status`` report and the error-ratio alert count as failures."""
UNKNOWN = "_unknown"
"""``plugin`` and ``tool_name`` of calls to a tool that is not served."""
NOT_FOUND = "not_found"
"""``status`` of those calls."""

TASK_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
"""The tasks extension's methods (2026-07-28), which the SDK's method lists leave out."""
METHODS = frozenset(SPEC_CLIENT_METHODS | SPEC_CLIENT_NOTIFICATION_METHODS | TASK_METHODS)
"""``method`` of ``mcp_requests_total``: the client methods of every protocol revision; anything else is ``other``."""
_RPC_CODES = {
    code: str(code)
    for code in (
        types.PARSE_ERROR,
        types.INVALID_REQUEST,
        types.METHOD_NOT_FOUND,
        types.INVALID_PARAMS,
        types.INTERNAL_ERROR,
        types.CONNECTION_CLOSED,
        types.URL_ELICITATION_REQUIRED,
        types.HEADER_MISMATCH,
        types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        types.UNSUPPORTED_PROTOCOL_VERSION,
        errors.AUTHENTICATION_REQUIRED,
        errors.NOT_PERMITTED,
        errors.RATE_LIMITED,
        errors.UNAVAILABLE,
        errors.TOOL_TIMEOUT,
    )
}
_HTTP_CODES = {status: f"http_{status}" for status in (400, 401, 403, 404, 405, 406, 409, 413, 415, 421, 429, 500, 503)}
CANCELLED = "cancelled"
"""``code`` of a request whose handler was cancelled (the client went away, or shutdown)."""

AUTH_REASONS = ("missing", "invalid", "insufficient_scope", "unavailable")
RATE_LIMIT_SCOPES = ("identity", "plugin", "tool")
RELOAD_RESULTS = ("ok", "failed", "invalid_config")
TASK_EVENTS = ("created", "completed", "failed", "cancelled", "lost", "expired")
"""``event`` of ``mcphost_tasks_total``: a task was created, ended so (``lost``: failed because
the process running it stopped), or its record expired."""
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LE = (*(floatToGoString(bound) for bound in DURATION_BUCKETS), "+Inf")


class ToolSeries:
    """One tool's counts by status, its duration histogram and its recent durations."""

    __slots__ = ("buckets", "counts", "name", "plugin", "recent", "seconds", "timeouts")

    def __init__(self, name: str, plugin: str, window_calls: int, timeouts: dict[str, int]):
        self.name, self.plugin = name, plugin
        self.counts = dict.fromkeys(log.TOOL_STATUSES, 0)
        self.buckets = [0] * len(_LE)
        """Calls per duration bucket (not cumulative; the last is +Inf)."""
        self.seconds = 0.0
        self.recent: deque[tuple[float, float]] = deque(maxlen=window_calls)
        """``(perf_counter at the end, seconds)`` of the latest calls that ran."""
        self.timeouts = timeouts
        timeouts.setdefault(plugin, 0)

    def observe(self, status: str, seconds: float, now: float) -> None:
        """Count one call that ended with ``status`` after ``seconds``, at ``now`` (``perf_counter``)."""
        counts = self.counts
        if status not in counts:  # a status newer than this module: still counted, as a failure
            status = "error"
        counts[status] += 1
        if status not in NOT_RUN:
            self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
            self.seconds += seconds
            self.recent.append((now, seconds))
            if status == "timeout":
                self.timeouts[self.plugin] += 1

    def latencies(self, since: float) -> tuple[float | None, float | None, int]:
        """p50 and p99 (nearest rank, in seconds) of the calls that ended after ``since``, and their number."""
        values = sorted(seconds for end, seconds in self.recent if end >= since)
        if not values:
            return None, None, 0
        return _rank(values, 0.5), _rank(values, 0.99), len(values)


def _rank(values: Sequence[float], q: float) -> float:
    return values[max(0, math.ceil(q * len(values)) - 1)]


@dataclass
class Reload:
    """The last reload: when, why, and how it went."""

    at: float
    began: float
    """When it began, on the system's monotonic clock (``time.monotonic()``): what a process
    that asked for the reload compares with the moment it asked (``mcphost reload``)."""
    reason: str
    result: str
    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class PluginState(Protocol):
    """What the metrics read of one plugin when scraped (the plugin host's record of it)."""

    @property
    def name(self) -> str:
        """The plugin's name."""

    @property
    def version(self) -> str | None:
        """Its distribution's version, if it has one."""

    @property
    def status(self) -> str:
        """``loaded``, ``failed`` or ``disabled``."""

    @property
    def error(self) -> str | None:
        """Why it failed to load."""

    @property
    def reload_error(self) -> str | None:
        """Why its last reload failed."""

    @property
    def tools(self) -> Sequence[str]:
        """Public names of the tools it serves."""

    @property
    def isolation(self) -> str:
        """``process`` (served by a worker process) or ``inline``."""

    @property
    def worker_failed(self) -> str | None:
        """Why its worker process was given up on, if it was: it loaded, but nothing serves it."""

    @property
    def restarts(self) -> int | None:
        """Times its worker process was started again after it ended; None with no worker."""

    @property
    def memory_kills(self) -> int | None:
        """Times the kernel killed its worker for being over its memory limit; None with no worker."""

    @property
    def output_dropped(self) -> int | None:
        """Lines its workers wrote that were not logged, over its ``output_rate``; None with no worker."""

    def occupancy(self) -> tuple[int, int, int]:
        """Calls running, the sum of the concurrency caps, and calls waiting for a slot."""


class ServedTool(Protocol):
    """A tool the registry serves, as the metrics see it."""

    @property
    def plugin(self) -> str:
        """The name of the plugin that serves it."""


@dataclass
class Sources:
    """What the daemon keeps that metrics read when scraped."""

    plugins: Callable[[], Sequence[PluginState]] = list
    sessions: Callable[[], int] = int
    draining: Callable[[], bool] = bool
    tasks_running: Callable[[], int] = int
    config: str = "<defaults>"
    worker_limits: str = "rlimits"
    """Which limits isolated plugins' workers run under: a delegated cgroup's, or rlimits."""


class Metrics:
    """The daemon's counts, the methods the request path calls to change them, and the report."""

    def __init__(
        self, version: str, *, versions: Iterable[str], window: float = 300.0, window_calls: int = 1000
    ) -> None:
        self.version = version
        self.versions = frozenset(versions)
        """The protocol revisions served: the ``protocol_version`` label's values (else ``unknown``)."""
        self.window = window
        self.window_calls = window_calls
        self.started = time.time()
        self.sources = Sources()
        self.tools: dict[str, ToolSeries] = {}
        """Each served tool's counts, by public name."""
        self.unknown_tool_calls = 0
        self.requests: dict[tuple[str, str, str], int] = {}
        """By (method, protocol version, code), each from a fixed set."""
        self.plugin_timeouts: dict[str, int] = {}
        self.loop_stalls: dict[str, int] = {}
        """By plugin: times its code held the event loop long enough for the watchdog to log it."""
        # Every bounded label value exists from the start, at 0 (as every status of every
        # served tool does): rate() and alerts work before the first event, and a dashboard
        # shows zeros, not "no data".
        self.rate_limited = dict.fromkeys(RATE_LIMIT_SCOPES, 0)
        self.auth_failures = dict.fromkeys(AUTH_REASONS, 0)
        self.reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self.tasks = dict.fromkeys(TASK_EVENTS, 0)
        """Tasks by what happened to them (see :data:`TASK_EVENTS`)."""
        self.last_reload: Reload | None = None
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_Collector(self))

    def bind(self, served: Mapping[str, ServedTool]) -> None:
        """Make the counts of every tool served (by public name), keeping those that go on,
        and forget those of tools no longer served."""
        tools = {}
        for name, tool in served.items():
            series = self.tools.get(name)
            if series is None or series.plugin != tool.plugin:
                series = ToolSeries(name, tool.plugin, self.window_calls, self.plugin_timeouts)
            tools[name] = series
        self.tools = tools

    def tool(self, name: str, plugin: str) -> ToolSeries:
        """The counts of a served tool (made here if a call comes before :meth:`bind` saw it)."""
        series = self.tools.get(name)
        if series is None or series.plugin != plugin:
            series = self.tools[name] = ToolSeries(name, plugin, self.window_calls, self.plugin_timeouts)
        return series

    def tool_refused(self, name: str, plugin: str | None) -> None:
        """A call to a tool that is not served (``plugin`` None) or not the caller's to use."""
        if plugin is None:
            self.unknown_tool_calls += 1
        else:
            self.tool(name, plugin).observe("denied", 0.0, 0.0)

    def request(self, method: str | None, version: str | None, code: str) -> None:
        """Count one MCP message; ``code`` is already one of the fixed values (see :func:`rpc_code`)."""
        key = (method if method in METHODS else "other", version if version in self.versions else "unknown", code)
        self.requests[key] = self.requests.get(key, 0) + 1

    def refused_request(self, headers: Mapping[bytes, bytes], status: int, rpc_error: int | None) -> None:
        """Count a POST answered with ``status`` before any MCP handler saw it."""
        method = headers.get(b"mcp-method", b"").decode("latin-1")
        version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
        code = rpc_code(rpc_error) if rpc_error is not None else _HTTP_CODES.get(status, "other")
        self.request(method, version, code)

    def loop_stalled(self, plugin: str) -> None:
        """The loop-stall watchdog found ``plugin``'s code holding the event loop (called in its thread)."""
        self.loop_stalls[plugin] = self.loop_stalls.get(plugin, 0) + 1

    def rate_limit_hit(self, scope: str) -> None:
        """A request (``identity``) or a call (``plugin``, ``tool``) refused by a rate limit."""
        self.rate_limited[scope] += 1

    def task_event(self, event: str, count: int = 1) -> None:
        """``count`` tasks were created, or ended in one of :data:`TASK_EVENTS`' outcomes."""
        self.tasks[event] += count

    def auth_failed(self, status: int, code: int) -> None:
        """A request refused by authentication with HTTP ``status`` and JSON-RPC ``code``."""
        if status == 503:
            reason = "unavailable"
        elif status == 403:
            reason = "insufficient_scope"
        elif code == errors.AUTHENTICATION_REQUIRED:
            reason = "missing"
        else:
            reason = "invalid"
        self.auth_failures[reason] += 1

    def reloaded(
        self, reason: str, began: float, result: str, changed: Sequence[str] = (), failed: Sequence[str] = ()
    ) -> None:
        """A reload that began at ``began`` (``time.monotonic()``) ended with ``result`` (``ok``,
        ``failed``: a plugin did not reload, ``invalid_config``)."""
        self.last_reload = Reload(time.time(), began, reason, result, list(changed), list(failed))
        self.reloads[result] += 1

    def exposition(self) -> bytes:
        """Every series in the Prometheus text format."""
        return generate_latest(self.registry)

    def report(self) -> dict[str, Any]:
        """The ``/status`` report: what ``mcphost status`` prints."""
        now = time.time()
        since = time.perf_counter() - self.window
        tools = []
        for series in sorted(self.tools.values(), key=lambda s: s.name):
            p50, p99, recent = series.latencies(since)
            counts = series.counts
            tools.append(
                {
                    "name": series.name,
                    "plugin": series.plugin,
                    "calls": sum(counts.values()),
                    "errors": sum(counts[s] for s in FAILED),
                    "timeouts": counts["timeout"],
                    "statuses": {s: n for s, n in counts.items() if n},
                    "recent_calls": recent,
                    "p50_ms": None if p50 is None else round(p50 * 1000, 2),
                    "p99_ms": None if p99 is None else round(p99 * 1000, 2),
                }
            )
        reload = self.last_reload
        return {
            "version": self.version,
            "pid": os.getpid(),
            "started": self.started,
            "uptime_seconds": round(now - self.started, 1),
            "config": self.sources.config,
            "status": "draining" if self.sources.draining() else "serving",
            "sessions": self.sources.sessions(),
            "plugins": [_plugin_report(plugin) for plugin in self.sources.plugins()],
            "worker_limits": self.sources.worker_limits,
            "window_seconds": self.window,
            "tools": tools,
            "unknown_tool_calls": self.unknown_tool_calls,
            "rate_limited": dict(self.rate_limited),
            "auth_failures": dict(self.auth_failures),
            "tasks": {"running": self.sources.tasks_running(), **self.tasks},
            "last_reload": None
            if reload is None
            else {
                "at": reload.at,
                "began_monotonic": reload.began,
                "reason": reload.reason,
                "result": reload.result,
                "changed": reload.changed,
                "failed": reload.failed,
            },
        }


def rpc_code(code: int | None) -> str:
    """The ``code`` label of a JSON-RPC outcome: ``ok``, a known error code, or ``other``."""
    return "ok" if code is None else _RPC_CODES.get(code, "other")


class RequestMetrics:
    """Server middleware: counts every MCP message a handler saw, with its method, the
    session's protocol version and the JSON-RPC outcome."""

    def __init__(self, metrics: Metrics):
        self.count = metrics.request

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Run the rest of the chain and count its outcome."""
        code = "ok"
        try:
            return await call_next(ctx)
        except MCPError as error:
            code = rpc_code(error.error.code)
            raise
        except ValidationError:
            code = _RPC_CODES[types.INVALID_PARAMS]
            raise
        except Exception:
            code = _RPC_CODES[types.INTERNAL_ERROR]
            raise
        except BaseException:
            code = CANCELLED
            raise
        finally:
            self.count(ctx.method, ctx.protocol_version, code)


def _plugin_report(plugin: PluginState) -> dict[str, Any]:
    inflight, limit, queued = plugin.occupancy() if plugin.status == "loaded" else (0, 0, 0)
    return {
        "name": plugin.name,
        "version": plugin.version,
        "status": "failed" if plugin.worker_failed else plugin.status,
        "isolation": plugin.isolation,
        "restarts": plugin.restarts or 0,
        "tools": len(plugin.tools),
        "inflight": inflight,
        "concurrency_limit": limit,
        "queued": queued,
        "error": plugin.error or plugin.worker_failed,
        "reload_error": plugin.reload_error,
    }


class _Collector:
    """The daemon's families, made from its counts and state when scraped."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        """Nothing to pre-declare (the registry checks the names of described metrics only)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every mcphost family (the process collectors add theirs)."""
        metrics = self.metrics
        yield from self._tools(metrics)
        requests = CounterMetricFamily(
            "mcp_requests",
            "MCP messages received, by JSON-RPC method, protocol version and outcome (ok, a JSON-RPC "
            "error code, http_<status> for a refusal before any handler, cancelled, other).",
            labels=("method", "protocol_version", "code"),
        )
        for labels, count in metrics.requests.items():
            requests.add_metric(labels, count)
        yield requests
        yield _counter(
            "mcphost_plugin_timeouts", "Tool calls cancelled at their timeout.", "plugin", metrics.plugin_timeouts
        )
        yield _counter(
            "mcphost_loop_stalls",
            "Times a plugin's code held the event loop until the watchdog logged it.",
            "plugin",
            dict(metrics.loop_stalls),
        )
        yield _counter(
            "mcphost_rate_limited",
            "Requests refused by the identity budget (HTTP 429) and calls refused by plugin and tool limits.",
            "scope",
            metrics.rate_limited,
        )
        yield _counter(
            "mcphost_auth_failures",
            "Requests refused by authentication: missing credentials, invalid ones, insufficient_scope, "
            "unavailable (the identity provider's keys cannot be fetched).",
            "reason",
            metrics.auth_failures,
        )
        yield _counter(
            "mcphost_reloads",
            "Reloads by result: ok, failed (a plugin failed to load; its previous version serves), invalid_config.",
            "result",
            metrics.reloads,
        )
        yield _counter(
            "mcphost_tasks",
            "Tasks created by this process, and tasks that ended or were forgotten as it saw them: completed, "
            "failed, cancelled, lost (their process stopped), expired (their result forgotten).",
            "event",
            metrics.tasks,
        )
        yield GaugeMetricFamily(
            "mcphost_tasks_running", "Tasks this process runs now.", value=metrics.sources.tasks_running()
        )
        yield CounterMetricFamily(
            "mcphost_log_lines_dropped",
            "Log lines that could not be written to stderr (its reader gone), so were dropped.",
            value=log.dropped_lines(),
        )
        reload = metrics.last_reload
        yield GaugeMetricFamily(
            "mcphost_last_reload_success",
            "1 if the last reload applied cleanly (or none happened yet).",
            value=1 if reload is None or reload.result == "ok" else 0,
        )
        yield GaugeMetricFamily(
            "mcphost_last_reload_timestamp_seconds",
            "Unix time of the last reload (0: none yet).",
            value=0 if reload is None else reload.at,
        )
        build = GaugeMetricFamily(
            "mcphost_build_info", "Always 1; version is the running mcphost's.", labels=("version",)
        )
        build.add_metric((metrics.version,), 1)
        yield build
        yield from self._plugins(metrics.sources.plugins())
        yield GaugeMetricFamily(
            "mcp_active_sessions", "Open 2025-11-25 sessions held by this process.", value=metrics.sources.sessions()
        )

    @staticmethod
    def _tools(metrics: Metrics) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "mcp_tool_calls",
            f"Tool calls by plugin, tool and outcome ({', '.join(log.TOOL_STATUSES)}); a call to a tool that is not "
            f"served counts under plugin and tool_name {UNKNOWN}, status {NOT_FOUND}.",
            labels=("plugin", "tool_name", "status"),
        )
        duration = HistogramMetricFamily(
            "mcp_tool_call_duration_seconds",
            f"Duration of tool calls that ran ({DURATION_BUCKETS[0] * 1000:g} ms to {DURATION_BUCKETS[-1]:g} s "
            f"buckets); calls refused before the plugin's code ({', '.join(sorted(NOT_RUN))}) are left out.",
            labels=("plugin", "tool_name"),
        )
        for series in metrics.tools.values():
            for status, count in series.counts.items():
                calls.add_metric((series.plugin, series.name, status), count)
            buckets = list(zip(_LE, accumulate(series.buckets), strict=True))
            duration.add_metric((series.plugin, series.name), buckets, series.seconds)
        calls.add_metric((UNKNOWN, UNKNOWN, NOT_FOUND), metrics.unknown_tool_calls)
        yield from (calls, duration)

    @staticmethod
    def _plugins(plugins: Sequence[PluginState]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "mcphost_plugin_up",
            "1 if the plugin is loaded and serving, 0 if it failed or its worker process kept ending"
            " and was given up on (a disabled plugin has no series).",
            labels=("plugin", "version"),
        )
        inflight = GaugeMetricFamily(
            "mcphost_plugin_inflight",
            "Calls of the plugin running now (the worker thread of a timed-out call holds its slot until it ends).",
            labels=("plugin",),
        )
        limit = GaugeMetricFamily(
            "mcphost_plugin_concurrency_limit",
            "Calls of the plugin that may run at once: its max_concurrency, plus that of each tool with a pool "
            "of its own.",
            labels=("plugin",),
        )
        queued = GaugeMetricFamily(
            "mcphost_plugin_queued", "Calls of the plugin waiting for a free slot.", labels=("plugin",)
        )
        restarts = CounterMetricFamily(
            "mcphost_plugin_restarts",
            "Times the worker process of an isolated plugin (or a hosted server) was started again after it ended.",
            labels=("plugin",),
        )
        memory_kills = CounterMetricFamily(
            "mcphost_plugin_memory_kills",
            "Times the kernel killed the worker process of an isolated plugin for being over its memory_max "
            "(a cgroup limit, with a delegated cgroup).",
            labels=("plugin",),
        )
        output_dropped = CounterMetricFamily(
            "mcphost_plugin_output_dropped_lines",
            "Lines the worker process of an isolated plugin (or a hosted server) wrote to its stdout and stderr "
            "that were not logged, for being over its output_rate.",
            labels=("plugin",),
        )
        for plugin in plugins:
            if plugin.status == "disabled":
                continue  # switched off on purpose: not "down"
            serving = plugin.status == "loaded" and not plugin.worker_failed
            up.add_metric((plugin.name, plugin.version or "unknown"), 1 if serving else 0)
            if plugin.restarts is not None:
                restarts.add_metric((plugin.name,), plugin.restarts)
            if plugin.memory_kills is not None:
                memory_kills.add_metric((plugin.name,), plugin.memory_kills)
            if plugin.output_dropped is not None:
                output_dropped.add_metric((plugin.name,), plugin.output_dropped)
            if plugin.status == "loaded":
                running, cap, waiting = plugin.occupancy()
                inflight.add_metric((plugin.name,), running)
                limit.add_metric((plugin.name,), cap)
                queued.add_metric((plugin.name,), waiting)
        yield from (up, inflight, limit, queued, restarts, memory_kills, output_dropped)


def _counter(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=(label,))
    for value, count in counts.items():
        family.add_metric((value,), count)
    return family
