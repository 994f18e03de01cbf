"""mcphost under systemd: the units in ``systemd/`` checked by systemd's own tools, the daemon's
side of the service manager protocols (sd_notify, socket activation) exercised for real, the
hardening's ``MemoryDenyWriteExecute=`` tried on the running daemon, and ``packaging/install.sh``
run into a throwaway root.

Here no unit is started by systemd itself (``tests/test_systemd_acceptance.py`` does that, in a
container booted with systemd as PID 1), so these tests are quick and run anywhere. What stands
in for systemd, each time: ``systemd-analyze`` reads the unit files; a unix datagram socket plays the
service manager's ``$NOTIFY_SOCKET``; ``systemd-socket-activate`` hands mcphost a listening
socket the way ``mcphost.socket`` does; where a socket must outlive one mcphost process (a
restart), the test holds it, as the socket unit would; and the kernel's own
memory-deny-write-execute (``PR_SET_MDWE``, Linux 6.3+) enforces what systemd's
``MemoryDenyWriteExecute=`` enforces with seccomp.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp import Client

import mcphost
from mcphost.core import config
from mcphost.core.config import ShutdownConfig
from mcphost.testing import RunningDaemon, free_port, start_daemon, stateless_request, to_toml
from tests import wheels
from tests.authkit import api_key, bearer
from tests.isolationkit import is_fork_server
from tests.services import (
    MANAGER_VARIABLES,
    MCPHOST,
    START_TIMEOUT,
    daemon_env,
    held_listener,
    start_on_socket,
    venv_with_test_dependencies,
    wait_until_serving,
)

REPO = Path(__file__).resolve().parent.parent
SERVICE = REPO / "systemd" / "mcphost.service"
SOCKET = REPO / "systemd" / "mcphost.socket"
INSTALL = REPO / "packaging" / "install.sh"
# The paths the units name on an installed host, and this test environment's equivalents.
INSTALLED_MCPHOST = "/opt/mcphost/venv/bin/mcphost"
INSTALLED_CONFIG = "/etc/mcphost/mcphost.toml"
MAX_EXPOSURE = 2.5
"""``systemd-analyze security`` rates 2.5 and below "OK"; the service must stay there."""
ECHO_ONLY = {"plugins": {"enable": ["echo"]}, "admin": {"enabled": False}}

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
needs_socket_activate = pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate"
)


@pytest.fixture(autouse=True)
def no_service_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides which service manager variables the daemon sees."""
    for name in MANAGER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- reading unit files ----------------------------------------------------------------------


def directives(unit: Path, section: str, key: str) -> list[str]:
    """The values of ``key`` in ``[section]`` of a unit file, in order (the units use no line continuations)."""
    values, current = [], None
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.partition("=")[0].strip() == key:
            values.append(line.partition("=")[2].strip())
    return values


def command_line(value: str, substitutions: Mapping[str, str]) -> list[str]:
    """An ``Exec*=`` value as the argv it runs, with installed paths (and ``$MAINPID``) replaced."""
    argv = shlex.split(value.lstrip("-@:+!"))
    argv = [substitutions.get(arg, arg) for arg in argv]
    assert not any("$" in arg for arg in argv), f"unsubstituted variable in {argv}"
    return argv


# -- systemd-analyze -------------------------------------------------------------------------


