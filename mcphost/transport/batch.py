"""JSON-RPC batches on sessions that negotiated 2025-03-26, the one revision that has them
(a server "MUST support receiving" them; 2025-06-18 removed them again).

The SDK runs one message per POST, so a batch is split here: each message goes to the session
as a POST of its own, all at once, and their answers are joined into the batch's answer. With
no request in the batch, that is 202. Otherwise it is one event stream carrying every event
of every message's answer as it comes (a tool's progress, a question to the client, its
response), or, with ``[server] json_response``, one JSON array of the responses. An
``initialize`` may not be batched, and a message that is not JSON-RPC is answered in place
with its error, as a lone one would be.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.types import Message, Receive, Scope, Send

from mcphost.core.errors import INVALID_REQUEST
from mcphost.protocol import wire
from mcphost.transport.asgi import Replay, send_json

BATCH_VERSION = "2025-03-26"
"""The only revision whose sessions take batches."""
MAX_BATCH = 100
"""Messages one batch may carry: each runs at once, as a request of its own would."""

Handle = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_request(message: Any) -> bool:
    """Whether a decoded message is a request (it wants a response)."""
    return isinstance(message, dict) and "method" in message and "id" in message


def refusal(message: Any) -> dict[str, Any] | None:
    """The error answering one message of a batch in place, or ``None`` if it may run."""
    if (problem := wire.envelope_error(message)) is not None:
        return problem
    if message.get("method") == "initialize":
        return wire.error_body(
            INVALID_REQUEST, "Invalid Request: initialize may not be part of a batch", message.get("id")
        )
    return None


async def answer(handle: Handle, scope: Scope, batch: list[Any], send: Send, json_response: bool) -> None:
    """Answer ``batch`` (a decoded JSON array) by running each message through ``handle``."""
    if not batch or len(batch) > MAX_BATCH:
        message = f"Invalid Request: a batch must carry 1 to {MAX_BATCH} messages"
        await send_json(send, 400, wire.error_body(INVALID_REQUEST, message))
        return
    errors = [problem for message in batch if (problem := refusal(message)) is not None]
    runnable = [message for message in batch if refusal(message) is None]
    if not errors and not any(is_request(message) for message in runnable):
        async with trio.open_nursery() as nursery:
            for message in runnable:
                nursery.start_soon(_run, handle, scope, message, _discard)
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if json_response:
        responses: list[Any] = list(errors)

        async def collect(chunk: bytes, content_type: bytes) -> None:
            if chunk and content_type.startswith(b"application/json"):
                responses.append(json.loads(chunk))

        async with trio.open_nursery() as nursery:
            for message in runnable:
                nursery.start_soon(_run, handle, scope, message, _whole(collect))
        await send_json(send, 200, [r for r in responses if isinstance(r, dict) and "id" in r])
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    lock = trio.Lock()

    async def forward(chunk: bytes) -> None:
        async with lock:  # one event at a time: events of several answers never interleave
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def relay(chunk: bytes, content_type: bytes) -> None:
        if chunk and content_type.startswith(b"application/json"):
            await forward(_event(chunk))

    for problem in errors:
        await forward(_event(json.dumps(problem).encode()))
    async with trio.open_nursery() as nursery:
        for message in runnable:
            nursery.start_soon(_run, handle, scope, message, _streamed(forward, relay))
    await send({"type": "http.response.body", "body": b""})


def _event(data: bytes) -> bytes:
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"


async def _run(handle: Handle, scope: Scope, message: Any, send: Send) -> None:
    # Each message as the POST it would have been alone; it cannot see the client go away
    # (the batch's answer is one response: a client that leaves ends it whole).
    body = json.dumps(message).encode()
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    replay = Replay(body, _never)
    try:
        await handle({**scope, "headers": headers}, replay, send)
    finally:
        replay.close()


async def _never() -> Message:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def _discard(message: Message) -> None:
    pass


def _whole(done: Callable[[bytes, bytes], Awaitable[None]]) -> Send:
    """A ``send`` that gathers one answer and hands its body and content type to ``done``."""
    parts: list[bytes] = []
    content_type = b""

    async def send(message: Message) -> None:
        nonlocal content_type
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", ())).get(b"content-type", b"")
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                await done(b"".join(parts), content_type)

    return send


def _streamed(forward: Callable[[bytes], Awaitable[None]], whole: Callable[[bytes, bytes], Awaitable[None]]) -> Send:
    """A ``send`` that forwards an event stream's events as they come, and hands a JSON answer
    (an error refusing the message, say) to ``whole``."""
    stream = False
    gather = _whole(whole)

    async def send(message: Message) -> None:
        nonlocal stream
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", ())).get(b"content-type", b"")
            stream = content_type.startswith(b"text/event-stream")
            if not stream:
                await gather(message)
        elif stream:
            if chunk := message.get("body", b""):
                await forward(chunk)
        else:
            await gather(message)

    return send
