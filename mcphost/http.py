"""The ASGI application: ``/mcp`` (the SDK's Streamable HTTP transport), ``/health`` and
``/ready``, with one log line per request.

The path of a request reads top to bottom in :meth:`HttpApp.__call__`: lifespan, then
routing, then (for ``/mcp``) the request record, then the session manager. Authentication
and rate limits slot in before the session manager; nothing here knows about plugins.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from mcphost import wire
from mcphost.log import RequestRecord, current_request

log = structlog.get_logger("mcphost.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ReadyCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    """A complete JSON response."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), *headers]}
    )
    await send({"type": "http.response.body", "body": payload})


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` as soon as it grows past ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then defers to the real one (for disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replaying() -> dict[str, Any]:
        return pending.pop() if pending else await receive()

    return replaying


class HttpApp:
    """The daemon's ASGI app."""

    def __init__(self, mcp_path: str, sessions: StreamableHTTPSessionManager, ready: ReadyCheck):
        self.mcp_path = mcp_path
        self.sessions = sessions
        self.ready = ready
        self.max_body_bytes = sessions.max_request_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind != "http":
            return  # websockets are not part of MCP; Hypercorn closes the connection
        elif scope["path"] == self.mcp_path:
            await self._mcp(scope, receive, send)
        elif scope["path"] == "/health":
            await send_json(send, 200, {"status": "ok"})
        elif scope["path"] == "/ready":
            ok, report = await self.ready()
            await send_json(send, 200 if ok else 503, report)
        else:
            await send_json(send, 404, {"error": "not found", "mcp_endpoint": self.mcp_path})

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        record = RequestRecord(given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16])
        session_id = headers.get(b"mcp-session-id", b"").decode("latin-1")[:64] or None
        status = 0

        async def send_with_record(message: dict[str, Any]) -> None:
            nonlocal status, session_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"mcp-session-id":
                        session_id = value.decode("latin-1")
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-request-id", record.request_id.encode())],
                }
            await send(message)

        token = current_request.set(record)
        structlog.contextvars.bind_contextvars(request_id=record.request_id, session_id=session_id)
        try:
            await self._checked(scope, receive, send_with_record, headers, record)
        finally:
            current_request.reset(token)
            structlog.contextvars.unbind_contextvars("request_id", "session_id")
            client = scope.get("client")
            log.info(
                "request",
                request_id=record.request_id,
                session_id=session_id,
                http_method=scope["method"],
                status=status,
                duration_ms=round((time.perf_counter() - record.start) * 1000, 2),
                client=client[0] if client else None,
                **record.fields(),
            )

    async def _checked(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], record: RequestRecord
    ) -> None:
        """Refuse what the SDK would answer wrongly (see :mod:`mcphost.wire`), then hand over to it."""
        version = headers[b"mcp-protocol-version"].decode("latin-1") if b"mcp-protocol-version" in headers else None
        if (error := wire.version_error(version)) is not None:
            record.rpc_error = error["error"]["code"]
            await send_json(send, 400, error)
            return
        if scope["method"] == "POST" and version not in wire.MODERN_PROTOCOL_VERSIONS:
            body = await read_body(receive, self.max_body_bytes)
            if body is None:
                # The same answer the SDK gives when it sees the size first (a Content-Length).
                await send(
                    {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": b"Request body too large"})
                return
            if (error := wire.envelope_error(body)) is not None:
                record.rpc_error = error["error"]["code"]
                await send_json(send, 400, error)
                return
            receive = replay(body, receive)
        await self.sessions.handle_request(scope, receive, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        # Hypercorn's Trio worker fails at start-up if lifespan goes unanswered; the daemon
        # itself owns start-up and shut-down, so there is nothing to do but acknowledge.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
