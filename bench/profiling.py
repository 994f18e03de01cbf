"""Sampling profiles of a server under load (py-spy) and what they say: self time per
function, and where it is spent by owner (mcphost, the MCP SDK, Hypercorn, structlog...).

py-spy writes a speedscope file (one sampled profile per thread, stacks root first). The
event loop runs on the main thread, so that is where a server's request-path cost shows;
worker threads (the synchronous tool runs there) are summarised separately, and their
idle waits, which py-spy cannot always tell from work, are left out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# (substring of the frame's file path, owner); the first match wins, so the more
# specific entries come first.
OWNERS: tuple[tuple[str, str], ...] = (
    ("/bench/plugins/", "the tool (plugin)"),
    ("/mcphost/", "mcphost"),
    ("site-packages/mcp_types/", "MCP SDK"),
    ("site-packages/mcp/", "MCP SDK"),
    ("site-packages/structlog/", "structlog"),
    ("site-packages/hypercorn/", "Hypercorn"),
    ("site-packages/h11/", "h11 (Hypercorn's HTTP/1.1 parser)"),
    ("site-packages/trio/", "Trio"),
    ("site-packages/anyio/", "anyio"),
    ("site-packages/sse_starlette/", "sse-starlette (the SDK's SSE responses)"),
    ("site-packages/starlette/", "Starlette"),
    ("site-packages/pydantic", "pydantic"),
    ("site-packages/opentelemetry/", "OpenTelemetry"),
    ("site-packages/prometheus_client/", "prometheus_client"),
    ("site-packages/uvicorn/", "uvicorn"),
    ("site-packages/", "other libraries"),
    ("/logging/", "stdlib logging"),
    ("/json/", "stdlib json"),
    ("/asyncio/", "asyncio"),
    ("/concurrent/", "stdlib threading"),
    ("/threading.py", "stdlib threading"),
)

# A worker thread whose innermost frame is one of these is waiting for work, not working.
IDLE_LEAVES = frozenset({"WorkerThread._work", "Condition.wait", "_worker", "Thread.join", "Event.wait"})
LOOP_WAITS = frozenset({"EpollIOManager.get_events", "EpollSelector.select"})
"""An event loop waiting for its sockets: idle, though py-spy does not always see it so."""


def owner(path: str) -> str:
    """Who a source file belongs to."""
    for needle, name in OWNERS:
        if needle in path:
            return name
    if "<" in path:  # generated code (attrs, dataclasses)
        return "generated code"
    return "stdlib (other)"


def short_path(path: str) -> str:
    """A file path without the interpreter's, the venv's or the checkout's prefix."""
    if "/mcphost/" in path and "site-packages/" not in path:
        return "mcphost/" + path.rsplit("/mcphost/", 1)[1]
    for marker in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/lib/python3.13/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/main/", 1)[-1]


GENERIC = frozenset({"stdlib (other)", "generated code"})
"""Owners of helpers (contextlib, weakref sets, attrs-generated ``__init__``) whose time
belongs to whoever called them."""


LOOP_OWNERS = frozenset({"Trio", "anyio", "asyncio"})
"""The event loop and its compatibility layer."""


SCHEDULER = ("(the event loop's scheduler: no caller above it)", "", "event loop")


def loop_caller(stack: list[int], frames: list[dict[str, Any]]) -> tuple[str, str, str]:
    """For a sample inside the event loop, the innermost frame above it that is not the
    loop's own; reaching the scheduler's run loop first means the loop was scheduling."""
    for index in reversed(stack):
        frame = frames[index]
        if frame["name"] == "unrolled_run" or frame["name"].endswith("_run_once"):
            return SCHEDULER
        who = owner(frame["file"])
        if who not in LOOP_OWNERS | GENERIC:
            return (frame["name"], short_path(frame["file"]), who)
    return SCHEDULER


def attributed_owner(stack: list[int], frames: list[dict[str, Any]]) -> str:
    """The owner of a sample's innermost frame, looking through generic helpers to the
    innermost caller that is not one (a Trio cancel scope's ``contextlib`` exit is Trio's)."""
    for index in reversed(stack):
        who = owner(frames[index]["file"])
        if who not in GENERIC:
            return who
    return owner(frames[stack[-1]]["file"])


