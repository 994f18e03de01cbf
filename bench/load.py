"""Load generation: MCP sessions opened by the harness, single checked requests, and
``wrk`` runs with ``bench/wrk/mcp.lua``.

The two protocol paths differ in what a request needs:

* **2025-11-25** (handshake era): a client opens a session (``initialize``, then
  ``notifications/initialized``) and sends every later request with its
  ``Mcp-Session-Id`` and ``MCP-Protocol-Version: 2025-11-25``. The SDK answers POSTs
  with an SSE stream (``text/event-stream``) unless the server chose JSON responses.
* **2026-07-28**: every request is self-contained: no session; the body's
  ``params._meta`` carries the protocol version and client capabilities, and the
  ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` headers must match the body
  (``mcp.shared.inbound.classify_inbound_request``). A quick handler is answered as
  plain JSON even when the server streams SSE.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from servers import LOAD_CPU, PROTOCOL_PATHS, pinned

PATHS = PROTOCOL_PATHS
LEGACY, MODERN = PATHS

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "mcp.lua"
WRK_TIMEOUT = "10s"
"""wrk's per-request timeout: generous, so a slow server shows up as latency, not as errors."""

ACCEPT = "application/json, text/event-stream"
TOKEN = "mcph_" + secrets.token_urlsafe(32)
"""The bearer key every request carries (mcphost checks it, the other servers ignore it);
a new one per run, so none is ever written down."""
AUTHORIZATION = f"Bearer {TOKEN}"
# Every wrk the harness starts reads the key from here (bench/wrk/mcp.lua).
os.environ["BENCH_AUTHORIZATION"] = AUTHORIZATION
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


class LoadError(RuntimeError):
    """A request was refused or answered wrongly: the benchmark would measure errors."""


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30), parts.path or "/"


