"""The composition root: one Trio nursery that loads plugins, serves HTTP (or stdio),
reloads on SIGHUP or file changes, and drains on SIGTERM or SIGINT.

Start-up: plugins loaded and started → registry → listener (systemd's sockets when
socket-activated) → ``READY=1``. Reload: ``RELOADING=1`` → config re-read and validated →
entry points re-scanned → changed plugins replaced → registry swapped → ``list_changed`` to
open sessions → ``READY=1``. Shutdown: ``STOPPING=1`` → no new connection taken, and every
answer says ``Connection: close`` → calls in flight finish (or are cancelled at ``[shutdown]
drain_timeout`` and answered with an error) → event streams closed (sessions stay in the
store for the next process) → keep-alive connections closed → plugins stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.streamable_http import EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged, ServerEvent, ToolsListChanged

from mcphost.auth import authenticator as auth
from mcphost.auth.ratelimit import RateLimits
from mcphost.core import config as config_module
from mcphost.core.config import ConfigError, LoadedConfig, ServerConfig, SessionsConfig, StateConfig
from mcphost.core.version import version
from mcphost.daemon import startup, startup_signals, workers
from mcphost.ops import heap, systemd
from mcphost.ops.drain import Drain
from mcphost.ops.metrics import Metrics, Sources
from mcphost.plugins import damage, leftovers
from mcphost.plugins.host import PluginHost, plugin_files
from mcphost.plugins.registry import Registry
from mcphost.plugins.watchdog import Watchdog
from mcphost.plugins.worker import cgroups
from mcphost.protocol import tracing, wire
from mcphost.protocol.direct import DirectAnswers
from mcphost.protocol.handlers import build_server
from mcphost.protocol.tasks import Tasks
from mcphost.state.eventstore import MemoryEventStore
from mcphost.state.sessions import SessionStore, SqliteSessionStore
from mcphost.state.tasks import SqliteTaskStore, TaskStore
from mcphost.transport.admin import AdminApp
from mcphost.transport.http import HttpApp
from mcphost.transport.listener import Listener
from mcphost.transport.metrics_endpoint import MetricsEndpoint, check_public
from mcphost.transport.origins import HostCheck
from mcphost.transport.proxy import TrustedProxies
from mcphost.transport.session_ids import SessionIds, load_secret
from mcphost.transport.sessions import PersistentSessionManager

if TYPE_CHECKING:
    from mcphost.state.redis_state import RedisState

log = structlog.get_logger("mcphost.daemon")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
STREAM_CLOSE_GRACE = 2.0
"""Seconds Hypercorn gives connections to close once requests are drained and streams ended."""
KEEP_ALIVE_LINGER = 1.0
"""Seconds a draining daemon waits, once nothing is in flight, for its open keep-alive
connections to send their last request (answered with ``Connection: close``) before it
closes them: one closed under a request on its way fails that request."""
LEFTOVER_GRACE = 1.0
"""Seconds the processes plugins left behind have, after SIGTERM, before SIGKILL."""
LIST_CHANGED_EVENTS: dict[str, ServerEvent] = {
    "send_tool_list_changed": ToolsListChanged(),
    "send_prompt_list_changed": PromptsListChanged(),
    "send_resource_list_changed": ResourcesListChanged(),
}
SETTLE_DELAY = 1.0
"""Seconds after start-up before the collector settles (:meth:`Daemon._settle_later`)."""
WATCH_CHECK_MS = 500
"""How often the file watcher wakes without a change (to check, once it is up, for a change
made before it was: see :meth:`Daemon._watch_files`)."""
MTIME_SLACK_NS = 20_000_000
"""A file's modification time comes from the kernel's coarse clock, which may be a tick behind
``time.time_ns()``: a file written just after a load began can look older than the load by
this much."""

RESTART_ONLY = ("server", "sessions", "log", "rate_limits", "admin", "state", "tasks", "proxy", "metrics", "tracing")
"""Config tables a reload does not apply (a warning says so when they changed); of ``[auth]``,
a reload applies the keys and not ``[auth.oauth]``."""
CHANGE_NOTIFICATIONS = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


def asgi(app: Any) -> Any:
    """``app`` for Hypercorn, whose signature wants its own ASGI type names for the same shapes."""
    return app


def _hypercorn_config(fds: list[int]) -> HypercornConfig:
    """Hypercorn's settings to serve on the listening sockets ``fds``: our logs, a short close grace."""
    config = HypercornConfig()
    config.bind = [f"fd://{fd}" for fd in fds]
    # Requests are drained before Hypercorn is told to stop; this only bounds closing.
    config.graceful_timeout = STREAM_CLOSE_GRACE
    # Hypercorn calls listen() on every socket, systemd's too: keep the socket unit's
    # Backlog= (the kernel caps this at net.core.somaxconn).
    config.backlog = startup.BACKLOG
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def session_secret(sessions: SessionsConfig) -> bytes:
    """The key session ids are signed with (created on first start); raises
    :class:`~mcphost.daemon.startup.StartupError` when it can be neither read nor created."""
    path = sessions.secret_path()
    with startup.failing_as(
        f"cannot use the session secret {path}",
        "set [sessions] secret_file to a file mcphost may read (or create), "
        "or [sessions] state_dir to a directory it may write",
        ValueError,
    ):
        return load_secret(path)


