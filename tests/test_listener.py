"""The listener and its connections: connections that arrive together are taken together
under load, not one per turn of the scheduler behind every busy connection's work, and a
connection the client closes is closed and let go at once. Real sockets on loopback and
Hypercorn's own protocols; the turns of a task that never stops yielding stand for the load,
so the first test counts scheduler turns, not seconds."""

from __future__ import annotations

import socket
from typing import Any

import trio
import trio.testing
from hypercorn.config import Config

from mcphost.transport.asgi import acknowledge_lifespan, send_json
from mcphost.transport.listener import Listener

BURST = 64
CLOSED_WITHIN = 10.0
"""Seconds a connection the client closed may stay open; a generous bound on "at once",
far below the keep-alive time the test sets."""


async def _health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await acknowledge_lifespan(receive, send)
    else:
        await send_json(send, 200, {"status": "ok"})


def _listener(keep_alive_timeout: float = 5.0) -> Listener:
    listening = socket.create_server(("127.0.0.1", 0))
    config = Config()
    config.bind = [f"fd://{listening.detach()}"]
    config.keep_alive_timeout = keep_alive_timeout
    return Listener(_health, config)


async def test_a_burst_of_connections_is_taken_within_a_few_turns_of_a_busy_loop() -> None:
    listener = _listener()
    turns = 0
    clients: list[socket.socket] = []
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(listener.serve)
            port = int(binds[0].rsplit(":", 1)[1])

            async def busy() -> None:
                nonlocal turns
                while True:
                    turns += 1
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(busy)
            await trio.lowlevel.checkpoint()
            # Connected in one go without yielding: the kernel completes each handshake, and
            # all of them wait in the listening socket's queue when the loop next looks.
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
            before = turns
            with trio.fail_after(30):  # a generous bound on "does not freeze"
                while listener.open < BURST:
                    await trio.lowlevel.checkpoint()
            taken_in = turns - before
            listener.close()
            nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            client.close()
    # One wake-up of the listening socket takes the whole burst; one connection per turn
    # would take BURST turns.
    assert taken_in <= 4, f"{BURST} waiting connections took {taken_in} turns of a busy loop to accept"


async def test_a_connection_the_client_closes_is_let_go_at_once() -> None:
    listener = _listener(keep_alive_timeout=600.0)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(listener.serve)
        port = int(binds[0].rsplit(":", 1)[1])
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            answer += await client.receive_some()
        assert listener.open == 1
        # The server done with the response and the connection idle before the client closes.
        await trio.testing.wait_all_tasks_blocked()
        await client.aclose()
        with trio.move_on_after(CLOSED_WITHIN):
            await listener.wait_closed()
        # Hypercorn's own server kept the connection (socket, task) for the keep-alive time.
        assert listener.open == 0, "the connection the client closed is still open"
        listener.close()
        nursery.cancel_scope.cancel()
