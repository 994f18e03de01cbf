"""The configuration: pydantic models of ``mcphost.toml``, environment overrides, and
errors a sysadmin can act on (key path and line number).

This module owns parsing and validation of the host's own keys. A plugin's
``[plugins.<name>.settings]`` table is kept raw here and validated against the plugin's
model when the plugin loads (:mod:`mcphost.plugins`), which reports problems in the same
:class:`Problem` shape.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_PATHS = (Path("/etc/mcphost/mcphost.toml"),)
"""Where ``mcphost`` looks for its config when neither ``--config`` nor ``MCPHOST_CONFIG`` names one."""

_RESERVED_PLUGIN_KEYS = frozenset({"enable", "disable", "paths"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsConfig(_Strict):
    """Call-time limits; ``[limits]`` sets defaults, plugins and tools may override them."""

    timeout: float | None = Field(None, gt=0, description="seconds before a call is cancelled")
    max_concurrency: int | None = Field(None, ge=1, description="calls running at once")
    max_result_bytes: int | None = Field(None, ge=1, description="largest result, serialized")


class DefaultLimits(LimitsConfig):
    """The ``[limits]`` table: every field has a value."""

    timeout: float = Field(30.0, gt=0)
    max_concurrency: int = Field(16, ge=1)
    max_result_bytes: int = Field(1_048_576, ge=1)


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


class PluginsConfig(_Strict):
    """The ``[plugins]`` table: which plugins run, and each one's ``[plugins.<name>]``."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, PluginConfig] = Field(init=False)  # type: ignore[assignment]

    enable: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns of plugin names to load; the default loads every installed plugin."""
    disable: list[str] = Field(default_factory=list)
    """Glob patterns of plugin names never to load; wins over ``enable``."""
    paths: list[Path] = Field(default_factory=list)
    """Plugin files or package directories loaded without installing (origin ``path``)."""

    def for_plugin(self, name: str) -> PluginConfig:
        """The ``[plugins.<name>]`` table, or the defaults when there is none."""
        return (self.__pydantic_extra__ or {}).get(name) or PluginConfig()

    def configured(self) -> set[str]:
        """Names that have a ``[plugins.<name>]`` table."""
        return set(self.__pydantic_extra__ or {})


class ServerConfig(_Strict):
    """The ``[server]`` table: the HTTP listener and the MCP endpoint."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    path: str = Field("/mcp", pattern=r"^/[^\s]*$")
    name: str = "mcphost"
    """The server name clients see in ``initialize``."""
    instructions: str | None = None
    json_response: bool = False
    """Answer POSTs with a JSON body instead of an SSE stream (no progress notifications)."""
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    session_idle_timeout: float = Field(1800.0, gt=0)
    max_sessions: int = Field(10_000, ge=1)
    allowed_hosts: list[str] = Field(default_factory=list)
    """``Host`` values accepted besides loopback (``name`` or ``name:port``; ``name:*`` any port; ``*`` any)."""
    allowed_origins: list[str] = Field(default_factory=list)
    """``Origin`` values accepted besides loopback (``scheme://host[:port]``; ``:*`` any port; ``*`` any)."""
    graceful_timeout: float = Field(10.0, ge=0)


class ToolsConfig(_Strict):
    """The ``[tools]`` table: naming rules for every plugin's tools."""

    max_name_length: int = Field(48, ge=8, le=128)
    """Longest public tool name; 48 leaves Claude Code room for ``mcp__<server>__`` within 64."""


