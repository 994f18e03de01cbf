"""Result models of the sysinfo tools; their JSON Schemas become the tools' output schemas."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "CMDLINE_MAX",
    "DiskUsage",
    "LoadAverage",
    "MemoryStats",
    "MemoryUsage",
    "ProcessInfo",
    "TopProcesses",
    "UnitStatus",
    "Uptime",
]

CMDLINE_MAX = 200
"""Longest command line returned per process; some are kilobytes of JVM flags."""


class LoadAverage(BaseModel):
    """System load averages (runnable plus uninterruptible tasks)."""

    load_1m: float
    load_5m: float
    load_15m: float
    cpu_count: int | None = Field(description="Logical CPUs; compare load against it.")


class MemoryStats(BaseModel):
    """One memory pool, in bytes."""

    total: int
    available: int = Field(description="Usable without swapping (for swap: free swap).")
    used: int
    percent: float


class MemoryUsage(BaseModel):
    """RAM and swap usage."""

    ram: MemoryStats
    swap: MemoryStats


class DiskUsage(BaseModel):
    """Usage of the filesystem holding one mount point, in bytes."""

    mount: str
    total: int
    used: int
    free: int = Field(description="Available to unprivileged users (excludes root-reserved blocks).")
    percent: float


class Uptime(BaseModel):
    """When the host booted."""

    boot_time: datetime = Field(description="Boot time, UTC.")
    uptime_seconds: float


class ProcessInfo(BaseModel):
    """One process, as seen over the sampling window."""

    pid: int
    name: str
    user: str | None
    cpu_percent: float = Field(description="Percent of one CPU; exceeds 100 for multi-threaded work.")
    rss_bytes: int | None
    cmdline: str = Field(
        description=f"Secret-looking values masked as [redacted]; truncated to {CMDLINE_MAX} characters; "
        "[name] when there is none."
    )


class TopProcesses(BaseModel):
    """The busiest processes, busiest first."""

    sort_by: Literal["cpu", "memory"]
    processes: list[ProcessInfo]


class UnitStatus(BaseModel):
    """The state of one systemd unit, as systemctl show reports it."""

    unit: str
    description: str
    load_state: str = Field(description='"not-found" when no such unit exists.')
    active_state: str
    sub_state: str
    unit_file_state: str | None
    main_pid: int | None
    active_enter_timestamp: str | None
