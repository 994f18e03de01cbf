"""The daemon's side of a plugin's worker process: starting it, calling its tools, noticing
its end, restarting it, and stopping it with everything it started.

A worker is forked by the fork server (:mod:`~mcphost.plugins.worker.zygote`), or is a
fresh interpreter (``python -m mcphost.plugins.worker``) where there is none, in a
session and process group of its own, with a scrubbed environment, and in a cgroup of its
own where the daemon has a delegated one (:mod:`~mcphost.plugins.worker.cgroups`). Its end
is noticed through a pidfd (a socket EOF never comes while a child of the worker still holds
the socket); the calls it was running then fail with a message naming the plugin and how
the worker ended, and the worker is started again after a backoff, unless it ends too
often, when the plugin settles as failed. A call that outlives its timeout by :data:`KILL_GRACE` could not be
cancelled in the worker (a coroutine that never yields, a blocked C call): the worker is
ended, which ends the call.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import mcp_types as types
import orjson
import outcome
import structlog
import trio
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION
from pydantic import BaseModel, ValidationError

from mcphost.core.errors import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND
from mcphost.core.plugin_tables import DefaultLimits, PluginConfig
from mcphost.core.rate import Rate
from mcphost.ops.log import TOOL_STATUSES, RequestRecord, current_request
from mcphost.plugins import client_input, fence, notify
from mcphost.plugins.context import ToolContext
from mcphost.plugins.definitions import PromptDef, ResourceDef
from mcphost.plugins.limits import ToolLimits, queue_of
from mcphost.plugins.registry import (
    RegisteredPrompt,
    RegisteredResource,
    RegisteredTool,
    Registry,
    remote_only,
)
from mcphost.plugins.worker import cgroups, launch, wire
from mcphost.plugins.worker.context import INPUT_REQUIRED, META_REQUEST, STALLED
from mcphost.plugins.worker.output import MAX_LOG_LINE, WorkerOutput
from mcphost.plugins.worker.wire import Channel, ChannelClosed, Framer, Message, RemoteError, encode, result_of
from mcphost.plugins.worker.zygote_client import ForkedChild, Zygotes, ZygoteUnavailable, describe

log = structlog.get_logger("mcphost.worker")

Answer = TypeVar("Answer", bound=BaseModel)

KILL_GRACE = 1.0
"""Seconds past a call's timeout before the worker, which did not end the call itself, is ended."""
CLOSED_GRACE = 2.0
"""Seconds a worker that closed its connection to the daemon has to end on its own before it
is ended: it can serve nothing more, and only its end starts the next one."""
PING_INTERVAL = 5.0
"""Seconds between pings of a serving worker; one that does not answer within the same
time again (its event loop is stuck) is ended."""
START_TIMEOUT = 30.0
"""Seconds a new worker may take to import its plugin and list its tools."""
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 10.0
"""Seconds before the first restart of a worker that ended, doubled for each further end
within the plugin's ``restart_window``, up to the maximum."""
MAX_REASON = 500
"""Characters of a worker's own account of a stall that the daemon keeps (the worker is not trusted)."""
MIN_MESSAGE_BOUND, RESULT_ROOM = 64 * 2**20, 8
"""The bound on one message from a worker: at least this many bytes, and room for this many
times the largest result its config allows (see :func:`message_bound`)."""
MIN_HANDLING, HANDLING_ROOM = 256, 2
"""The bound on a worker's requests and notifications handled at once: at least this many, and
room for this many per call the config lets the plugin run at once (see :func:`handling_bound`)."""

_ASKS: dict[str, tuple[Any, Any]] = {
    "elicit": (types.ElicitRequest, types.ElicitResult),
    "sample": (types.CreateMessageRequest, types.CreateMessageResult),
    "roots": (types.ListRootsRequest, types.ListRootsResult),
}


class WorkerStartError(Exception):
    """A worker could not be started, or its plugin did not load in it."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.problems = problems or []


class WorkerCallError(fence.FenceError):
    """A call in a worker produced no result; ``status`` says how it ended (for metrics and logs)."""

    def __init__(self, message: str, status: str = "error"):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker runs: one plugin, with the part of the config that shapes it."""

    plugin: str
    config: Mapping[str, Any]
    """The worker's own config: ``[plugins]`` with only this plugin, ``[limits]`` and ``[tools]``."""
    source: str
    env: Mapping[str, str]
    log_level: str = "info"
    max_restarts: int = 5
    restart_window: float = 60.0
    memory_max: int | None = None
    """The worker's cgroup's ``memory.max``, or its ``RLIMIT_AS`` without a delegated cgroup."""
    max_open_files: int | None = None
    """``RLIMIT_NOFILE`` of the worker."""
    max_tasks: int | None = None
    """The worker's cgroup's ``pids.max`` (none without a delegated cgroup)."""
    cpu_weight: int | None = None
    """The worker's cgroup's ``cpu.weight`` (none without a delegated cgroup)."""
    command: tuple[str, ...] = ()
    """An existing MCP server's command line (stdio), run instead of a worker of ours."""
    cwd: str | None = None
    """The working directory of ``command``."""
    roots: tuple[str, ...] = ()
    """What ``command``'s server is told when it asks for the client's roots."""
    distribution: str | None = None
    """The installed package whose entry point the plugin is (else it is at a configured path)."""
    max_message: int = MIN_MESSAGE_BOUND
    """The most bytes one message from the worker may hold (see :func:`message_bound`)."""
    max_handling: int = MIN_HANDLING
    """The most of the worker's requests and notifications handled at once (see :func:`handling_bound`)."""
    output_rate: Rate = field(kw_only=True)
    """The most lines of the worker's output logged per period (see :mod:`~mcphost.plugins.worker.output`)."""

    @property
    def kind(self) -> str:
        """What runs the plugin, in messages: its ``server`` or its ``worker``."""
        return "server" if self.command else "worker"


@dataclass(eq=False)
class Process:
    """One worker process, from its start to its end."""

    popen: subprocess.Popen[bytes] | ForkedChild
    pidfd: int
    """Readable once the worker has ended."""
    sock: socket.socket
    output: int
    """The read end of the worker's stdout and stderr."""
    hello: Message
    """Its answer to ``initialize``: the plugin's tools, hooks and source files."""
    started: float = field(default_factory=time.monotonic)
    ended: str | None = None
    """How it ended ("exited with status 1", "was killed by SIGSEGV"), once it has."""
    done: trio.Event = field(default_factory=trio.Event)
    start_error: str | None = None
    """Why its plugin's start-up hook failed, if it did."""
    cgroup: cgroups.Cgroup | None = None
    """Its own cgroup, where the daemon has a delegated one."""
    log: WorkerOutput = field(init=False, repr=False)
    """What it writes to its stdout and stderr, as the daemon logs it (set by :func:`_load`)."""

    @property
    def pid(self) -> int:
        """The worker's pid, which is also its process group's."""
        return self.popen.pid

    def kill_group(self) -> None:
        """SIGKILL the worker's process group and cgroup: the worker and whatever it started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()

    def how_ended(self, status: int | None, over_memory: bool) -> str:
        """How the worker ended (see :func:`describe`), naming its memory limit when the kernel
        killed it for being over it (``over_memory``, read once by the caller)."""
        if self.cgroup is None or not over_memory:
            return describe(status)
        limit = self.cgroup.memory_max
        return "was killed: over " + (f"memory_max {cgroups.size(limit)}" if limit else "its cgroup's memory")

    def over_memory(self) -> bool:
        """Whether the kernel killed the worker (or a process it started) for being over its
        cgroup's memory limit."""
        return self.cgroup is not None and self.cgroup.over_memory()

    def release(self) -> None:
        """Remove the worker's cgroup, killing what is left in it (blocking)."""
        if self.cgroup is not None:
            self.cgroup.remove()


