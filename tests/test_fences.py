"""Every plugin is fenced: whatever one plugin does at load or call time comes out as a
clean, attributed error, and the daemon keeps serving every other plugin; with each plugin
inline and with each in a worker process."""

from __future__ import annotations

import time

import httpx
import pytest
import trio
from mcp import Client

from mcphost.testing import RunningDaemon
from tests.conftest import ISOLATIONS, MODES, isolated

CONFIG = {
    "plugins": {
        "enable": ["echo", "faulty", "broken_import", "broken_hook", "bad_shape", "sysinfo"],
        "echo": {"required": True},
        "faulty": {"tools": {"block": {"max_concurrency": 1}}},
    }
}


@pytest.fixture(scope="module", params=ISOLATIONS)
def daemon(module_daemon, request: pytest.FixtureRequest) -> RunningDaemon:
    """Every plugin inline, then every plugin in a worker process: the fence holds both ways."""
    return module_daemon(isolated(CONFIG, request.param))


async def call(daemon: RunningDaemon, mode: str, tool: str, arguments: dict | None = None):
    async with Client(daemon.url, mode=mode) as client:
        return await client.call_tool(tool, arguments or {})


def test_broken_plugins_are_reported_and_the_rest_load(daemon: RunningDaemon) -> None:
    status, body = daemon.get("/ready", admin=True)
    report = httpx.Response(status, content=body).json()
    plugins = report["plugins"]
    assert status == 200, "echo (required) is loaded, so the daemon is ready despite the broken ones"
    assert plugins["echo"]["status"] == "loaded" and plugins["echo"]["ready"] is True
    assert plugins["broken_import"]["status"] == "failed"
    assert "ModuleNotFoundError" in plugins["broken_import"]["error"]
    assert "cannot list tools" in plugins["broken_hook"]["error"]
    assert "must return a list" in plugins["bad_shape"]["error"]
    failures = {r["plugin"]: r for r in daemon.log_records() if r.get("event") == "plugin failed to load"}
    assert set(failures) == {"broken_import", "broken_hook", "bad_shape"}


@pytest.mark.parametrize("mode", MODES)
async def test_unexpected_exception_becomes_an_error_result_without_details(daemon: RunningDaemon, mode: str) -> None:
    result = await call(daemon, mode, "faulty_crash")
    assert result.is_error
    text = result.content[0].text
    assert "internal error" in text and "error id" in text
    assert "hunter2" not in text and "Traceback" not in text
    error_id = text.rsplit("error id ", 1)[1].rstrip(")")
    logged = daemon.wait_for_log(lambda r: r.get("error_id") == error_id)
    assert "hunter2" in logged["exception"], "the server log keeps what the client must not see"
    # The line names the request it happened in, so the two lines can be joined.
    request = daemon.wait_for_log(lambda r: r.get("event") == "request" and r.get("request_id") == logged["request_id"])
    assert request["tool"] == "faulty_crash"
    assert logged.get("session_id") == request["session_id"]


@pytest.mark.parametrize("mode", MODES)
async def test_tool_error_message_reaches_the_client(daemon: RunningDaemon, mode: str) -> None:
    result = await call(daemon, mode, "faulty_refuse", {"reason": "disk is read-only"})
    assert result.is_error and result.content[0].text == "tool 'faulty_refuse' failed: disk is read-only"


