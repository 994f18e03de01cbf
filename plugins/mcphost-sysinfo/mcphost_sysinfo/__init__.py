"""mcphost-sysinfo: read-only facts about the host, for a sysadmin's questions.

Tools (public names ``sysinfo_<name>`` under the default prefix): ``load``, ``memory``,
``disk_usage``, ``uptime``, ``top_processes`` and, where ``systemctl`` exists,
``unit_status``. Nothing here changes the system; every tool is marked read-only. Their
result types, which become the tools' output schemas, are in :mod:`mcphost_sysinfo.models`.
"""

import fnmatch
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psutil
from pydantic import Field, field_validator

import mcphost
from mcphost_sysinfo.models import (
    CMDLINE_MAX,
    DiskUsage,
    LoadAverage,
    MemoryStats,
    MemoryUsage,
    ProcessInfo,
    TopProcesses,
    UnitStatus,
    Uptime,
)
from mcphost_sysinfo.redact import redacted

__all__ = [
    "Settings",
    "disk_usage",
    "load",
    "mcphost_settings_model",
    "mcphost_tools",
    "memory",
    "top_processes",
    "unit_status",
    "uptime",
]

logger = logging.getLogger(__name__)

READ_ONLY = {"readOnlyHint": True, "openWorldHint": False}
"""MCP tool annotations shared by every tool here: they only observe the local host."""

CPU_SAMPLE_SECONDS = 0.25
"""Window over which per-process CPU use is measured; psutil needs two readings."""
SYSTEMCTL_TIMEOUT = 5.0
"""Seconds ``systemctl show`` may take; a wedged D-Bus must not hold a worker thread."""

# systemd's unit-name alphabet; no shell metacharacters, spaces, slashes or globs. A
# leading "-" is legitimate ("-.mount" is the root filesystem), so the unit is passed
# after "--" where systemctl cannot take it for an option such as "-H host".
UNIT_NAME = re.compile(r"^[A-Za-z0-9@._:\-]{1,256}$")
UNIT_TYPES = frozenset(
    ("service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope")
)
UNIT_PROPERTIES = (
    "Id", "Description", "LoadState", "ActiveState", "SubState",
    "UnitFileState", "MainPID", "ActiveEnterTimestamp",
)  # fmt: skip


class Settings(mcphost.PluginSettings):
    """``[plugins.sysinfo.settings]``: what the tools may look at."""

    mounts: list[str] = Field(default=["/"], min_length=1)
    """Mount points ``disk_usage`` may report on; the first is its default."""
    units: list[str] = []
    """Glob patterns of unit names ``unit_status`` may query (e.g. ``"nginx.service"``,
    ``"*.timer"``); empty allows any unit."""
    max_processes: int = Field(default=100, ge=1, le=100)
    """Cap on ``top_processes``' ``limit``."""
    full_command_lines: bool = False
    """Return command lines as they are; by default the values of secret-looking options,
    ``NAME=value`` arguments and URL passwords are masked (:mod:`mcphost_sysinfo.redact`)."""

    @field_validator("mounts")
    @classmethod
    def _absolute(cls, mounts: list[str]) -> list[str]:
        if bad := [m for m in mounts if not os.path.isabs(m)]:
            raise ValueError(f"mounts must be absolute paths, got {bad}")
        return [os.path.normpath(m) for m in mounts]


def _settings(ctx: mcphost.ToolContext) -> Settings:
    assert isinstance(ctx.settings, Settings)  # the host validated them with our model
    return ctx.settings


@mcphost.tool(annotations=READ_ONLY)
def load() -> LoadAverage:
    """Report the 1, 5 and 15-minute load averages and the CPU count."""
    one, five, fifteen = psutil.getloadavg()
    return LoadAverage(load_1m=one, load_5m=five, load_15m=fifteen, cpu_count=psutil.cpu_count())


@mcphost.tool(annotations=READ_ONLY)
def memory() -> MemoryUsage:
    """Report RAM and swap usage in bytes."""
    ram, swap = psutil.virtual_memory(), psutil.swap_memory()
    return MemoryUsage(
        ram=MemoryStats(total=ram.total, available=ram.available, used=ram.used, percent=ram.percent),
        swap=MemoryStats(total=swap.total, available=swap.free, used=swap.used, percent=swap.percent),
    )


@mcphost.tool(annotations=READ_ONLY)
def disk_usage(
    ctx: mcphost.ToolContext,
    mount: Annotated[str | None, Field(description="An allowed mount point; default: the first one.")] = None,
) -> DiskUsage:
    """Report total, used and free bytes of the filesystem at an allowed mount point."""
    allowed = _settings(ctx).mounts
    path = allowed[0] if mount is None else os.path.normpath(mount)
    if path not in allowed:
        raise mcphost.ToolError(f"mount {mount!r} is not allowed; allowed mounts: {', '.join(allowed)}")
    try:
        usage = psutil.disk_usage(path)
    except OSError as error:
        raise mcphost.ToolError(f"cannot stat {path}: {error.strerror or error}") from None
    return DiskUsage(mount=path, total=usage.total, used=usage.used, free=usage.free, percent=usage.percent)


