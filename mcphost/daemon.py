"""The composition root: one Trio nursery that loads plugins, serves HTTP (or stdio) and
shuts down in order.

Start-up: config → plugins loaded and started → registry → MCP server → listener.
Shut-down (SIGTERM/SIGINT): stop accepting, let Hypercorn finish in-flight requests for
``server.graceful_timeout``, then stop the plugins.
"""

from __future__ import annotations

import functools
import logging
import signal
from typing import Any

import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

import mcphost
from mcphost.config import LoadedConfig, ServerConfig
from mcphost.http import HttpApp
from mcphost.plugins import PluginHost
from mcphost.protocol import build_server
from mcphost.registry import Registry

log = structlog.get_logger("mcphost.daemon")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


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
    """The running host: its plugins, its current registry and its MCP server."""

    def __init__(self, loaded: LoadedConfig):
        self.loaded = loaded
        self.config = loaded.config
        self.plugins = PluginHost(loaded)
        self.registry = Registry()
        self.server = build_server(
            lambda: self.registry, self.config.server.name, mcphost.__version__, self.config.server.instructions
        )

    async def start_plugins(self) -> None:
        """Load and start every enabled plugin, then publish what they serve."""
        self.plugins.load_all()
        await self.plugins.start_all()
        self.registry = self.plugins.registry

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/ready``: each plugin's state; not ready while a required plugin is not serving."""
        checks = await self.plugins.readiness()
        plugins: dict[str, Any] = {}
        ok = True
        for record in self.plugins.records:
            ready, reason = checks.get(record.name, (False, record.error))
            if record.status == "disabled":
                ready, reason = False, None
            plugins[record.name] = {
                "status": record.status,
                "ready": ready,
                "required": record.required,
                **({"error": reason} if reason else {}),
            }
            ok = ok and (ready or not record.required)
        return ok, {"status": "ready" if ok else "not ready", "plugins": plugins}

    def session_manager(self) -> StreamableHTTPSessionManager:
        """The SDK's Streamable HTTP session manager, configured from ``[server]``."""
        server = self.config.server
        return StreamableHTTPSessionManager(
            self.server,
            json_response=server.json_response,
            security_settings=transport_security(server),
            session_idle_timeout=server.session_idle_timeout,
            max_request_body_size=server.max_body_bytes,
            max_sessions=server.max_sessions,
        )

    def hypercorn_config(self) -> HypercornConfig:
        """Hypercorn's settings: our bind, our logs, our drain time."""
        config = HypercornConfig()
        server = self.config.server
        host = f"[{server.host}]" if ":" in server.host else server.host
        config.bind = [f"{host}:{server.port}"]
        config.graceful_timeout = server.graceful_timeout
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        return config

    async def serve_http(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve over HTTP until SIGTERM or SIGINT; started listening when ``task_status`` fires."""
        await self.start_plugins()
        sessions = self.session_manager()
        app = HttpApp(self.config.server.path, sessions, self.readiness)
        shutdown = trio.Event()
        try:
            # The session manager outlives Hypercorn, so requests still draining after the
            # shutdown signal keep their sessions until they are answered.
            async with sessions.run(), trio.open_nursery() as nursery:
                nursery.start_soon(self._wait_for_signals, shutdown)
                serve = functools.partial(hypercorn_serve, app, self.hypercorn_config(), shutdown_trigger=shutdown.wait)
                binds = await nursery.start(serve)
                log.info(
                    "serving",
                    binds=binds,
                    endpoint=self.config.server.path,
                    tools=len(self.registry.tools),
                    version=mcphost.__version__,
                )
                task_status.started(binds)
        finally:
            with trio.CancelScope(shield=True):
                await self.plugins.stop_all()
            log.info("stopped")

    async def serve_stdio(self) -> None:
        """Serve one client over stdin/stdout until it closes them."""
        from mcp.server.stdio import stdio_server

        await self.start_plugins()
        try:
            async with stdio_server() as (read_stream, write_stream):
                await self.server.run(read_stream, write_stream, self.server.create_initialization_options())
        finally:
            with trio.CancelScope(shield=True):
                await self.plugins.stop_all()

    @staticmethod
    async def _wait_for_signals(shutdown: trio.Event) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("shutting down", signal=signal.Signals(signum).name)
                shutdown.set()
                return
