"""The ``receive`` the SDK gets for a POST (:class:`mcphost.transport.asgi.Replay`): the body already
read, then the connection's own ``receive``, let go of once the response is sent."""

from __future__ import annotations

import gc
import weakref

from starlette.types import Message

from mcphost.transport.asgi import Replay


class Connection:
    """The server's ``receive`` for one request: what an idle session must not keep alive."""

    def __init__(self) -> None:
        self.calls = 0

    async def receive(self) -> Message:
        self.calls += 1
        return {"type": "http.disconnect"}


async def test_the_body_comes_first_then_the_connection() -> None:
    connection = Connection()
    replaying = Replay(b'{"jsonrpc":"2.0"}', connection.receive)
    assert await replaying() == {"type": "http.request", "body": b'{"jsonrpc":"2.0"}', "more_body": False}
    assert connection.calls == 0
    assert await replaying() == {"type": "http.disconnect"}
    assert connection.calls == 1


async def test_once_closed_it_keeps_nothing_of_the_connection_and_reports_a_disconnect() -> None:
    connection = Connection()
    gone = weakref.ref(connection)
    replaying = Replay(b"{}", connection.receive)
    await replaying()
    replaying.close()
    del connection
    gc.collect()
    assert gone() is None
    assert await replaying() == {"type": "http.disconnect"}