@pytest.mark.parametrize("mode", MODES)
async def test_hanging_tool_is_cancelled_at_its_timeout(daemon: RunningDaemon, mode: str) -> None:
    result = await call(daemon, mode, "faulty_hang")
    assert result.is_error and "timed out after 1s" in result.content[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_oversized_result_is_refused(daemon: RunningDaemon, mode: str) -> None:
    result = await call(daemon, mode, "faulty_huge")
    assert (
        result.is_error
        and result.content[0].text == "tool 'faulty_huge' returned a result over its limit of 10000 bytes"
    )
    small = await call(daemon, mode, "faulty_huge", {"size": 100})
    assert not small.is_error


@pytest.mark.parametrize("mode", MODES)
async def test_result_not_matching_declared_output_is_an_error(daemon: RunningDaemon, mode: str) -> None:
    result = await call(daemon, mode, "faulty_bad_return")
    assert result.is_error and "does not match its declared output" in result.content[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_a_return_type_validator_is_fenced_with_its_tool(daemon: RunningDaemon, mode: str) -> None:
    result = await call(daemon, mode, "faulty_exit_validating")
    assert result.is_error and "internal error" in result.content[0].text
    logged = daemon.wait_for_log(lambda r: r.get("call") == "tool 'faulty_exit_validating'")
    assert logged["plugin"] == "faulty" and "SystemExit" in logged["exception"]
    assert daemon.process.poll() is None


@pytest.mark.parametrize("mode", MODES)
async def test_system_exit_in_a_tool_does_not_stop_the_daemon(daemon: RunningDaemon, mode: str) -> None:
    result = await call(daemon, mode, "faulty_exit_process")
    assert result.is_error
    assert daemon.process.poll() is None
    assert not (await call(daemon, mode, "echo_echo", {"text": "still here"})).is_error


async def test_blocking_sync_tool_does_not_stall_other_plugins(daemon: RunningDaemon) -> None:
    """A plugin blocking a worker thread for seconds leaves the event loop and other plugins free."""
    answered: dict[str, float] = {}
    started = time.monotonic()

    async def blocker() -> None:
        result = await call(daemon, "legacy", "faulty_block_long", {"seconds": 5})
        answered["block"] = time.monotonic() - started
        assert result.content[0].text == "done"

    async def others() -> None:
        await trio.sleep(0.3)  # let the blocker take its thread first
        for _ in range(5):
            assert (await call(daemon, "2026-07-28", "echo_echo", {"text": "hi"})).content[0].text == "hi"
        answered["echo"] = time.monotonic() - started

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocker)
        nursery.start_soon(others)
    # Ordering, not timing: five calls to another plugin finished while the blocked one was still waiting.
    assert answered["echo"] < answered["block"]


async def test_abandoned_threads_keep_their_pool_token(daemon: RunningDaemon) -> None:
    """faulty_block has max_concurrency 1: while an abandoned thread still runs, the next
    call cannot get a thread and times out too, instead of piling up more threads."""
    for _ in range(10):  # an earlier test may have left an abandoned thread: wait until the pool is free
        if not (await call(daemon, "legacy", "faulty_block", {"seconds": 0})).is_error:
            break
    first = await call(daemon, "legacy", "faulty_block", {"seconds": 2.5})
    second = await call(daemon, "legacy", "faulty_block", {"seconds": 0})
    assert first.is_error and second.is_error
    assert "timed out" in second.content[0].text
    await trio.sleep(2)  # the first thread has ended by now; its token is back
    assert not (await call(daemon, "legacy", "faulty_block", {"seconds": 0})).is_error


async def test_daemon_keeps_serving_after_everything(daemon: RunningDaemon) -> None:
    async with Client(daemon.url, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo_echo", "faulty_crash", "sysinfo_load"} <= names
        assert not any(n.startswith(("broken_", "bad_shape")) for n in names)
        assert (await client.call_tool("echo_add", {"a": 1, "b": 1})).structured_content["total"] == 2
    assert daemon.process.poll() is None


def test_required_plugin_that_failed_makes_the_daemon_not_ready(module_daemon) -> None:
    daemon = module_daemon({"plugins": {"enable": ["echo", "broken_hook"], "broken_hook": {"required": True}}})
    status, body = daemon.get("/ready", admin=True)
    assert status == 503
    report = httpx.Response(status, content=body).json()
    assert report["status"] == "not ready" and report["plugins"]["broken_hook"]["required"] is True
    assert daemon.get("/health")[0] == 200, "liveness is not readiness"