@mcphost.tool(annotations=READ_ONLY)
def uptime() -> Uptime:
    """Report when the host booted and how long it has been up."""
    boot = psutil.boot_time()
    return Uptime(boot_time=datetime.fromtimestamp(boot, UTC), uptime_seconds=round(time.time() - boot, 1))


@mcphost.tool(annotations=READ_ONLY)
def top_processes(
    ctx: mcphost.ToolContext,
    limit: Annotated[int, Field(ge=1, le=100, description="How many processes to return.")] = 10,
    sort_by: Literal["cpu", "memory"] = "cpu",
) -> TopProcesses:
    """List the processes using the most CPU or memory, sampled over a quarter second."""
    settings = _settings(ctx)
    limit = min(limit, settings.max_processes)
    # Fresh Process objects rather than psutil.process_iter()'s shared cache: cpu_percent()
    # measures since the previous call on the same object, and concurrent calls would
    # otherwise reset each other's window.
    procs: list[psutil.Process] = []
    for pid in psutil.pids():
        try:
            proc = psutil.Process(pid)
            proc.cpu_percent(None)  # the first reading only primes the counter
        except psutil.Error:
            continue
        procs.append(proc)
    time.sleep(CPU_SAMPLE_SECONDS)
    found: list[ProcessInfo] = []
    for proc in procs:
        try:
            cpu = proc.cpu_percent(None)
            info = proc.as_dict(["name", "username", "memory_info", "cmdline"])
        except psutil.Error:  # exited during the window
            continue
        name = info["name"] or ""
        argv = info["cmdline"] or ()
        if not settings.full_command_lines:
            argv = redacted(argv)
        found.append(
            ProcessInfo(
                pid=proc.pid,
                name=name,
                user=info["username"],
                cpu_percent=cpu,
                rss_bytes=info["memory_info"].rss if info["memory_info"] else None,
                # Kernel threads have no command line; show them as ps does.
                cmdline=_truncate(" ".join(argv) or f"[{name}]"),
            )
        )
    found.sort(key=lambda p: p.cpu_percent if sort_by == "cpu" else p.rss_bytes or 0, reverse=True)
    return TopProcesses(sort_by=sort_by, processes=found[:limit])


@mcphost.tool(annotations=READ_ONLY)
def unit_status(
    ctx: mcphost.ToolContext,
    unit: Annotated[str, Field(description='A unit name, e.g. "nginx.service"; no suffix means .service.')],
) -> UnitStatus:
    """Report the load, active and sub state of a systemd unit."""
    if not UNIT_NAME.fullmatch(unit):
        raise mcphost.ToolError(f"invalid unit name {unit[:64]!r}: use 1 to 256 letters, digits and @._:- characters")
    # systemctl reads "nginx" as "nginx.service"; check the allow-list against the same name.
    if unit.rpartition(".")[2] not in UNIT_TYPES:
        unit += ".service"
    patterns = _settings(ctx).units
    if patterns and not any(fnmatch.fnmatchcase(unit, p) for p in patterns):
        raise mcphost.ToolError(f"unit {unit!r} is not allowed; allowed units: {', '.join(patterns)}")
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise mcphost.ToolError("systemctl is not installed on this host")
    argv = [systemctl, "show", f"--property={','.join(UNIT_PROPERTIES)}", "--no-pager", "--", unit]
    try:
        # LC_ALL=C keeps timestamps' day names stable whatever the daemon's locale.
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise mcphost.ToolError(f"systemctl did not answer within {SYSTEMCTL_TIMEOUT:g}s") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[0] if done.stderr.strip() else f"exit {done.returncode}"
        raise mcphost.ToolError(f"systemctl show {unit} failed: {reason}")
    props = dict(line.partition("=")[::2] for line in done.stdout.splitlines() if "=" in line)
    main_pid = int(props.get("MainPID") or 0)
    return UnitStatus(
        unit=props.get("Id") or unit,
        description=props.get("Description", ""),
        load_state=props.get("LoadState", ""),
        active_state=props.get("ActiveState", ""),
        sub_state=props.get("SubState", ""),
        unit_file_state=props.get("UnitFileState") or None,
        main_pid=main_pid or None,  # systemd reports 0 for "no main process"
        active_enter_timestamp=props.get("ActiveEnterTimestamp") or None,
    )


def _truncate(text: str) -> str:
    return text if len(text) <= CMDLINE_MAX else text[: CMDLINE_MAX - 1] + "…"


@mcphost.hookimpl
def mcphost_settings_model() -> type[Settings]:
    """This plugin's settings model."""
    return Settings


@mcphost.hookimpl
def mcphost_tools(settings: Settings) -> list[Callable[..., Any]]:
    """The tools; ``unit_status`` only where ``systemctl`` is installed."""
    tools: list[Callable[..., Any]] = [load, memory, disk_usage, uptime, top_processes]
    if shutil.which("systemctl"):
        tools.append(unit_status)
    else:
        logger.info("systemctl not found; unit_status is not offered")
    return tools
