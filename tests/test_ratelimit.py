"""Rate limits: the GCRA limiter on its own (with a fake clock), then each configured limit
firing on a real daemon with the right answer, and recovering once its window has passed.
Also the error codes carried in ``isError`` results."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from mcphost.core.errors import ERROR_META_KEY, RATE_LIMITED, TOOL_TIMEOUT
from mcphost.core.rate import Rate
from mcphost.state.limiter import MemoryLimiter
from mcphost.testing import RunningDaemon, stateless_request
from tests.authkit import api_key, bearer, connect
from tests.conftest import MODES

ALICE = api_key("alice", ["*"], rate_limit="2/second")
BOB = api_key("bob", ["*"])
CAROL = api_key("carol", ["*"], rate_limit="1000/second")
"""Calls tools in quick succession: her request budget must not be what stops her."""
CONFIG = {
    "auth": {"keys": {ALICE.name: ALICE.entry, BOB.name: BOB.entry, CAROL.name: CAROL.entry}},
    "rate_limits": {
        "identity": "10/second",
        "tools": {"echo_add": "2/second", "echo_ad": "1/day"},
        "plugins": {"sysinfo": "2/second"},
    },
    "plugins": {"enable": ["echo", "sysinfo"], "echo": {"tools": {"slow": {"timeout": 0.3}}}},
}
LIST_TOOLS, MODERN_HEADERS = stateless_request("tools/list")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_gcra_allows_a_burst_then_one_per_interval() -> None:
    clock, rate = Clock(), Rate.parse("4/second")
    limiter = MemoryLimiter(clock=clock)
    decisions = [await limiter.hit("k", rate) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert [d.remaining for d in decisions] == [3, 2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.retry_after == pytest.approx(0.25) and refused.reset_after == pytest.approx(1.0)
    assert dict(refused.headers())[b"retry-after"] == b"1"
    clock.now += 0.25
    assert (await limiter.hit("k", rate)).allowed
    assert not (await limiter.hit("k", rate)).allowed
    clock.now += 1.0
    assert (await limiter.hit("k", rate)).remaining == 3
    assert (await limiter.hit("other", rate)).remaining == 3


async def test_a_fresh_key_is_allowed_whatever_the_clock_reads() -> None:
    # (2040.109… + 60) - 60 is 2040.109… plus a rounding error: a first request was refused.
    clock, rate = Clock(), Rate.parse("1/minute")
    clock.now = 2040.1090003485567
    limiter = MemoryLimiter(clock=clock)
    assert (await limiter.hit("k", rate)).allowed
    assert not (await limiter.hit("k", rate)).allowed


async def test_limiter_memory_is_bounded_and_idle_keys_go() -> None:
    clock, rate = Clock(), Rate.parse("1/second")
    limiter = MemoryLimiter(max_keys=100, clock=clock)
    for n in range(1000):
        await limiter.hit(f"caller-{n}", rate)
    assert len(limiter) == 100
    clock.now += 2  # every key is idle now: each hit drops up to two of them
    for n in range(60):
        await limiter.hit(f"fresh-{n}", rate)
    assert len(limiter) == 60


@pytest.mark.parametrize("text", ["100/minute", "2/second", "5/10s", "1000/hours", "3/day", "1/2.5min"])
def test_rates_parse(text: str) -> None:
    rate = Rate.parse(text)
    assert rate.limit >= 1 and rate.period > 0 and rate.text == text


@pytest.mark.parametrize("text", ["0/second", "5", "5/fortnight", "x/s", "5/0s", "-1/s"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"rate|positive"):
        Rate.parse(text)


@pytest.fixture(scope="module")
def daemon(module_daemon) -> RunningDaemon:
    return module_daemon(CONFIG)


def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return result


def list_tools(daemon: RunningDaemon, token: str, client: Any = httpx) -> httpx.Response:
    return client.post(daemon.url, json=LIST_TOOLS, headers={**MODERN_HEADERS, **bearer(token)}, timeout=30)


def exhaust(daemon: RunningDaemon, token: str) -> httpx.Response:
    """Requests back to back (on one connection, to be quick) until one is refused; that one."""
    with httpx.Client() as client:
        for _ in range(100):
            if (response := list_tools(daemon, token, client)).status_code == 429:
                return response
    raise AssertionError("never rate limited")


@pytest.mark.parametrize(("key", "limit"), [(ALICE, 2), (BOB, 10)], ids=["own-limit", "default-limit"])
def test_identity_budget_gives_429_then_recovers(daemon: RunningDaemon, key: Any, limit: int) -> None:
    refused = exhaust(daemon, key.token)
    assert refused.json()["error"]["code"] == RATE_LIMITED
    assert refused.json()["error"]["data"]["retry_after"] > 0
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit"] == str(limit)
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= 1
    assert until(lambda: list_tools(daemon, key.token).status_code == 200)
    line = daemon.wait_for_log(lambda r: r.get("status") == 429 and r.get("identity") == key.name)
    assert line["rpc_error"] == RATE_LIMITED


def test_one_callers_budget_is_not_anothers(daemon: RunningDaemon) -> None:
    exhaust(daemon, ALICE.token)
    # Carol's budget is never spent here (Bob's is, by the test before, and refills a request
    # per 0.1 s: asking as Bob would depend on how soon this test runs after that one).
    assert list_tools(daemon, CAROL.token).status_code == 200


async def _call_until_limited(daemon: RunningDaemon, mode: str, tool: str) -> Any:
    async with connect(daemon.url, CAROL.token, mode) as client:
        for _ in range(20):
            result = await client.call_tool(tool, {"a": 1, "b": 2} if tool == "echo_add" else {})
            if result.is_error:
                return result
    raise AssertionError(f"{tool} was never rate limited")


async def _call_until_allowed(daemon: RunningDaemon, mode: str, tool: str) -> None:
    async with connect(daemon.url, CAROL.token, mode) as client:
        deadline = time.monotonic() + 10
        while (await client.call_tool(tool, {"a": 1, "b": 2} if tool == "echo_add" else {})).is_error:
            assert time.monotonic() < deadline, f"{tool} never recovered"
            await trio.sleep(0.2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("tool", "scope"), [("echo_add", "tool 'echo_add'"), ("sysinfo_uptime", "plugin 'sysinfo'")])
async def test_tool_and_plugin_limits_give_a_tool_error_then_recover(
    daemon: RunningDaemon, mode: str, tool: str, scope: str
) -> None:
    refused = await _call_until_limited(daemon, mode, tool)
    text = refused.content[0].text
    assert f"rate limit of {scope} exceeded (2/second per caller)" in text and "try again in 1s" in text
    error = refused.meta[ERROR_META_KEY]
    assert error["code"] == RATE_LIMITED and error["limit"] == scope and error["retry_after"] > 0
    await _call_until_allowed(daemon, mode, tool)


@pytest.mark.parametrize("mode", MODES)
async def test_a_timed_out_call_carries_its_code(daemon: RunningDaemon, mode: str) -> None:
    async with connect(daemon.url, BOB.token, mode) as client:
        result = await client.call_tool("echo_slow", {"seconds": 5})
    assert result.is_error and "timed out after 0.3s" in result.content[0].text
    assert result.meta[ERROR_META_KEY] == {"code": TOOL_TIMEOUT}


def test_a_limit_on_something_not_served_is_warned_about(daemon: RunningDaemon) -> None:
    line = daemon.wait_for_log(lambda r: r.get("event") == "rate limits are set for what is not served")
    assert line["unserved"] == ["tool 'echo_ad'"]
