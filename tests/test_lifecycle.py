"""The daemon's lifecycle as a sysadmin and a client live it: restarts that keep sessions,
hot reload on file change, SIGHUP after installing or removing a plugin, SIGTERM draining."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
import trio
from mcp import Client

from mcphost.testing import RunningDaemon, start_daemon, stateless_request

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def sse_result(response: httpx.Response) -> dict[str, Any]:
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1]) if data else response.json()


def tool_names(daemon: RunningDaemon) -> set[str]:
    body, headers = stateless_request("tools/list")
    return {t["name"] for t in httpx.post(daemon.url, json=body, headers=headers).json()["result"]["tools"]}


def wait_until(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# -- restarts ----------------------------------------------------------------------------


async def test_session_survives_a_restart(tmp_path: Path) -> None:
    config = {"plugins": {"enable": ["echo"]}}
    first = start_daemon(tmp_path, config)
    state = tmp_path / f"state-{first.port}"
    try:
        async with Client(first.url, mode="legacy") as client:
            before = await client.call_tool("echo_whoami", {})
            assert first.stop() == 0
            second = start_daemon(tmp_path, config, port=first.port, state_dir=state)
            try:
                # The same client, the same session id, no new handshake.
                after = await client.call_tool("echo_whoami", {})
                echoed = await client.call_tool("echo_echo", {"text": "still here"})
            finally:
                second.stop()
    finally:
        first.stop()
    assert after.structured_content["session_id"] == before.structured_content["session_id"]
    assert echoed.content[0].text == "still here"
    assert any(r.get("event") == "session rebuilt" for r in second.log_records())


def test_forged_and_deleted_sessions_get_404(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo"]}})
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        session = httpx.post(daemon.url, json=init, headers=ACCEPT).headers["mcp-session-id"]
        headers = {**ACCEPT, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        httpx.post(daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        token, _, signature = session.partition(".")
        for forged in (f"{token}.{signature[::-1]}", f"{token[::-1]}.{signature}", token, "x" * 40):
            assert (
                httpx.post(daemon.url, json=listing, headers={**headers, "Mcp-Session-Id": forged}).status_code == 404
            )
        assert httpx.post(daemon.url, json=listing, headers=headers).status_code == 200
        assert httpx.delete(daemon.url, headers=headers).status_code == 200
        daemon.stop()
        again = start_daemon(
            tmp_path, {"plugins": {"enable": ["echo"]}}, port=daemon.port, state_dir=tmp_path / f"state-{daemon.port}"
        )
        try:  # a deleted session stays deleted after a restart
            assert httpx.post(again.url, json=listing, headers=headers).status_code == 404
        finally:
            again.stop()
    finally:
        daemon.stop()


# -- hot reload on file change -----------------------------------------------------------

PLUGIN_V1 = '''
import trio
import mcphost

@mcphost.hookimpl
def mcphost_tools():
    async def version() -> str:
        """Which version answers."""
        return "v1"

    async def linger(seconds: float) -> str:
        """Take a while, then say which version answered."""
        await trio.sleep(seconds)
        return "v1 lingered"

    return [version, linger]
'''


PLUGIN_V2 = PLUGIN_V1.replace('"v1"', '"v2"').replace(
    "    return [version, linger]",
    '    def added() -> str:\n        """New in v2."""\n        return \'new\'\n\n    return [version, linger, added]',
)


async def test_editing_a_plugin_reloads_it_and_notifies_sessions(tmp_path: Path) -> None:
    plugin = tmp_path / "live.py"
    plugin.write_text(PLUGIN_V1)
    daemon = start_daemon(
        tmp_path,
        {"reload": {"watch": True, "debounce_ms": 50}, "plugins": {"enable": ["live"], "paths": [str(plugin)]}},
    )
    changed = trio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    try:
        async with Client(daemon.url, mode="legacy", message_handler=on_message) as client:
            assert client.server_capabilities.tools.list_changed is True
            async with trio.open_nursery() as nursery:
                lingering: list[Any] = []

                async def linger() -> None:
                    lingering.append(await client.call_tool("live_linger", {"seconds": 1.5}))

                nursery.start_soon(linger)
                await trio.sleep(0.3)  # the call is running on v1
                plugin.write_text(PLUGIN_V2)
                with trio.fail_after(15):
                    await changed.wait()
            assert lingering[0].content[0].text == "v1 lingered", "a call running during the swap finishes on v1"
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"live_version", "live_added"} <= names
            assert (await client.call_tool("live_version", {})).content[0].text == "v2"

            plugin.write_text("import mcphost\ndef broken(:\n")
            daemon.wait_for_log(lambda r: r.get("event") == "plugin reload failed; the previous version keeps serving")
            assert (await client.call_tool("live_version", {})).content[0].text == "v2"
            # The detail is for operators, on the admin listener.
            report = (await trio.to_thread.run_sync(httpx.get, f"{daemon.admin_url}/ready")).json()
            assert "SyntaxError" in report["plugins"]["live"]["reload_error"]
    finally:
        daemon.stop()


# -- SIGHUP ------------------------------------------------------------------------------


def _package(root: Path) -> Path:
    source = root / "hupdemo-src"
    (source / "mcphost_hupdemo").mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "mcphost-hupdemo"
        version = "1.0.0"
        [project.entry-points.mcphost]
        hupdemo = "mcphost_hupdemo"
    """)
    )
    (source / "mcphost_hupdemo" / "__init__.py").write_text(
        "import mcphost\n\n@mcphost.hookimpl\ndef mcphost_tools():\n"
        "    def hello() -> str:\n        '''Say hello.'''\n        return 'hello'\n    return [hello]\n"
    )
    return source


