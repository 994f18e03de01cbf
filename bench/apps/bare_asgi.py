"""The ceiling of mcphost's HTTP stack: a bare ASGI app on Hypercorn's Trio worker that
answers every JSON-RPC request with a fixed result, echoing the request's id.

No MCP SDK, no validation, no logging: what is left is Hypercorn, h11 and Trio, plus one
``json.loads``/``json.dumps`` per request. It answers in the same wire shape the SDK uses
on each path (an SSE ``event: message`` on 2025-11-25, a JSON body on 2026-07-28), so
bytes on the wire are comparable, and hands out a session id on ``initialize`` so the
harness can drive it like the real servers.

Run as ``python bench/apps/bare_asgi.py --port N``.
"""

from __future__ import annotations

import argparse
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CALL_RESULT = {"content": [{"type": "text", "text": "3"}]}
INIT_RESULT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {"listChanged": False}},
    "serverInfo": {"name": "bare", "version": "1"},
}
HANDSHAKE_VERSIONS = {b"2024-11-05", b"2025-03-26", b"2025-06-18", b"2025-11-25"}


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answer lifespan, ``GET /health`` and JSON-RPC POSTs; nothing else."""
    if scope["type"] == "lifespan":
        # Hypercorn's Trio worker fails at start-up if lifespan goes unanswered.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        await _respond(send, 200, b"application/json", b'{"status":"ok"}')
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body)
    if "id" not in request:  # a notification (notifications/initialized)
        await _respond(send, 202, b"application/json", b"")
        return
    extra: list[tuple[bytes, bytes]] = []
    if request.get("method") == "initialize":
        result: dict[str, Any] = INIT_RESULT
        extra.append((b"mcp-session-id", uuid.uuid4().hex.encode()))
    else:
        result = CALL_RESULT
    payload = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}, separators=(",", ":")).encode()
    version = next((v for k, v in scope["headers"] if k == b"mcp-protocol-version"), None)
    if version is None or version in HANDSHAKE_VERSIONS:
        await _respond(send, 200, b"text/event-stream", b"event: message\r\ndata: " + payload + b"\r\n\r\n", extra)
    else:
        await _respond(send, 200, b"application/json", payload, extra)


async def _respond(
    send: Send, status: int, content_type: bytes, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Parse arguments and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    # A plain ASGI callable; Hypercorn's annotations only know its own scope types.
    trio.run(functools.partial(serve, app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
