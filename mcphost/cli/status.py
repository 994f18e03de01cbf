"""``mcphost status``: the running daemon's state, read from its admin listener's ``/status``
(:mod:`mcphost.ops.metrics`), as a table a sysadmin reads at a glance or as JSON for scripts."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcphost.core import config as config_module
from mcphost.core.config import LoadedConfig

EXIT_UNREACHABLE = 3
"""The daemon did not answer (as ``systemctl status`` says of a unit that is not running)."""
EXIT_USAGE = 2
TIMEOUT = 15.0
"""Seconds to wait for ``/status``: it runs every plugin's readiness check (each bounded)."""


def admin_url(config_path: Path | None) -> tuple[str | None, str | None]:
    """The admin listener's URL (``None`` when it is off) and the metrics token, from ``[admin]``."""
    return admin_endpoint(config_module.load(config_path))


def admin_endpoint(loaded: LoadedConfig) -> tuple[str | None, str | None]:
    """:func:`admin_url` of a config already read."""
    admin = loaded.config.admin
    if not admin.enabled:
        return None, admin.metrics_token
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(admin.host, admin.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{admin.port}", admin.metrics_token


def fetch(url: str, token: str | None, timeout: float = TIMEOUT) -> dict[str, Any]:
    """``GET <url>/status``; raises ``OSError`` (``URLError``) when it cannot be had."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url.rstrip("/") + "/status", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        report: dict[str, Any] = json.load(response)
    return report


def render(report: dict[str, Any], now: float | None = None) -> list[str]:
    """The report as lines of text: a summary, then a table of plugins and one of tools."""
    now = time.time() if now is None else now
    lines = [
        f"mcphost {report['version']} (pid {report['pid']}): {report['status']}, "
        f"up {duration(report['uptime_seconds'])}",
        f"config:        {report['config']}",
        f"sessions:      {report['sessions']} open",
        f"tasks:         {_counts(report['tasks'])}",
        f"last reload:   {_reload(report.get('last_reload'), now)}",
        f"rate limited:  {_counts(report['rate_limited'])}",
        f"auth failures: {_counts(report['auth_failures'])}",
        f"worker limits: {report.get('worker_limits', '-')}",
    ]
    if report.get("unknown_tool_calls"):
        lines.append(f"unknown tools: {report['unknown_tool_calls']} calls")
    rows: list[tuple[str, ...]] = [("PLUGIN", "VERSION", "STATUS", "READY", "TOOLS", "IN FLIGHT", "ERROR")]
    disabled = [p["name"] for p in report["plugins"] if p["status"] == "disabled"]
    for plugin in report["plugins"]:
        if plugin["status"] == "disabled":
            continue
        loaded = plugin["status"] == "loaded"
        rows.append(
            (
                plugin["name"],
                plugin["version"] or "-",
                plugin["status"],
                ("yes" if plugin.get("ready") else "no") if loaded else "-",
                str(plugin["tools"]),
                f"{plugin['inflight']}/{plugin['concurrency_limit']}" if loaded else "-",
                _problem(plugin),
            )
        )
    lines += ["", *table(rows)]
    if disabled:
        lines.append(f"disabled: {', '.join(disabled)}")
    window = duration(report["window_seconds"])
    rows = [("TOOL", "PLUGIN", "CALLS", "ERRORS", "TIMEOUTS", "LIMITED", f"P50 ({window})", f"P99 ({window})")]
    for tool in report["tools"]:
        rows.append(
            (
                tool["name"],
                tool["plugin"],
                str(tool["calls"]),
                str(tool["errors"]),
                str(tool["timeouts"]),
                str(tool["statuses"].get("rate_limited", 0)),
                milliseconds(tool["p50_ms"]),
                milliseconds(tool["p99_ms"]),
            )
        )
    lines += ["", *table(rows)]
    return lines


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """``rows`` in aligned columns; the last column is not padded (it may be long)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip() for row in rows
    ]


def duration(seconds: float) -> str:
    """``45s``, ``12m 5s``, ``3h 12m``, ``2d 4h``: the two largest units."""
    total = int(seconds)
    parts = [(total // 86400, "d"), (total % 86400 // 3600, "h"), (total % 3600 // 60, "m"), (total % 60, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n}{unit}" for n, unit in parts[:2] if n or unit == parts[0][1])


def milliseconds(value: float | None) -> str:
    """A latency for the table: ``-`` for none, ``12.3ms``, ``1.25s``."""
    if value is None:
        return "-"
    return f"{value:.1f}ms" if value < 1000 else f"{value / 1000:.2f}s"


def _problem(plugin: dict[str, Any]) -> str:
    if plugin.get("degraded"):
        return f"degraded: {plugin['degraded']}"
    if plugin["reload_error"]:
        return f"reload failed, the previous version serves: {plugin['reload_error']}"
    return str(plugin["error"] or "")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def _reload(reload: dict[str, Any] | None, now: float) -> str:
    if reload is None:
        return "none since start"
    text = f"{reload['result']}, {duration(now - reload['at'])} ago ({reload['reason']})"
    if reload["failed"]:
        text += f"; failed: {', '.join(reload['failed'])}"
    return text
