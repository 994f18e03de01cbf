"""Serving plugins' tools, resources and prompts to a real MCP client, over both protocol
paths of Streamable HTTP and over stdio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import httpx
import pytest
from mcp import Client, StdioServerParameters

from mcphost.testing import RunningDaemon, stateless_request, to_toml
from tests.conftest import MODES

CONFIG = {"plugins": {"enable": ["echo", "sysinfo"], "echo": {"settings": {"greeting": "ahoy"}}}}


@pytest.fixture(scope="module")
def daemon(module_daemon) -> RunningDaemon:
    return module_daemon(CONFIG)


@pytest.mark.parametrize("mode", MODES)
async def test_lists_tools_of_every_enabled_plugin(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert {"echo_echo", "echo_add", "echo_greet", "sysinfo_memory", "sysinfo_load"} <= names
    assert not any(name.startswith("faulty_") for name in names)


@pytest.mark.parametrize("mode", MODES)
async def test_schema_comes_from_type_hints_and_docstring(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    add = tools["echo_add"]
    assert add.description == "Add two integers."
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert set(add.input_schema["required"]) == {"a", "b"}
    assert add.output_schema is not None and "total" in add.output_schema["properties"]
    # The ToolContext parameter is the host's business, not the client's.
    assert "ctx" not in tools["echo_slow"].input_schema["properties"]


@pytest.mark.parametrize("mode", MODES)
async def test_calls_tools_with_structured_results(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        added = await client.call_tool("echo_add", {"a": 2, "b": 40})
        greeted = await client.call_tool("echo_greet", {"name": "crew"})
        memory = await client.call_tool("sysinfo_memory", {})
    assert not added.is_error and added.structured_content == {"a": 2, "b": 40, "total": 42}
    assert greeted.content[0].text == "ahoy, crew"  # the plugin's settings reached it
    assert memory.structured_content["ram"]["total"] > 0


@pytest.mark.parametrize("mode", MODES)
async def test_tool_context_describes_the_call(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        result = await client.call_tool("echo_whoami", {})
        version = client.protocol_version
    seen = result.structured_content
    assert seen["plugin"] == "echo" and seen["tool"] == "echo_whoami"
    assert seen["protocol_version"] == version
    assert (seen["session_id"] is None) == (mode != "legacy")


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_reach_the_caller(daemon: RunningDaemon, mode: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(daemon.url, mode=mode) as client:
        result = await client.call_tool("echo_slow", {"seconds": 0.2}, progress_callback=on_progress)
    assert result.content[0].text == "slept 0.2"
    assert seen == [float(step) for step in range(1, 11)]


@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_templates(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        greeting = await client.read_resource("echo://greeting")
        upper = await client.read_resource("echo://upper/quiet")
    assert "echo://greeting" in listed and "echo://upper/{word}" in templates
    assert greeting.contents[0].text == "ahoy"
    assert upper.contents[0].text == "QUIET"


@pytest.mark.parametrize("mode", MODES)
async def test_prompts(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        rendered = await client.get_prompt("echo_review", {"subject": "the config"})
    assert prompts["echo_review"].arguments[0].name == "subject"
    assert rendered.messages[0].content.text == "Please review the config."


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_one_log_line_per_request_carrying_the_tool_call(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        whoami = await client.call_tool("echo_whoami", {})
        await client.call_tool("echo_echo", {"text": "logged"})
    session_id = whoami.structured_content["session_id"]
    line = daemon.wait_for_log(lambda r: r.get("event") == "request" and r.get("tool") == "echo_echo")
    for field in ("request_id", "method", "plugin", "tool_status", "tool_ms", "status", "duration_ms"):
        assert field in line, f"request line lacks {field}: {line}"
    assert line["method"] == "tools/call" and line["tool_status"] == "ok" and line["status"] == 200
    assert line["plugin"] == "echo" and 0 <= line["tool_ms"] <= line["duration_ms"]
    same_request = [r for r in daemon.log_records() if r.get("request_id") == line["request_id"]]
    assert same_request == [line]
    if mode == "legacy":
        assert session_id and line["session_id"] == session_id


async def test_stdio_serves_the_same_plugins(tmp_path) -> None:
    config = tmp_path / "mcphost.toml"
    config.write_text(to_toml(CONFIG))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcphost", "stdio", "--config", str(config)],
        env={"MCPHOST_LOG__FORMAT": "json", "PATH": "/usr/bin:/bin"},
    )
    async with Client(params, mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("echo_add", {"a": 1, "b": 2})
        failed = await client.call_tool("echo_add", {"a": "one", "b": 2})
    assert "echo_greet" in names and "sysinfo_memory" in names
    assert result.structured_content["total"] == 3
    assert failed.is_error and "a" in failed.content[0].text


async def test_stdio_keeps_stdout_for_the_protocol(tmp_path) -> None:
    """A plugin that prints must not corrupt the protocol channel."""
    plugin = tmp_path / "chatty.py"
    plugin.write_text(
        "import mcphost\n"
        "print('import-time noise')\n"
        "@mcphost.hookimpl\n"
        "def mcphost_tools():\n"
        "    def shout() -> str:\n"
        "        '''Print, then answer.'''\n"
        "        print('call-time noise')\n"
        "        return 'answer'\n"
        "    return [shout]\n"
    )
    config = tmp_path / "mcphost.toml"
    config.write_text(to_toml({"plugins": {"enable": ["chatty"], "paths": [str(plugin)]}}))
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcphost", "stdio", "-c", str(config)])
    async with Client(params, mode="legacy") as client:
        result = await client.call_tool("chatty_shout", {})
    assert result.content[0].text == "answer"


def test_stdio_frees_what_start_up_left(tmp_path) -> None:
    """Over stdio too, start-up runs with the collector paused (mcphost.ops.heap) and what it
    left is collected once serving; closing stdin ends the daemon cleanly."""
    config = tmp_path / "mcphost.toml"
    config.write_text(to_toml({"plugins": {"enable": ["echo"]}}))
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "mcphost", "stdio", "-c", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "MCPHOST_LOG__FORMAT": "json"},
    )
    deadline = threading.Timer(30, process.kill)  # ends the reads below if nothing comes
    deadline.start()
    try:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        process.stdin.write(json.dumps(initialize).encode() + b"\n")
        process.stdin.flush()
        assert json.loads(process.stdout.readline())["id"] == 1
        settled = None
        for line in process.stderr:
            record = json.loads(line)
            if record.get("event") == "collector settled":
                settled = record
                break
        assert settled is not None and settled["freed"] > 0
        process.stdin.close()
        assert process.wait(30) == 0
    finally:
        deadline.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_request_ids_are_returned_and_honoured(daemon: RunningDaemon) -> None:
    body, headers = stateless_request("tools/list")
    headers["x-request-id"] = "trace-me-123"
    response = httpx.post(daemon.url, json=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-me-123"
    assert daemon.wait_for_log(lambda r: r.get("request_id") == "trace-me-123")
    assert json.loads(response.text)["result"]["tools"]
