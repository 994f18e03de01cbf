"""The sysadmin's flows, on a real systemd: mcphost installed with ``packaging/install.sh`` into
a Debian 12 booted with systemd as PID 1 (:mod:`tests.nspawn`), then driven the way the documentation
tells a sysadmin to: ``systemctl enable --now``, ``pip install`` a plugin and ``systemctl
reload``, ``systemctl restart`` under load, ``systemctl stop`` with calls in flight, the
watchdog, credentials and API keys, ``sysinfo_unit_status``, the sandbox, and the journal.

The container boots once for the module, and mcphost is installed once into it, from wheels
built from this checkout (no network: the dependencies' wheels are cached). Before each test
mcphost is put back as the install left it (units and config, no extra plugin, no state, the
service stopped and its socket listening), so each test starts as on a fresh install.

Clients run in a thread that joined the container's network namespace: they reach
``127.0.0.1:8080`` there, as a local client or a reverse proxy on the VM would. What such a
client awaits off its event loop runs through :func:`tests.nspawn.to_thread`, never
``trio.to_thread``, whose shared threads may be in the host's namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcphost.testing import ACCEPT_HEADERS, initialize_request, stateless_request
from tests import nspawn, wheels

UNAVAILABLE = nspawn.unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

TEST_PLUGINS = tuple(nspawn.REPO / "tests" / "plugins" / f"mcphost-{name}" for name in ("probe", "greeter", "broken"))
"""Plugins made for these tests, as wheels beside mcphost's: ``probe`` is installed with
mcphost (``install.sh --plugin``), the others by the tests that ``pip install`` them."""
VENV = "/opt/mcphost/venv"
CONFIG = "/etc/mcphost/mcphost.toml"
KEYS = "/etc/mcphost/credentials/keys.toml"
SECRET = "/etc/mcphost/credentials/session-secret"
CREDENTIALS = "/run/credentials/mcphost.service"
STATE = "/var/lib/mcphost"
BASE = "http://127.0.0.1:8080"
URL = f"{BASE}/mcp"
ADMIN = "http://127.0.0.1:8081"
CALL_TIMEOUT = 60.0
"""Bound on anything a client waits for: "does not hang", never "is fast"."""


@dataclass
class Vm:
    """The booted container with mcphost installed, and what each test needs to drive it."""

    container: nspawn.Container
    install: str
    """What install.sh printed."""
    pristine: dict[str, str] = field(default_factory=dict)
    """The files a test may edit, as the install left them (path: content)."""
    cursor: str = ""
    """The journal's position when the current test began."""

    def run(self, *argv: str, **kwargs: Any) -> Any:
        """A command in the container (see :meth:`nspawn.Container.run`)."""
        return self.container.run(*argv, **kwargs)

    def systemctl(self, *argv: str, check: bool = True) -> Any:
        """``systemctl`` in the container."""
        return self.run("systemctl", *argv, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """Properties of a unit, from ``systemctl show``."""
        done = self.systemctl("show", unit, *(f"--property={p}" for p in properties))
        return dict(line.partition("=")[::2] for line in done.stdout.splitlines())

    def mcphost(self, *argv: str, check: bool = True) -> Any:
        """The ``mcphost`` command install.sh put on PATH, as root at the VM's shell."""
        return self.run("mcphost", *argv, check=check)

    def pip_install(self, name: str) -> None:
        """``pip install`` a plugin into mcphost's venv, as the documentation says (offline here: from
        the wheels this module built, instead of an index)."""
        self.run(f"{VENV}/bin/pip", "install", "--no-index", "--find-links", "/mnt/wheelhouse", name, timeout=300)

    def read(self, path: str) -> str:
        """A file's content."""
        return self.container.path(path).read_text()

    def write(self, path: str, text: str) -> None:
        """Replace a file's content (its owner and mode stay)."""
        self.container.path(path).write_text(text)

    def journal(self) -> list[dict[str, Any]]:
        """mcphost.service's journal entries since the test began, as ``journalctl -o json`` gives them
        (mcphost's lines, systemd's about the unit, and what ``ExecReload=`` printed)."""
        done = self.run(
            "journalctl", "--unit=mcphost.service", "--output=json", f"--after-cursor={self.cursor}", "--no-pager"
        )
        return [json.loads(line) for line in done.stdout.splitlines()]

    def log(self) -> list[dict[str, Any]]:
        """mcphost's own log records since the test began: the journal's JSON messages from its processes."""
        records = []
        for entry in self.journal():
            message = entry.get("MESSAGE")
            if isinstance(message, str) and message.startswith("{"):
                records.append(json.loads(message))
        return records

    def messages(self) -> str:
        """Every message of mcphost.service's journal since the test began, as text."""
        return "\n".join(str(entry.get("MESSAGE")) for entry in self.journal())

    def client(self, flow: Callable[[], Awaitable[Any]]) -> Any:
        """Run an async client flow on the container's network (a Trio loop of its own)."""
        return self.container.in_network(trio.run, flow)

    def get(self, url: str) -> tuple[int, Any]:
        """``GET url`` on the container's network: (status, JSON body)."""

        def get() -> tuple[int, Any]:
            try:
                with urllib.request.urlopen(url, timeout=CALL_TIMEOUT) as response:
                    return response.status, json.load(response)
            except urllib.error.HTTPError as error:
                return error.code, json.load(error)

        return self.container.in_network(get)

    def main_pid(self) -> int:
        """mcphost.service's main process (0 when none runs)."""
        return int(self.show("mcphost.service", "MainPID")["MainPID"])

    def start(self) -> int:
        """Start mcphost the way its first client does (through the socket); returns its pid."""
        assert self.get(f"{BASE}/health") == (200, {"status": "ok"})
        return self.main_pid()


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    """Boot the container and install mcphost in it as docs/operating/systemd.md says."""
    work = tmp_path_factory.mktemp("vm")
    built = wheels.build([*wheels.BUNDLED, *TEST_PLUGINS], work)
    dependencies = wheels.dependencies([*wheels.BUNDLED, *TEST_PLUGINS], nspawn.python_version())
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    for wheel in [*built.glob("*.whl"), *dependencies.glob("*.whl")]:
        (wheelhouse / wheel.name).write_bytes(wheel.read_bytes())
    binds = {nspawn.REPO: "/src/mcphost", wheelhouse: "/mnt/wheelhouse"}
    with contextlib.ExitStack() as stack:
        try:
            container = stack.enter_context(nspawn.Container.booted(f"mcphost-acceptance-{os.getpid()}", work, binds))
        except nspawn.BootFailed as error:
            pytest.skip(f"systemd-nspawn cannot boot a container here: {error}")
        install = container.run(
            "/src/mcphost/packaging/install.sh",
            *("--wheelhouse", "/mnt/wheelhouse", "--plugin", "mcphost-probe"),
            timeout=900,
        )
        # The documentation's next step.
        container.run("systemctl", "enable", "--now", "mcphost.socket", "mcphost.service")
        vm = Vm(container, install.stdout)
        # The probe stands for a plugin in the daemon's own process: what the unit's sandbox
        # lets the daemon see and do, and a call that holds up the daemon's event loop. The
        # bundled plugins run in workers, as installed.
        vm.write(CONFIG, vm.read(CONFIG) + '\n[plugins.probe]\nisolation = "inline"\n')
        vm.pristine = {path: vm.read(path) for path in (CONFIG, KEYS)}
        yield vm


@pytest.fixture(autouse=True)
def fresh(vm: Vm) -> Iterator[Vm]:
    """mcphost as the install left it: the service stopped, its socket listening, the shipped
    config and units, no extra plugin, no state; the journal read from here on."""
    vm.systemctl("stop", "mcphost.socket", "mcphost.service")
    vm.run("rm", "-rf", "/etc/systemd/system/mcphost.service.d", f"{STATE}")
    for path, text in vm.pristine.items():
        vm.write(path, text)
    installed = vm.run(f"{VENV}/bin/pip", "list", "--format=freeze").stdout
    extra = [name for name in ("mcphost-greeter", "mcphost-broken") if f"{name}==" in installed]
    if extra:
        vm.run(f"{VENV}/bin/pip", "uninstall", "--yes", *extra)
    vm.systemctl("daemon-reload")
    vm.systemctl("reset-failed", "mcphost.service", check=False)
    vm.systemctl("start", "mcphost.socket")
    vm.cursor = vm.run("journalctl", "--lines=0", "--show-cursor", "--quiet").stdout.split("cursor: ", 1)[1].strip()
    yield vm


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Until ``condition()`` holds; fails, saying ``what`` did not happen, after ``CALL_TIMEOUT``."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {CALL_TIMEOUT:g}s")
        time.sleep(0.05)