def message_bound(defaults: DefaultLimits, own: PluginConfig) -> int:
    """The most bytes one message from a plugin's worker or server may hold, or the daemon
    ends it as one sending garbage: :data:`MIN_MESSAGE_BOUND`, or :data:`RESULT_ROOM` times
    the largest ``max_result_bytes`` the config sets for the plugin (``[limits]``, its table,
    its tools') if that is more. The room is for a result a server JSON-escaped (up to 3
    times as long) or sent over its limit, which the daemon refuses as such once it has it;
    an author's own ``max_result_bytes`` does not count, or a hostile plugin would set how
    much of the daemon's memory it may take."""
    sizes = [defaults.max_result_bytes, own.max_result_bytes, *(tool.max_result_bytes for tool in own.tools.values())]
    return max(MIN_MESSAGE_BOUND, RESULT_ROOM * max(size for size in sizes if size is not None))


def handling_bound(defaults: DefaultLimits, own: PluginConfig) -> int:
    """The most requests and notifications of a plugin's worker or server the daemon handles
    at once (each in a task of its own: a log message or progress to send to a client, a
    question to ask one): past it, the daemon reads nothing more from the worker until one is
    done. :data:`MIN_HANDLING`, or :data:`HANDLING_ROOM` for each call the config lets the
    plugin run at once (``max_concurrency`` of ``[limits]`` or its table, and its tools'),
    each of which waits on one at a time; an author's own ``max_concurrency`` does not count,
    or a hostile plugin would set how many tasks of the daemon's it may hold."""
    calls = (own.max_concurrency or defaults.max_concurrency) + sum(
        tool.max_concurrency or 0 for tool in own.tools.values()
    )
    return max(MIN_HANDLING, HANDLING_ROOM * calls)


def spawn(spec: WorkerSpec, zygotes: Zygotes | None = None) -> Process:
    """Start a worker (forked by ``zygotes``' fork server where there is one) and load the
    plugin in it (blocking: run in a thread from Trio); raises :class:`WorkerStartError`
    saying why not."""
    delegation, cgroup = cgroups.in_force(), None
    if delegation is not None:
        try:
            cgroup = delegation.worker(spec.plugin, spec.memory_max, spec.max_tasks, spec.cpu_weight)
        except OSError as error:
            raise WorkerStartError(f"cannot make the cgroup of its {spec.kind}: {error}") from None
    # With a cgroup, memory_max is its memory.max; without, the address-space limit.
    address_space = spec.memory_max if cgroup is None else None
    ours, theirs = socket.socketpair()
    output, output_w = os.pipe()
    env = launch.kept_environment() | dict(spec.env)
    if zygotes is not None and not spec.command:
        with contextlib.suppress(ZygoteUnavailable):
            request = {"env": env, "level": spec.log_level, "memory_max": address_space}
            request |= {"max_open_files": spec.max_open_files, "cgroup": cgroup.path if cgroup else None}
            child = zygotes.fork(request, theirs.fileno(), output_w)
            theirs.close()
            os.close(output_w)
            return _load(spec, Process(child, child.pidfd, ours, output, {}, cgroup=cgroup))
    if address_space is not None:
        # glibc gives each thread an arena of 64 MiB of address space: a few threads would
        # use up a limit of address space that their memory is far from.
        env.setdefault("MALLOC_ARENA_MAX", "2")
    if spec.command:
        # An MCP server speaks on its stdin and stdout: both are its end of the socket pair.
        argv, stdin, stdout, passed = list(spec.command), theirs.fileno(), theirs.fileno(), []
    else:
        argv = launch.python("mcphost.plugins.worker", str(theirs.fileno()), spec.log_level)
        stdin, stdout, passed = subprocess.DEVNULL, output_w, [theirs.fileno()]
        # The interpreter imports the worker runtime before the daemon tells it its import
        # path: from the daemon's, as the fork server does, then the plugin's own.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (launch.import_path(), spec.env.get("PYTHONPATH")) if p)
    try:
        popen = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=output_w,
            pass_fds=passed,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
        )
    except OSError as error:
        for fd in (output, output_w):
            os.close(fd)
        ours.close()
        if cgroup is not None:
            cgroup.remove()
        raise WorkerStartError(f"cannot start its {spec.kind}: {error}") from None
    finally:
        theirs.close()
    os.close(output_w)
    process = Process(popen, os.pidfd_open(popen.pid), ours, output, {}, cgroup=cgroup)
    try:
        # Set before the worker is told to import the plugin, so no plugin code runs without them.
        if cgroup is not None:
            cgroup.join(popen.pid)
        if address_space is not None:
            resource.prlimit(popen.pid, resource.RLIMIT_AS, (address_space, address_space))
        if spec.max_open_files is not None:
            resource.prlimit(popen.pid, resource.RLIMIT_NOFILE, (spec.max_open_files, spec.max_open_files))
    except OSError as error:
        stop_now(process)
        raise WorkerStartError(f"cannot set the limits of its {spec.kind}: {error}") from None
    return _load(spec, process)


def _load(spec: WorkerSpec, process: Process) -> Process:
    """Load the plugin in a started worker (or list a server's tools)."""
    ours = process.sock
    process.log = WorkerOutput(spec.plugin, process.pid, spec.output_rate)
    try:
        if spec.command:
            process.hello = _server_hello(ours, spec, process.log.stray)
        else:
            # The daemon's import path: the worker finds the plugin where the daemon found it
            # (``PYTHONPATH``, a path ``site`` added), though its environment is scrubbed.
            params = {
                "plugin": spec.plugin,
                "config": spec.config,
                "source": spec.source,
                "path": sys.path,
                "distribution": spec.distribution,
            }
            process.hello = _handshake(ours, wire.request(0, "initialize", params), spec.max_message)
    except (OSError, ValueError, RemoteError, ChannelClosed) as error:
        # One that closed its end is usually ending: it has a moment to, and then says how it
        # ended. One still running is ended here, for what the error says it did.
        closing = isinstance(error, (ChannelClosed, BrokenPipeError, ConnectionResetError))
        ended_itself = _ends_within(process.pidfd, CLOSED_GRACE if closing else 0.0)
        how, last = stop_now(process)
        if ended_itself:
            why = f"{how} while starting"
        elif isinstance(error, TimeoutError):
            why = f"did not answer within {START_TIMEOUT:g}s of starting"
        else:
            why = f"failed to start: {error}"
        raise WorkerStartError(f"its {spec.kind} {why}{': ' + last if last else ''}") from None
    if "error" in process.hello:
        stop_now(process)
        raise WorkerStartError(str(process.hello["error"]), process.hello.get("problems"))
    return process


