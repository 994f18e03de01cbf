"""The listener and its connections: connections that arrive together are taken together
under load, not one per turn of the scheduler behind every busy connection's work, a request
takes no turn it does not wait for, a connection the client closes is closed and let go at
once, and one left idle is closed after the keep-alive time, not before. Real sockets on
loopback and Hypercorn's own protocols; the turns of a task that never stops yielding stand
for the load, so the first tests count scheduler turns, not seconds."""

from __future__ import annotations

import socket
from typing import Any

import trio
import trio.testing
from hypercorn.config import Config

from mcphost.transport.asgi import acknowledge_lifespan, read_body, send_json
from mcphost.transport.listener import Listener

BURST = 64
CLOSED_WITHIN = 10.0
"""Seconds a connection the client closed may stay open; a generous bound on "at once",
far below the keep-alive time the test sets."""
IDLE_TIMEOUT = 1.0
"""The keep-alive time of the idle tests: short, since they wait it out."""


async def _health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await acknowledge_lifespan(receive, send)
    else:
        await send_json(send, 200, {"status": "ok"})


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await acknowledge_lifespan(receive, send)
    else:
        body = await read_body(receive, 1 << 20)
        await send_json(send, 200, {"length": len(body or b"")})


def _listener(keep_alive_timeout: float = 5.0, app: Any = _health) -> Listener:
    listening = socket.create_server(("127.0.0.1", 0))
    config = Config()
    config.bind = [f"fd://{listening.detach()}"]
    config.keep_alive_timeout = keep_alive_timeout
    return Listener(app, config)


async def _serve(nursery: trio.Nursery, listener: Listener) -> int:
    """Start ``listener`` in ``nursery``; its port."""
    binds = await nursery.start(listener.serve)
    return int(binds[0].rsplit(":", 1)[1])


async def _get_health(client: trio.SocketStream) -> None:
    await client.send_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    answer = b""
    with trio.fail_after(10):  # a generous bound on "does not freeze"
        while not answer.endswith(b'{"status":"ok"}'):
            answer += await client.receive_some()


class _Steps(trio.abc.Instrument):
    """Counts the steps of every task but one (the test's own, the client)."""

    def __init__(self, client: trio.lowlevel.Task):
        self.client = client
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.client:
            self.steps += 1


async def test_a_burst_of_connections_is_taken_within_a_few_turns_of_a_busy_loop() -> None:
    listener = _listener()
    turns = 0
    clients: list[socket.socket] = []
    try:
        async with trio.open_nursery() as nursery:
            port = await _serve(nursery, listener)

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


async def test_a_request_whose_body_has_come_takes_no_turn_it_does_not_wait_for() -> None:
    listener = _listener(app=_echo)
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, listener)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        body = b'{"jsonrpc":"2.0"}'
        request = b"POST /echo HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        for _ in range(3):  # the first requests warm up; the last is counted
            await trio.testing.wait_all_tasks_blocked()
            steps = _Steps(trio.lowlevel.current_task())
            trio.lowlevel.add_instrument(steps)
            await client.send_all(request)
            answer = b""
            with trio.fail_after(10):  # a generous bound on "does not freeze"
                while not answer.endswith(b'{"length":17}'):
                    answer += await client.receive_some()
                await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.remove_instrument(steps)
        await client.aclose()
        listener.close()
        nursery.cancel_scope.cancel()
    # The connection wakes when the request comes, and the request's task runs through:
    # reading the body that is there, and writing to a socket with room, need no turn.
    assert steps.steps <= 2, f"a request took {steps.steps} turns of the server's tasks"


async def test_a_connection_the_client_closes_is_let_go_at_once() -> None:
    listener = _listener(keep_alive_timeout=600.0)
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, listener)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await _get_health(client)
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


async def test_an_idle_connection_is_closed_after_the_keep_alive_time_counted_from_its_last_response() -> None:
    listener = _listener(keep_alive_timeout=IDLE_TIMEOUT)
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, listener)
        client = await trio.open_tcp_stream("127.0.0.1", port)
        # A request every 0.6 of the keep-alive time, for three times that time: never idle long enough.
        for _ in range(5):
            await _get_health(client)
            await trio.sleep(IDLE_TIMEOUT * 0.6)
            assert listener.open == 1, "a connection in use was closed as idle"
        await _get_health(client)
        idle_at = trio.current_time()
        with trio.fail_after(IDLE_TIMEOUT + CLOSED_WITHIN):
            assert await client.receive_some() == b"", "the server sent bytes nobody asked for"
            await listener.wait_closed()
        assert trio.current_time() - idle_at >= IDLE_TIMEOUT, "closed before the keep-alive time"
        await client.aclose()
        listener.close()
        nursery.cancel_scope.cancel()


async def test_idle_connections_are_closed_at_once_when_the_server_closes() -> None:
    listener = _listener(keep_alive_timeout=600.0)
    # Nor would the grace for busy connections close them: only being idle does.
    listener.config.graceful_timeout = 600.0
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, listener)
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        for client in clients:
            await _get_health(client)
        await trio.testing.wait_all_tasks_blocked()
        assert listener.open == len(clients)
        listener.close()
        with trio.fail_after(CLOSED_WITHIN):
            await listener.wait_closed()
            for client in clients:
                assert await client.receive_some() == b""
                await client.aclose()
        nursery.cancel_scope.cancel()
