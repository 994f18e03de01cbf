"""What every ASGI app here shares: complete JSON and text responses, reading a bounded
body, a ``receive`` that replays a body already read, and the lifespan answer.

It sits at the bottom of the transport layer and knows nothing of MCP, routes or callers,
so the apps, the session manager's refusals and the admin endpoints all answer the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.types import Message, Receive, Send

ReadyCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
"""What ``/ready`` answers: whether the daemon is ready, and the report that says why."""


async def send_complete(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """A response whose body is all there: sent with its length, so the server neither
    chunks it nor writes the chunked encoding's end as a write of its own."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    """A complete JSON response."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send_complete(send, status, [(b"content-type", b"application/json"), *headers], payload)


async def read_body(receive: Receive, limit: int, timeout: float = math.inf) -> bytes | None:
    """The whole request body, or ``None`` as soon as it grows past ``limit`` bytes; raises
    ``trio.TooSlowError`` when it has not all arrived within ``timeout`` seconds."""
    chunks, size = [], 0
    with trio.fail_after(timeout):
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


async def send_text(send: Send, status: int, text: str) -> None:
    """A complete plain-text response."""
    await send_complete(send, status, [(b"content-type", b"text/plain; charset=utf-8")], text.encode())


async def send_too_large(send: Send) -> None:
    """413, the same answer the SDK gives when it sees the size first (a Content-Length)."""
    await send_complete(send, 413, [(b"content-type", b"text/plain")], b"Request body too large")


def has_body(headers: dict[bytes, bytes]) -> bool:
    """Whether a request announces a body (which the server must read before it answers, or close)."""
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


class Replay:
    """A ``receive`` that hands out ``body`` once, then defers to the real one (for
    disconnects) until :meth:`close`, after which every call is a disconnect.

    The SDK keeps the last request each session received (a Starlette ``Request`` holding
    this ``receive``) for as long as the session lives. Closed once the response is sent,
    it no longer keeps the server's connection objects alive with it.
    """

    __slots__ = ("_message", "_receive")

    def __init__(self, body: bytes, receive: Receive):
        self._message: Message | None = {"type": "http.request", "body": body, "more_body": False}
        self._receive: Receive | None = receive

    async def __call__(self) -> Message:
        message, self._message = self._message, None
        if message is not None:
            return message
        if self._receive is None:
            return {"type": "http.disconnect"}
        return await self._receive()

    def close(self) -> None:
        """Let go of the real ``receive``: the response is complete."""
        self._receive = None


async def acknowledge_lifespan(receive: Receive, send: Send) -> None:
    """Answer ASGI lifespan events."""
    # Hypercorn's Trio worker fails at start-up if lifespan goes unanswered; the daemon
    # itself owns start-up and shut-down, so there is nothing to do but acknowledge.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