SERVER_LISTS = (
    ("tools", "tools", "tools/list", "tools"),
    ("resources", "resources", "resources/list", "resources"),
    ("templates", "resources", "resources/templates/list", "resourceTemplates"),
    ("prompts", "prompts", "prompts/list", "prompts"),
)
"""What the daemon lists of a hosted server, each as (its key in the server's hello, the
capability that offers it, the method that lists it, the result's field)."""
LISTED_BY = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/resources/list_changed": ("resources", "templates"),
    "notifications/prompts/list_changed": ("prompts",),
}
"""What a server's ``list_changed`` notification says to list again."""


def _server_hello(sock: socket.socket, spec: WorkerSpec, stray: Callable[[bytes], None]) -> Message:
    """MCP's handshake with the existing server of ``spec``, then everything it offers (every
    page), each answer at most ``spec.max_message`` bytes. What it writes that is not a
    message goes to ``stray``; what it asks meanwhile is answered as it would be later
    (:func:`_standing_answer`), or refused: there is no client to ask yet."""
    max_message = spec.max_message

    def asked(request: Message) -> Message:
        method, request_id = request.get("method"), request["id"]
        result = _standing_answer(str(method), spec)
        if result is None:
            refusal = f"mcphost does not answer {method!r} while it starts"
            return wire.error_response(request_id, METHOD_NOT_FOUND, refusal)
        return wire.response(request_id, result)

    params = {
        "protocolVersion": LATEST_HANDSHAKE_VERSION,
        "capabilities": {"roots": {}, "sampling": {}, "elicitation": {}},
        "clientInfo": {"name": "mcphost", "version": "1"},
    }
    server = _handshake(sock, wire.request(0, "initialize", params), max_message, stray, asked)
    version = server.get("protocolVersion")
    if version not in HANDSHAKE_PROTOCOL_VERSIONS:
        raise ValueError(f"it speaks protocol revision {version!r}, which mcphost does not")
    sock.sendall(encode(wire.notification("notifications/initialized")))
    offered = server.get("capabilities")
    capabilities = {k: v for k, v in offered.items() if isinstance(v, dict)} if isinstance(offered, dict) else {}
    hello: Message = {"server": server.get("serverInfo"), "protocol_version": version, "capabilities": capabilities}
    ids = itertools.count(1)

    async def ask(method: str, params: Message) -> Message:
        return _handshake(sock, wire.request(next(ids), method, params), max_message, stray, asked)

    listing = _lists(ask, [key for key, *_ in SERVER_LISTS], capabilities)
    try:
        listing.send(None)
    except StopIteration as done:  # ``ask`` never waits, so the listing ran to its end at once
        return hello | done.value
    listing.close()
    raise AssertionError("the listing of a server's lists waited")


async def _lists(
    ask: Callable[[str, Message], Awaitable[Message]], keys: Collection[str], capabilities: Message
) -> dict[str, list[Any]]:
    """The server's lists named by ``keys`` (see :data:`SERVER_LISTS`), every page, asking
    with ``ask``; empty where ``capabilities`` offers none. Raises ValueError naming the
    method the server refused or answered with something else than a list."""
    lists: dict[str, list[Any]] = {}
    for key, capability, method, found in SERVER_LISTS:
        if key not in keys:
            continue
        lists[key], cursor = [], None
        if capability not in capabilities:
            continue
        try:
            while True:
                listed = await ask(method, {"cursor": cursor} if cursor else {})
                if not isinstance(listed, dict) or not isinstance(items := listed.get(found) or [], list):
                    raise ValueError(f"{method}: its answer is not a list of {found}")
                lists[key] += items
                if not (cursor := listed.get("nextCursor")):
                    break
        except RemoteError as error:
            # A server with resources but no templates may not know the method at all.
            if key != "templates" or error.code != METHOD_NOT_FOUND:
                raise ValueError(f"{method}: {error}") from None
    return lists


def _handshake(
    sock: socket.socket,
    request: Message,
    max_message: int,
    stray: Callable[[bytes], None] | None = None,
    asked: Callable[[Message], Message] | None = None,
) -> Message:
    """Send ``request`` and wait for its answer (blocking); a request of the other end is
    answered with what ``asked`` makes of it, and anything else passes. Raises RemoteError
    when the answer is an error (see :func:`result_of`), ValueError on what is not JSON-RPC
    (a result that is not an object, a message over ``max_message`` bytes, and any line
    that is not a message without ``stray``: see :class:`Framer`), ChannelClosed when the
    other end closes, TimeoutError when it is silent for :data:`START_TIMEOUT`."""
    sock.settimeout(START_TIMEOUT)
    sock.sendall(encode(request))
    framer = Framer(max_message, stray)
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise ChannelClosed("it closed its connection")
        try:
            messages = framer.feed(data)
        except ValueError as garbage:
            raise ValueError(f"it sent what is not JSON-RPC: {garbage}") from None
        for message in messages:
            if asked is not None and "method" in message and "id" in message:
                sock.sendall(encode(asked(message)))
            elif message.get("id") == request["id"] and "method" not in message:
                result = result_of(message)
                if result is None:
                    return {}
                if not isinstance(result, dict):
                    raise ValueError(f"its answer to {request['method']} is not an object")
                return result


def _standing_answer(method: str, spec: WorkerSpec) -> Message | None:
    """What a hosted server is answered when it asks ``method`` of the daemon itself, whoever
    is calling: ``ping``, and ``roots/list`` from ``[plugins.<name>] roots`` (a server
    shared by every client must not see one client's roots); ``None`` for anything else."""
    if method == "ping":
        return {}
    if method == "roots/list":
        return {"roots": [{"uri": uri} for uri in spec.roots]}
    return None


def _ends_within(pidfd: int, timeout: float) -> bool:
    """Whether the process of ``pidfd`` has ended, or ends within ``timeout`` seconds (blocking)."""
    poller = select.poll()  # not select.select, which fails on a descriptor past 1023
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _last_line(fd: int) -> str:
    """The last line the worker wrote before it failed to start (its traceback's last line, usually)."""
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 1 << 16):
            data = (data + chunk)[-MAX_LOG_LINE:]
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return ""
    with contextlib.suppress(ValueError):
        entry = orjson.loads(lines[-1])
        if isinstance(entry, dict):
            return str(entry.get("exception", entry.get("event", ""))).strip().splitlines()[-1]
    return lines[-1][:500]


