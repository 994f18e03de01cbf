"""The servers under test: how to start each as a subprocess on a free loopback port, wait
until it answers, read its memory, and stop it.

Every server runs as its own process so its resident memory can be read from
``/proc/PID/status`` and so ``py-spy`` can attach to it. :class:`ServerPool` stops every
server it started when its ``with`` block ends, however it ends; an ``atexit`` hook is the
last resort for anything still running when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PRODUCTION_CONFIG = BENCH_DIR / "mcphost-production.toml"
"""mcphost's configuration as the benchmark measures it (see the comments in the file)."""
NOOP_PLUGIN = BENCH_DIR / "plugins" / "noop.py"
TS_PEER = BENCH_DIR / "peers" / "ts"
"""The TypeScript peer's server and its pinned packages (``package.json``, ``package-lock.json``)."""

PROTOCOL_PATHS = ("2025-11-25", "2026-07-28")
"""Sessions, and self-contained requests (``load.LEGACY`` and ``load.MODERN``)."""

SERVER_CPU = 1
"""The CPU servers are pinned to (wrk gets the other one), when pinning is on."""
LOAD_CPU = 0

MCPHOST_SOURCE: Path | None = None
"""A directory holding an ``mcphost`` package to run instead of the installed one (set by
``run.py --rev``); ``None`` runs the installed (editable: working-tree) mcphost."""

START_TIMEOUT = 60.0
IDLE_WINDOW = 0.2
IDLE_CPU_SHARE = 0.05
IDLE_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 10.0

_live: set[subprocess.Popen[bytes]] = set()