def names(listed: types.ListToolsResult) -> set[str]:
    return {tool.name for tool in listed.tools}


def text(result: types.CallToolResult) -> str:
    assert not result.is_error, result.content
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


# -- 1. install, enable, socket activation --------------------------------------------------------


def test_install_enables_units_and_the_socket_starts_the_service(vm: Vm) -> None:
    """install.sh installs and checks everything (the probe plugin too), systemd knows the
    units; with only the socket listening, a client's first connection is answered by the
    service it starts, which tells systemd it is ready with a status line."""
    assert re.search(r"configuration is valid \(3 plugins, \d+ tools\)", vm.install), vm.install
    assert "==> systemctl daemon-reload" in vm.install
    assert vm.systemctl("is-enabled", "mcphost.socket", "mcphost.service").stdout.split() == ["enabled", "enabled"]
    assert vm.run("readlink", "/usr/local/bin/mcphost").stdout.strip() == f"{VENV}/bin/mcphost"
    assert vm.mcphost("--version").stdout.startswith("mcphost ")
    user = vm.run("getent", "passwd", "mcphost").stdout.strip().split(":")
    assert user[5:] == ["/var/lib/mcphost", "/usr/sbin/nologin"]

    assert vm.show("mcphost.socket", "ActiveState", "SubState") == {"ActiveState": "active", "SubState": "listening"}
    assert vm.show("mcphost.service", "ActiveState")["ActiveState"] == "inactive"
    pid = vm.start()
    service = vm.show("mcphost.service", "ActiveState", "SubState", "StatusText", "User", "NRestarts")
    assert service["ActiveState"] == "active" and service["SubState"] == "running", service
    assert re.fullmatch(r"serving \d+ tools", service["StatusText"]), service
    status = vm.systemctl("status", "mcphost.service").stdout
    assert f'Status: "{service["StatusText"]}"' in status, status
    assert vm.run("ps", "-o", "user=", "-p", str(pid)).stdout.strip() == "mcphost"
    # The daemon serves on the socket systemd passed it, and says so.
    serving = next(r for r in vm.log() if r.get("event") == "serving")
    assert serving["binds"] == ["http://127.0.0.1:8080"], serving