def _close(process: Process) -> None:
    process.sock.close()
    for fd in (process.output, process.pidfd):
        with contextlib.suppress(OSError):
            os.close(fd)


def stop_now(process: Process) -> tuple[str, str]:
    """End a worker that never served (blocking): its group killed, its status reaped.
    Returns how it ended (:meth:`Process.how_ended`: by that SIGKILL, unless it had ended
    already) and the last line it wrote (:func:`_last_line`)."""
    process.kill_group()
    status = process.popen.wait()
    how, last = process.how_ended(status, process.over_memory()), _last_line(process.output)
    _close(process)
    process.release()
    return how, last


@dataclass(eq=False)
class _Queued:
    """A call to a worker, waiting for a slot of its pool (or, once it has one, for the answer)."""

    task: trio.lowlevel.Task
    method: str
    params: Message
    limits: ToolLimits
    deadline: float
    grace: float
    process: Process | None = None
    """The worker the call was sent to."""
    scope: trio.CancelScope | None = None
    """The scope of the call's timeout, whose deadline moves once the call has its slot."""
    channel: Channel | None = None
    """Where its request was sent on its behalf, and under which id."""
    request_id: int = 0
    has_slot: bool = False


class PluginWorker:
    """A supervised worker process serving one plugin's tools (the registry's ``remote``)."""

    def __init__(self, spec: WorkerSpec, process: Process, zygotes: Zygotes | None = None):
        self.spec = spec
        self.zygotes = zygotes
        self.process: Process | None = process
        self.channel: Channel | None = None
        self.failed: str | None = None
        """Why the plugin stopped being served (it ended too often, or its start failed)."""
        self.stopping = False
        self.restarts = 0
        self.memory_kills = 0
        """Times the kernel killed its worker for being over its memory limit (cgroup)."""
        self._dropped_before = 0
        """Lines of output dropped by its workers that have ended."""
        self._ends: list[float] = []
        self._changed = trio.Event()
        self._started = trio.Event()
        self._start_error: str | None = None
        self._calls = itertools.count(1)
        self._in_flight = 0
        self._contexts: dict[int, ToolContext] = {}
        self._requests: dict[int, RequestRecord | None] = {}
        """The request each call with a context serves: what it asks the client is asked in
        that request's name (its caller's share of questions, its log lines)."""
        self.names: dict[str, str] = {}
        """A server's own name of each tool, by public name (``command`` only)."""
        self.prompt_names: dict[str, str] = {}
        """A server's own name of each prompt, by public name (``command`` only)."""
        self.on_stall: Callable[[str, str | None], None] | None = None
        """Called with the plugin's name for each stall the worker's watchdog noticed, and with
        what happened when it stopped a call (see :meth:`~mcphost.plugins.watchdog.Watchdog.report`)."""
        self.on_listed_changed: Callable[[], Awaitable[None]] | None = None
        """Called when what a server lists changed (it said so, or it was restarted with others)."""
        self.subscribed: set[str] = set()
        """The URIs a server is subscribed to for the daemon's clients (``command`` only)."""
        self._unlisted: set[str] = set()
        """The lists a server said changed that are still to be listed again (``command`` only)."""
        self._listing = False
        self._announcing: dict[str, bool] = {}
        """The URIs whose subscribers are being told of a change, each with whether another
        change was announced meanwhile (see :meth:`_announce_updated`)."""

    @property
    def output_dropped(self) -> int:
        """Lines its workers wrote that were not logged, for being over its ``output_rate``."""
        process = self.process
        running = process.log.dropped if process is not None and not process.done.is_set() else 0
        return self._dropped_before + running

    @property
    def hello(self) -> Message:
        """The current worker's answer to ``initialize``."""
        return self.process.hello if self.process is not None else {}

    async def start(self) -> str | None:
        """Begin supervising and run the plugin's start-up hook; the error if it failed."""
        trio.lowlevel.spawn_system_task(self._supervise)
        await self._started.wait()
        return self._start_error

    def close_now(self) -> None:
        """End a worker that was never started (blocking): for commands that only load plugins."""
        if self.process is not None and self.channel is None:
            stop_now(self.process)
            self.process = None

    async def stop(self, drain_timeout: float, hook_timeout: float) -> None:
        """Let the calls in flight finish (up to ``drain_timeout``), run the shut-down hook,
        then end the worker and its process group."""
        self.stopping = True
        process, channel = self.process, self.channel
        if process is None:
            return
        if channel is not None:
            with trio.move_on_after(drain_timeout):
                while self._in_flight and not channel.closed:
                    await self._changed.wait()
            with trio.move_on_after(hook_timeout):
                try:
                    if not self.spec.command:
                        await channel.request("mcphost/stop", {})
                except (ChannelClosed, RemoteError) as error:
                    log.warning("plugin worker did not shut down cleanly", plugin=self.spec.plugin, error=str(error))
            # EOF on its socket (its stdin, for a server) ends it; what it left behind is
            # killed with its group.
            with contextlib.suppress(OSError):
                process.sock.shutdown(socket.SHUT_WR)
            with trio.move_on_after(2.0):
                await process.done.wait()
            process.kill_group()
            await process.done.wait()
        else:
            stop_now(process)
        self._changed.set()

    async def ready(self) -> tuple[bool, str | None]:
        """The plugin's readiness check, run in its worker."""
        if self.failed is not None:
            return False, self.failed
        channel = self.channel
        if channel is None or channel.closed:
            return False, f"its {self.spec.kind} is restarting"
        try:
            if self.spec.command:
                await channel.request("ping", {})
                return True, None
            ready, reason = await channel.request("mcphost/ready", {"plugin": self.spec.plugin})
        except (ChannelClosed, RemoteError) as error:
            return False, f"its {self.spec.kind} did not answer: {error}"
        return bool(ready), reason

    async def call_tool(
        self, tool: RegisteredTool, arguments: dict[str, Any], meta: dict[str, Any], context: ToolContext | None
    ) -> types.CallToolResult | types.InputRequiredResult | Message:
        """Run ``tool`` in the worker (see :class:`~mcphost.plugins.registry.Remote`)."""
        name = self.names[tool.name] if self.spec.command else tool.name
        what = f"tool {tool.name!r}"
        try:
            reply = await self._request(
                "tools/call", {"name": name, "arguments": arguments}, what, tool.limits, meta, context
            )
        except RemoteError as error:
            raise WorkerCallError(f"{what} failed: {error}") from None
        if self.spec.command:
            return _validated(types.CallToolResult, reply, what, self.spec.kind)
        return _result(tool, reply)

    async def read_resource(
        self, entry: RegisteredResource, uri: str, meta: dict[str, Any]
    ) -> types.ReadResourceResult:
        """Read a resource in the worker (see :class:`~mcphost.plugins.registry.Remote`)."""
        what = f"resource {uri!r}"
        reply = await self._answer("resources/read", {"uri": uri}, what, entry.limits, meta, None)
        return _validated(types.ReadResourceResult, reply, what, self.spec.kind)

    async def get_prompt(
        self, prompt: RegisteredPrompt, arguments: dict[str, Any], meta: dict[str, Any], context: ToolContext | None
    ) -> types.GetPromptResult | types.InputRequiredResult:
        """Render a prompt in the worker (see :class:`~mcphost.plugins.registry.Remote`)."""
        name = self.prompt_names[prompt.name] if self.spec.command else prompt.name
        params = {"name": name, "arguments": arguments}
        what = f"prompt {prompt.name!r}"
        reply = await self._answer("prompts/get", params, what, prompt.limits, meta, context)
        if isinstance(reply, dict) and reply.get("resultType") == "input_required":
            return _validated(types.InputRequiredResult, reply, what, self.spec.kind)
        return _validated(types.GetPromptResult, reply, what, self.spec.kind)

    async def complete(
        self, entry: RegisteredPrompt | RegisteredResource, params: types.CompleteRequestParams, meta: dict[str, Any]
    ) -> list[str]:
        """Completions suggested in the worker (see :class:`~mcphost.plugins.registry.Remote`)."""
        ref = params.ref
        what = f"prompt {ref.name!r}" if isinstance(ref, types.PromptReference) else f"resource template {ref.uri!r}"
        request = params.model_dump(mode="json", by_alias=True, exclude_none=True)
        if self.spec.command and isinstance(ref, types.PromptReference):
            request["ref"]["name"] = self.prompt_names[ref.name]
        reply = await self._answer("completion/complete", request, what, entry.limits, meta, None)
        return _validated(types.CompleteResult, reply, f"the completion of {what}", self.spec.kind).completion.values

    async def subscribe(self, uri: str) -> None:
        """Subscribe a hosted server that offers subscriptions to ``uri`` (see
        :class:`~mcphost.plugins.registry.Remote`), and again whenever it is restarted; a
        plugin of ours announces its updates whether or not anyone listens."""
        if self.spec.command:
            self.subscribed.add(uri)
            await self._tell_server("resources/subscribe", uri)

    async def unsubscribe(self, uri: str) -> None:
        """Unsubscribe a hosted server from ``uri`` (see :class:`~mcphost.plugins.registry.Remote`)."""
        if self.spec.command:
            self.subscribed.discard(uri)
            await self._tell_server("resources/unsubscribe", uri)

    async def _tell_server(self, method: str, uri: str) -> None:
        channel = self.channel
        offered = self.hello.get("capabilities", {}).get("resources", {}).get("subscribe") is True
        if channel is None or channel.closed or not offered:
            return  # a server restarting is told every subscription once it is up
        with trio.move_on_after(PING_INTERVAL) as waited:
            try:
                await channel.request(method, {"uri": uri})
            except (ChannelClosed, RemoteError) as error:
                log.warning(
                    "the server refused a subscription", plugin=self.spec.plugin, method=method, error=str(error)
                )
        if waited.cancelled_caught:
            log.warning("the server did not answer a subscription", plugin=self.spec.plugin, method=method)

    async def _answer(
        self,
        method: str,
        params: Message,
        what: str,
        limits: ToolLimits,
        meta: dict[str, Any],
        context: ToolContext | None,
    ) -> Message:
        """:meth:`_request`, the worker's refusal raised as the ``MCPError`` an inline call raises."""
        try:
            reply: Message = await self._request(method, params, what, limits, meta, context)
        except RemoteError as error:
            if error.code == INPUT_REQUIRED:
                raise client_input.InputRequired from None
            raise MCPError(code=error.code, message=str(error), data=error.data) from None
        return reply

    async def _request(
        self,
        method: str,
        params: Message,
        what: str,
        limits: ToolLimits,
        meta: dict[str, Any],
        context: ToolContext | None,
    ) -> Any:
        """Send one call to the worker and wait for its answer, within the call's timeout (and,
        for a worker of ours, :data:`KILL_GRACE`, past which the worker is ended); raises
        :class:`~mcphost.plugins.fence.FenceError` when no answer came, :class:`RemoteError`
        when the worker refused."""
        timeout, call = limits.timeout, next(self._calls)
        if self.spec.command:
            # An MCP server is told of cancellation in MCP's own way, and echoes this token
            # in its progress notifications.
            grace = 0.0
            params = {**params, "_meta": {"progressToken": call}}
        else:
            grace = KILL_GRACE
            params = {**params, "_meta": {META_REQUEST: {**meta, "call": call, **_context_meta(context)}}}
        # The call holds a slot of its pool while the worker runs it, so that the daemon sees
        # it running or waiting; the wait for a slot is bounded by the timeout, as inline.
        pool, deadline = limits.pool, trio.current_time() + timeout
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            pool.acquire_nowait()
            queued = None
            self._in_flight += 1  # a call holding a slot is in flight
        except trio.WouldBlock:
            queued = _Queued(trio.lowlevel.current_task(), method, params, limits, deadline, grace)
        if context is not None:
            self._contexts[call] = context
            self._requests[call] = current_request.get()
        process = None
        try:
            with trio.CancelScope(deadline=deadline + grace if queued is None else deadline) as scope:
                try:
                    if queued is not None:
                        queued.scope = scope
                        try:
                            reply = await self._wait_for_slot(queued)
                        finally:
                            process = queued.process
                        if reply is not None:  # the call that gave the slot back sent the request too
                            return result_of(reply)
                        # Else the worker was not serving: this call waits for it with its slot, as
                        # one that found a slot free does.
                    channel = await self._channel()
                    process = self.process
                    return await channel.request(method, params)
                except ChannelClosed:
                    raise WorkerCallError(f"{what} failed: {await self._ending(process)}") from None
        finally:
            self._contexts.pop(call, None)
            self._requests.pop(call, None)
            if queued is None or queued.has_slot:
                self._give_back(pool)
                self._in_flight -= 1
                if not self._in_flight and self.stopping:  # stop() waits for the calls to drain
                    self._signal()
        if queued is not None and not queued.has_slot:
            raise fence.overran(limits, what, waiting_for_thread=False)
        self._overran(what, timeout, process)

    async def _wait_for_slot(self, queued: _Queued) -> Message | None:
        """Wait in the pool's queue until a call gives its slot back to this one (which holds
        it then): the worker's answer, when that call sent this one's request too, else ``None``."""
        queue = queue_of(queued.limits.pool)
        queue.append(queued)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if queued.channel is None:
                queue.remove(queued)
            else:
                queued.channel.abandon(queued.request_id)
            return trio.lowlevel.Abort.SUCCEEDED

        reply: Message | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return reply

    def _starting(self, queued: _Queued) -> None:
        """A call that waited for its slot has it now: its timeout, less the wait, goes on."""
        deadline = queued.deadline
        if not self.spec.command:
            if queued.method == "tools/call":
                # The wait counts against the call's timeout, as inline: the worker is
                # given what is left of it (none, when the slot came as the deadline passed).
                queued.params["_meta"][META_REQUEST]["budget"] = max(0.0, deadline - trio.current_time())
            else:  # resources and prompts keep their whole timeout in the worker
                deadline = trio.current_time() + queued.limits.timeout
        assert queued.scope is not None
        queued.scope.deadline = deadline + queued.grace

    def _give_back(self, pool: trio.CapacityLimiter) -> None:
        """Give this task's slot of ``pool`` back, handing it on to the first call waiting for
        one. While the worker serves, that call's request is sent here, on its behalf: it
        wakes once, for the answer, rather than once for the slot and once more for the answer."""
        pool.release()
        queue = queue_of(pool)
        if not queue or pool.available_tokens < 1:
            return
        queued = queue.popleft()
        pool.acquire_on_behalf_of_nowait(queued.task)
        queued.has_slot = True
        self._in_flight += 1
        self._starting(queued)
        channel = self.channel
        if self.failed is not None or channel is None or channel.closed:
            trio.lowlevel.reschedule(queued.task, outcome.Value(None))
            return
        queued.process, queued.channel = self.process, channel
        queued.request_id = channel.start_request(queued.method, queued.params, queued.task)

    def _overran(self, what: str, timeout: float, process: Process | None) -> NoReturn:
        """The call overran its deadline: say why, ending the worker if it could not end the call."""
        if process is None:
            raise fence.CallTimeout(f"{what} timed out after {timeout:g}s: {self._why_down()}")
        if self.spec.command:
            raise fence.CallTimeout(f"{what} timed out after {timeout:g}s and was cancelled")
        self._end(process, f"{what} overran its timeout of {timeout:g}s and could not be cancelled")
        raise fence.CallTimeout(
            f"{what} timed out after {timeout:g}s and could not be cancelled, "
            f"so the worker of plugin {self.spec.plugin!r} was ended"
        )

    async def _channel(self) -> Channel:
        """The running worker's channel, waiting while it (re)starts."""
        while True:
            if self.failed is not None:
                raise WorkerCallError(f"plugin {self.spec.plugin!r} is not running: {self.failed}")
            channel = self.channel
            if channel is not None and not channel.closed:
                return channel
            if self.stopping:
                raise WorkerCallError(f"plugin {self.spec.plugin!r} is stopping")
            await self._changed.wait()

    def _why_down(self) -> str:
        return f"the {self.spec.kind} of plugin {self.spec.plugin!r} is restarting"

    async def _ending(self, process: Process | None) -> str:
        """What a caller is told when the worker died under its call: how it ended, once known."""
        if process is None:
            return self._why_down()
        with trio.move_on_after(1.0):
            await process.done.wait()
        return f"the {self.spec.kind} of plugin {self.spec.plugin!r} {process.ended or 'stopped answering'}"

    def _end(self, process: Process, reason: str) -> None:
        log.error("ending plugin worker", plugin=self.spec.plugin, pid=process.pid, reason=reason)
        process.kill_group()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _supervise(self) -> None:
        """Run the worker; when it ends, start another after a backoff, or settle as failed."""
        try:
            await self._supervise_loop()
        except Exception as error:  # never let a supervisor's bug end the daemon
            log.error("plugin worker supervisor failed", plugin=self.spec.plugin, exc_info=error)
            self.failed = f"its supervisor failed: {error}"
        finally:
            self._started.set()
            self._signal()

    async def _supervise_loop(self) -> None:
        first = True
        while True:
            process = self.process
            if process is not None:
                error = await self._run(process)
                if first and error is not None:
                    self._start_error, self.stopping = error, True
                    return
            first = False
            if self.stopping:
                return
            now = time.monotonic()
            self._ends = [t for t in self._ends if now - t < self.spec.restart_window] + [now]
            reason = process.ended if process is not None else "did not start"
            log.error("plugin worker ended", plugin=self.spec.plugin, how=reason)
            if len(self._ends) > self.spec.max_restarts:
                self.failed = (
                    f"its {self.spec.kind} ended {len(self._ends)} times within {self.spec.restart_window:g}s; "
                    f"the last time it {reason}"
                )
                log.error("plugin failed: its worker keeps ending", plugin=self.spec.plugin, reason=self.failed)
                return
            await trio.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (len(self._ends) - 1)))
            if self.stopping:
                return
            if self.zygotes is not None:
                self.zygotes.ensure()
            listed = _listed(self.hello)
            try:
                self.process = await trio.to_thread.run_sync(spawn, self.spec, self.zygotes)
                self.restarts += 1
                if self.spec.command and _listed(self.hello) != listed and self.on_listed_changed is not None:
                    await self.on_listed_changed()
            except WorkerStartError as error:
                log.error("plugin worker did not start", plugin=self.spec.plugin, error=str(error))
                self.process = None
            if self.stopping and self.process is not None:
                stop_now(self.process)
                return

    async def _run(self, process: Process) -> str | None:
        """Serve through ``process`` until it ends; returns why its start-up hook failed, if it did."""
        server = bool(self.spec.command)
        channel = Channel(
            process.sock,
            self._server_asked if server else self._asked,
            self._server_notified if server else self._notified,
            max_message=self.spec.max_message,
            stray=process.log.stray if server else None,  # a server's stdout is its side of the wire
            max_handling=self.spec.max_handling,
            # The frames being handled hold no more than one may: a plugin sending big log
            # messages to a client that reads slowly took 2 GB of the daemon's in 9 s.
            max_handling_bytes=self.spec.max_message,
        )
        error = None
        try:
            async with trio.open_nursery() as nursery:
                output_done = trio.Event()
                nursery.start_soon(self._relay_output, process, output_done)
                nursery.start_soon(self._serve_channel, channel, process)
                nursery.start_soon(self._start_hook, channel, process)
                nursery.start_soon(self._watch, channel, process)
                await trio.lowlevel.wait_readable(process.pidfd)
                process.kill_group()  # whatever it started goes with it
                # A forked worker's status comes from the fork server, a moment after its end.
                status = await trio.to_thread.run_sync(process.popen.wait)
                over_memory = process.over_memory()  # memory.events, read once
                process.ended = process.how_ended(status, over_memory)
                self.memory_kills += over_memory
                with trio.move_on_after(0.5):
                    await output_done.wait()
                nursery.cancel_scope.cancel()
            error = process.start_error
        finally:
            if self.channel is channel:
                self.channel = None
            _close(process)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(process.release)
            self._dropped_before += process.log.dropped  # with done set, in one step: counted once
            process.done.set()
            self._signal()
        return error

    async def _watch(self, channel: Channel, process: Process) -> None:
        """Ping the worker now and then: one that stops answering is ended (and restarted)."""
        while True:
            await trio.sleep(PING_INTERVAL)
            held_back = channel.held_back
            with trio.move_on_after(PING_INTERVAL):
                try:
                    await channel.request("ping", {})
                except (ChannelClosed, RemoteError):
                    return  # ended already; or a server that does not know ping, which is alive
                continue
            if channel.held_back != held_back or channel.holding_back:
                continue  # the daemon stopped reading (its handling bound): the answer waits behind what came before
            self._end(process, f"it did not answer a ping within {PING_INTERVAL:g}s")
            return

    async def _start_hook(self, channel: Channel, process: Process) -> None:
        try:
            answer = {} if self.spec.command else await channel.request("mcphost/start", {})
        except (ChannelClosed, RemoteError) as error:
            answer = {"error": f"mcphost_startup did not finish: {error}"}
        if answer.get("error"):
            process.start_error = answer["error"]
            self._end(process, f"its start-up hook failed: {answer['error']}")
        else:
            self.channel = channel
            self._started.set()
            self._signal()
            for uri in list(self.subscribed):  # what a server that was restarted has forgotten
                await self._tell_server("resources/subscribe", uri)

    async def _serve_channel(self, channel: Channel, process: Process) -> None:
        await channel.run()
        if channel.broken is not None:
            self._end(process, channel.broken)
        elif not self.stopping:
            # Its end cancels this wait (the usual case: it closed the connection as it ended).
            await trio.sleep(CLOSED_GRACE)
            self._end(process, "it closed its connection to the daemon and did not end")

    async def _relay_output(self, process: Process, done: trio.Event) -> None:
        try:
            await process.log.relay(process.output)
        finally:
            done.set()

    async def _asked(self, message: Message) -> None:
        """What a tool does through its context: progress, log messages, closing its stream,
        going on as a task, and questions to the client (elicitation, sampling, roots)."""
        channel = self._current()
        params, method = message.get("params") or {}, message.get("method")
        call = params.get("call", 0)
        context = self._contexts.get(call)
        if context is None:
            channel.respond_error(message["id"], INVALID_PARAMS, "no call in flight has this id")
            return
        serving = current_request.set(self._requests.get(call))
        try:
            answer: Any = {}
            if method == "mcphost/progress":
                await context.report_progress(params["progress"], params.get("total"), params.get("message"))
            elif method == "mcphost/log":
                await context.log(params["level"], params.get("data"), params.get("logger"))
            elif method == "mcphost/close_sse_stream":
                await context.close_sse_stream()
            elif method == "mcphost/detach":
                answer = await context.detach()
            elif method == "mcphost/ask" and params.get("kind") in _ASKS:
                request_type, result_type = _ASKS[params["kind"]]
                request = request_type.model_validate(params["request"], by_name=False)
                result = await context._ask(request, result_type, params.get("key"), params["kind"])
                answer = result.model_dump(mode="json", by_alias=True, exclude_none=True)
            else:
                channel.respond_error(message["id"], METHOD_NOT_FOUND, f"unknown method {method!r}")
                return
        except client_input.InputRequired:
            channel.respond_error(message["id"], INPUT_REQUIRED, "input required")
        except MCPError as error:
            channel.respond_error(message["id"], error.error.code, error.error.message, error.error.data)
        except Exception as error:
            channel.respond_error(message["id"], -32000, str(error))
        else:
            channel.respond(message["id"], answer)
        finally:
            current_request.reset(serving)

    async def _notified(self, message: Message) -> None:
        """The plugin announced that one of its resources changed: its subscribers hear of it;
        or the worker's watchdog found its code holding the worker's event loop."""
        params, method = message.get("params") or {}, message.get("method")
        if method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
            await self._announce_updated(params["uri"])
        elif method == STALLED and self.on_stall is not None:
            degraded = params.get("degraded")
            self.on_stall(self.spec.plugin, None if degraded is None else str(degraded)[:MAX_REASON])

    async def _server_asked(self, message: Message) -> None:
        """A server's request: ``ping``; ``roots/list``, answered from ``[plugins.<name>] roots``
        (a server shared by every client must not see one client's roots); sampling and
        elicitation, put to the client whose call is the only one in flight on the server
        (the request does not say which call it serves), refused otherwise."""
        channel, method, request_id = self._current(), message.get("method"), message["id"]
        if (standing := _standing_answer(str(method), self.spec)) is not None:
            channel.respond(request_id, standing)
            return
        kind = {"sampling/createMessage": "sample", "elicitation/create": "elicit"}.get(str(method))
        if kind is None:
            channel.respond_error(request_id, METHOD_NOT_FOUND, f"mcphost does not answer {method!r}")
            return
        if len(self._contexts) != 1:
            refusal = f"{len(self._contexts)} calls are in flight: which client to ask is not known"
            channel.respond_error(request_id, INVALID_REQUEST, refusal)
            return
        (call,) = self._contexts
        await self._asked(
            {
                "id": request_id,
                "method": "mcphost/ask",
                "params": {
                    "call": call,
                    "kind": kind,
                    "request": {"method": method, "params": message.get("params") or {}},
                },
            }
        )

    async def _server_notified(self, message: Message) -> None:
        """A server's notification: progress goes to the call it names, log messages to the
        daemon's log, a resource's update to its subscribers, a changed list has it listed
        again; the rest is dropped."""
        params, method = message.get("params") or {}, message.get("method")
        if method == "notifications/progress":
            context = self._contexts.get(params.get("progressToken", 0))
            if context is not None:
                await context.report_progress(params.get("progress", 0), params.get("total"), params.get("message"))
        elif method == "notifications/message" and self.process is not None:
            self.process.log.message(params.get("level"), params.get("data"))
        elif method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
            await self._announce_updated(params["uri"])
        elif method in LISTED_BY:
            await self._relist_all(LISTED_BY[method])

    async def _announce_updated(self, uri: str) -> None:
        """Tell the subscribers of ``uri`` that it changed: at once, or, while they are being
        told of an earlier change, once more when that is done, for every change announced
        meanwhile (a client reads the resource again either way). A plugin announcing changes
        without end costs each subscriber one notification at a time, not one for each of its
        (20,000 announced at once reached each of 3 subscribers 46 times, not 20,000)."""
        if uri in self._announcing:
            self._announcing[uri] = True
            return
        self._announcing[uri] = False
        try:
            while True:
                await notify.notify_resource_updated(uri)
                if not self._announcing[uri]:
                    return
                self._announcing[uri] = False
        finally:
            del self._announcing[uri]

    async def _relist_all(self, keys: tuple[str, ...]) -> None:
        """List ``keys`` again: at once, or, while a listing runs, once it is done, together with
        every other list a server said changed meanwhile. One listing at a time waits on the
        server: a burst of ``list_changed`` cannot fill the channel's handlers (see
        :func:`handling_bound`) with tasks waiting for answers only that channel can read."""
        self._unlisted.update(keys)
        if self._listing:
            return
        self._listing = True
        try:
            while self._unlisted and (channel := self.channel) is not None:
                wanted = tuple(self._unlisted)
                self._unlisted.clear()
                await self._relist(channel, wanted)
        finally:
            self._listing = False

    async def _relist(self, channel: Channel, keys: tuple[str, ...]) -> None:
        """List again (every page) what a server said changed, and have its plugin's catalogue follow."""
        assert self.process is not None
        try:
            hello = self.process.hello | await _lists(channel.request, keys, self.hello["capabilities"])
        except (ChannelClosed, ValueError) as error:
            log.error(
                "a list of the server's could not be listed", plugin=self.spec.plugin, lists=keys, error=str(error)
            )
            return
        if self.process is not None and _listed(hello) != _listed(self.process.hello):
            self.process.hello = hello
            log.info("what the server lists changed", plugin=self.spec.plugin, lists=list(keys))
            if self.on_listed_changed is not None:
                await self.on_listed_changed()

    def _current(self) -> Channel:
        # Requests come on the channel of the call that asks, which is the current one.
        assert self.channel is not None
        return self.channel


