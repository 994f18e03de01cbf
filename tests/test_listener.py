"""The accept loop under load: connections that arrive together are taken together, not one
per turn of the scheduler behind every busy connection's work. Real sockets on loopback and
Hypercorn's own connection server; the turns of a task that never stops yielding stand for
the load, so the test counts scheduler turns, not seconds."""

from __future__ import annotations

import socket
from typing import Any

import trio
from hypercorn.config import Config

from mcphost.transport.asgi import acknowledge_lifespan, send_json
from mcphost.transport.listener import Listener

BURST = 64


async def _health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await acknowledge_lifespan(receive, send)
    else:
        await send_json(send, 200, {"status": "ok"})


async def test_a_burst_of_connections_is_taken_within_a_few_turns_of_a_busy_loop() -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    config = Config()
    config.bind = [f"fd://{listening.detach()}"]
    listener = Listener(_health, config)
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