# -- 2. pip install + systemctl reload ------------------------------------------------------------


def test_a_plugin_installed_then_reloaded_is_served_to_open_sessions(vm: Vm) -> None:
    """``pip install`` a plugin, ``systemctl reload mcphost``: once the command returns, the new
    tool answers on a session opened before, which was told its tool list changed.

    The reload is asked for while a call holds the daemon's event loop, and the plugin takes
    seconds to start: a reload command that only sent the signal would return long before
    the reload is applied."""
    vm.start()

    async def flow() -> tuple[dict[str, Any], dict[str, Any], str]:
        changed = trio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                changed.set()

        async with Client(URL, mode="legacy", message_handler=on_message) as client:
            before = (await client.call_tool("probe_whoami", {})).structured_content
            assert "greeter_hello" not in names(await client.list_tools())
            await nspawn.to_thread(vm.pip_install, "mcphost-greeter")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "probe_block", {"seconds": 5})
                await nspawn.to_thread(wait_until_unresponsive)
                await nspawn.to_thread(vm.systemctl, "reload", "mcphost")
                hello = text(await client.call_tool("greeter_hello", {"name": "ops"}))
            with trio.fail_after(CALL_TIMEOUT):
                await changed.wait()
            assert "greeter_hello" in names(await client.list_tools())
            after = (await client.call_tool("probe_whoami", {})).structured_content
        assert before is not None and after is not None
        return before, after, hello

    before, after, hello = vm.client(flow)
    assert hello == "hello, ops"
    assert after == before  # the same session, on the same process: reloaded, not restarted
    assert vm.show("mcphost.service", "ActiveState")["ActiveState"] == "active"
    reloaded = [r for r in vm.log() if r.get("event") == "reloaded"]
    assert len(reloaded) == 1 and reloaded[0]["changed"] == ["greeter"], reloaded


