"""Per-caller shares of the daemon's shared tables: one caller, however busy, cannot take the
sessions, the listen streams or the resumable events away from the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
from mcp_types import ElicitResult

from mcphost.plugins.client_input import MAX_QUESTIONS_PER_CALLER
from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request, sse_events, stateless_request
from tests import sessionkit
from tests.authkit import ApiKey, api_key, bearer, connect

SHARE = 3


@pytest.fixture(scope="module")
def keys() -> dict[str, ApiKey]:
    return {name: api_key(name, ["*"]) for name in ("alice", "bob", "carol")}


@pytest.fixture(scope="module")
def daemon(module_daemon: Callable[..., RunningDaemon], keys: dict[str, ApiKey]) -> RunningDaemon:
    config = {
        "server": {
            "max_sessions": 2 * SHARE + 1,
            "max_sessions_per_identity": SHARE,
            "event_store_max_events": 100,
            "event_store_max_events_per_identity": 10,
        },
        "auth": {"keys": {k.name: k.entry for k in keys.values()}},
        "plugins": {"enable": ["echo"]},
    }
    return module_daemon(config)


def rpc(method: str, params: dict[str, Any] | None = None, request_id: int = 2) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})}


def initialize(daemon: RunningDaemon, key: ApiKey, request_id: int = 1) -> httpx.Response:
    body = initialize_request(request_id=request_id)
    return httpx.post(daemon.url, json=body, headers={**ACCEPT_HEADERS, **bearer(key.token)})


def open_session(daemon: RunningDaemon, key: ApiKey) -> dict[str, str]:
    return sessionkit.open_session(daemon.url, bearer(key.token))


def status(daemon: RunningDaemon, headers: dict[str, str]) -> int:
    return httpx.post(daemon.url, json=rpc("tools/list"), headers=headers).status_code


def test_past_its_share_a_caller_loses_its_own_least_recently_used_session(
    daemon: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    bobs = open_session(daemon, keys["bob"])
    alices = [open_session(daemon, keys["alice"]) for _ in range(SHARE)]
    assert status(daemon, alices[0]) == 200  # now the second is the least recently used
    alices.append(open_session(daemon, keys["alice"]))
    assert [status(daemon, h) for h in alices] == [200, 404, 200, 200]
    evicted = daemon.wait_for_log(lambda r: r.get("event", "").startswith("session evicted"))
    assert evicted["session_id"] == alices[1]["mcp-session-id"]
    # However many she opens, she never holds more than her share, and nobody else loses a session.
    for _ in range(3 * SHARE):
        alices.append(open_session(daemon, keys["alice"]))
    assert [status(daemon, h) for h in alices[-SHARE:]] == [200] * SHARE
    assert status(daemon, bobs) == 200
    carols = [open_session(daemon, keys["carol"]) for _ in range(SHARE)]
    for headers in [bobs, *alices[-SHARE:], *carols]:
        httpx.delete(daemon.url, headers=headers)


def test_when_the_table_is_full_a_new_session_gets_503_with_retry_after(
    daemon: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    held = [open_session(daemon, keys[name]) for name in ("alice", "bob") for _ in range(SHARE)]
    held.append(open_session(daemon, keys["carol"]))
    refused = initialize(daemon, keys["carol"], request_id=17)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == -32004
    assert refused.json()["id"] == 17
    assert int(refused.headers["retry-after"]) > 0
    for headers in held:
        httpx.delete(daemon.url, headers=headers)


def test_a_caller_whose_sessions_are_all_busy_gets_503_not_another_callers_room(
    daemon: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    alices = [open_session(daemon, keys["alice"]) for _ in range(SHARE)]
    with httpx.Client(timeout=10) as client:
        streams = [client.stream("GET", daemon.url, headers={**h, "accept": "text/event-stream"}) for h in alices]
        try:
            for stream in streams:  # each session busy with its open event stream
                assert stream.__enter__().status_code == 200
            refused = initialize(daemon, keys["alice"], request_id=18)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == -32004
            assert refused.json()["id"] == 18
            assert "busy" in refused.json()["error"]["message"]
            bobs = open_session(daemon, keys["bob"])
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
    for headers in [*alices, bobs]:
        httpx.delete(daemon.url, headers=headers)


def test_listen_streams_are_shared_out_per_caller(daemon: RunningDaemon, keys: dict[str, ApiKey]) -> None:
    body, headers = stateless_request("subscriptions/listen", {"notifications": {"toolsListChanged": True}})

    def listen(client: httpx.Client, key: ApiKey) -> Any:
        return client.stream("POST", daemon.url, json=body, headers={**headers, **bearer(key.token)})

    with httpx.Client(timeout=10) as client:
        open_streams = [listen(client, keys["alice"]) for _ in range(SHARE)]
        reading = []  # kept: a reader let go of closes its stream
        try:
            for stream in open_streams:
                response = stream.__enter__()
                assert response.status_code == 200
                reading.append(sse_events(response.iter_lines()))
                assert next(m for _, m in reading[-1] if m)["method"] == "notifications/subscriptions/acknowledged"
            refused = httpx.post(daemon.url, json=body, headers={**headers, **bearer(keys["alice"].token)})
            assert "Subscription limit reached" in refused.text
            with listen(client, keys["bob"]) as response:
                assert (
                    next(m for _, m in sse_events(response.iter_lines()) if m)["method"]
                    == "notifications/subscriptions/acknowledged"
                )
        finally:
            for stream in open_streams:
                stream.__exit__(None, None, None)


def test_a_busy_caller_pushes_out_its_own_resumable_events_not_anothers(
    daemon: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    def call(text: str, request_id: int = 2) -> dict[str, Any]:
        # With a progress token, so the call is answered on a resumable SSE stream.
        params = {"name": "echo_echo", "arguments": {"text": text}, "_meta": {"progressToken": "p"}}
        return rpc("tools/call", params, request_id)

    bobs = open_session(daemon, keys["bob"])
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", daemon.url, json=call("bob's"), headers=bobs) as response,
    ):
        primed = next(event_id for event_id, message in sse_events(response.iter_lines()) if message is None)
    # Alice's calls make some 120 events, more than the store keeps for everyone (100).
    alices = open_session(daemon, keys["alice"])
    for n in range(60):
        assert httpx.post(daemon.url, json=call("x", n + 10), headers=alices).status_code == 200
    resume = {**bobs, "accept": "text/event-stream", "last-event-id": primed}
    with httpx.Client(timeout=10) as client, client.stream("GET", daemon.url, headers=resume) as response:
        assert response.status_code == 200
        replayed = next(m for _, m in sse_events(response.iter_lines()) if m is not None)
    assert replayed["result"]["structuredContent"] == {"result": "bob's"}
    for headers in (bobs, alices):
        httpx.delete(daemon.url, headers=headers)


@pytest.fixture(scope="module")
def asking(module_daemon: Callable[..., RunningDaemon], keys: dict[str, ApiKey]) -> RunningDaemon:
    """A daemon whose tools ask the client questions (elicitation)."""
    plugins = {"enable": ["conformance"], "conformance": {"prefix": ""}}
    config = {"auth": {"keys": {k.name: k.entry for k in keys.values()}}, "plugins": plugins}
    return module_daemon(config)


async def test_a_caller_cannot_take_every_slot_with_questions_it_leaves_unanswered(
    asking: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    released = trio.Event()

    async def later(context: Any, params: Any) -> ElicitResult:
        await released.wait()
        return ElicitResult(action="decline")

    async def now(context: Any, params: Any) -> ElicitResult:
        return ElicitResult(action="accept", content={"response": "here"})

    outcomes: list[str] = []
    first = trio.Event()

    async def ask(client: Any) -> None:
        result = await client.call_tool("test_elicitation", {"message": "still there?"})
        outcomes.append(result.content[0].text)
        first.set()

    alice = connect(asking.url, keys["alice"].token, "legacy", elicitation_callback=later)
    async with alice as client, trio.open_nursery() as nursery:
        for _ in range(MAX_QUESTIONS_PER_CALLER + 1):
            nursery.start_soon(ask, client)
        with trio.fail_after(10):
            await first.wait()  # the one question too many is refused at once
        assert "waiting for its answers already" in outcomes[0]
        # Meanwhile the others' questions are asked and answered.
        async with connect(asking.url, keys["bob"].token, "legacy", elicitation_callback=now) as bob:
            answered = await bob.call_tool("test_elicitation", {"message": "there?"})
        assert "here" in answered.content[0].text
        released.set()
    assert len(outcomes) == MAX_QUESTIONS_PER_CALLER + 1
    assert sum("decline" in outcome for outcome in outcomes) == MAX_QUESTIONS_PER_CALLER