@dataclass
class ProfileSummary:
    """What one profile shows, JSON-ready. Percentages are of the main thread's samples."""

    rate: int
    """Samples per second py-spy took."""
    samples: int
    """Busy samples of the main thread (the event loop); py-spy drops idle ones."""
    top_self: list[dict[str, Any]] = field(default_factory=list)
    """Functions with the most self time: ``function``, ``file``, ``owner``, ``percent``."""
    owners_self: dict[str, float] = field(default_factory=dict)
    """Self time per owner, helpers attributed to their caller's owner."""
    mcphost_inclusive: list[dict[str, Any]] = field(default_factory=list)
    """mcphost's functions by the time spent in and under them (where the stack shows it:
    the SDK runs each request's handler in a task of its own, so a stack rooted in the
    HTTP app does not contain the handler)."""
    logging_percent: float = 0.0
    """Samples with a structlog or stdlib ``logging`` frame anywhere on the stack."""
    worker_busy_percent: float = 0.0
    """Busy samples of all worker threads together, relative to the main thread's."""
    imports_percent: float = 0.0
    """Samples spent importing modules (an import-system frame on the stack)."""
    loop_callers: list[dict[str, Any]] = field(default_factory=list)
    """Time inside Trio/anyio (or asyncio) by the code that called into it: the innermost
    frame above the event-loop library that belongs to anything else."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _process(profile: dict[str, Any]) -> int | None:
    """The pid a profile's thread belongs to (py-spy names them ``Process P Thread T ...``
    when it follows subprocesses), or ``None`` when the name does not say."""
    match = re.match(r"Process (\d+) ", profile["name"])
    return int(match[1]) if match else None


def _thread(profile: dict[str, Any]) -> int | None:
    """The thread id of a profile's thread (``... Thread T ...`` in py-spy's name)."""
    match = re.search(r"Thread (\d+)", profile["name"])
    return int(match[1]) if match else None


def _thread_kind(profile: dict[str, Any]) -> str:
    """A profile's thread name without its number (``mcphost-call_3``: ``mcphost-call_``)."""
    match = re.search(r'"(.*)"', profile["name"])
    return match[1].rstrip("0123456789") if match else profile["name"]