def test_sighup_picks_up_installed_and_removed_plugins(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    config = tmp_path / "mcphost.toml"
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo", "hupdemo"]}}, env={"PYTHONPATH": str(site)})
    try:
        assert "hupdemo_hello" not in tool_names(daemon)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(site),
                str(_package(tmp_path)),
            ],
            check=True,
        )
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "hupdemo_hello" in tool_names(daemon))
        for path in site.iterdir():  # what `pip uninstall` does for a --target install
            subprocess.run(["rm", "-rf", str(path)], check=True)
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "hupdemo_hello" not in tool_names(daemon))
        assert "echo_echo" in tool_names(daemon)
    finally:
        daemon.stop()
    del config


def test_the_collector_frees_what_start_up_left(tmp_path: Path) -> None:
    """Start-up runs with the collector paused (mcphost.ops.heap); once serving, the daemon
    collects what start-up left behind, without any reload."""
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo"]}})
    try:
        settled = daemon.wait_for_log(lambda r: r.get("event") == "collector settled")
        assert settled["freed"] > 0
        assert not any(r.get("event") == "reloading" for r in daemon.log_records())
    finally:
        daemon.stop()


def test_sighup_with_an_invalid_config_changes_nothing(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo"]}})
    try:
        daemon.config_path.write_text("[plugins]\nenable = ['echo', 'sysinfo']\n[server\n")
        daemon.process.send_signal(signal.SIGHUP)
        refused = daemon.wait_for_log(lambda r: str(r.get("event", "")).startswith("reload refused"))
        assert "TOML syntax error" in refused["problems"]
        assert tool_names(daemon) == {n for n in tool_names(daemon) if n.startswith("echo_")}
        assert daemon.process.poll() is None
    finally:
        daemon.stop()


# -- SIGTERM -----------------------------------------------------------------------------


@pytest.mark.parametrize("drain_timeout, expect_error", [(30, False), (0.5, True)])
async def test_sigterm_drains_calls_in_flight(tmp_path: Path, drain_timeout: float, expect_error: bool) -> None:
    daemon = start_daemon(tmp_path, {"shutdown": {"drain_timeout": drain_timeout}, "plugins": {"enable": ["echo"]}})
    results: list[Any] = []
    try:
        async with Client(daemon.url, mode="2026-07-28") as client, trio.open_nursery() as nursery:

            async def slow(*, task_status: Any) -> None:
                started = trio.Event()

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    started.set()

                async def call() -> None:
                    results.append(await client.call_tool("echo_slow", {"seconds": 1.5}, progress_callback=on_progress))

                async with trio.open_nursery() as inner:
                    inner.start_soon(call)
                    await started.wait()  # the server is running it
                    task_status.started()

            # The client lists tools once, to check results against their schemas: now, on
            # a connection already open, not after a result, when it would need a new one.
            await client.list_tools()
            for _ in range(3):
                await nursery.start(slow)
            # A keep-alive connection opened before the signal, as a proxy's would be.
            kept = httpx.Client()
            assert (await trio.to_thread.run_sync(kept.get, f"{daemon.base_url}/health")).status_code == 200
            daemon.process.send_signal(signal.SIGTERM)
            await trio.sleep(0.2)
            init = {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "late", "version": "1"},
                },
            }
            # It bound its socket itself: a new connection is refused at once (a proxy sends
            # it to another replica), never left waiting for a process that is going.
            with pytest.raises(httpx.ConnectError):
                await trio.to_thread.run_sync(lambda: httpx.post(daemon.url, json=init, headers=ACCEPT))
            if not expect_error:  # (with a short drain the daemon may be gone by now)
                # A request on a connection already open is still answered, new work
                # included, and its answer closes the connection.
                body, headers = stateless_request("tools/call", {"name": "echo_echo", "arguments": {"text": "late"}})
                late = await trio.to_thread.run_sync(lambda: kept.post(daemon.url, json=body, headers=headers))
                assert late.status_code == 200 and "late" in late.text
                assert late.headers["connection"] == "close"
            await trio.to_thread.run_sync(kept.close)
        assert await trio.to_thread.run_sync(daemon.process.wait, 30) == 0
    finally:
        daemon.stop()
    assert len(results) == 3, "every call in flight was answered"
    if expect_error:
        assert all(r.is_error and "shutting down" in r.content[0].text for r in results)
    else:
        assert all(r.content[0].text == "slept 1.5" for r in results)