def _post(
    connection: http.client.HTTPConnection, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    connection.request(
        "POST",
        path,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": AUTHORIZATION, **headers},
    )
    response = connection.getresponse()
    data = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def open_session(connection: http.client.HTTPConnection, path: str) -> str:
    """Open one 2025-11-25 session the way a client does; returns its ``Mcp-Session-Id``."""
    status, headers, data = _post(connection, path, INITIALIZE, {})
    session = headers.get("mcp-session-id")
    if status != 200 or not session or b'"result"' not in data:
        raise LoadError(f"initialize answered {status}: {data[:300]!r}")
    status, _, data = _post(connection, path, INITIALIZED, {"Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY})
    if status != 202:
        raise LoadError(f"notifications/initialized answered {status}: {data[:300]!r}")
    return session


def open_sessions(url: str, count: int, workers: int = 8) -> list[str]:
    """Open ``count`` sessions over ``workers`` keep-alive connections."""

    def batch(n: int) -> list[str]:
        connection, path = _connection(url)
        try:
            return [open_session(connection, path) for _ in range(n)]
        finally:
            connection.close()

    sizes = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        return [s for part in pool.map(batch, [n for n in sizes if n]) for s in part]


class EventStream:
    """A 2025-11-25 session's event stream (its GET), read by a thread that notes when each
    JSON-RPC method arrives."""

    def __init__(self, url: str):
        self.connection, path = _connection(url)
        session = open_session(self.connection, path)
        self.connection.request(
            "GET",
            path,
            headers={
                "Accept": "text/event-stream",
                "Authorization": AUTHORIZATION,
                "Mcp-Session-Id": session,
                "MCP-Protocol-Version": LEGACY,
            },
        )
        self.response = self.connection.getresponse()
        if self.response.status != 200:
            raise LoadError(f"GET stream answered {self.response.status}")
        self.heard: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        # close() shuts the socket under this loop: http.client then fails in any of these
        # ways (AttributeError: it closes the response while still reading from it).
        with contextlib.suppress(OSError, ValueError, AttributeError, http.client.HTTPException):
            for line in self.response:
                if line.startswith(b"data:"):
                    method = json.loads(line[5:]).get("method", "")
                    with self._changed:
                        self.heard.append((time.monotonic(), method))
                        self._changed.notify_all()

    def wait_for(self, method: str, *, after: float, timeout: float) -> float | None:
        """When ``method`` first arrived at or after ``after`` (``time.monotonic()``), waiting
        up to ``timeout`` seconds for it; ``None`` if it did not come."""

        def arrival() -> float | None:
            return next((t for t, m in self.heard if m == method and t >= after), None)

        with self._changed:
            self._changed.wait_for(lambda: arrival() is not None, timeout)
            return arrival()

    def close(self) -> None:
        """End the stream."""
        with contextlib.suppress(OSError):
            self.connection.sock.shutdown(2) if self.connection.sock else None
        self.connection.close()


class StallProbe:
    """A thread asking ``/health`` every 2 ms on one keep-alive connection, noting when each
    request was sent and how long its answer took: a server whose event loop is held answers
    late, so the slowest answer in a window bounds the longest stall in it from above."""

    INTERVAL = 0.002

    def __init__(self, base_url: str):
        self.connection, _ = _connection(base_url)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            self.connection.request("GET", "/health")
            self.connection.getresponse().read()
            self.samples.append((sent, time.monotonic() - sent))
            time.sleep(self.INTERVAL)

    def latencies(self, start: float, end: float) -> list[float]:
        """Seconds each request sent between ``start`` and ``end`` (``time.monotonic()``) took."""
        return [took for sent, took in list(self.samples) if start <= sent < end]

    def close(self) -> None:
        """Stop asking."""
        self._stop.set()
        self._thread.join(10)
        self.connection.close()


def write_sessions(path: Path, sessions: Sequence[str]) -> Path:
    """The sessions file the Lua script reads, one id per line."""
    path.write_text("".join(f"{s}\n" for s in sessions))
    return path


@dataclass(frozen=True)
class Probe:
    """One checked request: what the server answered."""

    status: int
    content_type: str
    body: bytes

    def result(self) -> dict[str, Any]:
        """The JSON-RPC result, from a JSON body or the SSE ``data:`` line carrying it."""
        text = self.body.decode()
        if self.content_type.startswith("text/event-stream"):
            for line in text.splitlines():
                if line.startswith("data:") and '"result"' in line:
                    text = line[5:]
                    break
        message = json.loads(text)
        if "result" not in message:
            raise LoadError(f"no JSON-RPC result: {text[:300]}")
        return dict(message["result"])


def call(url: str, tool: str, arguments: dict[str, Any], timeout: float = 60.0) -> Probe:
    """One self-contained 2026-07-28 ``tools/call``, whatever it is answered (no checks)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": MODERN_META},
    }
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}
    try:
        status, response_headers, data = _post(connection, parts.path or "/", body, headers)
    finally:
        connection.close()
    return Probe(status, response_headers.get("content-type", ""), data)


def probe(url: str, protocol: str, method: str, tool: str, session: str | None = None) -> Probe:
    """Send the request wrk will send, once, and insist on a 200 with a result.

    A 4xx here means the benchmark's request is wrong, not that the server is slow; the
    run stops rather than measure error responses.
    """
    params: dict[str, Any] = {"name": tool, "arguments": {"a": 1, "b": 2}} if method == "tools/call" else {}
    headers = {"MCP-Protocol-Version": protocol}
    if protocol == MODERN:
        params["_meta"] = MODERN_META
        headers["Mcp-Method"] = method
        if method == "tools/call":
            headers["Mcp-Name"] = tool
    connection, path = _connection(url)
    try:
        if protocol == LEGACY:
            headers["Mcp-Session-Id"] = session or open_session(connection, path)
        status, response_headers, data = _post(
            connection, path, {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}, headers
        )
    finally:
        connection.close()
    answer = Probe(status, response_headers.get("content-type", ""), data)
    if status != 200:
        raise LoadError(f"{method} on the {protocol} path answered HTTP {status}: {data[:300]!r}")
    result = answer.result()
    if result.get("isError"):
        raise LoadError(f"{method} on the {protocol} path returned a tool error: {result}")
    return answer


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, as reported by the Lua script's ``done()``."""

    connections: int
    threads: int
    requests: int
    duration_s: float
    bytes_per_response: float
    """Mean response body size (headers and chunk framing not counted)."""
    errors: dict[str, int]
    bad_sample: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        """Socket errors, timeouts and wrong answers (non-200 included)."""
        e = self.errors
        return e["connect"] + e["read"] + e["write"] + e["timeout"] + e["bad_response"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        return {**asdict(self), "rps": self.rps, "error_count": self.error_count}


def wrk_path() -> str | None:
    """The ``wrk`` binary, if installed."""
    return shutil.which("wrk")


def wrk_threads(connections: int) -> int:
    """One thread per connection up to two: wrk's C event loop keeps far ahead of a
    Python server on one core, and the machine has two."""
    return max(1, min(connections, 2))


def run_wrk(
    url: str,
    *,
    protocol: str,
    method: str,
    tool: str,
    connections: int,
    duration: float,
    sessions_file: Path | None = None,
    pin: bool = True,
) -> WrkResult:
    """Load ``url`` with ``connections`` clients for ``duration`` seconds."""
    wrk = wrk_path()
    if wrk is None:
        raise LoadError("wrk is not installed")
    threads = wrk_threads(connections)
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",  # wrk takes whole seconds
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        protocol,
        method,
        tool,
    ]
    if protocol == LEGACY:
        if sessions_file is None:
            raise LoadError("the 2025-11-25 path needs sessions")
        argv.append(str(sessions_file))
    completed = subprocess.run(
        pinned(argv, LOAD_CPU if pin else None),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    match = re.search(r"^BENCH_JSON (.*)$", completed.stdout, re.MULTILINE)
    if completed.returncode != 0 or match is None:
        raise LoadError(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    data = json.loads(match[1])
    lat = data["latency_us"]
    requests = int(data["requests"])
    return WrkResult(
        connections=connections,
        threads=threads,
        requests=requests,
        duration_s=data["duration_us"] / 1e6,
        bytes_per_response=data["body_bytes"] / data["responses"] if data["responses"] else 0.0,
        errors={k: int(v) for k, v in data["errors"].items()},
        bad_sample=data.get("bad_sample", ""),
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000,
        mean_ms=lat["mean"] / 1000,
        max_ms=lat["max"] / 1000,
    )