def shared_state(state: StateConfig) -> RedisState | None:
    """The connection to Redis with ``[state] backend = "redis"``; ``None`` for local state.

    Imported only then: a single machine needs no Redis client loaded.
    """
    if state.backend != "redis":
        return None
    from mcphost.state.redis_state import RedisState

    return RedisState(state.redis_url, prefix=state.key_prefix, timeout=state.timeout)


def transport_security(server: ServerConfig) -> TransportSecuritySettings:
    """Host/Origin allowlists (DNS-rebinding protection): loopback plus what the config adds.

    ``*`` in both lists turns the checks off, for a proxy that has already validated them.
    """
    if "*" in server.allowed_hosts and "*" in server.allowed_origins:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts = [h for name in LOOPBACK_HOSTS for h in (name, f"{name}:*")] + server.allowed_hosts
    origins = [
        f"{scheme}://{name}{port}" for scheme in ("http", "https") for name in LOOPBACK_HOSTS for port in ("", ":*")
    ] + server.allowed_origins
    return TransportSecuritySettings(allowed_hosts=hosts, allowed_origins=origins)


class Daemon:
    """The running host: its plugins, its current registry, its sessions and its lifecycle."""

    def __init__(self, loaded: LoadedConfig, config_path: Path | None = None):
        self.loaded = loaded
        self.config = loaded.config
        self.config_path = config_path
        self.plugins = PluginHost(loaded)
        self.plugins.on_change = self._catalogue_changed
        log.info("worker limits", limits=cgroups.describe())
        self.registry = Registry()
        self.drain = Drain()
        self.notifier = systemd.Notifier()
        self.limits = RateLimits.from_config(self.config.rate_limits)
        self.shared = shared_state(self.config.state)
        """Redis, with ``[state] backend = "redis"``: where replicas share budgets, sessions and events."""
        if self.shared is not None:
            from mcphost.state.redis_stores import RedisLimiter

            self.limits.limiter = RedisLimiter(self.shared, fallback=self.limits.limiter)
        self.secret = session_secret(self.config.sessions)
        self.metrics = Metrics(
            version(),
            versions=wire.SUPPORTED_VERSIONS,
            window=self.config.metrics.window,
            window_calls=self.config.metrics.window_calls,
        )
        self.metrics.sources = Sources(
            plugins=lambda: self.plugins.records,
            sessions=lambda: len(self.sessions.connections) if self.sessions is not None else 0,
            draining=lambda: self.drain.draining,
            tasks_running=lambda: len(self.tasks.running),
            config=loaded.source,
            worker_limits=cgroups.describe(),
        )
        self.loop_watchdog = Watchdog(self.config.limits.stall_timeout, self.metrics.loop_stalled)
        """Notices plugin code blocking the event loop, and fails its call past ``stall_timeout``."""
        self.plugins.on_stall = self.loop_watchdog.report  # what workers' own watchdogs notice
        with startup.failing_as("cannot open the [tracing] path", "set [tracing] path to a file mcphost may write"):
            self.tracing = tracing.setup(loaded, version())
        """OpenTelemetry, with ``[tracing]``; ``None`` when off."""
        self.tasks = Tasks(self.task_store(), self.config.tasks, self.metrics, self.drain)
        """Long calls as tasks, run while serving over HTTP."""
        self.server, self.handlers = build_server(
            lambda: self.registry,
            self.config.server.name,
            version(),
            self.config.server.instructions,
            self.drain,
            self.limits,
            # Derived from the session secret, so a 2026-07-28 input round survives a restart
            # and may land on any replica that shares the secret.
            state_key=hmac.new(self.secret, b"mcphost request state", hashlib.sha256).digest(),
            metrics=self.metrics,
            tracing=self.tracing,
            # A listen stream is the 2026-07-28 counterpart of a session: it counts like one.
            max_listen_streams=self.config.server.max_sessions,
            max_listen_streams_per_identity=self.config.server.sessions_share,
            tasks=self.tasks if self.config.tasks.enabled else None,
        )
        self.sessions: PersistentSessionManager | None = None
        self.host_check = HostCheck(transport_security(self.config.server))
        """The Host and Origin allowlists of both listeners."""
        self.http: HttpApp | None = None
        self._hosts: list[str] = []
        """The addresses served (systemd's sockets), which decide whether authentication is required."""
        self._reload_lock = trio.Lock()
        self._read_at_ns = 0
        """When the plugins and config now served began to be read (``time.time_ns()``)."""
        self._stop = trio.Event()
        self._settle_due = trio.Event()

    async def start_plugins(self) -> None:
        """Load and start every enabled plugin, then publish what they serve."""
        damage.keep_std_streams()  # what the fence puts back if a plugin closes one
        # Watched from the first import on: a start-up hook blocking the loop fails too.
        async with trio.open_nursery() as nursery:
            await nursery.start(self.loop_watchdog.run)
            self._read_at_ns = time.time_ns()
            candidates = self.plugins.candidates()
            # Kept, or started now, only if an enabled plugin runs isolated: an unused one (the
            # command started it before the config was read) would take CPU from the daemon's start.
            self.plugins.start_fork_server(candidates)
            await self.plugins.load_all(candidates)
            self._warn_unmatched()
            await self.plugins.start_all()
            nursery.cancel_scope.cancel()
        self.registry = self.plugins.registry
        self.metrics.bind(self.registry.tools)
        heap.settle()
        # Start-up ran with the collector paused: what it left is freed once serving (_settle_later).
        self._settle_due.set()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/ready``: each plugin's state; not ready while draining or while a required plugin is not serving."""
        checks = await self.plugins.readiness()
        plugins: dict[str, Any] = {}
        ok = not self.drain.draining
        for record in self.plugins.records:
            ready, reason = checks.get(record.name, (False, record.error))
            if record.status == "disabled":
                ready, reason = False, None
            entry: dict[str, Any] = {"status": record.status, "ready": ready, "required": record.required}
            if reason:
                entry["error"] = reason
            if record.reload_error:
                entry["reload_error"] = record.reload_error
            if degraded := self.loop_watchdog.degraded.get(record.name):
                entry["degraded"] = degraded
            plugins[record.name] = entry
            ok = ok and (ready or not record.required)
        report: dict[str, Any] = {"plugins": plugins}
        if self.shared is not None:
            report["state"] = self.shared.report()
            ok = ok and self.shared.available
        status = "draining" if self.drain.draining else "ready" if ok else "not ready"
        return ok, {"status": status, **report}

    def task_store(self) -> TaskStore:
        """Where task records live: beside the session records (Redis with replicas, else a
        SQLite file), or in this process's memory with ``[sessions] store = "none"``."""
        sessions = self.config.sessions
        if sessions.store == "none":
            return SqliteTaskStore(None)
        if self.shared is not None:
            from mcphost.state.redis_tasks import RedisTaskStore

            return RedisTaskStore(self.shared)
        with startup.failing_as(
            f"cannot open the task store in {sessions.state_dir}",
            'set [sessions] state_dir to a directory mcphost may write, or [sessions] store = "none"',
            sqlite3.Error,
        ):
            return SqliteTaskStore(sessions.state_dir / "tasks.sqlite3")

    def session_manager(self) -> PersistentSessionManager:
        """The SDK's Streamable HTTP session manager with sessions that survive restarts."""
        server, sessions = self.config.server, self.config.sessions
        store: SessionStore | None = None
        events: EventStore | None = None
        # With Redis, what the file and memory would keep for this replica is kept for all
        # of them (what is turned off stays off).
        if sessions.store == "file":
            if self.shared is not None:
                from mcphost.state.redis_stores import RedisSessionStore

                store = RedisSessionStore(self.shared, server.session_idle_timeout)
            else:
                with startup.failing_as(
                    f"cannot open the session store in {sessions.state_dir}",
                    'set [sessions] state_dir to a directory mcphost may write, or [sessions] store = "none"',
                    sqlite3.Error,
                ):
                    store = SqliteSessionStore(sessions.state_dir / "sessions.sqlite3", server.session_idle_timeout)
        if server.event_store == "memory":
            events = MemoryEventStore(
                server.event_store_max_events,
                max_events_per_owner=server.events_share,
                max_bytes=server.event_store_max_bytes,
                max_bytes_per_owner=server.event_bytes_share,
            )
            if self.shared is not None:
                from mcphost.state.redis_stores import RedisEventStore

                events = RedisEventStore(self.shared, events, idle_timeout=server.session_idle_timeout)
        manager = PersistentSessionManager(
            self.server,
            ids=SessionIds(self.secret),
            store=store,
            init_options=self.server.create_initialization_options(CHANGE_NOTIFICATIONS),
            json_response=server.json_response,
            security_settings=transport_security(server),
            session_idle_timeout=server.session_idle_timeout,
            max_request_body_size=server.max_body_bytes,
            max_sessions=server.max_sessions,
            max_sessions_per_identity=server.sessions_share,
            event_store=events,
            retry_interval=server.sse_retry_ms,
        )
        # A session may be held by several processes at once only where the store is shared.
        feed = store if self.shared is not None or server.workers > 1 else None
        subscriptions = self.handlers.subscriptions
        subscriptions.share(store, feed, manager.connections.get)
        manager.on_rebuilt = lambda connection, record: subscriptions.restore(connection, record.subscriptions)
        return manager

    def direct_answers(self) -> DirectAnswers | None:
        """What answers the commonest requests without the SDK's transport; ``None`` with
        tracing on, whose spans come from the SDK's middleware, which direct answers skip."""
        if self.tracing is not None:
            return None
        return DirectAnswers(
            self.server, self.handlers, lambda: self.registry, self.metrics, transport_security(self.config.server)
        )

    async def serve_http(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve over HTTP until SIGTERM or SIGINT has drained everything.

        Raises :class:`ConfigError` before starting anything when the keys cannot be read or
        the address would be served without authentication, and
        :class:`~mcphost.daemon.startup.StartupError` when a listener cannot be bound.
        """
        fds = systemd.listen_fds() or workers.inherited_fds()
        self._hosts = [systemd.listen_host(fd) for fd in fds]
        authenticator = auth.load(self.loaded, self._hosts)
        check_public(self.loaded, self._hosts)
        # Bound here (unless systemd or the master did), before the plugins start: a taken
        # port is a StartupError at once, and clients that connect meanwhile wait in the
        # queue, as they do for systemd's socket. Hypercorn takes the sockets over.
        server, admin = self.config.server, self.config.admin
        mcp_config = _hypercorn_config(fds or [startup.listen(server.host, server.port, startup.MCP_LISTENER).detach()])
        admin_config = (
            _hypercorn_config([startup.listen(admin.host, admin.port, startup.ADMIN_LISTENER).detach()])
            if admin.enabled
            else None
        )
        await self.start_plugins()
        if unserved := self.limits.unserved(self.registry):
            log.warning("rate limits are set for what is not served", unserved=unserved)
        self.sessions = sessions = self.session_manager()
        self.http = app = HttpApp(
            self.config.server.path,
            sessions,
            self.readiness,
            self.drain,
            auth=authenticator,
            limits=self.limits,
            direct=self.direct_answers(),
            proxies=TrustedProxies(self.config.proxy.trusted) if self.config.proxy.trusted else None,
            metrics=self.metrics,
            tracing=self.tracing,
            public_metrics=self.metrics_endpoint() if self.config.metrics.public else None,
            body_timeout=self.config.server.body_timeout,
            host_check=self.host_check,
        )
        admin_stop, listener_done = trio.Event(), trio.Event()
        # Longer than a proxy keeps an idle connection to us: the proxy closes it first.
        # Closed from this side, a request the proxy sent at that moment would fail.
        mcp_config.keep_alive_timeout = server.keep_alive_timeout
        listener = Listener(asgi(app), mcp_config)

        async def run_listener(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await listener.serve(task_status=task_status)
            finally:
                listener_done.set()

        try:
            state = self.shared.run() if self.shared is not None else contextlib.nullcontext()
            async with state, sessions.run(), trio.open_nursery() as nursery:
                binds = await nursery.start(run_listener)
                admin = await nursery.start(self._serve_admin, admin_config, admin_stop) if admin_config else []
                # Before READY=1: a SIGTERM or SIGHUP that systemd sends the moment it sees it
                # must find the handler, not the default action (which ends the process).
                await nursery.start(self._handle_signals)
                await nursery.start(self.tasks.run)
                nursery.start_soon(self._watchdog)
                await nursery.start(self.loop_watchdog.run)
                nursery.start_soon(self._settle_later)
                nursery.start_soon(self.handlers.subscriptions.hear)
                if self.config.reload.watch:
                    nursery.start_soon(self._watch_files)
                log.info(
                    "serving",
                    binds=binds,
                    admin=admin,
                    endpoint=self.config.server.path,
                    tools=len(self.registry.tools),
                )
                self.notifier.ready(f"serving {len(self.registry.tools)} tools")
                task_status.started(binds)
                if startup_signals.take_reload_request():
                    nursery.start_soon(self.reload, "SIGHUP during start-up")
                await self._stop.wait()
                self.notifier.stopping()
                # New connections wait for the next process (or go to another replica).
                listener.stop_accepting()
                deadline = trio.current_time() + self.config.shutdown.drain_timeout
                await self.drain.drain(self.config.shutdown.drain_timeout)
                await sessions.close_streams()
                with trio.move_on_after(KEEP_ALIVE_LINGER):
                    await listener.wait_closed()
                await self.drain.drain(max(0.0, deadline - trio.current_time()))
                admin_stop.set()
                listener.close()
                await listener_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.plugins.stop_all()
            leftovers.end_children(LEFTOVER_GRACE)
            self.notifier.close()
            if self.tracing is not None:
                self.tracing.shutdown()
            log.info("stopped")

    def metrics_endpoint(self) -> MetricsEndpoint:
        """``/metrics`` and ``/status``, behind ``[admin] metrics_token`` when set."""
        return MetricsEndpoint(self.metrics, self.config.admin.metrics_token, self.readiness)

    async def _serve_admin(
        self, config: HypercornConfig, stop: trio.Event, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        """The admin listener (``[admin]``): :mod:`mcphost.transport.admin` on its own address."""
        await hypercorn_serve(
            asgi(AdminApp(self.readiness, self.metrics_endpoint(), self.host_check)),
            config,
            shutdown_trigger=stop.wait,
            task_status=task_status,
        )

    async def serve_stdio(self) -> None:
        """Serve one client over stdin/stdout until it closes them."""
        from mcp.server.stdio import stdio_server

        # The transport takes stdout first (fd 1 then points at stderr), so nothing a plugin
        # prints, from its import on, reaches the protocol stream.
        async with stdio_server() as (read_stream, write_stream):
            try:
                await self.start_plugins()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._settle_later)
                    await nursery.start(self.loop_watchdog.run)
                    await self.server.run(
                        read_stream, write_stream, self.server.create_initialization_options(CHANGE_NOTIFICATIONS)
                    )
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await self.plugins.stop_all()
                leftovers.end_children(LEFTOVER_GRACE)
                if self.tracing is not None:
                    self.tracing.shutdown()

    async def reload(self, reason: str) -> bool:
        """Re-read the config, re-scan plugins and apply what changed; ``False`` if the config
        was invalid (the running config stays) or a plugin failed to reload (its old version stays)."""
        async with self._reload_lock:
            began = time.monotonic()
            self.notifier.reloading()
            log.info("reloading", reason=reason)
            self._read_at_ns = time.time_ns()
            try:
                # Off the loop, as discovery is: with a plugin thread computing, each read there
                # waits for the interpreter lock (see PluginHost.reload).
                loaded = await trio.to_thread.run_sync(config_module.load, self.config_path)
            except ConfigError as error:
                log.error("reload refused: the config is invalid; the running config stays", problems=str(error))
                self.notifier.ready("reload refused: invalid config")
                self.metrics.reloaded(reason, began, "invalid_config")
                return False
            try:
                revoked = await self._reload_keys(loaded)
            except ConfigError as error:
                log.error("reload refused: the keys are invalid; the running config stays", problems=str(error))
                self.notifier.ready("reload refused: invalid keys")
                self.metrics.reloaded(reason, began, "invalid_config")
                return False
            restart_only = [k for k in RESTART_ONLY if getattr(loaded.config, k) != getattr(self.config, k)]
            if loaded.config.auth.oauth != self.config.auth.oauth:
                restart_only.append("auth.oauth")
            if restart_only:
                log.warning("these settings change only on restart", tables=restart_only)
            result = await self.plugins.reload(loaded)
            self.loop_watchdog.stall_timeout = loaded.config.limits.stall_timeout
            for name in result.changed:
                self.loop_watchdog.forget(name)
            self._warn_unmatched()
            await self._catalogue_changed()
            await self.plugins.retire(result.retired)
            # Recorded as READY=1 is sent: `mcphost reload` returns once it sees this.
            self.metrics.reloaded(reason, began, "failed" if result.failed else "ok", result.changed, result.failed)
            log.info(
                "reloaded", changed=result.changed, failed=result.failed, tools=len(self.registry.tools), **revoked
            )
            self.notifier.ready(
                f"serving {len(self.registry.tools)} tools" + (" (a reload failed)" if result.failed else "")
            )
            # No collection here: a full one would hold the event loop for as long as it takes
            # to traverse every open session (see mcphost.ops.heap).
            return not result.failed

    async def _reload_keys(self, loaded: LoadedConfig) -> dict[str, int]:
        """Apply the API keys of a reloaded config (``[auth.oauth]`` stays as started): a
        removed key's requests get 401 from now on, and its sessions and listen streams end.
        Returns the counts to log (never a key); raises :class:`ConfigError` for invalid keys."""
        if self.http is None:
            return {}
        running = self.http.auth
        # The keys file is read in a thread, as the config is: on the loop, each read would
        # wait for the GIL behind any plugin thread that computes.
        verifier = running.verifier if running else None
        fresh = await trio.to_thread.run_sync(auth.authenticator, loaded, self._hosts, verifier)
        before = running.keys.tokens() if running else {}
        after = fresh.keys.tokens() if fresh else {}
        # Gone, or renamed: sessions belong to a key's name, which its token no longer opens.
        removed = {identity for digest, identity in before.items() if after.get(digest) != identity}
        self.http.auth = fresh
        ended = await self.sessions.revoke(removed) if self.sessions is not None else 0
        streams = self.handlers.subscriptions.revoke(removed)
        counts = {"keys_added": len(after.keys() - before.keys()), "keys_removed": len(before.keys() - after.keys())}
        if ended or streams:
            counts |= {"sessions_ended": ended, "listen_streams_ended": streams}
        return counts

    def _warn_unmatched(self) -> None:
        """Say which ``[plugins]`` tables and patterns name no plugin (a typo is not silent)."""
        if unmatched := self.plugins.unmatched():
            source = self.plugins.loaded.source
            log.warning("[plugins] names plugins that are not there", problems=[p.render(source) for p in unmatched])

    async def _catalogue_changed(self) -> None:
        """Serve the plugins' catalogue as it is now, and tell the clients what changed."""
        previous, self.registry = self.registry, self.plugins.registry
        self.metrics.bind(self.registry.tools)
        await self.handlers.subscriptions.follow()
        await self._announce_changes(previous, self.registry)

    async def _announce_changes(self, old: Registry, new: Registry) -> None:
        """Tell every open session which lists changed (clients that listen re-fetch them)."""
        if self.sessions is None:
            return
        sends = []
        if old.listing.tools != new.listing.tools:
            sends.append("send_tool_list_changed")
        if [p.wire for p in old.prompts.values()] != [p.wire for p in new.prompts.values()]:
            sends.append("send_prompt_list_changed")
        if set(old.resources) != set(new.resources) or len(old.templates) != len(new.templates):
            sends.append("send_resource_list_changed")
        for connection in list(self.sessions.connections.values()):
            for send in sends:
                await getattr(connection, send)()  # best-effort: never raises
        for send in sends:
            await self.handlers.subscriptions.announce(LIST_CHANGED_EVENTS[send])

    async def _handle_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload("SIGHUP")
                elif self._stop.is_set():
                    log.warning("second stop signal: exiting at once")
                    os._exit(1)
                else:
                    log.info("shutting down", signal=signal.Signals(signum).name)
                    self._stop.set()

    async def _settle_later(self) -> None:
        """A second after start-up, free what start-up left and freeze what lives on
        (:func:`mcphost.ops.heap.settle`). The full collection holds the event loop for some
        70-180 ms, so it waits until READY=1 is out and before sessions pile up."""
        await self._settle_due.wait()
        await trio.sleep(SETTLE_DELAY)
        start = time.perf_counter()
        freed = heap.settle(collect=True)
        log.info("collector settled", freed=freed, ms=round((time.perf_counter() - start) * 1000, 1))

    async def _watchdog(self) -> None:
        # Pinged from the event loop itself, so a wedged loop stops the pings and systemd restarts us.
        interval = systemd.watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    async def _watch_files(self) -> None:
        """Reload when the config file, a loaded plugin's source or a path plugin's file changes."""
        import watchfiles  # only with [reload] watch: a deployment reloads on SIGHUP instead

        files: set[Path] = set()

        def relevant(_change: watchfiles.Change, path: str) -> bool:
            return Path(path) in files or path.endswith(".py")

        while True:
            files = self._watched_files()
            directories = {f.parent for f in files if f.parent.is_dir()}
            since, checked = self._read_at_ns - MTIME_SLACK_NS, False
            async for changes in watchfiles.awatch(
                *directories,
                watch_filter=relevant,
                debounce=self.config.reload.debounce_ms,
                recursive=False,
                rust_timeout=WATCH_CHECK_MS,
                yield_on_timeout=True,
            ):
                if not changes:
                    if checked:
                        continue
                    # The watcher is up: what changed after the files served were read but
                    # before it was watching (a plugin mended during start-up) it never reports.
                    checked = True
                    changes = {(watchfiles.Change.modified, str(f)) for f in files if _modified_since(f, since)}
                    if not changes:
                        continue
                await self.reload(f"file change: {', '.join(sorted({Path(p).name for _, p in changes}))}")
                # The same watcher goes on while it watches the right directories: a change
                # saved during that reload is in its next batch, not lost.
                files = self._watched_files()
                if {f.parent for f in files if f.parent.is_dir()} != directories:
                    break

    def _watched_files(self) -> set[Path]:
        """The config file and every enabled plugin's source files, as :meth:`_watch_files` watches them."""
        files = {p.resolve() for r in self.plugins.records if r.status != "disabled" for p in plugin_files(r)}
        if self.config_path is not None:
            files.add(self.config_path.resolve())
        return files


def _modified_since(path: Path, since_ns: int) -> bool:
    """Whether ``path`` was written after ``since_ns`` (``time.time_ns()``); not if it is gone."""
    try:
        return os.stat(path).st_mtime_ns > since_ns
    except OSError:
        return False
