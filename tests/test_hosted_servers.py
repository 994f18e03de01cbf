"""Existing stdio MCP servers hosted as plugins (``[plugins.<name>] command = [...]``): a
server from npm (``@modelcontextprotocol/server-everything``, on Node) and one written with
the Python SDK, behind mcphost's one URL, supervised like an isolated plugin, called by the
SDK's client and by the official TypeScript client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from mcphost.core.errors import INTERNAL_ERROR
from mcphost.testing import RunningDaemon, start_daemon, to_toml
from tests.conftest import MODES, memory
from tests.metricskit import key, scrape
from tests.services import node_client

CALC = Path(__file__).parent / "plugins" / "external" / "calc_server.py"
BARE = Path(__file__).parent / "plugins" / "external" / "bare_server.py"
HELD = Path(__file__).parent / "plugins" / "external" / "held_server.py"
SECRET_VARIABLE = "MCPHOST_TEST_ONLY_SECRET"


@pytest.fixture(scope="module")
def node() -> tuple[str, Path]:
    """``node`` and the directory where npm installed the TypeScript SDK and server-everything."""
    return node_client()


def config(node: tuple[str, Path]) -> dict[str, Any]:
    program, directory = node
    everything = directory / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    return {
        "plugins": {
            "enable": ["calc", "everything", "bare"],
            "calc": {
                "command": [sys.executable, str(CALC)],
                "roots": ["file:///srv/project"],
                "max_restarts": 50,
                "tools": {"slow": {"timeout": 2}},
            },
            "everything": {"command": [program, str(everything)], "args": ["stdio"], "env": {"GREETING": "hi"}},
            "bare": {"command": [sys.executable, str(BARE)]},
        }
    }


@pytest.fixture(scope="module")
def daemon(module_daemon, node: tuple[str, Path]) -> RunningDaemon:
    return module_daemon(config(node), env={SECRET_VARIABLE: "hunter2"})


async def call(daemon: RunningDaemon, tool: str, arguments: dict[str, Any] | None = None, mode: str = "legacy") -> Any:
    async with Client(daemon.url, mode=mode) as client:
        return await client.call_tool(tool, arguments or {})


@pytest.mark.parametrize("mode", MODES)
async def test_hosted_servers_tools_are_served_under_the_plugins_prefix(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        total = await client.call_tool("everything_get-sum", {"a": 2, "b": 40})
        added = await client.call_tool("calc_add", {"a": 1, "b": 2})
    assert {"everything_get-sum", "everything_echo", "calc_add", "calc_slow"} <= names
    assert not total.is_error and "42" in total.content[0].text
    assert not added.is_error and added.content[0].text == "3"


class Heard:
    """A client's message handler that notes a notification of one kind (of one URI, for
    resource updates)."""

    def __init__(self, kind: type, uri: str | None = None) -> None:
        self.kind, self.uri = kind, uri
        self.event = trio.Event()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, self.kind) and (self.uri is None or str(message.params.uri) == self.uri):
            self.event.set()

    async def wait(self) -> None:
        """Until one comes (a guard of 10 s, not a speed test); the next wait waits for another."""
        with trio.fail_after(10):
            await self.event.wait()
        self.event = trio.Event()


async def test_a_servers_new_tools_are_served_live_and_clients_are_told(daemon: RunningDaemon) -> None:
    changed = Heard(types.ToolListChangedNotification)
    async with (
        Client(daemon.url, mode="legacy", message_handler=changed) as session,
        Client(daemon.url, mode="2026-07-28") as stateless,
        stateless.listen(tools_list_changed=True) as events,
    ):
        assert (await session.call_tool("calc_grow", {})).content[0].text == "grown"
        await changed.wait()
        with trio.fail_after(10):
            await events.__anext__()
        for client in (session, stateless):
            assert "calc_multiply" in {t.name for t in (await client.list_tools()).tools}
            assert (await client.call_tool("calc_multiply", {"a": 6, "b": 7})).content[0].text == "42"


@pytest.mark.parametrize("mode", MODES)
async def test_a_servers_resources_prompts_and_completions_are_served(daemon: RunningDaemon, mode: str) -> None:
    async with Client(daemon.url, mode=mode) as client:
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        pi = await client.read_resource("calc://constants/answer")
        square = await client.read_resource("calc://square/12")
        prompt = await client.get_prompt("calc_double", {"number": "21"})
        suggested = await client.complete(types.PromptReference(name="calc_double"), {"name": "number", "value": "1"})
        served = await client.read_resource("demo://resource/static/document/architecture.md")
        everything = await client.get_prompt("everything_simple-prompt", {})
    assert "calc://constants/answer" in resources and "calc://square/{n}" in templates
    assert {"calc_double", "everything_simple-prompt", "everything_args-prompt"} <= prompts
    assert "demo://resource/static/document/architecture.md" in resources, "a server on Node lists its own"
    assert pi.contents[0].text == "42" and square.contents[0].text == "144"
    assert prompt.messages[0].content.text == "What is twice 21?"
    assert suggested.completion.values == ["1", "12", "123"], "the prompt's name was the server's own"
    assert served.contents[0].text and everything.messages


async def test_a_servers_new_resources_are_served_live_though_it_has_no_templates(daemon: RunningDaemon) -> None:
    changed = Heard(types.ResourceListChangedNotification)
    async with Client(daemon.url, mode="legacy", message_handler=changed) as session:
        added = (await session.call_tool("bare_add_note", {})).content[0].text
        await changed.wait()
        assert added in {str(r.uri) for r in (await session.list_resources()).resources}


async def test_a_servers_new_prompts_are_served_live_and_clients_are_told(daemon: RunningDaemon) -> None:
    changed = Heard(types.PromptListChangedNotification)
    async with Client(daemon.url, mode="legacy", message_handler=changed) as session:
        assert (await session.call_tool("calc_teach", {})).content[0].text == "taught"
        await changed.wait()
        assert "calc_halve" in {p.name for p in (await session.list_prompts()).prompts}
        halved = await session.get_prompt("calc_halve", {"number": "8"})
    assert halved.messages[0].content.text == "What is half of 8?"


DOCUMENT = "demo://resource/static/document/architecture.md"


def _asked(daemon: RunningDaemon, what: str) -> int:
    """How many times server-everything said (in a log message of its own) it was asked to
    ``Subscribe`` or ``Unsubscribe`` to :data:`DOCUMENT`."""
    return sum(
        1
        for r in daemon.log_records()
        if r.get("event") == "plugin log message"
        and str(r.get("data")).startswith(f"Received {what} Resource request")
        and DOCUMENT in str(r.get("data"))
    )


async def with_updates(client: Client, heard: Callable[[], Awaitable[Any]]) -> Any:
    """Have server-everything send an update of each URI it is subscribed to (at once, then
    every 5 s) until ``heard`` returns (within 10 s); what it returned."""
    toggled = await client.call_tool("everything_toggle-subscriber-updates", {})
    try:
        assert "Started" in toggled.content[0].text
        with trio.fail_after(10):
            return await heard()
    finally:
        await client.call_tool("everything_toggle-subscriber-updates", {})


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
async def test_a_server_is_subscribed_once_while_any_client_is(daemon: RunningDaemon) -> None:
    updates = Heard(types.ResourceUpdatedNotification, DOCUMENT)
    async with Client(daemon.url, mode="legacy", message_handler=updates) as first:
        async with Client(daemon.url, mode="legacy") as second, Client(daemon.url, mode="2026-07-28") as third:
            await first.subscribe_resource(DOCUMENT)
            await second.subscribe_resource(DOCUMENT)
            async with third.listen(resource_subscriptions=[DOCUMENT]):
                await with_updates(first, updates.wait)  # the one subscription the server was asked for
            await first.unsubscribe_resource(DOCUMENT)
            await first.unsubscribe_resource(DOCUMENT)
            assert _asked(daemon, "Unsubscribe") == 0, "two sessions and a stream: one left, and one leaves"
        # The second session ends without unsubscribing: the last client has left.
        await trio.to_thread.run_sync(daemon.wait_for_log, lambda _: _asked(daemon, "Unsubscribe") > 0)
    assert _asked(daemon, "Subscribe") == 1 and _asked(daemon, "Unsubscribe") == 1


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
async def test_a_subscription_follows_the_server_when_it_is_restarted_or_replaced(
    daemon: RunningDaemon, node: tuple[str, Path]
) -> None:
    updates = Heard(types.ResourceUpdatedNotification, DOCUMENT)
    async with Client(daemon.url, mode="legacy", message_handler=updates) as client:
        await client.subscribe_resource(DOCUMENT)
        os.kill(_server_pid(daemon, b"server-everything"), signal.SIGKILL)
        with trio.fail_after(20):  # a guard while it restarts, not a speed test
            while True:
                if not (await client.call_tool("everything_get-sum", {"a": 1, "b": 1})).is_error:
                    break
                await trio.sleep(0.1)
        await with_updates(client, updates.wait)
        # A reload that changes the server's table replaces it with a new one.
        changed = config(node)
        changed["plugins"]["everything"]["max_restarts"] = 7
        daemon.config_path.write_text(to_toml(changed))
        reloaded = await trio.to_thread.run_sync(daemon.reload)
        assert "everything" in reloaded["changed"]
        await with_updates(client, updates.wait)
        await client.unsubscribe_resource(DOCUMENT)


async def test_a_listen_stream_alone_has_the_server_subscribed(daemon: RunningDaemon) -> None:
    async with (
        Client(daemon.url, mode="2026-07-28") as client,
        client.listen(resource_subscriptions=[DOCUMENT]) as events,
    ):
        event = await with_updates(client, events.__anext__)
    assert event.uri == DOCUMENT


def held_config(*, hold: bool) -> dict[str, Any]:
    """A server that holds its answers to subscriptions (``hold``) until told to release them."""
    return {
        "plugins": {
            "enable": ["held"],
            "held": {"command": [sys.executable, str(HELD)], "env": {"HOLD": "1" if hold else "0"}},
        }
    }


async def held_state(client: Client) -> dict[str, Any]:
    """The URIs the held server is subscribed to, and how many subscriptions it was asked for."""
    state: dict[str, Any] = json.loads((await client.call_tool("held_subscribed", {})).content[0].text)
    return state


async def until_asked(client: Client, count: int) -> dict[str, Any]:
    """The held server's state once it was asked for exactly ``count`` subscriptions (a guard
    of 10 s, not a speed test)."""
    with trio.fail_after(10):
        while True:
            if (state := await held_state(client))["asked"] == count:
                return state
            await trio.sleep(0.05)


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
async def test_a_second_subscription_returns_once_the_server_has_taken_the_first(tmp_path: Path) -> None:
    """Its client may expect every update from the moment its subscription returns."""
    daemon = start_daemon(tmp_path, held_config(hold=True))
    try:
        async with Client(daemon.url, mode="legacy") as first, Client(daemon.url, mode="legacy") as second:
            returned = trio.Event()

            async def subscribe_second() -> None:
                await second.subscribe_resource("held://a")
                returned.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first.subscribe_resource, "held://a")
                await until_asked(first, 1)
                nursery.start_soon(subscribe_second)
                await trio.sleep(0.5)  # time enough for a subscription that does not wait to return
                assert not returned.is_set(), "the second subscription returned before the server answered the first"
                await first.call_tool("held_release", {})
            assert returned.is_set() and (await held_state(first))["asked"] == 1
    finally:
        daemon.stop()


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # resources/subscribe
async def test_a_server_replaced_while_the_last_subscriber_leaves_is_not_left_subscribed(tmp_path: Path) -> None:
    """A reload replaces the server while a client is subscribed to two of its resources; the
    new server holds its answer to the first subscription the reload passes on to it, and
    meanwhile the client leaves the other resource: the new server must not be subscribed to it."""
    daemon = start_daemon(tmp_path, held_config(hold=False))
    try:
        async with Client(daemon.url, mode="legacy") as client:
            for uri in ("held://a", "held://b"):
                await client.subscribe_resource(uri)
            daemon.config_path.write_text(to_toml(held_config(hold=True)))
            async with trio.open_nursery() as nursery:
                reloaded: list[dict[str, Any]] = []
                nursery.start_soon(lambda: trio.to_thread.run_sync(lambda: reloaded.append(daemon.reload())))
                # The old server was asked twice; the new one, once, so far.
                (taken,) = (await until_asked(client, 1))["uris"]
                left = "held://b" if taken == "held://a" else "held://a"
                await client.unsubscribe_resource(left)
                await client.call_tool("held_release", {})
            assert "held" in reloaded[0]["changed"]
            assert (await held_state(client))["uris"] == [taken]
    finally:
        daemon.stop()


def _server_pid(daemon: RunningDaemon, marker: bytes) -> int:
    """The pid of the daemon's child whose command line holds ``marker``."""
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except (OSError, NotADirectoryError):
            continue
        if marker in cmdline and f"\nPPid:\t{daemon.process.pid}\n" in status:
            return int(entry.name)
    raise AssertionError(f"no child of the daemon runs {marker!r}")


