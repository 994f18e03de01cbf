"""``/metrics`` and ``/status``: the daemon's counts served over HTTP, behind the optional
bearer token, and the check that refuses to serve them to the network without one.

The counting itself is :mod:`mcphost.ops.metrics`; this module only serves what it reports.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Receive, Scope, Send

from mcphost.auth.authenticator import is_loopback
from mcphost.core.config import ConfigError, LoadedConfig
from mcphost.ops.metrics import Metrics
from mcphost.transport.asgi import ReadyCheck, send_json


class MetricsEndpoint:
    """``/metrics`` and ``/status`` as ASGI handlers, behind the optional bearer token."""

    def __init__(self, metrics: Metrics, token: str | None = None, ready: ReadyCheck | None = None):
        self.metrics = metrics
        self.ready = ready
        self._expected = f"Bearer {token}".encode() if token else None

    def allowed(self, scope: Scope) -> bool:
        """Whether the request may read: no token is configured, or it carries the token."""
        if self._expected is None:
            return True
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(given, self._expected)

    async def metrics_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The Prometheus exposition."""
        if await self._refused(scope, send):
            return
        body = self.metrics.exposition()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())]}
        )
        await send({"type": "http.response.body", "body": body})

    async def status_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ``/status`` report as JSON."""
        if await self._refused(scope, send):
            return
        report = self.metrics.report()
        if self.ready is not None:
            # The readiness checks too (each bounded by its timeout), so the report says
            # not only what is loaded but what answers.
            ok, detail = await self.ready()
            report["ready"], report["status"] = ok, detail["status"]
            checks = detail.get("plugins", {})
            for plugin in report["plugins"]:
                check = checks.get(plugin["name"], {})
                plugin["ready"] = check.get("ready", False)
                if "degraded" in check:
                    plugin["degraded"] = check["degraded"]
        await send_json(send, 200, report)

    async def _refused(self, scope: Scope, send: Send) -> bool:
        if self.allowed(scope):
            return False
        await send_json(
            send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b'Bearer realm="mcphost-metrics"')]
        )
        return True


def check_public(loaded: LoadedConfig, hosts: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` when ``/metrics`` would be served to the network without a token.

    ``hosts`` are the addresses actually served (systemd's sockets), default ``[server] host``.
    """
    config = loaded.config
    public = [h for h in (hosts or [config.server.host]) if not is_loopback(h)]
    if config.metrics.public and public and not config.admin.metrics_token:
        message = f"/metrics would be served on {public[0] or '*'} to anyone: set [admin] metrics_token"
        raise ConfigError(loaded.source, [loaded.problem(("metrics", "public"), message)])
