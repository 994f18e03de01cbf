"""The admin listener's ASGI app: what operators may see and the MCP clients may not.

It listens on its own address (``[admin]``, loopback by default), so what it shows never
reaches the network the MCP endpoint serves, and it checks ``Host`` and ``Origin`` as that
endpoint does, so no web page reaches it through a browser by DNS rebinding. ``/ready``
here carries every plugin's status, readiness and error, where the public ``/ready`` only
says ready or not. ``/metrics`` (the
Prometheus exposition) and ``/status`` (what ``mcphost status`` prints) want the
``[admin] metrics_token`` when one is set.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from mcphost.transport.asgi import ReadyCheck, acknowledge_lifespan, send_json
from mcphost.transport.metrics_endpoint import MetricsEndpoint
from mcphost.transport.origins import HostCheck

PATHS = ["/health", "/ready", "/metrics", "/status"]


class AdminApp:
    """``/health``, the detailed ``/ready``, ``/metrics`` and ``/status``, for requests whose
    ``Host`` and ``Origin`` pass the MCP listener's checks (``host_check``)."""

    def __init__(self, ready: ReadyCheck, metrics: MetricsEndpoint | None = None, host_check: HostCheck | None = None):
        self.ready = ready
        self.metrics = metrics
        self.host_check = host_check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await acknowledge_lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif self.host_check is not None and await self.host_check.refused(scope, send):
            return  # a DNS-rebinding page reads nothing here either
        elif scope["path"] == "/health":
            await send_json(send, 200, {"status": "ok"})
        elif scope["path"] == "/ready":
            ok, report = await self.ready()
            await send_json(send, 200 if ok else 503, report)
        elif scope["path"] == "/metrics" and self.metrics is not None:
            await self.metrics.metrics_page(scope, receive, send)
        elif scope["path"] == "/status" and self.metrics is not None:
            await self.metrics.status_page(scope, receive, send)
        else:
            await send_json(send, 404, {"error": "not found", "paths": PATHS})