def summarise(speedscope: Path, rate: int, top: int = 20, pid: int | None = None) -> ProfileSummary:
    """Read a py-spy speedscope file and compute the figures of :class:`ProfileSummary`
    for the process ``pid`` (the file may hold its workers' threads too)."""
    data = json.loads(speedscope.read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    profiles = [p for p in data["profiles"] if pid is None or _process(p) in (pid, None)]
    main = next((p for p in profiles if "MainThread" in p["name"]), profiles[0])
    stacks: list[list[int]] = [s for s in main["samples"] if s]
    total = len(stacks) or 1

    def pct(n: int) -> float:
        return round(100.0 * n / total, 1)

    by_function: Counter[tuple[str, str, str]] = Counter()
    owners: Counter[str] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    logging_samples = 0
    import_samples = 0
    callers: Counter[tuple[str, str, str]] = Counter()
    for stack in stacks:
        leaf = frames[stack[-1]]
        by_function[(leaf["name"], short_path(leaf["file"]), owner(leaf["file"]))] += 1
        who = attributed_owner(stack, frames)
        owners[who] += 1
        if who in LOOP_OWNERS:
            callers[loop_caller(stack, frames)] += 1
        on_stack = {owner(frames[i]["file"]) for i in stack}
        logging_samples += bool(on_stack & {"structlog", "stdlib logging"})
        import_samples += any(frames[i]["name"] == "_find_and_load" for i in stack)
        inclusive.update(
            {(frames[i]["name"], short_path(frames[i]["file"])) for i in stack if owner(frames[i]["file"]) == "mcphost"}
        )

    worker_busy = 0
    for profile in profiles:
        if profile is not main:
            worker_busy += sum(1 for s in profile["samples"] if s and frames[s[-1]]["name"] not in IDLE_LEAVES)

    return ProfileSummary(
        rate=rate,
        samples=len(stacks),
        top_self=[
            {"function": name, "file": path, "owner": who, "percent": pct(n)}
            for (name, path, who), n in by_function.most_common(top)
        ],
        owners_self={who: pct(n) for who, n in owners.most_common()},
        # Entry points (cli.main and the like) sit under every sample and say nothing.
        mcphost_inclusive=[
            {"function": name, "file": path, "percent": pct(n)}
            for (name, path), n in inclusive.most_common(15)
            if n < 0.95 * total
        ][:10],
        logging_percent=pct(logging_samples),
        worker_busy_percent=pct(worker_busy),
        imports_percent=pct(import_samples),
        loop_callers=[
            {"function": name, "file": path, "owner": who, "percent": pct(n)}
            for (name, path, who), n in callers.most_common(12)
        ],
    )


# --- where a call's time goes -------------------------------------------------------------

HTTP = "HTTP server and parser (Hypercorn + h11, uvicorn)"
SDK = "MCP SDK (with Starlette, sse-starlette)"
REQUEST_PATH = "mcphost: request path (auth, limits, dispatch, fence)"
HOP = "mcphost: the hop to the worker, daemon side"
OBSERVE = "logs and metrics (structlog, logging, prometheus_client)"
LOOP = "event loop: scheduling, thread hand-offs"
WORKER_LOOP = "worker: its event loop, wire and dispatch"
WORKER_FENCE = "worker: mcphost's fence and result checks"
WORKER_SDK = "worker: MCP SDK types"
TOOL = "the tool (plugin)"
OTHER = "other"
STAGES = (HTTP, SDK, REQUEST_PATH, OBSERVE, LOOP, HOP, WORKER_LOOP, WORKER_FENCE, WORKER_SDK, TOOL, OTHER)
"""The stages of a call, in the order a request meets them (roughly)."""

_STAGE_OF_OWNER = {
    "Hypercorn": HTTP,
    "h11 (Hypercorn's HTTP/1.1 parser)": HTTP,
    "uvicorn": HTTP,
    "MCP SDK": SDK,
    "Starlette": SDK,
    "sse-starlette (the SDK's SSE responses)": SDK,
    "structlog": OBSERVE,
    "stdlib logging": OBSERVE,
    "prometheus_client": OBSERVE,
    TOOL: TOOL,
}
_CHARGED_TO_CALLER = GENERIC | LOOP_OWNERS | {"pydantic", "stdlib json", "stdlib threading"}
"""Owners whose time belongs to the code that called them: the event loop's (unless it was
scheduling), validation, JSON and helpers."""
WORKER_CODE = "/mcphost/plugins/worker/"
REFERENCE_APP, REFERENCE_TOOLS = "/bench/apps/sdk_app.py", frozenset({"add", "add_async"})
"""The reference's tools live in its app's file, whose ``main`` is under every sample."""


def stage(stack: list[int], frames: list[dict[str, Any]], in_worker: bool) -> str:
    """Which stage of a call a sample is in: the innermost frame that is not a helper,
    validation, JSON or the event loop's decides (the event loop's own when it was
    scheduling, with nobody above it)."""
    for index in reversed(stack):
        frame = frames[index]
        if frame["name"] == "unrolled_run" or frame["name"].endswith("_run_once"):
            break
        path = frame["file"]
        who = owner(path)
        if who == TOOL or (path.endswith(REFERENCE_APP) and frame["name"] in REFERENCE_TOOLS):
            return TOOL
        if who in _CHARGED_TO_CALLER:
            continue
        if in_worker:
            if who == "mcphost":
                return WORKER_LOOP if WORKER_CODE in path else WORKER_FENCE
            return WORKER_SDK if who == "MCP SDK" else WORKER_LOOP
        if who == "mcphost":
            return HOP if WORKER_CODE in path else REQUEST_PATH
        return _STAGE_OF_OWNER.get(who, OTHER)
    return WORKER_LOOP if in_worker else LOOP


def stage_shares(
    speedscope: Path, server_pid: int, thread_cpu: Mapping[int, float] | None = None
) -> dict[str, dict[str, float]]:
    """The share of CPU in each stage, per process: ``{"server": {...}, "workers": {...}}``,
    each summing to 1 over every thread of that process (or of all its workers).

    With ``thread_cpu`` (the CPU seconds each thread used while the profile was taken, by
    thread id, from ``/proc``), the CPU of each kind of thread (its name without a number:
    the event loop, a pool's threads together) is split by the stages of its busy samples:
    a thread that sits blocked in a system call py-spy cannot tell from work (the fork
    server's client in ``recvmsg``) used no CPU and so weighs nothing, whatever its samples
    say, and a pool of threads each busy too briefly to be sampled much still weighs what
    it ran. Without it, each busy sample counts the same. A thread waiting for work is idle,
    not busy, either way."""
    data = json.loads(speedscope.read_text())
    frames: list[dict[str, Any]] = data["shared"]["frames"]
    busy: dict[tuple[str, str], Counter[str]] = {}
    cpu: defaultdict[tuple[str, str], float] = defaultdict(float)
    for profile in data["profiles"]:
        in_worker = _process(profile) not in (server_pid, None)
        kind = ("workers" if in_worker else "server", _thread_kind(profile))
        busy.setdefault(kind, Counter()).update(
            stage(stack, frames, in_worker)
            for stack in profile["samples"]
            if stack and frames[stack[-1]]["name"] not in IDLE_LEAVES | LOOP_WAITS
        )
        tid = _thread(profile)
        cpu[kind] += 0.0 if thread_cpu is None or tid is None else thread_cpu.get(tid, 0.0)
    weights: dict[str, defaultdict[str, float]] = {"server": defaultdict(float), "workers": defaultdict(float)}
    for kind, stages in busy.items():
        side = weights[kind[0]]
        if thread_cpu is None:
            for name, n in stages.items():
                side[name] += n
        elif not stages:  # it ran (or not), yet every sample looked idle
            side[OTHER] += cpu[kind]
        else:
            for name, n in stages.items():
                side[name] += cpu[kind] * n / stages.total()
    return {
        side: {name: w / sum(weighed.values()) for name, w in weighed.items() if w}
        for side, weighed in weights.items()
        if sum(weighed.values())
    }


def call_breakdown(shares: dict[str, dict[str, float]], cpu_us_per_call: dict[str, float]) -> dict[str, float]:
    """Microseconds of CPU per call in each stage: each process's CPU per call (``server``,
    ``workers``, from ``/proc``) split by its profile's shares."""
    out: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    for side, split in shares.items():
        for name, share in split.items():
            out[name] += share * cpu_us_per_call.get(side, 0.0)
    return {name: round(us, 1) for name, us in out.items() if us}


def py_spy_path() -> str | None:
    """The ``py-spy`` binary: next to this interpreter (the venv) or on ``PATH``."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(
    pid: int, output: Path, duration: float, rate: int, fmt: str = "speedscope", subprocesses: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` (and its descendants, with ``subprocesses``) for
    ``duration`` seconds (returns at once); ``fmt`` is py-spy's: ``speedscope`` (what
    :func:`summarise` reads) or ``flamegraph`` (SVG)."""
    binary = py_spy_path()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration))),
            "--rate",
            str(rate),
            "--format",
            fmt,
            "--output",
            str(output),
            *(["--subprocesses"] if subprocesses else []),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def import_times(python: str, code: str, top: int = 10, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -X importtime -c <code>``: what start-up spends importing.

    Every module is imported once, so summing self times by top-level package partitions
    the total: ``packages`` is that partition (largest first), ``modules`` the single
    modules with the most self time, ``total_ms`` the whole import.
    """
    completed = subprocess.run(
        [python, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    rows = []
    for line in completed.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            rows.append((match["name"], int(match["self"]) / 1000, int(match["cumulative"]) / 1000))
    packages: dict[str, float] = {}
    for name, self_ms, _ in rows:
        package = name.split(".", 1)[0]
        packages[package] = packages.get(package, 0.0) + self_ms
    largest = sorted(packages.items(), key=lambda item: -item[1])[:top]
    return {
        "total_ms": round(sum(r[1] for r in rows), 1),
        "packages": [{"package": p, "self_ms": round(ms, 1)} for p, ms in largest],
        "modules": [
            {"module": n, "self_ms": round(s_, 1), "cumulative_ms": round(c, 1)}
            for n, s_, c in sorted(rows, key=lambda r: -r[1])[:top]
        ],
    }


_IMPORT_LINE = re.compile(r"^import time:\s+(?P<self>\d+) \|\s+(?P<cumulative>\d+) \|(?P<indent> +)(?P<name>\S+)")