class LogConfig(_Strict):
    """The ``[log]`` table."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: human-readable on a terminal, JSON lines otherwise."""

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class HostConfig(BaseSettings):
    """The whole ``mcphost.toml``; ``MCPHOST_<TABLE>__<KEY>`` environment variables override it."""

    model_config = SettingsConfigDict(env_prefix="MCPHOST_", env_nested_delimiter="__", extra="forbid")

    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: DefaultLimits = Field(default_factory=DefaultLimits)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file is passed as init kwargs; the environment must win over it.
        return env_settings, init_settings


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config, located as precisely as the source allows."""

    key: str
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        """``source:line: key: message``, the shape compilers and ``nginx -t`` use."""
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config is invalid; ``problems`` lists every reason.

    ``plugins_only`` is the same file with every table but ``[plugins]`` left at its
    defaults, when that much is valid: enough to go on checking the plugins, so one run
    of ``check-config`` reports every problem, not the first batch.
    """

    def __init__(self, source: str, problems: list[Problem], plugins_only: LoadedConfig | None = None):
        self.source = source
        self.problems = problems
        self.plugins_only = plugins_only
        super().__init__("\n".join(p.render(source) for p in problems))


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config and where it came from, kept for locating later problems."""

    config: HostConfig
    source: str
    text: str

    def problem(self, loc: tuple[str | int, ...], message: str) -> Problem:
        """A :class:`Problem` at ``loc`` with its line in the source file when it has one."""
        return Problem(_dotted(loc), message, locate(self.text, loc))


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to read: ``--config``, else ``$MCPHOST_CONFIG``, else the first default that exists."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("MCPHOST_CONFIG"):
        return Path(env)
    return next((p for p in DEFAULT_PATHS if p.exists()), None)


def load(path: str | os.PathLike[str] | None) -> LoadedConfig:
    """Read and validate a config file (``None``: the embedded defaults plus environment)."""
    if path is None:
        return _validate({}, "<defaults>", "")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(source, [Problem("", f"cannot read: {error}")]) from None
    return parse(text, source)


def parse(text: str, source: str = "<string>") -> LoadedConfig:
    """Validate config ``text``; raises :class:`ConfigError` with every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"\(at line (\d+), column \d+\)", str(error))
        message = re.sub(r"\s*\(at line.*\)$", "", str(error))
        line = int(match[1]) if match else None
        raise ConfigError(source, [Problem("", f"TOML syntax error: {message}", line)]) from None
    return _validate(data, source, text)


def _validate(data: dict[str, Any], source: str, text: str) -> LoadedConfig:
    problems: list[Problem] = []
    for name in data.get("plugins", {}) if isinstance(data.get("plugins"), dict) else ():
        if not isinstance(data["plugins"][name], dict) and name not in _RESERVED_PLUGIN_KEYS:
            problems.append(Problem(f"plugins.{name}", "must be a table", locate(text, ("plugins", name))))
    if problems:
        raise ConfigError(source, problems)
    try:
        config = HostConfig(**data)
    except ValidationError as error:
        try:
            plugins_only: LoadedConfig | None = LoadedConfig(HostConfig(plugins=data.get("plugins", {})), source, text)
        except ValidationError:
            plugins_only = None
        raise ConfigError(source, problems_from(error, text), plugins_only) from None
    return LoadedConfig(config, source, text)


def problems_from(error: ValidationError, text: str, prefix: tuple[str | int, ...] = ()) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` s located in ``text`` (keys under ``prefix``)."""
    problems = []
    for e in error.errors(include_url=False):
        loc = prefix + tuple(e["loc"])
        message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if e["type"] not in ("extra_forbidden", "missing") and "input" in e and not isinstance(e["input"], dict):
            message += f" (got {e['input']!r})"
        if variable := _environment_variable(loc):
            problems.append(Problem(_dotted(loc), f"{message} (set by environment variable {variable})"))
        else:
            problems.append(Problem(_dotted(loc), message, locate(text, loc)))
    return problems


def _environment_variable(loc: tuple[str | int, ...]) -> str | None:
    """The ``MCPHOST_…`` variable that set the value at ``loc`` (or a table above it), if any."""
    parts = [str(part).upper() for part in loc if isinstance(part, str)]
    names = {name.upper(): name for name in os.environ if name.upper().startswith("MCPHOST_")}
    for end in range(len(parts), 0, -1):
        if found := names.get("MCPHOST_" + "__".join(parts[:end])):
            return found
    return None


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", dotted)
    return tuple(next(p for p in groups if p) if any(groups) else "" for groups in parts)


def locate(text: str, loc: tuple[str | int, ...]) -> int | None:
    """The line that defines the key at ``loc`` (or its closest defined parent), if any."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            table = _split_key(header[1])
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            lines.setdefault(table + _split_key(key[1]), number)
    path = tuple(str(part) for part in loc if isinstance(part, str))
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