def _listed(hello: Message) -> list[Any]:
    """What a server's hello lists (tools, resources, templates, prompts)."""
    return [hello.get(key) for key, *_ in SERVER_LISTS]


def _context_meta(context: ToolContext | None) -> dict[str, Any]:
    """What a worker's ``ToolContext`` needs to know of the call, from the daemon's."""
    if context is None:
        return {}
    capabilities = context.client_capabilities
    return {
        "session": context.session_id,
        "protocol_version": context.protocol_version,
        "identity": context.identity,
        "capabilities": None if capabilities is None else capabilities.model_dump(mode="json", exclude_none=True),
        "input_responses": dict(context.input_responses),
        "request_state": context.request_state,
    }


def _result(tool: RegisteredTool, reply: Any) -> types.CallToolResult | types.InputRequiredResult | Message:
    """The tool call's result from the worker's answer (see :func:`mcphost.plugins.worker.threads.reply_of`),
    or the error it says the call ended with. A plugin can make its worker answer anything:
    what is not such an answer is the call's error, never an exception of another kind here."""
    what = f"tool {tool.name!r}"
    if not isinstance(reply, dict):
        raise WorkerCallError(f"{what} failed: its worker sent an answer that is not a JSON object")
    status = reply.get("status")
    if status == "ok":
        result = reply.get("result")
        if not isinstance(result, dict):
            raise WorkerCallError(f"{what} failed: its worker sent a result that is not a JSON object")
        if result.get("resultType") == "input_required":  # the tool asked the client itself
            return _validated(types.InputRequiredResult, result, what, "worker")
        # The result stays the JSON object the worker wrote: whatever answers the client
        # validates it against the client's protocol revision, as it does every result
        # (:func:`mcp_types.methods.serialize_server_result`), and a model made of it here
        # would only be dumped back into this object first.
        return result
    if status == "input_required":
        raise client_input.InputRequired
    message = str(reply.get("message", f"{what} failed"))
    if status == "timeout":
        raise fence.CallTimeout(message)
    if (code := wire.error_code(reply.get("code"))) is not None:
        raise MCPError(code=code, message=message, data=reply.get("data"))
    # The status goes to the metrics, the request's log line and its trace span: one that no
    # call ends with (a string or not: the statuses are all strings) is a hostile plugin's
    # words, and an error.
    raise WorkerCallError(message, status if status in TOOL_STATUSES else "error")


