"""The config's tables a plugin host reads: ``[limits]``, ``[tools]`` and ``[plugins]``, with
``[log]`` and ``[shutdown]`` for the workers it starts.

A module of their own: a plugin's worker is handed these tables (:class:`PluginTables`) and
validates them with nothing else of the config (:mod:`mcphost.core.config`), which the fork
server its workers are forked from then never imports.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcphost.core.rate import RateText


def byte_size(value: Any) -> Any:
    """A size in bytes as systemd reads one: ``"512M"`` (K, M, G and T are powers of 1024);
    a number as it is, for the field to check. Raises ValueError for any other string."""
    if isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+)\s*([KMGT]?)\s*", value, re.IGNORECASE)):
        return int(match[1]) * 1024 ** " KMGT".index(match[2].upper() or " ")
    if isinstance(value, str):
        raise ValueError('must be a number of bytes, or one with a suffix K, M, G or T (powers of 1024): "512M"')
    return value


class Strict(BaseModel):
    """A table of the configuration: a key it does not know is an error."""

    # A field's docstring is its description: the configuration reference and the man page
    # are generated from the models (docgen reads the docstrings; pydantic's
    # use_attribute_docstrings would read every model's source at each start).
    model_config = ConfigDict(extra="forbid")


class LimitsConfig(Strict):
    """Call-time limits; ``[limits]`` sets defaults, plugins and tools may override them."""

    timeout: float | None = Field(None, gt=0)
    """Seconds before a call is cancelled and answered with an error."""
    max_concurrency: int | None = Field(None, ge=1)
    """Calls running at once (worker threads of timed-out calls included); a tool with its
    own ``max_concurrency`` gets a pool of its own."""
    max_result_bytes: int | None = Field(None, ge=1)
    """Largest result, serialized, in bytes; a bigger one is replaced by an error."""


class DefaultLimits(LimitsConfig):
    """The ``[limits]`` table: defaults for every plugin's calls (each field has a value)."""

    timeout: float = Field(30.0, gt=0)
    """Seconds before a call is cancelled and answered with an error."""
    max_concurrency: int = Field(64, ge=1)
    """Calls of one plugin running at once (worker threads of timed-out calls included); a
    tool with its own ``max_concurrency`` gets a pool of its own."""
    max_result_bytes: int = Field(1_048_576, ge=1)
    """Largest result, serialized, in bytes; a bigger one is replaced by an error."""
    max_threads: int = Field(128, ge=1, le=4096)
    """Threads all plugins' sync calls and hooks may hold at once."""
    max_threads_per_plugin: int = Field(32, ge=1, le=4096)
    """Threads one plugin's sync calls and hooks may hold at once, whatever ``max_concurrency``
    its author asks for its tools."""
    load_timeout: float = Field(30.0, gt=0)
    """Seconds a plugin's import (with its definition hooks), its start-up hook and its
    shut-down hook may each take before the plugin counts as failed."""
    stall_timeout: float = Field(10.0, gt=0)
    """Seconds plugin code may hold the event loop before its call is failed and the plugin
    marked degraded."""