async def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"shutdown": {"drain_timeout": 60}, "plugins": {"enable": ["echo"]}})
    try:
        async with Client(daemon.url, mode="2026-07-28") as client, trio.open_nursery() as nursery:
            started = trio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                started.set()

            async def slow() -> None:
                with contextlib.suppress(Exception):  # the daemon goes away under it
                    await client.call_tool("echo_slow", {"seconds": 30}, progress_callback=on_progress)

            nursery.start_soon(slow)
            await started.wait()
            daemon.process.send_signal(signal.SIGTERM)
            daemon.wait_for_log(lambda r: r.get("event") == "draining")
            daemon.process.send_signal(signal.SIGTERM)
            # Well before the 60 s drain (or the 30 s call) would end.
            status = await trio.to_thread.run_sync(daemon.process.wait, 20)
            nursery.cancel_scope.cancel()
        assert status == 1
        assert any(r.get("event") == "second stop signal: exiting at once" for r in daemon.log_records())
    finally:
        daemon.stop()


def test_dev_flag_turns_on_watching(tmp_path: Path) -> None:
    plugin = tmp_path / "live.py"
    plugin.write_text(PLUGIN_V1)
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["live"], "paths": [str(plugin)]}}, args=("--dev",))
    try:

        def changed() -> bool:
            # Written again until seen: the watcher starts once the daemon serves, and a
            # change made before it watches is one it never hears of.
            if time.time() - plugin.stat().st_mtime > 0.5:
                plugin.write_text(PLUGIN_V2)
            return "live_added" in tool_names(daemon)

        wait_until(changed)
    finally:
        daemon.stop()


SLOW_IMPORT = """
import time

import mcphost

time.sleep(30)  # still importing when the test interrupts the daemon


@mcphost.hookimpl
def mcphost_tools():
    return []
"""


def test_ctrl_c_on_a_daemon_still_starting_ends_it_without_a_traceback(tmp_path: Path) -> None:
    """SIGINT before the daemon handles signals ends it as SIGTERM does (at once: nothing
    serves yet), rather than with Python's KeyboardInterrupt wherever start-up was."""
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_IMPORT)
    config = {"plugins": {"enable": ["slow"], "paths": [str(plugin)], "slow": {"isolation": "inline"}}}
    daemon = start_daemon(tmp_path, config, wait=False)
    try:
        # Its config read, its plugins loading: well into start-up, not yet handling signals.
        daemon.wait_for_log(lambda r: r.get("event") == "created a session secret", timeout=30)
        time.sleep(0.5)
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(10) == -signal.SIGINT
    finally:
        daemon.stop(signal.SIGKILL)
    assert "Traceback" not in daemon.logs() and "KeyboardInterrupt" not in daemon.logs()