@needs_systemd_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Both units verify without a single warning (unknown keys, bad values, missing binaries).

    verify insists that every ``Exec*=`` binary exists, and ``/opt/mcphost/venv`` does not exist
    here, so it reads copies in which that one path points at this environment's mcphost; the
    copies differ from the originals in nothing else. (systemd 252's verify does not look up
    ``User=``; the installer creates that user, see the install test.)
    """
    original = SERVICE.read_text()
    rewritten = original.replace(INSTALLED_MCPHOST, str(MCPHOST))
    assert original.count(INSTALLED_MCPHOST) == 2  # ExecStart= and ExecReload=
    (tmp_path / SERVICE.name).write_text(rewritten)
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / SOCKET.name), str(tmp_path / SERVICE.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""  # warnings do not fail verify; they fail this test


@needs_systemd_analyze
def test_service_exposure_is_rated_ok() -> None:
    """``systemd-analyze security --offline`` rates the service's exposure at 2.5 ("OK") or lower."""
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(SERVICE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for mcphost\.service: (\d+(?:\.\d+)?) (\w+)", done.stdout)
    assert found, done.stdout
    assert float(found[1]) <= MAX_EXPOSURE, done.stdout
    assert found[2] in ("OK", "SAFE"), done.stdout


def test_units_agree_with_each_other_and_with_the_daemon() -> None:
    """The facts the units and the daemon must agree on, in one place."""
    assert directives(SOCKET, "Socket", "ListenStream") == ["127.0.0.1:8080"]  # [server] host/port by default
    assert directives(SOCKET, "Socket", "Accept") == ["no"]
    assert directives(SERVICE, "Service", "Type") == ["notify"]
    assert directives(SERVICE, "Unit", "Requires") == ["mcphost.socket"]
    [start] = directives(SERVICE, "Service", "ExecStart")
    assert shlex.split(start) == [INSTALLED_MCPHOST, "serve", "--config", INSTALLED_CONFIG]
    # Stopping waits for the drain: TimeoutStopSec= above [shutdown] drain_timeout.
    [stop_timeout] = directives(SERVICE, "Service", "TimeoutStopSec")
    assert float(stop_timeout) > ShutdownConfig.model_fields["drain_timeout"].default + 5
    # The daemon pings at half of WatchdogSec=, so a loop that answers at all stays well within it.
    assert directives(SERVICE, "Service", "WatchdogSec") == ["30"]
    assert unit_environment()["MCPHOST_LOG__FORMAT"] == "json"


def unit_environment() -> dict[str, str]:
    """What the unit's ``Environment=`` lines set for every ``Exec*=`` command."""
    pairs = (value.partition("=") for value in directives(SERVICE, "Service", "Environment"))
    return {name: value for name, _, value in pairs}


def test_the_unit_sets_no_variable_that_sets_nothing() -> None:
    """Every ``MCPHOST_*`` variable of the unit sets a setting: one that did not would be
    ignored by ``serve`` (with a warning) and fail every ``check-config``, hence every reload."""
    assert config.unknown_environment(unit_environment()) == []


def test_the_credential_example_is_the_units() -> None:
    """The ``[auth] credential`` that etc/mcphost.toml shows and the documentation tells of
    is the one the unit loads (a credential the unit does not load is never there)."""
    example = re.search(r'^# credential = "([^"]+)"$', (REPO / "etc" / "mcphost.toml").read_text(), re.MULTILINE)
    assert example is not None
    loaded = {v.partition(":")[0]: v.partition(":")[2] for v in directives(SERVICE, "Service", "LoadCredential")}
    guide = " ".join((REPO / "docs" / "security" / "auth.md").read_text().split())
    assert f"LoadCredential={example[1]}:{loaded[example[1]]}" in guide
    assert f'[auth] credential = "{example[1]}"' in guide


def test_keys_fallback_credential_is_a_valid_empty_keys_file(tmp_path: Path) -> None:
    """When /etc/mcphost/credentials/keys.toml is missing, SetCredential= supplies the credential
    instead (so the unit still starts); what it supplies must be a keys file mcphost accepts."""
    loaded = {v.partition(":")[0] for v in directives(SERVICE, "Service", "LoadCredential")}
    assert loaded == {"session-secret", "keys.toml"}
    fallback = {k: v for k, _, v in (s.partition(":") for s in directives(SERVICE, "Service", "SetCredential"))}
    assert set(fallback) == {"keys.toml"}
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "keys.toml").write_text(fallback["keys.toml"])
    config = tmp_path / "mcphost.toml"
    config.write_text(to_toml({"auth": {"credential": "keys.toml"}, **ECHO_ONLY}))
    done = subprocess.run(
        [str(MCPHOST), "check-config", str(config)],
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# -- sd_notify ---------------------------------------------------------------------------------


class ServiceManager:
    """The service manager's end of sd_notify: a unix datagram socket that records every message."""

    def __init__(self, directory: Path):
        self.address = str(directory / "notify")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.address)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float = START_TIMEOUT) -> dict[str, str]:
        """The next message matching ``predicate``; every message received on the way is kept."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._socket.settimeout(remaining)
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                break
            message = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no matching notification within {timeout}s; received: {self.messages}")

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceManager]:
    # A short directory of its own: unix socket paths are limited to 107 bytes.
    directory = Path(tmp_path_factory.mktemp("sd", numbered=True))
    short = len(str(directory)) <= 90
    if not short:
        directory = Path(tempfile.mkdtemp(prefix="mcphost-sd-"))
    listener = ServiceManager(directory)
    yield listener
    listener.close()
    if not short:
        shutil.rmtree(directory)


def has(key: str) -> Callable[[dict[str, str]], bool]:
    return lambda message: message.get(key) == "1"


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_sd_notify_ready_watchdog_reload_and_stop(tmp_path: Path, manager: ServiceManager) -> None:
    """What systemd hears from a ``Type=notify`` mcphost with a watchdog: READY=1 with a status,
    WATCHDOG=1 pings, RELOADING=1 stamped with CLOCK_MONOTONIC then READY=1 around a SIGHUP,
    STOPPING=1 on SIGTERM, and a clean exit."""
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "400000"}
    daemon = start_daemon(tmp_path, ECHO_ONLY, env=env)
    try:
        ready = manager.wait_for(has("READY"))
        assert ready.get("STATUS", "").startswith("serving"), ready
        for _ in range(2):
            manager.wait_for(has("WATCHDOG"))

        before = monotonic_usec()
        daemon.process.send_signal(signal.SIGHUP)
        reloading = manager.wait_for(has("RELOADING"))
        after = monotonic_usec()
        # systemd (253+, Type=notify-reload) matches the reload by this timestamp.
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after, reloading
        assert "STATUS" in manager.wait_for(has("READY"))
        manager.wait_for(has("WATCHDOG"))  # still pinging after the reload

        daemon.process.send_signal(signal.SIGTERM)
        stopping = manager.wait_for(has("STOPPING"))
        assert stopping.get("STATUS"), stopping
        assert daemon.process.wait(START_TIMEOUT) == 0, daemon.logs()[-4000:]
    finally:
        daemon.stop()
    # Nothing claims readiness once the daemon said it was stopping.
    assert [m for m in manager.messages[manager.messages.index(stopping) + 1 :] if "READY" in m] == []


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_signal_sent_the_moment_it_is_ready_is_handled(tmp_path: Path, manager: ServiceManager, signum: int) -> None:
    """systemd may reload or stop the service the moment it hears READY=1: the signal finds
    the daemon's handler, not the default action, which would end the process at once."""
    daemon = start_daemon(tmp_path, ECHO_ONLY, env={"NOTIFY_SOCKET": manager.address}, wait=False)
    try:
        manager.wait_for(has("READY"))
        daemon.process.send_signal(signum)
        if signum == signal.SIGHUP:
            manager.wait_for(has("RELOADING"))
            manager.wait_for(has("READY"))
            daemon.wait_until_healthy()
            daemon.process.send_signal(signal.SIGTERM)
        manager.wait_for(has("STOPPING"))
        assert daemon.process.wait(START_TIMEOUT) == 0, daemon.logs()[-4000:]
    finally:
        daemon.stop()


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``SigCgt`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_a_reload_asked_for_while_starting_is_done_once_serving(tmp_path: Path, manager: ServiceManager) -> None:
    """A SIGHUP while the daemon imports and loads its plugins neither ends it nor is lost:
    it reloads once it has said READY=1."""
    daemon = start_daemon(tmp_path, ECHO_ONLY, env={"NOTIFY_SOCKET": manager.address}, wait=False)
    try:
        # The command's first step installs a SIGHUP handler; the daemon's imports come after.
        deadline = time.monotonic() + START_TIMEOUT
        while not catches(daemon.process.pid, signal.SIGHUP):
            assert time.monotonic() < deadline and daemon.process.poll() is None, daemon.logs()
            time.sleep(0.005)
        daemon.process.send_signal(signal.SIGHUP)
        manager.wait_for(has("READY"))
        manager.wait_for(has("RELOADING"))
        manager.wait_for(has("READY"))
        reloading = daemon.wait_for_log(lambda r: r.get("event") == "reloading")
        assert reloading["reason"] == "SIGHUP during start-up"
        daemon.wait_until_healthy()
    finally:
        assert daemon.stop() == 0, daemon.logs()[-4000:]


def test_no_watchdog_pings_for_another_process(tmp_path: Path, manager: ServiceManager) -> None:
    """``WATCHDOG_PID`` names the process systemd watches; a process it does not name stays quiet."""
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    daemon = start_daemon(tmp_path, ECHO_ONLY, env=env)
    try:
        manager.wait_for(has("READY"))
        daemon.process.send_signal(signal.SIGTERM)
        manager.wait_for(has("STOPPING"))
    finally:
        daemon.stop()
    assert not any("WATCHDOG" in m for m in manager.messages), manager.messages


async def test_a_manager_that_stops_reading_does_not_freeze_the_daemon(tmp_path: Path, manager: ServiceManager) -> None:
    """sd_notify never waits: once the manager's socket queue is full (10 unread messages by
    default), further notifications are dropped with one warning, and requests and reloads
    go on being served."""
    daemon = start_daemon(tmp_path, ECHO_ONLY, env={"NOTIFY_SOCKET": manager.address})
    try:
        manager.wait_for(has("READY"))  # the manager reads nothing after this
        reloads = 12  # two messages each: well past the queue's length
        for count in range(1, reloads + 1):
            daemon.process.send_signal(signal.SIGHUP)
            await trio.to_thread.run_sync(
                lambda count=count: daemon.wait_for_log(
                    lambda _: sum(r.get("event") == "reloaded" for r in daemon.log_records()) >= count
                )
            )
        with trio.fail_after(10):
            async with Client(daemon.url, mode="legacy") as client:
                added = await client.call_tool("echo_add", {"a": 2, "b": 40})
        assert added.structured_content == {"a": 2, "b": 40, "total": 42}
    finally:
        daemon.stop()
    warnings = [r for r in daemon.log_records() if r.get("event", "").startswith("sd_notify failed")]
    assert len(warnings) == 1, warnings


# -- ExecReload= -------------------------------------------------------------------------------


def exec_reload_environment(daemon: RunningDaemon) -> dict[str, str]:
    """The environment systemd gives ``ExecReload=`` for ``daemon``: the unit's, and the admin
    port the daemon was started with (``ExecReload=`` and ``ExecStart=`` share one); no
    ``$CREDENTIALS_DIRECTORY``, which systemd 252 gives ``ExecStart=`` alone."""
    environment = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    return {**environment, **unit_environment(), "MCPHOST_ADMIN__PORT": str(daemon.admin_port)}


def systemctl_reload(daemon: RunningDaemon) -> subprocess.CompletedProcess[str]:
    """What ``systemctl reload mcphost`` runs: the unit's ExecReload= lines in order, with the
    unit's environment, stopping at the first that fails (which fails the reload). Returns
    the last command run."""
    substitutions = {
        INSTALLED_MCPHOST: str(MCPHOST),
        INSTALLED_CONFIG: str(daemon.config_path),
        "$MAINPID": str(daemon.process.pid),
    }
    for line in directives(SERVICE, "Service", "ExecReload"):
        argv = command_line(line, substitutions)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=exec_reload_environment(daemon))
        if done.returncode != 0:
            break
    return done


def test_exec_reload_checks_the_config_before_signalling(tmp_path: Path, manager: ServiceManager) -> None:
    """``systemctl reload`` with an invalid config fails (exit 2, the problem on stderr) and the
    daemon is never signalled; with a valid one the daemon reloads."""
    [reload] = [shlex.split(v) for v in directives(SERVICE, "Service", "ExecReload")]
    assert reload == [INSTALLED_MCPHOST, "reload", "--config", INSTALLED_CONFIG, "--pid", "$MAINPID"]

    daemon = start_daemon(tmp_path, ECHO_ONLY, env={"NOTIFY_SOCKET": manager.address})
    valid = daemon.config_path.read_text()
    try:
        manager.wait_for(has("READY"))
        assert systemctl_reload(daemon).returncode == 0
        manager.wait_for(has("RELOADING"))
        manager.wait_for(has("READY"))

        daemon.config_path.write_text(valid + "[limits]\ntimeout = -1\n")
        refused = systemctl_reload(daemon)
        assert refused.returncode == 2
        assert "limits.timeout" in refused.stderr and "nothing was signalled" in refused.stderr

        daemon.config_path.write_text(valid)
        assert systemctl_reload(daemon).returncode == 0
        manager.wait_for(has("RELOADING"))
        manager.wait_for(has("READY"))
    finally:
        daemon.stop()
    # Two SIGHUPs reached the daemon: the refused reload never sent one.
    assert sum("RELOADING" in m for m in manager.messages) == 2
    assert sum(r.get("event") == "reloading" for r in daemon.log_records()) == 2


def test_exec_reload_leaves_the_keys_credential_to_the_daemon(tmp_path: Path) -> None:
    """With the keys in the systemd credential, which no ``ExecReload=`` command may read on
    systemd 252, ``systemctl reload`` goes through, checking all else first; the daemon reads
    its copy again, and keys there that it cannot take fail the reload and stay as they ran."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    alice = api_key("alice", ["*"])
    (credentials / "keys.toml").write_text(to_toml({"keys": {alice.name: alice.entry}}))
    config = {"auth": {"credential": "keys.toml"}, "plugins": {"enable": ["echo"]}}
    daemon = start_daemon(tmp_path, config, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    body, headers = stateless_request("tools/list")

    def alice_calls() -> int:
        return httpx.post(daemon.url, json=body, headers={**headers, **bearer(alice.token)}).status_code

    try:
        applied = systemctl_reload(daemon)
        assert applied.returncode == 0, applied.stderr
        assert "configuration is valid" in applied.stdout and "mcphost reload: applied" in applied.stdout
        (credentials / "keys.toml").write_text("[keys]\nbroken = { hash = 'sha256:nothex' }\n")
        refused = systemctl_reload(daemon)
        assert refused.returncode == 2, refused.stderr
        assert "refused: the config is invalid" in refused.stderr
        assert alice_calls() == 200
    finally:
        daemon.stop()
    assert [r["event"] for r in daemon.log_records() if r.get("event", "").startswith("reload")] == [
        "reloading",
        "reloaded",
        "reloading",
        "reload refused: the keys are invalid; the running config stays",
    ]


SLOW_START = """
import trio

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def hello() -> str:
        "Say hello."
        return "hello"

    return [hello]


@mcphost.hookimpl
async def mcphost_startup():
    await trio.sleep(2)  # a plugin that connects to its backend first
"""


def reload_command(daemon: RunningDaemon, *extra: str) -> subprocess.CompletedProcess[str]:
    """``mcphost reload`` for ``daemon``, as the unit's ExecReload= runs it."""
    argv = [str(MCPHOST), "reload", "--config", str(daemon.config_path), "--pid", str(daemon.process.pid), *extra]
    return subprocess.run(argv, env=exec_reload_environment(daemon), capture_output=True, text=True, timeout=120)


def served_tools(daemon: RunningDaemon) -> set[str]:
    """The tools the daemon serves now, from its admin listener's ``/status``."""
    status, body = daemon.get("/status", admin=True)
    assert status == 200, body
    return {tool["name"] for tool in json.loads(body)["tools"]}


def test_reload_command_returns_once_the_reload_is_applied(tmp_path: Path) -> None:
    """``mcphost reload`` returns once the daemon has applied the reload (here: a plugin that
    takes two seconds to start serves its tool), and says what changed; a config it cannot
    read is refused before anything is signalled; a daemon that does not answer makes it
    fail after its timeout, saying so."""
    plugin = tmp_path / "slowstart.py"
    plugin.write_text(SLOW_START)
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo"], "paths": [str(plugin)]}})
    try:
        assert "slowstart_hello" not in served_tools(daemon)
        daemon.config_path.write_text(to_toml({"plugins": {"enable": ["echo", "slowstart"], "paths": [str(plugin)]}}))
        applied = reload_command(daemon)
        assert applied.returncode == 0, applied.stderr
        assert "slowstart_hello" in served_tools(daemon)
        checked, outcome = applied.stdout.splitlines()  # the check, then the daemon's verdict
        assert checked.endswith("configuration is valid (2 plugins, 7 tools)"), checked
        assert outcome.startswith("mcphost reload: applied (slowstart changed"), outcome

        valid = daemon.config_path.read_text()
        daemon.config_path.write_text(valid + "[limits]\ntimeout = -1\n")
        refused = reload_command(daemon)
        assert refused.returncode == 2
        assert "limits.timeout" in refused.stderr and "nothing was signalled" in refused.stderr
        daemon.config_path.write_text(valid)

        daemon.process.send_signal(signal.SIGSTOP)
        try:
            unanswered = reload_command(daemon, "--timeout", "1")
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        assert unanswered.returncode == 3
        assert "no reload was reported within 1s" in unanswered.stderr
        # The signal was delivered: the daemon reloads once it runs again.
        daemon.wait_for_log(lambda _: sum(r.get("event") == "reloaded" for r in daemon.log_records()) == 2)
    finally:
        assert daemon.stop() == 0, daemon.logs()[-4000:]
    assert sum(r.get("event") == "reloading" for r in daemon.log_records()) == 2


def test_reload_command_without_an_admin_listener_or_a_daemon(tmp_path: Path, manager: ServiceManager) -> None:
    """With the admin listener off, ``mcphost reload`` sends the signal and says it cannot
    wait; a process that is not there is an error."""
    daemon = start_daemon(tmp_path, ECHO_ONLY, env={"NOTIFY_SOCKET": manager.address})
    try:
        manager.wait_for(has("READY"))
        sent = reload_command(daemon)
        assert sent.returncode == 0, sent.stderr
        assert "the admin listener is off" in sent.stderr
        manager.wait_for(has("RELOADING"))
        manager.wait_for(has("READY"))
    finally:
        daemon.stop()
    gone = reload_command(daemon)  # its pid names no process now
    assert gone.returncode == 1 and "cannot signal process" in gone.stderr, gone.stderr


def test_exec_reload_goes_through_while_a_plugin_fails_to_load(tmp_path: Path, manager: ServiceManager) -> None:
    """A plugin that fails to import does not make the config invalid: ``check-config`` names
    it in a warning and succeeds, so ``systemctl reload`` reaches the daemon, which serves the
    other plugins and tries the broken one again (as it would a fixed one); ``mcphost reload``
    succeeds once that reload is applied and names the plugin that failed."""
    plugins = {"plugins": {"enable": ["echo", "broken_import"]}}
    daemon = start_daemon(tmp_path, plugins, env={"NOTIFY_SOCKET": manager.address})
    try:
        manager.wait_for(has("READY"))
        done = systemctl_reload(daemon)
        assert done.returncode == 0 and done.args[1] == "reload", done.stderr
        assert done.stdout.splitlines()[-1].startswith("mcphost reload: applied ("), done.stdout
        assert re.search(
            r"^mcphost reload: plugin broken_import failed to load: import failed: ModuleNotFoundError",
            done.stderr,
            re.MULTILINE,
        ), done.stderr
        manager.wait_for(has("RELOADING"))
        ready = manager.wait_for(has("READY"))
        assert ready["STATUS"] == "serving 6 tools (a reload failed)"
    finally:
        daemon.stop()
    check = subprocess.run(
        [str(MCPHOST), "check-config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **unit_environment()},
    )
    assert check.returncode == 0
    assert re.search(
        r": warning: plugins\.broken_import: plugin failed to load: import failed: ModuleNotFoundError", check.stderr
    )
    assert "configuration is valid (1 plugins, 6 tools, 1 warning)" in check.stdout


# -- socket activation -------------------------------------------------------------------------


def socket_activate(workdir: Path, address: str, config: Mapping[str, Any]) -> RunningDaemon:
    """``systemd-socket-activate -l ADDRESS mcphost serve``: it listens, and on the first
    connection execs mcphost with the socket as fd 3 (LISTEN_FDS=1, LISTEN_PID its own pid).
    Returns once it listens; mcphost starts when a client connects."""
    config_path = workdir / "mcphost.toml"
    config_path.write_text(to_toml(config))
    log_path = workdir / "activate.log"
    state = workdir / "state"
    # systemd-socket-activate passes on only the variables named with -E.
    variables = ["-E", "MCPHOST_LOG__FORMAT=json", "-E", f"STATE_DIRECTORY={state}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["systemd-socket-activate", "-l", address, *variables, str(MCPHOST), "serve", "--config", str(config_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=daemon_env(state),
        )
    daemon = RunningDaemon(process, int(address.rpartition(":")[2]), config_path, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while "Listening on" not in daemon.logs():
        if process.poll() is not None or time.monotonic() > deadline:
            daemon.stop(signal.SIGKILL)
            raise AssertionError(f"systemd-socket-activate did not listen:\n{daemon.logs()}")
        time.sleep(0.02)
    return daemon


def fork_servers(daemon: RunningDaemon) -> list[int]:
    """The daemon's fork servers (its children that say so on their command line)."""
    children = Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children").read_text().split()
    return [int(pid) for pid in children if is_fork_server(int(pid))]


def test_the_fork_server_does_not_hold_the_socket_systemd_passes(tmp_path: Path) -> None:
    """The fork server is forked from the daemon when it starts, with the socket open: a
    worker forked from it must not be able to accept the daemon's connections."""
    listener = held_listener()
    daemon = start_on_socket(listener, tmp_path, "held", config=ECHO_ONLY, state_dir=tmp_path / "state")
    try:
        held = f"socket:[{os.fstat(listener.fileno()).st_ino}]"
        assert held in {os.readlink(fd) for fd in Path(f"/proc/{daemon.process.pid}/fd").iterdir()}
        (zygote,) = fork_servers(daemon)  # echo runs in a worker process
        assert held not in {os.readlink(fd) for fd in Path(f"/proc/{zygote}/fd").iterdir()}
    finally:
        daemon.stop()
        listener.close()


def listen_backlog(port: int) -> int | None:
    """The accept queue length a listening TCP socket on 127.0.0.1:PORT was given (``ss`` Send-Q)."""
    done = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10)
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    return int(rows[0][2]) if rows else None


@needs_socket_activate
async def test_serves_on_the_socket_systemd_passes(tmp_path: Path) -> None:
    """Socket-activated, mcphost serves MCP on the inherited socket and binds nothing itself: the
    configured port stays free. The first client connects before mcphost even runs."""
    port, configured_port = free_port(), free_port()
    config = {**ECHO_ONLY, "server": {"port": configured_port}}
    daemon = await trio.to_thread.run_sync(socket_activate, tmp_path, f"127.0.0.1:{port}", config)
    try:
        # Nothing but systemd-socket-activate runs yet; this connection starts mcphost.
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            added = await client.call_tool("echo_add", {"a": 2, "b": 40})
        assert "echo_add" in names
        assert added.structured_content == {"a": 2, "b": 40, "total": 42}

        serving = await trio.to_thread.run_sync(wait_until_serving, daemon)
        serving_record = next(r for r in serving.log_records() if r.get("event") == "serving")
        assert serving_record["binds"] == [f"http://127.0.0.1:{port}"]
        # mcphost did not bind [server] port...
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", configured_port))
        # ...and the activated port is the socket it serves on.
        with socket.socket() as probe, pytest.raises(OSError) as taken:
            probe.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        # systemd-socket-activate exec'd mcphost, so LISTEN_PID (its pid) named mcphost.
        cmdline = await trio.Path(f"/proc/{daemon.process.pid}/cmdline").read_bytes()
        assert b"serve" in cmdline.split(b"\0")
    finally:
        status = await trio.to_thread.run_sync(daemon.stop)
    assert status == 0, daemon.logs()[-4000:]


async def test_a_restart_behind_a_held_socket_refuses_no_connection(tmp_path: Path) -> None:
    """What mcphost.socket buys: while no mcphost runs (between a stop and the next start), a
    client still connects, its request waits in the socket's queue and the next process answers
    it; the MCP session carries over. The test holds the socket as the socket unit would (a
    restart under systemd-socket-activate is not possible: it hands the socket to one process)."""
    listener = held_listener()
    port = listener.getsockname()[1]
    state = tmp_path / "state"
    start = functools.partial(start_on_socket, listener, tmp_path, config=ECHO_ONLY, state_dir=state)
    first = await trio.to_thread.run_sync(start, "first")
    second = None
    try:
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
            before = await client.call_tool("echo_whoami", {})
            assert await trio.to_thread.run_sync(first.stop) == 0, first.logs()[-4000:]

            # No mcphost process exists now, and the connection is not refused.
            waiting = await trio.to_thread.run_sync(send_request, port, HEALTH)

            second = await trio.to_thread.run_sync(start, "second")
            response = await trio.to_thread.run_sync(functools.partial(read_all, waiting))
            after = await client.call_tool("echo_whoami", {})
    finally:
        first.stop()
        if second is not None:
            second.stop()
        listener.close()
    assert response.startswith(b"HTTP/1.1 200"), response
    assert after.structured_content["session_id"] == before.structured_content["session_id"]
    for daemon in (first, second):
        serving = next(r for r in daemon.log_records() if r.get("event") == "serving")
        assert serving["binds"] == [f"http://127.0.0.1:{port}"]


def test_a_restart_under_load_behind_a_held_socket_fails_no_request(tmp_path: Path) -> None:
    """Clients keep calling (on keep-alive connections and on new ones, with a slow call in
    flight) while the process on the socket is replaced, as ``systemctl restart mcphost``
    does with mcphost.socket: the old one takes no new connection and closes each kept one
    after its answer, the new one takes what queued. Not one request fails or is refused."""
    listener = held_listener()
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    start = functools.partial(start_on_socket, listener, tmp_path, config=ECHO_ONLY, state_dir=tmp_path / "state")
    first, second = start("first"), None
    stop = threading.Event()
    answered: list[int] = []
    failures: list[str] = []

    def call(client: httpx.Client, tool: str, arguments: dict[str, Any]) -> None:
        body, headers = stateless_request("tools/call", {"name": tool, "arguments": arguments})
        try:
            response = client.post(url, json=body, headers=headers)
            if response.status_code != 200 or '"result"' not in response.text:
                failures.append(f"{response.status_code}: {response.text[:200]}")
            else:
                answered.append(response.status_code)
        except httpx.HTTPError as error:
            failures.append(repr(error))

    def loop(keep_alive: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(timeout=START_TIMEOUT, limits=limits) as client:
            while not stop.is_set():
                call(client, "echo_echo", {"text": "x"})

    def slow() -> None:
        with httpx.Client(timeout=START_TIMEOUT) as client:
            call(client, "echo_slow", {"seconds": 1.5})

    threads = [threading.Thread(target=loop, args=(n % 2 == 0,)) for n in range(6)] + [threading.Thread(target=slow)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        first.process.send_signal(signal.SIGTERM)
        second = start("second")
        assert first.process.wait(30) == 0, first.logs()[-4000:]
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        first.stop()
        if second is not None:
            second.stop()
        listener.close()
    assert failures == []
    served = [r for d in (first, second) if d for r in d.log_records() if r.get("event") == "request"]
    assert len(answered) > 20 and {r["status"] for r in served} == {200}
    assert second is not None and any(r.get("tool") == "echo_echo" for r in second.log_records())


HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def send_request(port: int, request: bytes) -> socket.socket:
    """Connect and send ``request`` without reading the answer; raises if the connection is refused."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT)
    connection.sendall(request)
    return connection


def read_all(connection: socket.socket) -> bytes:
    with connection:
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_the_inherited_socket_keeps_its_backlog(tmp_path: Path) -> None:
    """The socket unit sizes the accept queue (``Backlog=``); mcphost must not shrink it, since it
    is what holds connections while mcphost restarts."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    if somaxconn <= 100:
        pytest.skip("net.core.somaxconn is too small to tell")
    listener = held_listener()
    port = listener.getsockname()[1]
    expected = min(4096, somaxconn)
    assert listen_backlog(port) == expected
    daemon = start_on_socket(listener, tmp_path, "backlog", ECHO_ONLY, tmp_path / "state")
    try:
        assert listen_backlog(port) == expected
    finally:
        daemon.stop()
        listener.close()


@needs_socket_activate
def test_a_public_inherited_socket_needs_authentication(tmp_path: Path) -> None:
    """``mcphost serve`` refuses to serve a non-loopback address without authentication. A
    socket unit edited to listen on every interface, with the config left at 127.0.0.1 and no
    [auth], must meet the same refusal."""
    daemon = socket_activate(tmp_path, f"0.0.0.0:{free_port()}", ECHO_ONLY)
    try:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", daemon.port), timeout=5):
            pass  # starts mcphost
        deadline = time.monotonic() + START_TIMEOUT
        while daemon.process.poll() is None and time.monotonic() < deadline:
            if any(r.get("event") == "serving" for r in daemon.log_records()):
                break
            time.sleep(0.05)
        assert daemon.process.poll() == 2, "mcphost serves an unauthenticated 0.0.0.0 socket"
        assert "not a loopback address" in daemon.logs()
    finally:
        daemon.stop(signal.SIGKILL)


# -- MemoryDenyWriteExecute= -------------------------------------------------------------------

PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
WITH_MDWE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed: errno {{ctypes.get_errno()}}")
os.execv(sys.argv[1], sys.argv[1:])
"""
"""Run a command under the kernel's memory-deny-write-execute, which survives fork and exec:
no mapping may be both writable and executable, nor become executable after being writable."""
MDWE_PROBE = f"""
import ctypes, mmap, sys
assert ctypes.CDLL(None).prctl({PR_GET_MDWE}, 0, 0, 0, 0) == {PR_MDWE_REFUSE_EXEC_GAIN}
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    sys.exit(0)
sys.exit("a writable and executable mapping was allowed")
"""
JWT_ROUND_TRIP = """
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
for key, algorithm in ((rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
                       (ec.generate_private_key(ec.SECP256R1()), "ES256")):
    token = jwt.encode({"sub": "mdwe"}, key, algorithm=algorithm)
    assert jwt.decode(token, key.public_key(), algorithms=[algorithm]) == {"sub": "mdwe"}
"""


def start_under_mdwe(workdir: Path, config_path: Path) -> RunningDaemon:
    port = free_port()
    log_path = workdir / "mdwe.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", WITH_MDWE, str(MCPHOST), "serve", "--config", str(config_path), "--port", str(port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=daemon_env(workdir / "state"),
        )
    return wait_until_serving(RunningDaemon(process, port, config_path, log_path))


def under_mdwe(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITH_MDWE, *argv], capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.fixture(scope="module")
def mdwe() -> None:
    probe = under_mdwe(sys.executable, "-c", MDWE_PROBE)
    if probe.returncode != 0:
        pytest.skip(f"the kernel does not enforce PR_SET_MDWE (Linux 6.3+): {probe.stderr.strip()[-200:]}")


async def test_daemon_works_with_memory_deny_write_execute(tmp_path: Path, mdwe: None) -> None:
    """``MemoryDenyWriteExecute=yes`` holds for mcphost, the bundled plugins and their compiled
    dependencies: the daemon starts, serves, calls tools that use psutil and file access, checks
    its config, and signs and verifies the JWTs its OAuth support needs (cryptography)."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "app.log").write_text("started\n")
    config = {
        "plugins": {"enable": ["sysinfo", "files"], "files": {"settings": {"roots": [str(tmp_path / "files")]}}},
        "admin": {"enabled": False},
    }
    config_path = tmp_path / "mdwe.toml"
    config_path.write_text(to_toml(config))
    daemon = await trio.to_thread.run_sync(start_under_mdwe, tmp_path, config_path)
    try:
        async with Client(daemon.url, mode="legacy") as client:
            load = await client.call_tool("sysinfo_load", {})
            memory = await client.call_tool("sysinfo_memory", {})
            top = await client.call_tool("sysinfo_top_processes", {"limit": 3})
            listed = await client.call_tool("files_list", {"path": str(tmp_path / "files")})
        for result in (load, memory, top, listed):
            assert not result.is_error, result.content
        assert memory.structured_content["ram"]["total"] > 0
    finally:
        status = await trio.to_thread.run_sync(daemon.stop)
    assert status == 0, daemon.logs()[-4000:]

    checked = await trio.to_thread.run_sync(
        functools.partial(under_mdwe, str(MCPHOST), "check-config", str(config_path))
    )
    assert checked.returncode == 0, checked.stderr
    jwts = await trio.to_thread.run_sync(functools.partial(under_mdwe, sys.executable, "-c", JWT_ROUND_TRIP))
    assert jwts.returncode == 0, jwts.stderr


# -- packaging/install.sh ----------------------------------------------------------------------


class Installed:
    """A throwaway root that packaging/install.sh installed into."""

    def __init__(self, root: Path, wheels: Path):
        self.root = root
        self.wheels = wheels
        self.venv = root / "opt/mcphost/venv"
        self.etc = root / "etc/mcphost"
        self.credentials = self.etc / "credentials"
        self.first_run: subprocess.CompletedProcess[str] | None = None

    def install(self) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"} | {"MCPHOST_ROOT": str(self.root)}
        return subprocess.run(
            [str(INSTALL), "--wheelhouse", str(self.wheels)], capture_output=True, text=True, env=env, timeout=600
        )

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """A command from the installed venv, run where no checkout is importable from the working directory."""
        command = [str(self.venv / "bin" / argv[0]), *argv[1:]]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("install")
    target = Installed(work / "root", wheels.build(wheels.BUNDLED, work))
    venv_with_test_dependencies(target.venv, work)
    first = target.install()
    assert first.returncode == 0, first.stdout + first.stderr
    target.first_run = first
    return target


def test_install_creates_user_venv_units_config_and_credentials(installed: Installed) -> None:
    root = installed.root
    version = installed.run("mcphost", "--version")
    assert version.stdout.strip() == f"mcphost {mcphost.__version__}", version.stderr
    # mcphost runs from the venv's own copy, with the bundled plugins and nothing else.
    where = installed.run("python", "-c", "import mcphost; print(mcphost.__file__)")
    assert where.stdout.startswith(str(installed.venv)), where.stdout
    for unit in (SERVICE, SOCKET):
        assert (root / "etc/systemd/system" / unit.name).read_text() == unit.read_text()
    assert (installed.etc / "mcphost.toml").read_text() == (REPO / "etc/mcphost.toml").read_text()
    for page in ("man1/mcphost.1", "man5/mcphost.toml.5"):
        assert (root / "usr/local/share/man" / page).read_text() == (
            REPO / "packaging/man" / Path(page).name
        ).read_text()
    # The installer's last step checked the installed config: valid, with the bundled plugins
    # (sysinfo and files) and no other.
    assert installed.first_run is not None
    output = installed.first_run.stdout
    assert re.search(r"mcphost\.toml: configuration is valid \(2 plugins, \d+ tools\)", output), output

    # The service's user, made by systemd-sysusers from the installed sysusers.d entry.
    assert (root / "etc/sysusers.d/mcphost.conf").read_text() == (REPO / "packaging/mcphost.sysusers").read_text()
    if shutil.which("systemd-sysusers") is not None:  # without it a relocated install makes no user
        [entry] = [line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("mcphost:")]
        assert entry.split(":")[5:] == ["/var/lib/mcphost", "/usr/sbin/nologin"]

    assert installed.credentials.stat().st_mode & 0o777 == 0o700
    secret = installed.credentials / "session-secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", secret.read_text())
    keys = installed.credentials / "keys.toml"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert tomllib.loads(keys.read_text()) == {"keys": {}}
    # The credentials the unit loads are exactly the files the installer makes.
    sources = {v.partition(":")[2] for v in directives(SERVICE, "Service", "LoadCredential")}
    assert sources == {"/etc/mcphost/credentials/session-secret", "/etc/mcphost/credentials/keys.toml"}
    assert all((root / source.lstrip("/")).is_file() for source in sources)

    assert "systemctl enable --now mcphost.socket mcphost.service" in output
    assert "skipped systemctl daemon-reload" in output
    # The operator's command on PATH, pointing into the venv as the installed system sees it.
    assert (root / "usr/local/bin/mcphost").readlink() == Path(INSTALLED_MCPHOST)


def test_install_again_keeps_config_and_secrets_and_replaces_units(installed: Installed) -> None:
    config = installed.etc / "mcphost.toml"
    edited = config.read_text() + "\n# edited by the operator\n"
    config.write_text(edited)
    secret = (installed.credentials / "session-secret").read_text()
    service = installed.root / "etc/systemd/system/mcphost.service"
    service.write_text("[Service]\nExecStart=/bin/false\n")

    again = installed.install()
    assert again.returncode == 0, again.stdout + again.stderr
    assert config.read_text() == edited
    assert (installed.credentials / "session-secret").read_text() == secret
    assert service.read_text() == SERVICE.read_text()
    assert (installed.root / "usr/local/bin/mcphost").readlink() == Path(INSTALLED_MCPHOST)
    if shutil.which("systemd-sysusers") is not None:
        users = [line.split(":")[0] for line in (installed.root / "etc/passwd").read_text().splitlines()]
        assert users.count("mcphost") == 1


def test_install_rejects_bad_arguments(tmp_path: Path) -> None:
    env = {**os.environ, "MCPHOST_ROOT": str(tmp_path / "root")}
    for argv, message in (
        (["--source", str(tmp_path)], "not an mcphost checkout"),
        (["--source", str(REPO), "--wheelhouse", str(tmp_path)], "exclude each other"),
        (["--frobnicate"], "unknown argument"),
    ):
        done = subprocess.run([str(INSTALL), *argv], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode != 0 and message in done.stderr, (argv, done.stderr)
    assert not (tmp_path / "root" / "opt").exists()  # nothing was installed


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_install_script_is_shellcheck_clean() -> None:
    done = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
