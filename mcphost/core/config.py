"""The configuration: pydantic models of ``mcphost.toml``, environment overrides, and
errors a sysadmin can act on (key path and line number).

This module owns parsing and validation of the host's own keys; the tables a plugin host
reads are in :mod:`mcphost.core.plugin_tables`, and how a problem is located and told in
:mod:`mcphost.core.problems` (a plugin's worker, handed its tables, imports those two only).
A plugin's ``[plugins.<name>.settings]`` table is kept raw here and validated against the
plugin's model when the plugin loads (:mod:`mcphost.plugins.host`), which reports problems
in the same :class:`~mcphost.core.problems.Problem` shape.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mcphost.core.plugin_tables import (
    DefaultLimits,
    LogConfig,
    PluginConfig,
    PluginsConfig,
    ShutdownConfig,
    Strict,
    ToolsConfig,
    byte_size,
)
from mcphost.core.problems import Loaded, Problem, choices_of, is_model, locate, problems_from
from mcphost.core.rate import RateText

DEFAULT_PATHS = (Path("/etc/mcphost/mcphost.toml"),)
"""Where ``mcphost`` looks for its config when neither ``--config`` nor ``MCPHOST_CONFIG`` names one."""
ENV_PREFIX = "MCPHOST_"
PROCESS_VARIABLES = frozenset(
    {"MCPHOST_CONFIG", "MCPHOST_WORKER_FD", "MCPHOST_WORKER_INDEX", "MCPHOST_MASTER_PID", "MCPHOST_ROOT"}
)
"""``MCPHOST_*`` variables that are not settings: the config file, what a worker process is
handed (:mod:`mcphost.daemon.workers`), and where ``packaging/install.sh`` installs."""


class ServerConfig(Strict):
    """The ``[server]`` table: the HTTP listener and the MCP endpoint."""

    host: str = "127.0.0.1"
    """Listen address; on any but a loopback address authentication must be configured.
    Unused when systemd hands over the socket (``mcphost.socket``)."""
    port: int = Field(8080, ge=0, le=65535)
    """Listen port."""
    path: str = Field("/mcp", pattern=r"^/[^\s]*$")
    """Path of the MCP endpoint (Streamable HTTP)."""
    name: str = "mcphost"
    """The server name clients see in ``initialize``."""
    instructions: str | None = None
    """Instructions for clients, sent in ``initialize`` (``"Tools for the ops team's servers."``)."""
    json_response: bool = False
    """Answer POSTs with a JSON body instead of an SSE stream (no progress notifications)."""
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request body in bytes; a bigger one gets 413."""
    body_timeout: float = Field(30.0, gt=0)
    """Seconds a request's body may take to arrive after its headers; slower: 408, connection closed."""
    session_idle_timeout: float = Field(1800.0, gt=0)
    """Seconds a 2025-11-25 session may go without a request on any process before it ends."""
    max_sessions: int = Field(10_000, ge=1)
    """Open sessions at most; a client opening one more gets 503 (-32004, with ``Retry-After``)."""
    max_sessions_per_identity: int | None = Field(None, ge=1)
    """Sessions (and ``subscriptions/listen`` streams) one authenticated caller may hold;
    past it, its own least recently used idle session ends. Default: a tenth of ``max_sessions``."""
    workers: int = Field(1, ge=1, le=64)
    """Worker processes on the port (one Trio loop and listening socket each); sessions move
    freely between them through the session store. 1 serves from this process."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """``Host`` values accepted besides loopback (``name`` or ``name:port``; ``name:*`` any port; ``*`` any)."""
    allowed_origins: list[str] = Field(default_factory=list)
    """``Origin`` values accepted besides loopback (``scheme://host[:port]``; ``:*`` any port; ``*`` any)."""
    event_store: Literal["memory", "none"] = "memory"
    """Where SSE events are kept so a client whose stream broke can resume it (``Last-Event-ID``)."""
    event_store_max_events: int = Field(10_000, ge=100)
    """Events kept for resuming, all sessions together; the oldest go first."""
    event_store_max_events_per_identity: int | None = Field(None, ge=10)
    """Of those, the most one authenticated caller's sessions keep: its own oldest go first.
    Default: a tenth of ``event_store_max_events``."""
    event_store_max_bytes: int = Field(64 * 2**20, ge=2**20)
    """The most bytes those events may hold, as sent (bytes, or K, M, G, T as powers of
    1024), all sessions together, the oldest going first; one caller's sessions together a
    tenth of it, their own oldest going first. A tool's result of up to ``max_result_bytes``
    is one event (its text often twice, as content and as structured content), as is each
    log message or progress of a call answered on a stream: raising ``max_result_bytes``,
    keep a tenth of this above twice it, or a client cannot resume the largest results."""
    sse_retry_ms: int = Field(1000, ge=0)
    """Milliseconds a client should wait before reconnecting a resumable stream the server ended."""
    keep_alive_timeout: float = Field(75.0, gt=0)
    """Seconds an idle keep-alive connection stays open. Keep it above the idle timeout of
    the proxy in front (nginx's upstream ``keepalive_timeout`` 60 s, Caddy's ``keepalive``),
    so the proxy closes idle connections first, never a request it is sending."""

    _size = field_validator("event_store_max_bytes", mode="before")(byte_size)

    @property
    def sessions_share(self) -> int:
        """``max_sessions_per_identity``, or its default: a tenth of ``max_sessions``."""
        return self.max_sessions_per_identity or max(1, self.max_sessions // 10)

    @property
    def events_share(self) -> int:
        """``event_store_max_events_per_identity``, or its default: a tenth of ``event_store_max_events``."""
        return self.event_store_max_events_per_identity or self.event_store_max_events // 10

    @property
    def event_bytes_share(self) -> int:
        """A tenth of ``event_store_max_bytes``: the most one caller's sessions' events hold."""
        return self.event_store_max_bytes // 10


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else ``$XDG_STATE_HOME/mcphost``,
    else ``~/.local/state/mcphost``."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "mcphost"


class SessionsConfig(Strict):
    """The ``[sessions]`` table: how 2025-11-25 sessions outlive the process that opened them."""

    store: Literal["file", "none"] = "file"
    """``file``: records in ``<state_dir>/sessions.sqlite3``, so sessions survive restarts;
    ``none``: sessions end with the process (ids are still signed)."""
    state_dir: Path = Field(default_factory=default_state_dir)
    """Where the session store lives. Default: ``$STATE_DIRECTORY`` (systemd's
    ``StateDirectory=``), else ``$XDG_STATE_HOME/mcphost``, else ``~/.local/state/mcphost``.
    Made 0700 when mcphost makes it; its files are 0600."""
    secret_file: Path | None = None
    """The key session ids are signed with; default ``$CREDENTIALS_DIRECTORY/session-secret``
    when that exists, else ``<state_dir>/session-secret`` (created on first start).
    Replicas sharing sessions must share it."""

    def secret_path(self) -> Path:
        """Where the session secret is read from (or created)."""
        if self.secret_file is not None:
            return self.secret_file
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        if credentials and (Path(credentials) / "session-secret").exists():
            return Path(credentials) / "session-secret"
        return self.state_dir / "session-secret"


class StateConfig(Strict):
    """The ``[state]`` table: where what several replicas must share is kept."""

    backend: Literal["local", "redis"] = "local"
    """``local``: rate-limit budgets and resumable events in memory, sessions in
    ``[sessions] state_dir`` (one machine); ``redis``: all three in Redis, shared by every
    replica that names the same ``redis_url``."""
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(rediss?|unix)://")
    """``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS, or ``unix:///path?db=0``."""
    key_prefix: str = Field("mcphost:", max_length=64)
    """Prefix of every key mcphost writes, so several deployments can share one Redis."""
    timeout: float = Field(0.5, gt=0, le=10)
    """Seconds any one Redis call may take; past it Redis counts as unavailable."""


class TasksConfig(Strict):
    """The ``[tasks]`` table: long tool calls that outlive their request (2026-07-28 clients
    that accept tasks), kept where ``[sessions]`` and ``[state]`` keep sessions."""

    enabled: bool = True
    """Offer tasks to clients that accept them; ``false``: every call is answered on its request."""
    handoff_after: float = Field(1.0, ge=0, le=3600)
    """Seconds a call that may run as a task runs on its request before the request is
    answered with a task instead (a tool may go on as a task sooner, ``ctx.detach()``)."""
    min_timeout: float = Field(60.0, gt=0)
    """A tool whose author said nothing may run as a task when its timeout is at least this."""
    retention: float = Field(3600.0, gt=0, le=30 * 86_400)
    """Seconds a finished task's result is kept for the client to collect."""
    poll_interval_ms: int = Field(1000, ge=10, le=600_000)
    """How often clients are told to poll a task."""
    lease: float = Field(15.0, ge=1, le=3600)
    """Seconds after a process stops renewing its lease before its unfinished tasks are
    reported failed (it died: killed, crashed, or its machine lost)."""


class ProxyConfig(Strict):
    """The ``[proxy]`` table: reverse proxies whose ``X-Forwarded-*`` headers are believed."""

    trusted: list[str] = Field(default_factory=list)
    """Addresses or CIDR ranges of the proxies in front (``"127.0.0.1"``, ``"10.0.0.0/8"``).
    From these peers, ``X-Forwarded-For`` gives the client address (logs),
    ``X-Forwarded-Proto`` the scheme and ``X-Forwarded-Host`` the ``Host`` checked against
    ``[server] allowed_hosts``; from any other peer the headers are ignored."""

    @field_validator("trusted")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # a ValueError names the bad entry
        return value


class ReloadConfig(Strict):
    """The ``[reload]`` table: reloading on file changes (SIGHUP always reloads)."""

    watch: bool = False
    """Watch the config file and every loaded plugin's source files, and reload what changed."""
    debounce_ms: int = Field(200, ge=10, le=10_000)
    """Changes arriving within this many milliseconds are applied as one reload."""


KeyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
"""An API key's name: what logs and tools see as the caller's identity."""
_LOOPBACK_URL = re.compile(r"^http://(127\.[0-9.]+|localhost|\[::1\])(:\d+)?(/|$)")


def _https_url(value: str) -> str:
    # Signing keys fetched over plain HTTP could be swapped by anyone on the path.
    if not value.startswith("https://") and not _LOOPBACK_URL.match(value):
        raise ValueError("must be an https:// URL (http:// only on loopback)")
    return value


JwtAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
"""The asymmetric JWS algorithms ``[auth.oauth] algorithms`` may list."""


class KeyConfig(Strict):
    """One API key: ``<name> = { hash = "sha256:…", tools = ["sysinfo_*"] }``, as ``mcphost keys new`` prints it."""

    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    """SHA-256 of the token; the token itself is never stored."""
    tools: list[str] = Field(min_length=1)
    """The key's scope: glob patterns of the tool and prompt names, resource URIs and URI
    templates it may list and use; ``["*"]`` for everything."""
    rate_limit: RateText | None = None
    """This key's request budget, instead of ``[rate_limits] identity``."""


class KeysFile(Strict):
    """A keys file (``[auth] keys_file``, or a systemd credential): a ``[keys]`` table like ``[auth.keys]``."""

    keys: dict[KeyName, KeyConfig] = Field(default_factory=dict)


class OAuthConfig(Strict):
    """The ``[auth.oauth]`` table: accept JWT access tokens from one identity provider."""

    issuer: str = Field(min_length=1)
    """The ``iss`` every token must carry; also the authorization server announced to clients."""
    jwks_url: Annotated[str, AfterValidator(_https_url)]
    """Where the issuer publishes its signing keys (JWKS)."""
    resource: Annotated[str, AfterValidator(_https_url)]
    """This server's MCP endpoint as clients reach it (``https://mcp.example.com/mcp``): the
    audience tokens must be issued for (RFC 8707), and the ``resource`` of its metadata."""
    audiences: list[str] = Field(default_factory=list)
    """Further ``aud`` values accepted besides ``resource`` (an identity provider that names the API its own way)."""
    authorization_servers: list[str] = Field(default_factory=list)
    """Announced in the protected resource metadata; default ``[issuer]``."""
    algorithms: list[JwtAlgorithm] = Field(default=["RS256", "ES256"], min_length=1)
    """Signature algorithms accepted; ``none`` and shared-secret (HS*) algorithms never are."""
    leeway: float = Field(30.0, ge=0, le=300)
    """Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``."""
    scopes: dict[str, list[str]] = Field(default_factory=dict)
    """Token scope → glob patterns it grants, as a key's ``tools``. Empty: every valid token may use everything."""
    jwks_cache_seconds: float = Field(3600.0, gt=0)
    """How long fetched signing keys are used before they are fetched again."""
    jwks_refresh_interval: float = Field(30.0, ge=0)
    """Least seconds between two fetches caused by tokens signed with an unknown key (``kid``)."""


class AuthConfig(Strict):
    """The ``[auth]`` table: who may use ``/mcp``. Any key source or ``[auth.oauth]`` turns authentication on."""

    keys: dict[KeyName, KeyConfig] = Field(default_factory=dict)
    """API keys by name; better kept in ``keys_file`` or ``credential`` than in this file."""
    keys_file: Path | None = None
    """A TOML file with a ``[keys]`` table of API keys."""
    credential: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """A systemd credential holding a keys file: ``$CREDENTIALS_DIRECTORY/<credential>``."""
    allow_unauthenticated: bool = False
    """Serve a non-loopback address without authentication (only behind a proxy that authenticates)."""
    oauth: OAuthConfig | None = None
    """OAuth 2.1 access tokens (JWTs) from an identity provider; absent: none accepted."""


class RateLimitsConfig(Strict):
    """The ``[rate_limits]`` table; every limit counts per caller (identity)."""

    identity: RateText | None = None
    """Each caller's budget of requests (POSTs) to ``/mcp``; over it: HTTP 429."""
    plugins: dict[str, RateText] = Field(default_factory=dict)
    """Per plugin name: each caller's budget of calls to any of the plugin's tools."""
    tools: dict[str, RateText] = Field(default_factory=dict)
    """Per public tool name: each caller's budget of calls to that tool."""
    max_tracked: int = Field(100_000, ge=100)
    """Most (caller, limit) pairs remembered; past it the least recently seen is forgotten."""


class AdminConfig(Strict):
    """The ``[admin]`` table: a second listener for operators (``/ready`` with every detail,
    ``/metrics``, ``/status``)."""

    enabled: bool = True
    """Serve the admin listener; without it ``mcphost status`` has nothing to ask and
    ``mcphost reload`` does not wait."""
    host: str = "127.0.0.1"
    """Its address: keep it on loopback, or on a private address listed in ``[server] allowed_hosts``."""
    port: int = Field(8081, ge=0, le=65535)
    """Its port."""
    metrics_token: str | None = Field(None, min_length=16)
    """When set, ``/metrics`` and ``/status`` want ``Authorization: Bearer <metrics_token>``
    (wherever they are served); better given as ``MCPHOST_ADMIN__METRICS_TOKEN``."""


class MetricsConfig(Strict):
    """The ``[metrics]`` table: the Prometheus exposition and the ``/status`` report."""

    public: bool = False
    """Serve ``/metrics`` on the MCP listener too, not only on the admin listener; on a
    non-loopback address this needs ``[admin] metrics_token``."""
    window: float = Field(300.0, ge=10, le=3600)
    """Seconds of recent calls the p50/p99 latencies of ``/status`` are taken over."""
    window_calls: int = Field(1000, ge=10, le=100_000)
    """Most recent calls kept per tool for those latencies (memory stays bounded under load)."""


class TracingConfig(Strict):
    """The ``[tracing]`` table: OpenTelemetry spans per request and per tool call
    (needs ``pip install 'mcphost[otel]'``)."""

    exporter: Literal["none", "otlp", "file", "console"] = "none"
    """``otlp``: OTLP over HTTP (protobuf) to ``endpoint``; ``file``: one JSON object per
    span and line, appended to ``path``; ``console``: the same on stderr (debugging)."""
    endpoint: str | None = None
    """The OTLP/HTTP traces URL; default ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else
    ``http://localhost:4318/v1/traces``."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers for the OTLP exporter (a vendor's API key)."""
    path: Path | None = None
    """Where the ``file`` exporter writes."""
    service_name: str = Field("mcphost", min_length=1)
    """``service.name`` of every span."""
    sample_ratio: float = Field(1.0, ge=0, le=1)
    """Share of traces recorded that a client did not already decide on (a client's sampled
    flag is followed)."""

    @model_validator(mode="after")
    def _file_needs_path(self) -> TracingConfig:
        if self.exporter == "file" and self.path is None:
            raise ValueError('exporter = "file" needs a path')
        return self


class HostConfig(BaseSettings):
    """The whole ``mcphost.toml``; ``MCPHOST_<TABLE>__<KEY>`` environment variables override it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: DefaultLimits = Field(default_factory=DefaultLimits)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    reload: ReloadConfig = Field(default_factory=ReloadConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)

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
        return (env_settings, init_settings)


class LoadedConfig(Loaded[HostConfig]):
    """A validated ``mcphost.toml`` and where it came from."""

    __slots__ = ()


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
        if not isinstance(data["plugins"][name], dict) and name not in PluginsConfig.model_fields:
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


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[Problem]:
    """``MCPHOST_*`` variables that set no setting, which would otherwise be ignored without
    a word: a misspelt key, or one ``_`` where ``__`` separates a table from its key
    (``MCPHOST_LOG_FORMAT`` for ``MCPHOST_LOG__FORMAT``)."""
    environ = os.environ if environ is None else environ
    found = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings matches names without regard to case
        if not upper.startswith(ENV_PREFIX) or upper in PROCESS_VARIABLES or _sets_a_setting(upper):
            continue
        message = "this environment variable sets no setting (they are MCPHOST_<TABLE>__<KEY>)"
        if meant := next((n for n in _respellings(upper) if _sets_a_setting(n)), None):
            message += f"; did you mean {meant}?"
        found.append(Problem(name, message))
    return found


def _sets_a_setting(variable: str) -> bool:
    """Whether pydantic-settings would apply ``MCPHOST_...`` to a field of :class:`HostConfig`."""
    model: Any = HostConfig
    parts = variable.removeprefix(ENV_PREFIX).lower().split("__")
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is not None:
            annotation = field.annotation
        elif model is PluginsConfig and part:
            annotation = PluginConfig  # [plugins.<name>]: any name is a plugin's table
        else:
            return False
        if index == len(parts) - 1:
            return True
        # Below a mapping (keys, a plugin's settings): anything; below a table: its fields.
        if typing.get_origin(annotation) is dict:
            return True
        model = next((a for a in choices_of(annotation) if is_model(a)), None)  # a table, or "table | None"
        if model is None:
            return False
    return False


def _respellings(variable: str) -> list[str]:
    """``variable`` with some of its single ``_`` after the prefix doubled, most first (a
    plugin's table takes any name, so ``PLUGINS__FILES_TIMEOUT`` would name a plugin)."""
    head, tail = variable[: len(ENV_PREFIX)], variable[len(ENV_PREFIX) :]
    pieces = re.split(r"(?<!_)_(?!_)", tail)
    gaps = range(len(pieces) - 1)
    spellings = []
    for count in range(min(len(pieces) - 1, 3), 0, -1):
        for doubled in itertools.combinations(gaps, count):
            joined = pieces[0] + "".join(("__" if i in doubled else "_") + p for i, p in enumerate(pieces[1:]))
            spellings.append(head + joined)
    return spellings
