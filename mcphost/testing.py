"""Test fixtures for mcphost and its plugins: a real daemon process on a free loopback port.

Loaded as a pytest plugin (entry point ``pytest11``), so a plugin's own test suite gets the
``mcphost_daemon`` fixture by installing mcphost::

    async def test_my_tool(mcphost_daemon):
        daemon = mcphost_daemon({"plugins": {"enable": ["mine"]}})
        async with mcp.Client(daemon.url, mode="legacy") as client:
            result = await client.call_tool("mine_hello", {})
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 20.0


# Ports free_port has handed out in this process: a test may choose several before it binds
# any (a proxy's and its upstreams'), so none may be handed out twice.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    It is chosen below the kernel's ephemeral range: a port from ``bind(("", 0))`` lies inside
    it, where any outgoing connection made before the daemon binds (to Redis, to another
    daemon) can take it as its local port.
    """
    low = _ephemeral_low()
    while True:
        port = random.randrange(max(1024, low - 10_000), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def to_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """Render a nested dict as TOML (tables for dicts, inline values otherwise)."""
    scalars = [f"{_key(k)} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = []
    if _prefix and scalars:
        out.append(f"[{_prefix}]")
    out.extend(scalars)
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.append(to_toml(v, f"{_prefix}.{_key(k)}" if _prefix else _key(k)))
    return "\n".join(out) + "\n"


def _key(name: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise (``"tools:all"``)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


ACCEPT_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
"""The headers every raw POST to an MCP endpoint needs."""


def initialize_request(version: str = "2025-11-25", request_id: int = 1) -> dict[str, Any]:
    """A raw ``initialize`` request opening a session of the handshake era."""
    client = {"name": "test", "version": "1"}
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": client}
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}


def stateless_request(
    method: str, params: Mapping[str, Any] | None = None, request_id: int = 1
) -> tuple[dict[str, Any], dict[str, str]]:
    """A raw 2026-07-28 request and its headers: the ``_meta`` envelope and the routing
    headers that must match the body."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": meta}}
    headers = {**ACCEPT_HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": method}
    if method == "tools/call" and params and "name" in params:
        headers["mcp-name"] = str(params["name"])
    return body, headers


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str | None, dict[str, Any] | None]]:
    """Each event of an SSE stream, as its lines arrive (``sse_events(response.iter_lines())``):
    its id, and its JSON-RPC message or ``None`` for a priming event."""
    event_id, data = None, ""
    for line in lines:
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and (event_id is not None or data):
            yield event_id, json.loads(data) if data else None
            event_id, data = None, ""


@dataclass
class RunningDaemon:
    """A ``mcphost serve`` process started for a test."""

    process: subprocess.Popen[bytes]
    port: int
    config_path: Path
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    admin_port: int | None = None
    """The admin listener's port (``[admin]``), chosen free like ``port``."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint, ``http://127.0.0.1:PORT/mcp``."""
        return f"{self.base_url}/mcp"

    @property
    def admin_url(self) -> str:
        """The admin listener, ``http://127.0.0.1:ADMIN_PORT``."""
        return f"http://127.0.0.1:{self.admin_port}"

    def logs(self) -> str:
        """Everything the daemon wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines, parsed."""
        records = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first log record matching ``predicate``, waiting for it to be written if need be
        (a request's line is written just after its response is sent)."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((r for r in self.log_records() if predicate(r)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log record within {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.02)

    def reload(self, timeout: float = 20.0) -> dict[str, Any]:
        """Send SIGHUP; the log record that ends that reload (``reloaded``, or ``reload
        refused …`` when the new config is invalid), waiting for it to be written."""

        def ends(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in records if str(r.get("event")).startswith(("reloaded", "reload refused"))]

        done = len(ends(self.log_records()))
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while len(found := ends(self.log_records())) <= done:
            if time.monotonic() > deadline:
                raise AssertionError(f"no reload ended within {timeout}s:\n{self.logs()[-4000:]}")
            time.sleep(0.05)
        return found[done]

    def get(self, path: str, headers: Mapping[str, str] | None = None, *, admin: bool = False) -> tuple[int, bytes]:
        """A plain HTTP GET on the daemon (on its admin listener with ``admin``); returns (status, body)."""
        base = self.admin_url if admin else self.base_url
        request = urllib.request.Request(base + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_until_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``/health`` answers 200; stops the daemon and raises if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mcphost exited with {self.process.returncode} at start-up:\n{self.logs()}")
            with contextlib.suppress(OSError):
                status, _ = self.get("/health")
                if status == 200:
                    return
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"mcphost did not answer /health within {timeout}s:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_daemon(
    workdir: Path,
    config: Mapping[str, Any] | str | None = None,
    *,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    state_dir: Path | None = None,
    cwd: Path | None = None,
    wait: bool = True,
    new_session: bool = False,
) -> RunningDaemon:
    """Start ``mcphost serve`` with ``config`` (a dict or TOML text) and wait until it answers
    ``/health`` (with ``wait=False``, return as soon as the process is spawned).

    Its state (session store and secret) goes to ``state_dir``, by default a fresh directory
    in ``workdir``; pass the same one to a second daemon to let it take over the first's sessions.
    It runs in ``cwd`` (by default this process's), which is first on its ``sys.path``.
    With ``new_session`` it runs in a session (and process group) of its own, as a terminal
    or a service manager starts it, so that a test may signal its whole group (``os.killpg``).
    """
    port = port or free_port()
    state_dir = state_dir or workdir / f"state-{port}"
    config_path = workdir / f"mcphost-{port}.toml"
    text = config if isinstance(config, str) else to_toml(config or {})
    config_path.write_text(text)
    log_path = workdir / f"mcphost-{port}.log"
    admin_port = free_port()
    full_env = {
        **os.environ,
        "MCPHOST_LOG__FORMAT": "json",
        "STATE_DIRECTORY": str(state_dir),
        # Every daemon of a test run needs its own admin port too (the default is fixed).
        "MCPHOST_ADMIN__PORT": str(admin_port),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mcphost", "serve", "--config", str(config_path), "--port", str(port), *args],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=new_session,
        )
    daemon = RunningDaemon(process, port, config_path, log_path, admin_port=admin_port)
    if wait:
        daemon.wait_until_healthy()
    return daemon


@pytest.fixture
def mcphost_daemon(tmp_path: Path) -> Iterator[Any]:
    """A factory that starts real ``mcphost serve`` processes, all stopped after the test.

    Call it with the config as a dict (or TOML text); it returns a :class:`RunningDaemon`
    whose ``url`` an MCP client connects to.
    """
    started: list[RunningDaemon] = []

    def factory(config: Mapping[str, Any] | str | None = None, **kwargs: Any) -> RunningDaemon:
        daemon = start_daemon(tmp_path, config, **kwargs)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        daemon.stop()