def _validated(model: type[Answer], reply: Any, what: str, kind: str) -> Answer:
    """``reply`` as a ``model``, else :class:`WorkerCallError` saying where it is not one (a
    hosted server's bug, usually: the client is not to blame, nor gets an internal error)."""
    try:
        return model.model_validate(reply, by_name=False)
    except ValidationError as error:
        # Where and what, never the value: it may be anything the server holds.
        wrong = error.errors(include_url=False, include_input=False)
        where = ".".join(map(str, wrong[0]["loc"])) or "the result"
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        message = f"{what} failed: its {kind} sent an invalid result: {where}: {wrong[0]['msg']}{more}"
        raise WorkerCallError(message) from None


def catalogue_of(
    worker: PluginWorker, plugin: str, threads: tuple[trio.CapacityLimiter, trio.CapacityLimiter], settings: Any = None
) -> Registry:
    """Catalogue entries for what a worker listed: tools, resources, templates and prompts
    (``threads``: the plugin's share and the process's budget, as for any tool; its calls
    hold no thread of this process). Entries that share a concurrency pool in the worker
    share one here, which a call holds while the worker runs it: the daemon counts a
    worker's calls running and waiting per plugin as it counts an inline plugin's."""
    pools: dict[int, trio.CapacityLimiter] = {}

    def limits(entry: Message) -> ToolLimits:
        concurrency = entry["max_concurrency"]
        pool = pools.setdefault(entry["pool"], trio.CapacityLimiter(concurrency))
        return ToolLimits(entry["timeout"], concurrency, entry["max_result_bytes"], pool, threads)

    hello = worker.hello
    tools = {}
    for entry in hello.get("tools", ()):
        tool = types.Tool.model_validate(entry["wire"], by_name=False)
        tools[tool.name] = RegisteredTool(
            tool.name, plugin, None, tool, limits(entry), settings, entry.get("context"), entry.get("task"), worker
        )
    resources, templates = {}, []
    for entry in hello.get("resources", ()):
        if "uriTemplate" in entry["wire"]:
            template = types.ResourceTemplate.model_validate(entry["wire"], by_name=False)
            from mcp.shared.uri_template import UriTemplate  # only for a plugin with resource templates

            parsed = UriTemplate.parse(template.uri_template)
            definition = ResourceDef(remote_only, template.uri_template)
            templates.append(RegisteredResource(plugin, definition, parsed, template, limits(entry), worker))
        else:
            static = types.Resource.model_validate(entry["wire"], by_name=False)
            definition = ResourceDef(remote_only, str(static.uri))
            resources[str(static.uri)] = RegisteredResource(plugin, definition, None, static, limits(entry), worker)
    prompts = {}
    for entry in hello.get("prompts", ()):
        prompt = types.Prompt.model_validate(entry["wire"], by_name=False)
        prompts[prompt.name] = RegisteredPrompt(
            prompt.name,
            plugin,
            None,
            prompt,
            limits(entry),
            settings,
            PromptDef(remote_only, prompt.name),
            entry.get("context"),
            worker,
        )
    return Registry(tools, resources, tuple(templates), prompts)