def _stat_fields(pid: int | str, task: str = "") -> list[str]:
    # The command name (field 2) may hold spaces; fields after its ")" are plain.
    return Path(f"/proc/{pid}{task}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (0 once it has gone)."""
    try:
        fields = _stat_fields(pid)
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def thread_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time each thread of the processes ``pids`` has used so far, by
    thread id (a thread or process gone meanwhile is left out)."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError):
                    fields = _stat_fields(pid, f"/task/{task.name}")
                    out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, or ``None`` once it has gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(_stat_fields(str(pid))[1])
    return None


def is_fork_server(pid: int) -> bool:
    """Whether ``pid`` runs mcphost's fork server (or was forked from it)."""
    with contextlib.suppress(OSError):
        return b"mcphost.plugins.worker.zygote" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def wait_idle(running: Iterable[RunningServer], *, timeout: float = IDLE_TIMEOUT) -> float:
    """Wait until the ``running`` servers together (with their workers) use under
    :data:`IDLE_CPU_SHARE` of a CPU over :data:`IDLE_WINDOW` seconds, or ``timeout`` seconds
    have passed; return the seconds waited. A server still working on the calls of clients
    that have left (a load run cut off mid-call) would otherwise spend the next run's CPU on
    them: its own next run's, or, on the CPU they are pinned to, another server's."""
    running = list(running)
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        before = sum(server.cpu_seconds() for server in running)
        time.sleep(IDLE_WINDOW)
        if sum(server.cpu_seconds() for server in running) - before < IDLE_CPU_SHARE * IDLE_WINDOW:
            break
    return time.monotonic() - began


def descendants(pid: int) -> list[int]:
    """Every living process under ``pid``: its children, theirs and so on (an isolated
    plugin's worker, a fork server and what it forked)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(_stat_fields(entry.name)[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def uss_kib(pid: int) -> int:
    """Memory only this process holds (unique set size: ``Private_Clean + Private_Dirty``
    of ``smaps_rollup``), in KiB."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    fields = dict(line.split(":", 1) for line in rollup)
    return int(fields["Private_Clean"].split()[0]) + int(fields["Private_Dirty"].split()[0])


@atexit.register
def _kill_leftovers() -> None:
    # Normally ServerPool has already stopped everything; this covers an exit that
    # bypassed it (an exception inside an exception handler, say).
    for process in list(_live):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _live.discard(process)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinning_available() -> bool:
    """Whether servers and load can be pinned to separate CPUs (``taskset``, two CPUs)."""
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` run on CPU ``cpu`` only (``taskset`` execs it, so the PID stays the same)."""
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else list(argv)


def _python() -> str:
    return sys.executable


UNSET = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME", "PYTHONMALLOC", "PYTHONDEVMODE")
"""Interpreter settings a developer's shell may have that a deployed service does not."""


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # The harness's own MCPHOST_* variables must not override the measured config, and
    # the servers should run as a deployment runs them: buffered output, byte-code cached.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPHOST_") and k not in UNSET}
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration to benchmark."""

    key: str
    """Short identifier used in results and file names."""
    label: str
    """What the row is, for tables and plots."""
    argv: tuple[str, ...]
    """The command, with ``{port}`` where the listen port goes."""
    tool: str
    """The public name of the synchronous no-op tool (or ``-`` when the server has no such tool)."""
    async_tool: str | None = None
    """The public name of the same tool written ``async def``, where the server has one."""
    paths: tuple[str, ...] = PROTOCOL_PATHS
    """The protocol paths it serves (``bench/load.py`` describes them)."""
    ready_path: str = "/health"
    ready_needs_200: bool = False
    """mcphost: ready means ``/health`` answers 200; the others: any HTTP answer at all."""
    env: Mapping[str, str] = field(default_factory=dict)
    systemd: bool = False
    """Run it as systemd would: its own ``STATE_DIRECTORY`` and a ``NOTIFY_SOCKET`` the
    harness listens on for ``READY=1``."""

    def command(self, port: int) -> list[str]:
        """The argv with the port filled in."""
        return [part.replace("{port}", str(port)) for part in self.argv]


def reference_spec(plugins: int = 0, tools_per_plugin: int = 10) -> ServerSpec:
    """Row 1: the SDK's ``MCPServer`` on uvicorn, one worker: what a Python user picks."""
    return ServerSpec(
        "reference",
        "SDK MCPServer on uvicorn (reference)",
        (
            _python(),
            str(BENCH_DIR / "apps" / "sdk_app.py"),
            "--server",
            "uvicorn",
            "--port",
            "{port}",
            *_catalog(plugins, tools_per_plugin),
        ),
        tool="add",
        async_tool="add_async",
    )


def sdk_hypercorn_spec(plugins: int = 0, tools_per_plugin: int = 10) -> ServerSpec:
    """Row 2: the same SDK app on Hypercorn's Trio worker, mcphost's HTTP stack."""
    return ServerSpec(
        "sdk-hypercorn",
        "SDK MCPServer on Hypercorn/Trio",
        (
            _python(),
            str(BENCH_DIR / "apps" / "sdk_app.py"),
            "--server",
            "hypercorn",
            "--port",
            "{port}",
            *_catalog(plugins, tools_per_plugin),
        ),
        tool="add",
        async_tool="add_async",
    )


def bare_spec() -> ServerSpec:
    """Row 3: a bare ASGI app with a fixed answer on Hypercorn/Trio, the stack's ceiling."""
    return ServerSpec(
        "bare",
        "bare ASGI on Hypercorn/Trio (ceiling)",
        (_python(), str(BENCH_DIR / "apps" / "bare_asgi.py"), "--port", "{port}"),
        tool="add",
    )


KEYS_FILE = BENCH_DIR / "results" / "keys.toml"
"""The keys file the production config names: the hash of this run's bearer key."""


def write_keys_file(token: str) -> None:
    """Store the hash of the run's bearer key where mcphost reads it (as ``mcphost keys new``
    would print it: only the hash is stored)."""
    KEYS_FILE.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(token.encode()).hexdigest()
    KEYS_FILE.write_text(f'[keys]\nbench = {{ hash = "sha256:{digest}", tools = ["*"] }}\n')


def mcphost_spec(
    config: Path = PRODUCTION_CONFIG, label: str = "mcphost (production, plugin in a worker)", key: str = "mcphost"
) -> ServerSpec:
    """Row 4: ``mcphost serve`` with ``config``, run from the repository root (the config's
    relative plugin paths are relative to it), its stderr (the request log) sent to a file."""
    script = Path(_python()).parent / "mcphost"
    launcher = (str(script),) if script.exists() else (_python(), "-m", "mcphost")
    # PYTHONPATH wins over the editable install's finder, which sits after it on sys.meta_path.
    env = {"PYTHONPATH": str(MCPHOST_SOURCE)} if MCPHOST_SOURCE else {}
    return ServerSpec(
        key,
        label,
        (*launcher, "serve", "--config", str(config), "--port", "{port}"),
        tool="noop_add",
        async_tool="noop_add_async",
        ready_needs_200=True,
        env=env,
        systemd=True,
    )


def traced_mcphost_spec(output: Path, config: Path = PRODUCTION_CONFIG) -> ServerSpec:
    """mcphost as :func:`mcphost_spec` runs it, but with tracemalloc on and SIGUSR1 writing
    what grew since the first SIGUSR1 to ``output`` (``apps/traced_mcphost.py``)."""
    spec = mcphost_spec(config, "mcphost (production config, tracemalloc on)")
    return replace(
        spec,
        key="mcphost-traced",
        argv=(_python(), str(BENCH_DIR / "apps" / "traced_mcphost.py"), *spec.argv[spec.argv.index("serve") :]),
        env={**spec.env, "BENCH_TRACEMALLOC_OUT": str(output)},
    )


def _catalog(plugins: int, tools_per_plugin: int) -> tuple[str, ...]:
    return ("--plugins", str(plugins), "--tools-per-plugin", str(tools_per_plugin)) if plugins else ()


def derived_mcphost_config(
    directory: Path,
    name: str,
    plugin_paths: Sequence[Path] | None = None,
    enable: Sequence[str] | None = None,
    *,
    plugin_tables: Mapping[str, Mapping[str, Any]] | None = None,
    workers: int | None = None,
) -> Path:
    """The production config with a different plugin set, other ``[plugins.<name>]`` keys
    (``plugin_tables``, by plugin name) or more workers, written to ``directory/name``.

    Everything else stays as in the production file, so the derived runs measure the same
    daemon set-up. Callers set each plugin's ``isolation`` explicitly, so the runs do not
    depend on mcphost's default.
    """
    data = tomllib.loads(PRODUCTION_CONFIG.read_text())
    plugins = data.setdefault("plugins", {})
    if enable is not None:
        plugins["enable"] = list(enable)
    if plugin_paths is not None:
        plugins["paths"] = [str(p) for p in plugin_paths]
    for plugin, table in (plugin_tables or {}).items():
        plugins.setdefault(plugin, {}).update(table)
    if workers is not None:
        data["server"]["workers"] = workers
    path = directory / name
    path.write_text(to_toml(data))
    return path


def ts_peer_spec(installed: Path) -> ServerSpec:
    """The TypeScript peer (``peers/ts/server.mjs``): the official SDK's
    ``StreamableHTTPServerTransport`` on express with a session map, as the SDK's example
    builds it, run by Node from ``installed`` (see :func:`install_ts_peer`). It serves
    sessions only (the TypeScript SDK knows no 2026-07-28 requests)."""
    return ServerSpec(
        "ts-peer",
        "TypeScript SDK on express, session map",
        (shutil.which("node") or "node", str(installed / "server.mjs"), "{port}"),
        tool="add",
        paths=PROTOCOL_PATHS[:1],
    )


def ts_peer_cache() -> Path:
    """Where the TypeScript peer's packages are installed: the user's cache directory, one
    folder per lock file, so a changed pin installs afresh and an unchanged one never again."""
    lock = (TS_PEER / "package-lock.json").read_bytes()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mcphost-bench" / f"ts-peer-{hashlib.sha256(lock).hexdigest()[:12]}"


def install_ts_peer() -> Path:
    """The TypeScript peer ready to run: its pinned packages installed from npm (``npm ci``,
    once per lock file) and its server copied beside them; returns that directory."""
    target = ts_peer_cache()
    if not (target / "node_modules" / ".package-lock.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(TS_PEER / name, target / name)
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not installed: the TypeScript peer needs Node.js and npm")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )
    shutil.copy(TS_PEER / "server.mjs", target / "server.mjs")
    return target


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Render nested dicts of strings, numbers, booleans and lists of those as TOML."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(item) for item in v) + "]"
        raise TypeError(f"cannot render {type(v).__name__} as TOML")

    scalars = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.append(to_toml(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(out) + "\n"


class NotifyListener:
    """The service manager's end of sd_notify: a datagram socket the server reports its
    state to (``READY=1``, ``RELOADING=1``, ``STOPPING=1``), each message timestamped on arrival."""

    def __init__(self, path: Path):
        self.path = path
        path.unlink(missing_ok=True)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def poll(self) -> list[tuple[float, str]]:
        """Messages that arrived since the last poll, as ``(perf_counter, text)``."""
        new = []
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                break
            new.append((time.perf_counter(), data.decode(errors="replace")))
        self.messages += new
        return new

    def wait_for(self, field_value: str, timeout: float, after: float = 0.0) -> float | None:
        """The arrival time of the first message after ``after`` holding ``field_value``
        (``READY=1``), waiting up to ``timeout`` seconds; ``None`` if none came."""
        deadline = time.perf_counter() + timeout
        while True:
            self.poll()
            for at, text in self.messages:
                if at >= after and field_value in text.split("\n"):
                    return at
            if time.perf_counter() >= deadline:
                return None
            select.select([self.socket], [], [], 0.002)

    def close(self) -> None:
        """Release the socket and its path."""
        self.socket.close()
        self.path.unlink(missing_ok=True)


@dataclass
class RunningServer:
    """A started server process."""

    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    launched_at: float
    """``time.perf_counter()`` just before the process was spawned."""
    ready_after: float | None = None
    """Seconds from spawn to the first good answer on the readiness path."""
    notify: NotifyListener | None = None
    notified_ready_after: float | None = None
    """Seconds from spawn to ``READY=1`` over sd_notify (systemd-style servers only)."""

    @property
    def pid(self) -> int:
        """The server's PID (``taskset`` execs the server, so it is the server's own)."""
        return self.process.pid

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"{self.base_url}/mcp"

    def status_kib(self, field_name: str) -> int:
        """A memory figure (``VmRSS``, ``VmHWM``) of the process from ``/proc``, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field_name} for PID {self.pid}")

    def cpu_seconds(self, main_thread_only: bool = False) -> float:
        """CPU time (user + system) the server has used so far, from ``/proc``: with its
        worker processes and all their threads, or its own main thread (the event loop) only."""
        if main_thread_only:
            fields = _stat_fields(self.pid, f"/task/{self.pid}")
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return process_cpu_seconds(self.pid) + sum(process_cpu_seconds(pid) for pid in self.workers())

    def thread_cpu_seconds(self) -> dict[int, float]:
        """CPU time each thread of the server and of its worker processes has used so far,
        by thread id (:func:`thread_cpu_seconds`)."""
        return thread_cpu_seconds([self.pid, *self.workers()])

    def workers(self) -> list[int]:
        """The server's descendant processes (mcphost's isolated plugins' workers)."""
        return descendants(self.pid)

    def plugin_workers(self) -> list[int]:
        """:meth:`workers` without the fork server, the daemon's child that forks them (its
        workers, forked, share its command line, but not its parent)."""
        return [pid for pid in self.workers() if not (parent_pid(pid) == self.pid and is_fork_server(pid))]

    def rss_kib(self) -> int:
        """Resident memory now, in KiB."""
        return self.status_kib("VmRSS")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        """Raise if the server has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.spec.key} exited with {self.process.returncode}:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Poll the readiness path until it answers; returns seconds since spawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready_after is None:
                status = _get_status(self.port, self.spec.ready_path)
                if status is not None and (status == 200 or not self.spec.ready_needs_200):
                    self.ready_after = time.perf_counter() - self.launched_at
            if self.notify is not None and self.notified_ready_after is None:
                at = self.notify.wait_for("READY=1", 0.0)
                if at is not None:
                    self.notified_ready_after = at - self.launched_at
            if self.ready_after is not None and (self.notify is None or self.notified_ready_after is not None):
                return self.ready_after
            if self.notify is not None:
                select.select([self.notify.socket], [], [], 0.005)
            else:
                time.sleep(0.005)
        raise RuntimeError(f"{self.spec.key} did not become ready within {timeout:g}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; the whole process group either way."""
        process = self.process
        if process.poll() is None:
            # Workers run in process groups of their own: a daemon that had to be killed
            # could not stop them itself.
            workers = self.workers()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _live.discard(process)
        if self.notify is not None:
            self.notify.close()


def _get_status(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        connection.close()


class ServerPool:
    """Starts servers and guarantees they are all stopped when the ``with`` block ends."""

    def __init__(self, log_dir: Path, *, pin: bool):
        self.log_dir = log_dir
        self.cpu = SERVER_CPU if pin else None
        self.servers: list[RunningServer] = []

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def launch(self, spec: ServerSpec, log_name: str | None = None) -> RunningServer:
        """Spawn ``spec`` on a free port without waiting for it."""
        port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / (log_name or f"{spec.key}-{port}.log")
        env = dict(spec.env)
        notify = None
        if spec.systemd:
            state = self.log_dir / f"state-{port}"
            state.mkdir(parents=True, exist_ok=True)
            notify = NotifyListener(self.log_dir / f"notify-{port}.sock")
            env.update(STATE_DIRECTORY=str(state), NOTIFY_SOCKET=str(notify.path))
        with log_path.open("wb") as log:
            launched_at = time.perf_counter()
            process = subprocess.Popen(
                pinned(spec.command(port), self.cpu),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO_ROOT,
                env=clean_env(env),
                # Its own process group, so stopping it stops anything it spawned, and a
                # Ctrl-C in the terminal reaches the harness (which then stops it) only.
                start_new_session=True,
            )
        _live.add(process)
        server = RunningServer(spec, port, process, log_path, launched_at, notify=notify)
        self.servers.append(server)
        return server

    def start(self, spec: ServerSpec, log_name: str | None = None) -> RunningServer:
        """Spawn ``spec`` and wait until it answers."""
        server = self.launch(spec, log_name)
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self, server: RunningServer) -> None:
        """Stop one server now."""
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        """Stop every server this pool started."""
        while self.servers:
            self.servers.pop().stop()


@contextlib.contextmanager
def running(specs: Sequence[ServerSpec], log_dir: Path, *, pin: bool) -> Iterator[list[RunningServer]]:
    """Start ``specs`` side by side; all are stopped on exit."""
    with ServerPool(log_dir, pin=pin) as pool:
        yield [pool.start(spec) for spec in specs]