def wait_until_unresponsive() -> None:
    """Until ``/health`` stops answering within a moment: the daemon's event loop is held up."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{BASE}/health", timeout=0.5).close()
        except TimeoutError:
            return
        time.sleep(0.05)
    raise AssertionError("the daemon's event loop was never held up")


def test_a_reload_with_an_invalid_config_fails_and_the_running_config_stays(vm: Vm) -> None:
    """An edit that breaks the config makes ``systemctl reload`` fail, with the problem in the
    journal; the daemon is not signalled and goes on serving."""
    pid = vm.start()
    broken = re.sub(r"(?m)^timeout = 30\.0$", "timeout = -1", vm.pristine[CONFIG], count=1)
    assert broken != vm.pristine[CONFIG]
    vm.write(CONFIG, broken)
    refused = vm.systemctl("reload", "mcphost", check=False)
    assert refused.returncode != 0
    assert "mcphost.service" in refused.stderr, refused.stderr
    assert "limits.timeout" in vm.messages(), vm.messages()
    assert not [r for r in vm.log() if r.get("event") == "reloading"]
    assert vm.show("mcphost.service", "ActiveState")["ActiveState"] == "active"
    assert vm.main_pid() == pid

    async def flow() -> str:
        async with Client(URL, mode="legacy") as client:
            return text(await client.call_tool("probe_slow", {"seconds": 0}))

    assert vm.client(flow) == "slept 0.0"


def test_a_reload_with_a_broken_plugin_goes_through_and_names_it(vm: Vm) -> None:
    """A plugin that cannot be imported does not block the reload: it goes through, the
    plugin is reported failed (in the journal and by ``mcphost status``), the rest serve."""
    vm.start()
    vm.pip_install("mcphost-broken")
    reload = vm.systemctl("reload", "mcphost", check=False)
    assert reload.returncode == 0, vm.messages()
    assert any(r.get("event") == "reloaded" for r in vm.log())
    # What `systemctl reload` ran says so in the journal.
    assert "mcphost reload: plugin broken failed to load: import failed: ModuleNotFoundError" in vm.messages()
    status = vm.mcphost("status", "--json").stdout
    [plugin] = [p for p in json.loads(status)["plugins"] if p["name"] == "broken"]
    assert plugin["status"] == "failed" and "mcphost_broken_missing_dependency" in plugin["error"], plugin

    async def flow() -> str:
        async with Client(URL, mode="legacy") as client:
            return text(await client.call_tool("probe_slow", {"seconds": 0}))

    assert vm.client(flow) == "slept 0.0"


# -- 3. systemctl restart under load ---------------------------------------------------------------


@dataclass
class Load:
    """What the clients saw while mcphost restarted."""

    calls: int = 0
    failed: list[str] = field(default_factory=list)
    refused: int = 0
    sessions: set[str] = field(default_factory=set)
    pids: list[int] = field(default_factory=list)
    """The processes that served the session's calls, in order."""