async def test_a_servers_error_is_an_error_result(daemon: RunningDaemon) -> None:
    result = await call(daemon, "calc_fail", {"reason": "no"})
    assert result.is_error


async def test_the_servers_environment_is_scrubbed(daemon: RunningDaemon) -> None:
    result = await call(daemon, "everything_get-env")
    env = json.loads(result.content[0].text)
    assert env["GREETING"] == "hi" and "PATH" in env
    assert not any(name.startswith("MCPHOST_") for name in env), sorted(env)


async def test_progress_reaches_the_caller_and_a_timeout_cancels(daemon: RunningDaemon) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(daemon.url) as client:
        done = await client.call_tool(
            "everything_trigger-long-running-operation", {"duration": 1, "steps": 2}, progress_callback=on_progress
        )
        slow = await client.call_tool("calc_slow", {"seconds": 10}, progress_callback=on_progress)
    assert not done.is_error and len(seen) >= 2, "each step's progress reached the caller"
    assert slow.is_error and "timed out after 2s and was cancelled" in slow.content[0].text


async def test_roots_come_from_the_config_not_from_a_client(daemon: RunningDaemon) -> None:
    result = await call(daemon, "calc_roots")
    assert result.structured_content == {"result": ["file:///srv/project"]}


async def test_a_server_that_dies_is_restarted(daemon: RunningDaemon) -> None:
    before = (await call(daemon, "calc_pid")).content[0].text
    crashed = await call(daemon, "calc_crash", {"status": 9})
    assert crashed.is_error and "the server of plugin 'calc' exited with status 9" in crashed.content[0].text
    after = await call(daemon, "calc_pid")  # waits while the server restarts
    assert not after.is_error and after.content[0].text != before
    total = await call(daemon, "everything_get-sum", {"a": 1, "b": 1})
    assert "2" in total.content[0].text, "the other server was not affected"