class PluginConfig(LimitsConfig):
    """A ``[plugins.<name>]`` table: how the host runs one plugin."""

    prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]*$", max_length=32)
    """Prefix of the plugin's tool and prompt names; default the plugin's name, ``""`` for none."""
    required: bool = False
    """Readiness (``/ready``) fails while a required plugin is not loaded and ready."""
    tools: dict[str, LimitsConfig] = Field(default_factory=dict)
    """Per-tool limit overrides, keyed by the tool's unprefixed name."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """The plugin's own settings, validated against its model at load."""
    isolation: Literal["inline", "process"] = "process"
    """``process`` (the default): the plugin runs in a worker process of its own, supervised
    by the daemon; ``inline``: in the daemon's process, behind the in-process fence, for a
    plugin trusted as the daemon is."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables of the plugin's worker, on top of ``PATH``, ``HOME`` and ``LANG``."""
    command: list[str] = Field(default_factory=list)
    """An existing MCP server (stdio) to host as this plugin: its program and arguments,
    e.g. ``["node", "/opt/mcp/server/dist/index.js"]``; it runs supervised in a process of
    its own, as ``isolation = "process"`` does."""
    args: list[str] = Field(default_factory=list)
    """More arguments, after ``command``'s."""
    cwd: Path | None = None
    """The working directory of ``command``; by default the daemon's."""
    roots: list[str] = Field(default_factory=list)
    """The roots (``file://`` URIs) ``command``'s server is given when it asks for the client's."""
    memory_max: int | None = Field(None, ge=64 * 2**20)
    """With ``isolation = "process"``: the most memory the worker may use, in bytes or with a
    binary suffix (``"512M"``, ``"2G"``). With a delegated cgroup, its cgroup's ``memory.max``:
    past it the kernel kills the worker and what it started. Without, the most address space
    it may map (``RLIMIT_AS``): past it, allocations fail in the worker."""
    max_open_files: int | None = Field(None, ge=16)
    """With ``isolation = "process"``: the most file descriptors the worker may hold open."""
    max_tasks: int | None = Field(None, ge=1)
    """With ``isolation = "process"`` and a delegated cgroup: the most processes and threads
    the worker and what it starts may run at once (``pids.max``); past it, fork and thread
    creation fail in the worker."""
    cpu_weight: int | None = Field(None, ge=1, le=10000)
    """With ``isolation = "process"`` and a delegated cgroup: the worker's share of CPU time
    when the CPU is contended (``cpu.weight``; the daemon and each other worker have 100)."""
    output_rate: RateText = "1000/minute"
    """With ``isolation = "process"``: the most lines of the worker's output (its stderr and
    stdout; a hosted server's stderr, stray stdout and log messages) logged per period, as
    journald counts a service's (``RateLimitBurst`` per ``RateLimitIntervalSec``); past it,
    the rest of the period's lines are dropped, and their count is logged and kept in metrics."""
    max_restarts: int = Field(5, ge=0)
    """A worker that ends more often than this within ``restart_window`` seconds settles as failed."""
    restart_window: float = Field(60.0, gt=0)
    """Seconds over which ``max_restarts`` counts; a worker up this long starts its count afresh."""

    _size = field_validator("memory_max", mode="before")(byte_size)


class PluginsConfig(Strict):
    """The ``[plugins]`` table: which plugins run, and each one's ``[plugins.<name>]``."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, PluginConfig] = Field(init=False)

    enable: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns of plugin names to load; the default loads every installed plugin."""
    disable: list[str] = Field(default_factory=list)
    """Glob patterns of plugin names never to load; wins over ``enable``."""
    paths: list[Path] = Field(default_factory=list)
    """Plugin files or package directories loaded without installing (origin ``path``)."""
    fork_server: bool = True
    """Fork isolated plugins' workers from a fork server that has imported the worker runtime
    once (they share its memory and start in milliseconds); ``false`` starts each worker as a
    fresh interpreter."""

    def for_plugin(self, name: str) -> PluginConfig:
        """The ``[plugins.<name>]`` table, or the defaults when there is none."""
        return (self.__pydantic_extra__ or {}).get(name) or PluginConfig()

    def configured(self) -> set[str]:
        """Names that have a ``[plugins.<name>]`` table."""
        return set(self.__pydantic_extra__ or {})


class ToolsConfig(Strict):
    """The ``[tools]`` table: naming rules for every plugin's tools."""

    max_name_length: int = Field(48, ge=8, le=128)
    """Longest public tool name; 48 leaves Claude Code room for ``mcp__<server>__`` within 64."""


class LogConfig(Strict):
    """The ``[log]`` table."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severity logged. Logs always go to stderr (journald under systemd)."""
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: human-readable on a terminal, JSON lines otherwise."""

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ShutdownConfig(Strict):
    """The ``[shutdown]`` table: draining on SIGTERM or SIGINT."""

    drain_timeout: float = Field(30.0, ge=0)
    """Seconds calls in flight may take to finish; what still runs then is cancelled and answered with an error."""


class PluginTables(Strict):
    """What a plugin's worker is handed of the daemon's config: its plugin's tables, the
    limits and the naming rules, validated again from their values alone."""

    limits: DefaultLimits = Field(default_factory=DefaultLimits)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)


class HostedTables(Protocol):
    """What a plugin host reads of a config: the whole file's
    (:class:`mcphost.core.config.HostConfig`) or a worker's :class:`PluginTables`."""

    @property
    def limits(self) -> DefaultLimits:
        """``[limits]``: defaults for every plugin's calls."""

    @property
    def tools(self) -> ToolsConfig:
        """``[tools]``: naming rules for every plugin's tools."""

    @property
    def plugins(self) -> PluginsConfig:
        """``[plugins]``: which plugins run, and how."""

    @property
    def log(self) -> LogConfig:
        """``[log]``: the level a worker it starts logs at."""

    @property
    def shutdown(self) -> ShutdownConfig:
        """``[shutdown]``: how long a worker it stops may drain."""