def post_call(tool: str, arguments: dict[str, Any], request_id: int = 1, token: str | None = None) -> tuple[int, str]:
    """One 2026-07-28 ``tools/call`` on a connection of its own (with ``token``, if given):
    the HTTP status and the body. Raises ``ConnectionRefusedError`` when nothing accepts the
    connection."""
    body, headers = stateless_request("tools/call", {"name": tool, "arguments": arguments}, request_id)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", 8080, timeout=CALL_TIMEOUT)
    try:
        connection.request("POST", "/mcp", json.dumps(body), {**headers, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


BEFORE_RESTART = AFTER_RESTART = 10
"""Calls the session makes before the restart, and on the new process before the load stops."""


def test_a_restart_under_load_refuses_nothing_and_fails_no_call(vm: Vm) -> None:
    """``systemctl restart mcphost`` while one client calls tools in a loop on its session and
    another makes each call on a new connection: no connection is refused, no call fails, and
    the session goes on, now served by the new process."""
    first = vm.start()
    load = Load()

    async def session_loop(started: trio.Event, done: trio.Event) -> None:
        try:
            async with Client(URL, mode="legacy") as client:
                while sum(pid != first for pid in load.pids) < AFTER_RESTART:
                    load.calls += 1
                    try:
                        with trio.fail_after(CALL_TIMEOUT):
                            result = await client.call_tool("probe_whoami", {})
                    except Exception as error:
                        load.failed.append(f"session call: {type(error).__name__}: {error}")
                        continue
                    if result.is_error or result.structured_content is None:
                        load.failed.append(f"session call: {result.content}")
                        continue
                    load.sessions.add(result.structured_content["session_id"])
                    load.pids.append(result.structured_content["pid"])
                    if len(load.pids) == BEFORE_RESTART:
                        started.set()
        except Exception as error:  # the client itself gave up: its transport failed
            load.failed.append(f"session client: {error!r}"[:500])
        finally:
            started.set()
            done.set()

    async def connection_loop(done: trio.Event) -> None:
        request_id = 0
        while not done.is_set():
            request_id += 1
            load.calls += 1
            try:
                status, body = await nspawn.to_thread(post_call, "probe_slow", {"seconds": 0}, request_id)
            except ConnectionRefusedError:
                load.refused += 1
                continue
            except OSError as error:
                load.failed.append(f"connection: {type(error).__name__}: {error}")
                continue
            if status != 200 or '"isError":false' not in body.replace(" ", ""):
                load.failed.append(f"connection: {status}: {body[:300]}")

    async def flow() -> None:
        started, done = trio.Event(), trio.Event()
        with trio.fail_after(3 * CALL_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session_loop, started, done)
                nursery.start_soon(connection_loop, done)
                await started.wait()
                await nspawn.to_thread(vm.systemctl, "restart", "mcphost")

    vm.client(flow)
    second = vm.main_pid()
    assert second != first
    assert load.refused == 0 and load.failed == [], (load.refused, load.failed[:10], load.calls)
    assert list(dict.fromkeys(load.pids)) == [first, second], load.pids
    assert len(load.sessions) == 1


# -- 4. systemctl stop with calls in flight --------------------------------------------------------


def in_flight(vm: Vm, plugin: str) -> int:
    """Calls of ``plugin`` running now, from the admin listener's ``/status``."""
    _, report = vm.get(f"{ADMIN}/status")
    return int(next(p["inflight"] for p in report["plugins"] if p["name"] == plugin))


def test_stop_lets_calls_finish_and_leaves_nothing_behind(vm: Vm) -> None:
    """``systemctl stop mcphost.socket mcphost.service`` while calls run: the daemon tells systemd
    it is stopping (STOPPING=1 with a status), the calls finish with their results, the unit
    ends inactive rather than failed, and a process a plugin started is gone with it."""
    vm.start()
    seen: list[dict[str, str]] = []
    results: list[str] = []

    async def flow() -> int:
        async with Client(URL, mode="legacy") as client:
            child = (await client.call_tool("probe_spawn", {})).structured_content
            assert child is not None
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    results.append(text(await client.call_tool("probe_slow", {"seconds": 4})))

                for _ in range(3):
                    nursery.start_soon(call)
                await nspawn.to_thread(wait_until, lambda: in_flight(vm, "probe") == 3, "3 calls in flight")
                stop = trio.Event()

                async def watch() -> None:
                    while not stop.is_set():
                        state = await nspawn.to_thread(vm.show, "mcphost.service", "ActiveState", "StatusText")
                        seen.append(state)

                nursery.start_soon(watch)
                await nspawn.to_thread(vm.systemctl, "stop", "mcphost.socket", "mcphost.service")
                stop.set()
        return int(child["result"])

    child = vm.client(flow)
    assert results == ["slept 4.0"] * 3
    # Down for maintenance: nothing answers, and no connection starts mcphost again.
    with pytest.raises(ConnectionRefusedError):
        vm.container.in_network(post_call, "probe_slow", {"seconds": 0})
    assert {"ActiveState": "deactivating", "StatusText": "draining"} in seen, seen
    service = vm.show("mcphost.service", "ActiveState", "Result", "ExecMainStatus", "ControlGroup")
    assert service == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0", "ControlGroup": ""}
    assert vm.run("kill", "-0", str(child), check=False).returncode != 0, "the plugin's child outlived the service"
    assert any(r.get("event") == "stopped" for r in vm.log())


# -- 5. the watchdog -------------------------------------------------------------------------------


def blocked_call() -> None:
    with contextlib.suppress(OSError):
        post_call("probe_block", {"seconds": 3600})


def test_a_wedged_daemon_is_restarted_by_the_watchdog(vm: Vm) -> None:
    """A tool that blocks the event loop stops the watchdog pings; systemd kills the daemon and
    starts it again, and it serves. (WatchdogSec= is shortened in a drop-in to keep this quick.)"""
    dropin = vm.container.path("/etc/systemd/system/mcphost.service.d/watchdog.conf")
    dropin.parent.mkdir(parents=True)
    dropin.write_text("[Service]\nWatchdogSec=5\n")
    vm.systemctl("daemon-reload")
    wedged = vm.start()
    restarts = int(vm.show("mcphost.service", "NRestarts")["NRestarts"])

    # The call never gets an answer: its process is killed under it.
    threading.Thread(target=vm.container.in_network, args=(blocked_call,), daemon=True).start()
    wait_until(lambda: vm.main_pid() not in (wedged, 0), "a new mcphost process")
    assert "Watchdog timeout" in vm.messages(), vm.messages()
    assert vm.get(f"{BASE}/health") == (200, {"status": "ok"})
    service = vm.show("mcphost.service", "ActiveState", "NRestarts")
    assert service == {"ActiveState": "active", "NRestarts": str(restarts + 1)}, service


# -- 6. credentials and API keys -------------------------------------------------------------------


def add_key(vm: Vm, name: str) -> str:
    """The documented steps for an API key: ``mcphost keys new``, its line into the keys
    credential, ``[auth] credential`` in the config, check it, restart. Returns the token."""
    made = vm.mcphost("keys", "new", name, "--tools", "*").stdout
    token = re.search(r"^token:\s+(\S+)$", made, re.M)
    line = re.search(r"^config:\s+(.+)$", made, re.M)
    assert token and line, made
    vm.write(KEYS, vm.read(KEYS) + line[1] + "\n")
    vm.write(CONFIG, vm.read(CONFIG).replace("\n[auth]\n", '\n[auth]\ncredential = "keys.toml"\n', 1))
    checked = vm.run("env", "CREDENTIALS_DIRECTORY=/etc/mcphost/credentials", "mcphost", "check-config", CONFIG)
    assert "configuration is valid" in checked.stdout
    vm.systemctl("restart", "mcphost")
    return token[1]


async def call_with(token: str | None, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"} if token else None)
    async with http, Client(streamable_http_client(URL, http_client=http), mode="legacy") as client:  # type: ignore[arg-type]
        return await client.call_tool(tool, arguments)


def test_a_key_made_as_documented_works_and_the_credentials_are_the_service_s_alone(vm: Vm) -> None:
    """A key made with ``mcphost keys new`` and the documented steps works after a restart and is
    required; the service reads both credentials through ``$CREDENTIALS_DIRECTORY`` but not
    their sources, and no other user can read or list either. ``systemctl reload`` goes
    through with the keys in the credential (which systemd 252 shows no ``ExecReload=``
    command), and still fails on an invalid config. Taken out of the credential, the key is
    refused from the next restart on."""
    token = add_key(vm, "alice")

    async def flow() -> tuple[str, str, str, int]:
        secret = text(await call_with(token, "probe_readable", {"path": f"{CREDENTIALS}/session-secret"}))
        keys = text(await call_with(token, "probe_readable", {"path": f"{CREDENTIALS}/keys.toml"}))
        source = text(await call_with(token, "probe_readable", {"path": SECRET}))
        anonymous, _ = await nspawn.to_thread(post_call, "probe_slow", {"seconds": 0})
        return secret, keys, source, anonymous

    secret, keys, source, anonymous = vm.client(flow)
    assert (secret, keys) == ("ok", "ok")  # the service reads its credentials...
    assert source == "EACCES"  # ...but not their sources, which are root's
    assert anonymous == 401
    requests = [r for r in vm.log() if r.get("event") == "request" and r.get("tool") == "probe_readable"]
    assert {r.get("identity") for r in requests} == {"alice"}, requests
    # The session secret came from the credential: the daemon made none of its own.
    assert vm.run("test", "-e", f"{STATE}/session-secret", check=False).returncode != 0
    # Other users cannot read the credentials, nor list them.
    for path in (CREDENTIALS, f"{CREDENTIALS}/keys.toml", f"{CREDENTIALS}/session-secret", SECRET):
        denied = vm.run("cat" if path != CREDENTIALS else "ls", path, user="messagebus", check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, (path, denied.stderr)
    listed = vm.run("env", "CREDENTIALS_DIRECTORY=/etc/mcphost/credentials", "mcphost", "keys", "list").stdout
    assert re.search(r"^alice\s+/etc/mcphost/credentials/keys.toml\s", listed, re.M), listed
    # A reload goes through, and the key still works; an invalid config fails the reload,
    # and the daemon, never signalled, serves on with the key.
    reload = vm.systemctl("reload", "mcphost", check=False)
    assert reload.returncode == 0, vm.messages()
    assert "mcphost reload: applied (no plugin changed" in vm.messages(), vm.messages()
    assert [r["event"] for r in vm.log() if r.get("event", "").startswith("reload")] == ["reloading", "reloaded"]
    assert vm.container.in_network(post_call, "probe_slow", {"seconds": 0}, 1, token)[0] == 200
    configured = vm.read(CONFIG)
    vm.write(CONFIG, re.sub(r"(?m)^timeout = 30\.0$", "timeout = -1", configured, count=1))
    refused = vm.systemctl("reload", "mcphost", check=False)
    assert refused.returncode != 0 and "limits.timeout" in vm.messages(), vm.messages()
    assert [r["event"] for r in vm.log() if r.get("event", "").startswith("reload")] == ["reloading", "reloaded"]
    assert vm.container.in_network(post_call, "probe_slow", {"seconds": 0}, 1, token)[0] == 200
    vm.write(CONFIG, configured)
    # Taken out of keys.toml, the key is refused once the service restarts (systemd copies the
    # credential at start), as the documentation says.
    vm.write(KEYS, "".join(line for line in vm.read(KEYS).splitlines(True) if not line.startswith("alice ")))
    assert vm.container.in_network(post_call, "probe_slow", {"seconds": 0}, 1, token)[0] == 200
    vm.systemctl("restart", "mcphost")
    assert vm.container.in_network(post_call, "probe_slow", {"seconds": 0}, 1, token)[0] == 401


# -- 7. sysinfo_unit_status on real units; the sandbox seen from inside ---------------------------


def test_sysinfo_unit_status_reports_real_units(vm: Vm) -> None:
    """``sysinfo_unit_status``, run by the service under its sandbox, asks systemd about real
    units: mcphost's own (its main pid is the one serving), its socket, D-Bus, a target, and
    one that does not exist."""
    pid = vm.start()

    async def flow() -> dict[str, Any]:
        async with Client(URL, mode="legacy") as client:
            found = {}
            for unit in ("mcphost", "mcphost.socket", "dbus.service", "basic.target", "no-such-unit"):
                result = await client.call_tool("sysinfo_unit_status", {"unit": unit})
                assert not result.is_error, result.content
                found[unit] = result.structured_content
            return found

    found = vm.client(flow)
    mcphost = found["mcphost"]
    assert (mcphost["unit"], mcphost["active_state"], mcphost["sub_state"]) == ("mcphost.service", "active", "running")
    assert mcphost["main_pid"] == pid and mcphost["unit_file_state"] == "enabled"
    assert mcphost["description"] == "mcphost MCP host"
    assert (found["mcphost.socket"]["active_state"], found["mcphost.socket"]["sub_state"]) == ("active", "running")
    assert found["dbus.service"]["active_state"] == "active"
    basic = found["basic.target"]
    assert (basic["load_state"], basic["active_state"], basic["main_pid"]) == ("loaded", "active", None)
    missing = found["no-such-unit"]
    assert (missing["unit"], missing["load_state"]) == ("no-such-unit.service", "not-found")


OWNED = ("/srv/mcphost-owned", "/home/mcphost-owned")
"""Directories of the service's user outside its state: only the sandbox keeps it from writing there."""
WRITE_PROBES = (STATE, "/run/mcphost", "/tmp", "/var/tmp", *OWNED, "/etc/mcphost", VENV, "/var/log", "/usr", "/root")


def test_the_sandbox_holds_for_the_service(vm: Vm) -> None:
    """Probes run inside mcphost, as the service: it writes only to its state, runtime and
    private temporary directories, not even to its own user's directories elsewhere; it sees
    other users' processes as far as ``sysinfo_top_processes`` needs (name, user, command
    line) and no further (not their environment, open files or working directory, nor may it
    signal them); no memory may be writable and executable."""
    vm.run("install", "-d", "-o", "mcphost", "-g", "mcphost", "-m", "0700", *OWNED)
    pid = vm.start()
    dbus = int(vm.run("pidof", "dbus-daemon").stdout)

    async def flow() -> tuple[dict[str, str], dict[str, str], dict[str, str], str, Any]:
        async with Client(URL, mode="legacy") as client:

            async def probe(tool: str, **arguments: Any) -> str:
                return text(await client.call_tool(f"probe_{tool}", arguments))

            writes = {path: await probe("writable", path=f"{path}/probe") for path in WRITE_PROBES}
            reads = {
                path: await probe("readable", path=path)
                for path in (
                    f"/proc/{pid}/environ",
                    *(f"/proc/{dbus}/{entry}" for entry in ("cmdline", "status", "environ", "fd", "cwd")),
                    "/proc/1/environ",
                )
            }
            signals = {str(target): await probe("signal", pid=target) for target in (dbus, 1)}
            memory = await probe("wx_memory")
            top = await client.call_tool("sysinfo_top_processes", {"limit": 100, "sort_by": "memory"})
            assert not top.is_error, top.content
            return writes, reads, signals, memory, top.structured_content

    try:
        writes, reads, signals, memory, top = vm.client(flow)
    finally:
        vm.run("rm", "-r", *OWNED)
    allowed = {STATE, "/run/mcphost", "/tmp", "/var/tmp"}
    assert allowed < set(WRITE_PROBES)
    assert {path: outcome for path, outcome in writes.items() if path in allowed} == dict.fromkeys(allowed, "ok")
    # The user may write into its own directories; ProtectSystem=strict and ProtectHome= say no.
    assert {path: writes[path] for path in OWNED} == {OWNED[0]: "EROFS", OWNED[1]: "EACCES"}, writes
    refused = {path: outcome for path, outcome in writes.items() if path not in allowed}
    assert all(outcome in ("EROFS", "EACCES") for outcome in refused.values()), refused
    processes = {p["pid"]: p for p in top["processes"]}
    assert processes[dbus]["user"] == "messagebus" and "dbus-daemon" in processes[dbus]["cmdline"], processes.get(dbus)
    assert processes[1]["user"] == "root"
    assert reads[f"/proc/{pid}/environ"] == "ok"
    assert reads[f"/proc/{dbus}/cmdline"] == reads[f"/proc/{dbus}/status"] == "ok"
    for hidden in (f"/proc/{dbus}/environ", f"/proc/{dbus}/fd", f"/proc/{dbus}/cwd", "/proc/1/environ"):
        assert reads[hidden] == "EACCES", (hidden, reads)
    assert signals == {str(dbus): "EPERM", "1": "EPERM"}
    assert memory == "EPERM"


# -- 8. the journal --------------------------------------------------------------------------------


def test_the_journal_has_one_json_line_per_request_and_no_secret(vm: Vm) -> None:
    """``journalctl -u mcphost -o json``: each request to /mcp is one structured line carrying
    the request id the client sent; no token, valid or not, and not the session secret."""
    token = add_key(vm, "bob")
    wrong = "mcph_" + "x" * 43
    ids = [f"acceptance-{n}-{time.monotonic_ns()}" for n in range(4)]

    def requests() -> list[int]:
        statuses = []
        for index, (body, extra, bearer) in enumerate(
            [
                (initialize_request(), {}, token),
                (*stateless_request("tools/call", {"name": "probe_slow", "arguments": {"seconds": 0}}), token),
                (*stateless_request("tools/list"), wrong),
                (*stateless_request("tools/list"), None),
            ]
        ):
            headers = {**ACCEPT_HEADERS, **extra, "X-Request-Id": ids[index]}
            if bearer:
                headers["Authorization"] = f"Bearer {bearer}"
            request = urllib.request.Request(URL, json.dumps(body).encode(), headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=CALL_TIMEOUT) as response:
                    response.read()
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
        return statuses

    assert vm.container.in_network(requests) == [200, 200, 401, 401]
    lines = [r for r in vm.log() if r.get("event") == "request"]
    for request_id, status in zip(ids, [200, 200, 401, 401], strict=True):
        matching = [r for r in lines if r.get("request_id") == request_id]
        assert len(matching) == 1, (request_id, lines)
        assert matching[0]["status"] == status
    assert [r["identity"] for r in lines if r["request_id"] in ids[:2]] == ["bob", "bob"]
    assert next(r for r in lines if r["request_id"] == ids[1])["tool"] == "probe_slow"
    journal = vm.run("journalctl", "--unit=mcphost.service", "--output=json", "--no-pager").stdout
    secret = vm.read(SECRET)
    for needle in (token, token.removeprefix("mcph_"), wrong.removeprefix("mcph_"), secret):
        assert needle not in journal