def test_the_typescript_client_calls_a_hosted_server(daemon: RunningDaemon, node: tuple[str, Path]) -> None:
    program, directory = node
    done = subprocess.run(
        [program, str(directory / "call.mjs"), daemon.url, "everything_get-sum", '{"a": 20, "b": 22}'],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])["result"]
    assert not result.get("isError") and "42" in result["content"][0]["text"]


def test_mcphost_plugins_lists_a_hosted_server(tmp_path: Path, node: tuple[str, Path]) -> None:
    path = tmp_path / "mcphost.toml"
    path.write_text(to_toml(config(node)))
    listing = subprocess.run(
        [sys.executable, "-m", "mcphost", "plugins", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    records = {r["name"]: r for r in json.loads(listing.stdout)}
    assert records["calc"]["origin"].startswith("command ") and records["calc"]["isolation"] == "process"
    assert records["calc"]["status"] == "loaded" and "calc_add" in records["calc"]["tools"]
    assert "everything_get-sum" in records["everything"]["tools"]


async def test_a_servers_tools_resources_and_prompts_wait_for_its_slots_in_turn(mcphost_daemon) -> None:
    # One slot: a slow call holds it while a tool call, a resource read and a prompt queue
    # behind it, and a fourth call's client gives up while it waits. Each is handed the slot
    # in turn and answered; the one given up on never holds it.
    table = {"command": [sys.executable, str(CALC)], "max_concurrency": 1, "timeout": 20}
    daemon = mcphost_daemon({"plugins": {"enable": ["calc"], "calc": table}})
    answers: dict[str, Any] = {}

    async def one(what: str, ask: Callable[[Client], Awaitable[Any]]) -> None:
        async with Client(daemon.url) as client:
            answers[what] = await ask(client)

    async def give_up() -> None:
        async with Client(daemon.url) as client:
            with trio.move_on_after(0.5):
                await client.call_tool("calc_add", {"a": 0, "b": 0})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "slow", lambda c: c.call_tool("calc_slow", {"seconds": 2}))
        await trio.sleep(0.3)
        nursery.start_soon(give_up)
        await trio.sleep(0.1)
        nursery.start_soon(one, "tool", lambda c: c.call_tool("calc_add", {"a": 40, "b": 2}))
        nursery.start_soon(one, "resource", lambda c: c.read_resource("calc://square/7"))
        nursery.start_soon(one, "prompt", lambda c: c.get_prompt("calc_double", {"number": "21"}))
    assert not answers["slow"].is_error and answers["slow"].content[0].text == "done"
    assert not answers["tool"].is_error and answers["tool"].content[0].text == "42"
    assert answers["resource"].contents[0].text == "49"
    assert "twice 21" in answers["prompt"].messages[0].content.text
    with trio.fail_after(10):  # the slot is free again
        assert (await call(daemon, "calc_add", {"a": 1, "b": 1})).content[0].text == "2"


ENDLESS = """
import json
import sys
import time

for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        version, info = message["params"]["protocolVersion"], {"name": "endless", "version": "1"}
        result = {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
    elif message.get("method") == "tools/list":
        try:
            for _ in range(MIB):
                sys.stdout.write("x" * 2**20)  # a line that does not end
            sys.stdout.flush()
        except BrokenPipeError:
            pass
        time.sleep(600)
"""


async def test_a_server_whose_list_does_not_end_cannot_take_the_daemonsmemory(mcphost_daemon, tmp_path: Path) -> None:
    bound = 64 * 2**20
    server = tmp_path / "endless.py"
    server.write_text(f"MIB = {6 * bound // 2**20}\n" + ENDLESS)
    plugins = {
        "enable": ["endless", "bare"],
        "endless": {"command": [sys.executable, str(server)]},
        "bare": {"command": [sys.executable, str(BARE)]},
    }
    daemon = mcphost_daemon({"plugins": plugins})
    # Its list is cut off at the bound on one message, and the server ended while starting.
    failed = await trio.to_thread.run_sync(
        daemon.wait_for_log, lambda r: r.get("event") == "plugin failed to load" and r.get("plugin") == "endless"
    )
    assert "its server failed to start: it sent what is not JSON-RPC: a message longer than" in failed["error"], failed
    pid = daemon.process.pid
    grew = memory(pid, "VmHWM") - memory(pid, "VmRSS")
    assert grew < 2 * bound + 32 * 2**20, f"the daemon grew by {grew / 2**20:.0f} MiB"
    assert (await call(daemon, "bare_pid")).content[0].text.isdigit()


MISSTARTING = """
import json
import os
import sys
import time

HOW = sys.argv[1]
for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        if HOW == "exits":
            sys.exit(3)
        if HOW == "closes":  # its stdin and stdout, and lives on
            os.close(0)
            os.close(1)
            time.sleep(600)
        version = "2020-01-01" if HOW == "old" else message["params"]["protocolVersion"]
        info = {"name": HOW, "version": "1"}
        result = {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
    elif message.get("method") == "tools/list":
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": "none"}}), flush=True)
"""


async def test_a_server_that_fails_to_start_is_reported_for_what_it_did(mcphost_daemon, tmp_path: Path) -> None:
    """Not as the daemon's own SIGKILL: what it sent, or how it ended by itself."""
    server = tmp_path / "misstarting.py"
    server.write_text(MISSTARTING)
    said = {
        "old": "its server failed to start: it speaks protocol revision '2020-01-01', which mcphost does not",
        "unlisted": "its server failed to start: tools/list: its answer is not a list of tools",
        "exits": "its server exited with status 3 while starting",
        "closes": "its server failed to start: it closed its connection",
    }
    plugins: dict[str, Any] = {"enable": [*said, "bare"], "bare": {"command": [sys.executable, str(BARE)]}}
    plugins |= {how: {"command": [sys.executable, str(server), how]} for how in said}
    daemon = mcphost_daemon({"plugins": plugins})
    for how, error in said.items():
        failed = await trio.to_thread.run_sync(
            daemon.wait_for_log, lambda r, how=how: r.get("event") == "plugin failed to load" and r.get("plugin") == how
        )
        assert failed["error"].startswith(error), failed
    assert (await call(daemon, "bare_pid")).content[0].text.isdigit()


CHATTY = """
import json
import sys

print("Chatty MCP server running on stdio", flush=True)
for line in sys.stdin:
    message = json.loads(line)
    method, reply = message.get("method"), None
    if method == "initialize":
        version, info = message["params"]["protocolVersion"], {"name": "chatty", "version": "1"}
        reply = {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
    elif method == "tools/list":
        reply = {"tools": [{"name": "hello", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        print("calling hello", flush=True)
        print(json.dumps(["not", "a", "message"]), flush=True)
        reply = {"content": [{"type": "text", "text": "hello"}]}
    if reply is not None:
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": reply}), flush=True)
"""


async def test_a_server_that_prints_to_its_stdout_is_served_and_its_lines_logged(
    mcphost_daemon, tmp_path: Path
) -> None:
    """As MCP's own stdio clients do: a line that is not a message is the server's output."""
    server = tmp_path / "chatty.py"
    server.write_text(CHATTY)
    daemon = mcphost_daemon({"plugins": {"enable": ["chatty"], "chatty": {"command": [sys.executable, str(server)]}}})
    for _ in range(2):
        result = await call(daemon, "chatty_hello")
        assert not result.is_error and result.content[0].text == "hello", result
    lines = [
        r["line"]
        for r in daemon.log_records()
        if r.get("event") == "plugin output" and r.get("plugin") == "chatty" and r.get("stream") == "stdout"
    ]
    assert lines.count("Chatty MCP server running on stdio") == 1, lines
    assert lines.count("calling hello") == 2 and lines.count('["not", "a", "message"]') == 2, lines


EARLY = """
import json
import sys

def send(message):
    print(json.dumps({"jsonrpc": "2.0", **message}), flush=True)

roots = pinged = sampled = None
for line in sys.stdin:
    message = json.loads(line)
    method = message.get("method")
    if method == "initialize":
        version, info = message["params"]["protocolVersion"], {"name": "early", "version": "1"}
        result = {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": info}
        send({"id": message["id"], "result": result})
    elif method == "notifications/initialized":  # asks at once, as the filesystem server does
        for request_id, asked in (("r", "roots/list"), ("p", "ping"), ("s", "sampling/createMessage")):
            send({"id": request_id, "method": asked, "params": {}})
    elif method == "tools/list":
        send({"id": message["id"], "result": {"tools": [{"name": "heard", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":
        text = json.dumps({"roots": roots, "pinged": pinged, "sampled": sampled})
        send({"id": message["id"], "result": {"content": [{"type": "text", "text": text}]}})
    elif message.get("id") == "r":
        roots = message["result"]["roots"]
    elif message.get("id") == "p":
        pinged = message.get("result")
    elif message.get("id") == "s":
        sampled = message.get("error", {}).get("code")
"""


async def test_what_a_server_asks_as_it_starts_is_answered(mcphost_daemon, tmp_path: Path) -> None:
    """Its roots from the config, a ping, and a refusal of what only a client could answer:
    never left unanswered while mcphost lists its tools."""
    server = tmp_path / "early.py"
    server.write_text(EARLY)
    table = {"command": [sys.executable, str(server)], "roots": ["file:///srv/early"]}
    daemon = mcphost_daemon({"plugins": {"enable": ["early"], "early": table}})
    heard = json.loads((await call(daemon, "early_heard")).content[0].text)
    assert heard == {"roots": [{"uri": "file:///srv/early"}], "pinged": {}, "sampled": -32601}, heard


MALFORMED = """
import json
import sys

TOOLS = {
    "no_text": {"content": [{"type": "text"}]},
    "not_a_list": {"content": "hello"},
    "not_an_object": "hello",
    "fine": {"content": [{"type": "text", "text": "fine"}]},
}
ERRORS = {"error_not_an_object": "the server's own words"}
ANSWERS = {
    "tools/list": {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in [*TOOLS, *ERRORS]]},
    "resources/list": {"resources": [{"uri": "malformed://r", "name": "r"}, {"uri": "malformed://code", "name": "c"}]},
    "resources/read": {"contents": [{"uri": "malformed://r"}]},
    "prompts/list": {"prompts": [{"name": "p", "arguments": [{"name": "a"}]}]},
    "prompts/get": {"messages": [{"role": "narrator", "content": {"type": "text", "text": "x"}}]},
    "completion/complete": {"completion": {"values": [1, 2]}},
}
for line in sys.stdin:
    message = json.loads(line)
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        continue
    if method == "initialize":
        capabilities = {"tools": {}, "resources": {}, "prompts": {}, "completions": {}}
        info = {"name": "malformed", "version": "1"}
        version = params["protocolVersion"]
        reply = {"result": {"protocolVersion": version, "capabilities": capabilities, "serverInfo": info}}
    elif method == "tools/call" and params["name"] in ERRORS:
        reply = {"error": ERRORS[params["name"]]}
    elif method == "tools/call":
        reply = {"result": TOOLS[params["name"]]}
    elif method == "resources/read" and params["uri"] == "malformed://code":
        reply = {"error": {"code": "x", "message": "went wrong"}}
    elif method in ANSWERS:
        reply = {"result": ANSWERS[method]}
    else:
        reply = {"error": {"code": -32601, "message": "Method not found"}}
    print(json.dumps({"jsonrpc": "2.0", "id": message["id"], **reply}), flush=True)
"""


async def test_a_servers_invalid_result_is_its_error_not_the_clients(mcphost_daemon, tmp_path: Path) -> None:
    """A result that is not what the method answers is an error naming what was asked and
    where the result is wrong (not the SDK's "invalid params", which blames the client),
    counted as the tool's error; an error that is not a JSON-RPC error object, or whose code
    is not a number, is an internal error. The server serves on."""
    server = tmp_path / "malformed.py"
    server.write_text(MALFORMED)
    table = {"command": [sys.executable, str(server)]}
    daemon = mcphost_daemon({"plugins": {"enable": ["malformed"], "malformed": table}})
    wrong = {"no_text": "content.0.", "not_a_list": "content: ", "not_an_object": "the result: "}
    said = "failed: its server sent an invalid result:"
    async with Client(daemon.url) as client:
        for tool, where in wrong.items():
            result = await client.call_tool(f"malformed_{tool}", {})
            text = result.content[0].text
            assert result.is_error and text.startswith(f"tool 'malformed_{tool}' {said} {where}"), text
        result = await client.call_tool("malformed_error_not_an_object", {})
        text = result.content[0].text
        assert result.is_error and text == (
            "tool 'malformed_error_not_an_object' failed: it answered with an error that is not a JSON-RPC error object"
        ), text
        with pytest.raises(MCPError) as error:
            await client.read_resource("malformed://code")
        assert (error.value.error.code, error.value.error.message) == (INTERNAL_ERROR, "went wrong")
        refused = {}
        for what, ask in {
            "resource 'malformed://r'": client.read_resource("malformed://r"),
            "prompt 'malformed_p'": client.get_prompt("malformed_p", {"a": "x"}),
            "the completion of prompt 'malformed_p'": client.complete(
                types.PromptReference(name="malformed_p"), {"name": "a", "value": ""}
            ),
        }.items():
            with pytest.raises(MCPError) as error:
                await ask
            refused[what] = error.value.error.message
        fine = await client.call_tool("malformed_fine", {})
    assert refused["resource 'malformed://r'"].startswith(f"resource 'malformed://r' {said} contents.0"), refused
    assert refused["prompt 'malformed_p'"].startswith(f"prompt 'malformed_p' {said} messages.0.role"), refused
    completion = "the completion of prompt 'malformed_p'"
    assert refused[completion].startswith(f"{completion} {said} completion.values.0"), refused
    assert not fine.is_error and fine.content[0].text == "fine"
    calls = scrape(daemon)
    for tool in wrong:
        assert (
            calls[key("mcp_tool_calls_total", plugin="malformed", tool_name=f"malformed_{tool}", status="error")] == 1
        )
    lines = [r for r in daemon.log_records() if r.get("event") == "request" and r.get("tool") == "malformed_no_text"]
    assert [(r["tool_status"], r.get("rpc_error")) for r in lines] == [("error", None)], lines


ANNOUNCER = """
import json
import sys

def send(message):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **message}) + "\\n")
    sys.stdout.flush()

listed = 0
for line in sys.stdin:
    message = json.loads(line)
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        continue
    if method == "initialize":
        info = {"name": "announcer", "version": "1"}
        capabilities = {"tools": {"listChanged": True}}
        result = {"protocolVersion": params["protocolVersion"], "capabilities": capabilities, "serverInfo": info}
    elif method == "tools/list":
        listed += 1
        names = ("announce", "listed", f"version{listed}")  # a new list each time: the daemon says so
        result = {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in names]}
    elif method == "tools/call" and params["name"] == "announce":
        for _ in range(params["arguments"]["times"]):
            send({"method": "notifications/tools/list_changed"})
        result = {"content": [{"type": "text", "text": "announced"}]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": str(listed)}]}
    else:
        result = {}
    send({"id": message["id"], "result": result})
"""


async def test_a_burst_of_list_changed_is_listed_again_once_or_twice_not_each_time(
    mcphost_daemon, tmp_path: Path
) -> None:
    """Each listing waits on the server, and only the channel that waits can read its answer:
    a listing per announcement would hold every one of the channel's handlers and block it."""
    server = tmp_path / "announcer.py"
    server.write_text(ANNOUNCER)
    daemon = mcphost_daemon(
        {"plugins": {"enable": ["announcer"], "announcer": {"command": [sys.executable, str(server)]}}}
    )
    with trio.fail_after(30):
        assert (await call(daemon, "announcer_announce", {"times": 1000})).content[0].text == "announced"
        await trio.to_thread.run_sync(daemon.wait_for_log, lambda r: r.get("event") == "what the server lists changed")
        await trio.sleep(0.5)  # for any listing of what the daemon read after it
        listed = int((await call(daemon, "announcer_listed")).content[0].text)
    # Once for its hello; then once, and once more for what came while that one waited.
    assert 2 <= listed <= 4, listed
    assert not any(r.get("event") == "plugin worker ended" for r in daemon.log_records())
