"""mcphost's benchmark: ``python bench/run.py`` (about 20 minutes) or ``--quick`` (about 5).

It compares, on the same machine and in the same run, servers of the same no-op tool
``add(a: int, b: int) -> int``, written sync and ``async``:

1. the MCP SDK's ``MCPServer`` on uvicorn (the reference: what a Python user would pick);
2. the same SDK app on Hypercorn's Trio worker (mcphost's HTTP stack);
3. a bare ASGI app with a fixed answer on Hypercorn/Trio (the ceiling of that stack);
4. mcphost in its production configuration (``bench/mcphost-production.toml``), the plugin
   in a worker process, and 5. the same with the plugin inline;

and, in ``workers``, the official TypeScript SDK on express (``bench/peers/ts``).

Scenarios (``--only`` picks some): ``calls`` (tools/call throughput and latency at each
concurrency on both protocol paths), ``profile`` (py-spy under load: where the CPU goes),
``tools_list`` (50 plugins x 10 tools), ``memory`` (RSS per idle session), ``cold_start``
(exec to READY=1 and to the first 200 from /health with 10 plugins), ``start_instructions``
(the same start counted in instructions by callgrind; only with ``--only``), ``reload``
(SIGHUP under load), ``drain`` (SIGTERM with 100 calls in flight), ``workers`` (one and two
worker processes, the TypeScript peer) and ``worker_killed`` (a plugin's worker SIGKILLed
under load on another's tool). Each scenario is one function registered in
:data:`SCENARIOS` (:func:`not_yet_measurable` stands in for one whose feature does not exist
yet); results go to ``bench/results/results.json`` and from there to ``BENCHMARKS.md`` and
``bench/plots/`` (see :mod:`report`).

Servers run pinned to CPU 1 and wrk to CPU 0 (``--no-pin`` turns that off), and load
alternates between the servers (A, B, C, D, A, B, C, D ...) so that drift on a shared
machine falls on all of them alike; tables report the median over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import catalog
import load
import profiling
import report  # matplotlib is imported only once there is something to plot
import servers
from load import LEGACY, MODERN, PATHS
from servers import BENCH_DIR, REPO_ROOT, RunningServer, ServerPool, ServerSpec

RESULTS_DIR = BENCH_DIR / "results"
PLOTS_DIR = BENCH_DIR / "plots"
PROFILES_DIR = BENCH_DIR / "profiles"
OUTPUT = REPO_ROOT / "BENCHMARKS.md"
LIST_MIN_SECONDS = 4.0
MANY_CLIENTS = 200
MANY_CLIENTS_STRETCH = 2.0
"""Runs with at least MANY_CLIENTS clients last this many times the normal duration."""
COMMAND_IMPORTS = "import mcphost.__main__ as command; command.prepare(); import mcphost.cli.main"
"""What the ``mcphost`` command imports, as it imports it (collector paused, wire models deferred)."""

PACKAGES = (
    "mcp",
    "hypercorn",
    "h11",
    "trio",
    "anyio",
    "uvicorn",
    "starlette",
    "sse-starlette",
    "pydantic",
    "structlog",
)


@dataclass(frozen=True)
class Options:
    """How much to measure; ``--quick`` shrinks every knob."""

    quick: bool
    rounds: int
    isolation_rounds: int
    duration: float
    concurrency: tuple[int, ...]
    list_concurrency: int
    memory_sessions: int
    memory_rounds: int
    cold_start_runs: int
    cold_start_plugins: int
    list_plugins: int
    tools_per_plugin: int
    warmup: float
    profile_duration: float
    profile: bool
    pin: bool
    only: tuple[str, ...]
    rev: str | None


@dataclass
class Context:
    """What every scenario gets: the options, a scratch directory and the results so far."""

    options: Options
    scratch: Path
    results: dict[str, Any]
    started: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        """A progress line with the time since the run started."""
        elapsed = time.monotonic() - self.started
        print(f"[{int(elapsed // 60):2d}:{int(elapsed % 60):02d}] {message}", flush=True)

    def pool(self, *, pin: bool | None = None) -> ServerPool:
        """A server pool logging into the results directory, its servers pinned as the options
        say unless ``pin`` says otherwise."""
        return ServerPool(RESULTS_DIR / "logs", pin=self.options.pin if pin is None else pin)


Scenario = Callable[[Context], dict[str, Any]]


def inline_spec(ctx: Context) -> ServerSpec:
    """mcphost as deployed but for its plugin, which runs inline instead of in a worker process."""
    config = servers.derived_mcphost_config(
        ctx.scratch, "mcphost-inline.toml", plugin_tables={"noop": {"isolation": "inline"}}
    )
    return servers.mcphost_spec(config, "mcphost, plugin inline", "mcphost-inline")


def call_specs(ctx: Context) -> list[ServerSpec]:
    """The servers of the calls table, in table order (the reference first: ratios are
    relative to it): mcphost as deployed (its plugin in a worker process) and the same
    mcphost with the plugin inline, which shows what the process boundary costs."""
    return [
        servers.reference_spec(),
        servers.sdk_hypercorn_spec(),
        servers.bare_spec(),
        servers.mcphost_spec(),
        inline_spec(ctx),
    ]


@dataclass(frozen=True)
class Target:
    """One row of a load table: a running server and the tool its calls name."""

    key: str
    """The row's key in the results: the server's, with ``-async`` for its async tool."""
    server: RunningServer
    tool: str
    kind: str
    """``sync`` or ``async``: how the tool is written."""
    levels: tuple[int, ...] | None = None
    """The client counts the row is measured at; ``None``: every one asked for."""

    def measured_at(self, connections: int) -> bool:
        """Whether this row takes part in a load of ``connections`` clients."""
        return self.levels is None or connections in self.levels


def targets(running: list[RunningServer], *, diagnostic_levels: tuple[int, ...] | None = None) -> list[Target]:
    """A sync and (where the server has one) an async row per server. The stack's ceiling
    and the SDK on Hypercorn explain the others rather than answer the bar: with
    ``diagnostic_levels`` they are measured at those client counts only, sync only."""
    rows = []
    for server in running:
        spec = server.spec
        diagnostic = spec.key in ("bare", "sdk-hypercorn")
        rows.append(Target(spec.key, server, spec.tool, "sync", diagnostic_levels if diagnostic else None))
        if spec.async_tool and not diagnostic:
            rows.append(Target(f"{spec.key}-async", server, spec.async_tool, "async"))
    return rows


def target_labels(rows: list[Target]) -> dict[str, dict[str, str]]:
    """What the report needs to name each row: its server's label and its tool's kind."""
    return {t.key: {"label": t.server.spec.label, "server": t.server.spec.key, "kind": t.kind} for t in rows}


def start_all(pool: ServerPool, specs: list[ServerSpec]) -> list[RunningServer]:
    """Launch every server at once (their start-ups overlap), then wait for each."""
    launched = [pool.launch(spec) for spec in specs]
    for server in launched:
        server.wait_ready()
    return launched


def probe_all(ctx: Context, rows: list[Target], method: str) -> dict[str, Any]:
    """One checked request per row and path before any load: a wrong request fails
    here, loudly, instead of being measured as fast errors."""
    probes: dict[str, Any] = {}
    for row in rows:
        for path in row.server.spec.paths:
            answer = load.probe(row.server.url, path, method, row.tool)
            result = answer.result()
            probes[f"{row.key} {path}"] = {
                "status": answer.status,
                "content_type": answer.content_type.split(";")[0],
                "bytes": len(answer.body),
                "tools": len(result.get("tools", [])) if method == "tools/list" else None,
            }
    ctx.say(
        "probes ok: "
        + ", ".join(f"{k} {v['status']} {v['content_type']}" for k, v in probes.items() if v["status"] == 200)
    )
    return probes


def prepare_sessions(ctx: Context, running: list[RunningServer], count: int) -> dict[str, list[str]]:
    """Open ``count`` 2025-11-25 sessions on each server, reused by every round."""
    sessions = {}
    for server in running:
        began = time.monotonic()
        sessions[server.spec.key] = load.open_sessions(server.url, count)
        ctx.say(f"{server.spec.key}: {count} sessions opened in {time.monotonic() - began:.1f}s")
    return sessions


def sessions_file(ctx: Context, server: RunningServer, sessions: dict[str, list[str]], n: int) -> Path:
    """The first ``n`` of a server's sessions, as the file the wrk script reads."""
    return load.write_sessions(ctx.scratch / f"sessions-{server.spec.key}-{n}.txt", sessions[server.spec.key][:n])


def alternate(
    ctx: Context,
    rows: list[Target],
    sessions: dict[str, list[str]],
    *,
    method: str,
    path: str,
    connections: int,
    rounds: int | tuple[int, int],
    label: str,
    duration: float | None = None,
) -> list[dict[str, Any]]:
    """Load each row in turn, ``rounds`` times over (or once, as round ``i`` of ``n`` when
    ``rounds`` is ``(i, n)``); one record per wrk run. Rows whose server does not serve
    ``path``, or that are not measured at ``connections``, sit out."""
    if duration is None:
        duration = ctx.options.duration
        if connections >= MANY_CLIENTS:
            # With hundreds of clients a call waits behind hundreds of others: a short run
            # would end before the slow ones complete and report only the lucky ones.
            duration = max(duration, ctx.options.duration * MANY_CLIENTS_STRETCH)
    running = list({id(row.server): row.server for row in rows}.values())
    rows = [r for r in rows if path in r.server.spec.paths and r.measured_at(connections)]
    indices, count = (
        (range(rounds[0], rounds[0] + 1), rounds[1]) if isinstance(rounds, tuple) else (range(rounds), rounds)
    )
    records = []
    for round_index in indices:
        for row in rows:
            server = row.server
            server.check_alive()
            idle_wait = servers.wait_idle(running)
            cpu_before = server.cpu_seconds()
            result = load.run_wrk(
                server.url,
                protocol=path,
                method=method,
                tool=row.tool if method == "tools/call" else "-",
                connections=connections,
                duration=duration,
                sessions_file=sessions_file(ctx, server, sessions, connections) if path == LEGACY else None,
                pin=ctx.options.pin,
            )
            # CPU the server (with its workers) used per call: unlike calls/s it hardly
            # moves when other work on a shared machine takes CPU time away from the server.
            cpu = server.cpu_seconds() - cpu_before
            records.append(
                {
                    "server": row.key,
                    "path": path,
                    "concurrency": connections,
                    "round": round_index,
                    **result.as_dict(),
                    "cpu_ms_per_call": cpu * 1000 / result.requests if result.requests else None,
                    "idle_wait_s": round(idle_wait, 2),
                }
            )
            errors = (
                f", {result.error_count} ERRORS ({result.errors}) e.g. {result.bad_sample[:120]!r}"
                if result.error_count
                else ""
            )
            ctx.say(
                f"{label} {path} c={connections} round {round_index + 1}/{count} {row.key}: "
                f"{result.rps:.0f}/s p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms{errors}"
            )
    return records


def warm_up(ctx: Context, rows: list[Target], sessions: dict[str, list[str]], method: str) -> None:
    """A short untimed load per row and path: first-request imports, caches and the
    like happen here rather than in round 1."""
    if ctx.options.warmup <= 0:
        return
    n = min(50, max(ctx.options.concurrency))
    for row in rows:
        for path in row.server.spec.paths:
            load.run_wrk(
                row.server.url,
                protocol=path,
                method=method,
                tool=row.tool if method == "tools/call" else "-",
                connections=n,
                duration=ctx.options.warmup,
                sessions_file=sessions_file(ctx, row.server, sessions, n) if path == LEGACY else None,
                pin=ctx.options.pin,
            )
    ctx.say("warm-up done")


def log_lines(server: RunningServer) -> int:
    """Lines the server has written to its log file (mcphost: one JSON line per request,
    plus one per tool call)."""
    with server.log_path.open("rb") as f:
        return sum(1 for _ in f)


# --- scenarios ----------------------------------------------------------------------------


def scenario_calls(ctx: Context) -> dict[str, Any]:
    """tools/call throughput and latency, every row, both paths, each concurrency: a sync
    and an async tool on the reference and on mcphost (its plugin in a worker process, and
    inline); the stack's ceiling and the SDK on Hypercorn at the bar's client count."""
    opts = ctx.options
    specs = call_specs(ctx)
    with ctx.pool() as pool:
        running = start_all(pool, specs)
        ctx.say("servers up: " + ", ".join(f"{s.spec.key} (pid {s.pid}, port {s.port})" for s in running))
        rows = targets(running, diagnostic_levels=(report.nearest(opts.concurrency, report.BAR_CONCURRENCY),))
        probes = probe_all(ctx, rows, "tools/call")
        sessions = prepare_sessions(ctx, running, max(opts.concurrency))
        warm_up(ctx, rows, sessions, "tools/call")
        records = []
        for path in PATHS:
            for connections in opts.concurrency:
                records += alternate(
                    ctx,
                    rows,
                    sessions,
                    method="tools/call",
                    path=path,
                    connections=connections,
                    rounds=opts.rounds,
                    label="calls",
                )
        peak = {s.spec.key: s.status_kib("VmHWM") for s in running}
        lines = {s.spec.key: log_lines(s) for s in running}
    return {
        "servers": {spec.key: spec.label for spec in specs},
        "rows": target_labels(rows),
        "probes": probes,
        "runs": records,
        "peak_rss_kib": peak,
        "longer_runs": {"from_clients": MANY_CLIENTS, "times": MANY_CLIENTS_STRETCH},
        "log_lines": lines,
        "requests_sent": {k: sum(r["requests"] for r in records if r["server"] in (k, f"{k}-async")) for k in lines},
    }


def scenario_isolation(ctx: Context) -> dict[str, Any]:
    """What a worker process costs over the same plugin inline, the bar's own measurement:
    the two mcphost servers alone, at the bar's client count, sync and async tool, both paths.
    Each round runs every pair side by side, process and inline in turn (which goes first
    swaps every round), so the pair's ratio is taken within the round: drift on a shared
    machine then falls on both sides of it instead of on one. The median over rounds is the
    figure; the calls table's three separate cells per row swing it by 0.1-0.2."""
    opts = ctx.options
    connections = report.nearest(opts.concurrency, report.BAR_CONCURRENCY)
    with ctx.pool() as pool:
        running = start_all(pool, [servers.mcphost_spec(), inline_spec(ctx)])
        rows = targets(running)
        pairs = [
            (process, inline)
            for process in rows
            if process.server is running[0]
            for inline in rows
            if inline.server is running[1] and inline.kind == process.kind
        ]
        sessions = prepare_sessions(ctx, running, connections)
        warm_up(ctx, rows, sessions, "tools/call")
        records = []
        for round_index in range(opts.isolation_rounds):
            for path in PATHS:
                for pair in pairs:
                    records += alternate(
                        ctx,
                        list(pair if round_index % 2 == 0 else reversed(pair)),
                        sessions,
                        method="tools/call",
                        path=path,
                        connections=connections,
                        rounds=(round_index, opts.isolation_rounds),
                        label="isolation",
                    )
    return {
        "rows": target_labels(rows),
        "pairs": [[process.key, inline.key] for process, inline in pairs],
        "runs": records,
        "isolation_rounds": opts.isolation_rounds,
    }


def scenario_profile(ctx: Context) -> dict[str, Any]:
    """py-spy on mcphost (its plugin in a worker process, followed by the profile, and
    inline), on the SDK app on the same stack and on the reference, each under the same
    50-client tools/call load (the sync tool), on both paths: where the event loop's time
    goes, and where each microsecond of a call goes, by stage."""
    opts = ctx.options
    if not opts.profile:
        return {"skipped": "--no-profile"}
    if profiling.py_spy_path() is None:
        return {"skipped": "py-spy is not installed (pip install -r bench/requirements.txt)"}
    rate = 100
    seconds = opts.profile_duration
    flame_seconds = 0.0 if opts.quick else min(seconds, 5.0)
    specs = [spec for spec in call_specs(ctx) if spec.key != "bare"]
    connections = 50
    out: dict[str, Any] = {"connections": connections, "seconds": seconds, "rate": rate, "paths": {}}
    with ctx.pool() as pool:
        running = start_all(pool, specs)
        sessions = prepare_sessions(ctx, running, connections)
        for path in PATHS:
            out["paths"][path] = {}
            for server in running:
                is_mcphost = server.spec.key == "mcphost"
                # mcphost's profiles are kept with the report; the comparison servers' are
                # scratch (bench/results/ is not committed).
                folder = PROFILES_DIR if is_mcphost else RESULTS_DIR / "profiles"
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{server.spec.key}-{path}.speedscope.json"
                flame = folder / f"{server.spec.key}-{path}.svg"
                # Load first, then attach: the profile covers steady state, not connection
                # set-up. mcphost also gets a flame graph, recorded after (not alongside)
                # the measured profile so that one sampler at a time pauses the server.
                load_seconds = 1 + seconds + (flame_seconds if is_mcphost else 0) + 1
                loop_cpu_before = server.cpu_seconds(main_thread_only=True)
                own_cpu_before = servers.process_cpu_seconds(server.pid)
                all_cpu_before = server.cpu_seconds()
                wrk = _background_wrk(ctx, server, server.spec.tool, sessions, path, connections, load_seconds)
                try:
                    time.sleep(1.0)
                    # Workers too: a call's time in a worker is part of the call.
                    threads_before = server.thread_cpu_seconds()
                    spy = profiling.start_recording(server.pid, target, seconds, rate, subprocesses=True)
                    spy_output, _ = spy.communicate(timeout=seconds + 60)
                    # What each thread used while sampled, to weigh its samples by.
                    thread_cpu = {
                        tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in server.thread_cpu_seconds().items()
                    }
                    if is_mcphost and flame_seconds and spy.returncode == 0:
                        profiling.start_recording(
                            server.pid, flame, flame_seconds, rate, "flamegraph", subprocesses=True
                        ).communicate(timeout=flame_seconds + 60)
                finally:
                    wrk_output = _finish(wrk)
                loop_cpu = server.cpu_seconds(main_thread_only=True) - loop_cpu_before
                own_cpu = servers.process_cpu_seconds(server.pid) - own_cpu_before
                workers_cpu = server.cpu_seconds() - all_cpu_before - own_cpu
                if spy.returncode != 0 or not target.exists():
                    return {"skipped": f"py-spy failed: {spy_output.decode(errors='replace')[-500:]}"}
                rps, calls = _rps(wrk_output)
                summary = profiling.summarise(target, rate, pid=server.pid)
                per_call = {"server": own_cpu * 1e6 / calls, "workers": workers_cpu * 1e6 / calls} if calls else {}
                out["paths"][path][server.spec.key] = {
                    **summary.as_dict(),
                    "calls_per_s": rps,
                    # The event loop's own CPU time per call (from /proc, over the whole wrk
                    # run): it compares servers independently of the load level and of CPU
                    # time taken by other work on the machine, which sampling cannot tell
                    # from the server's own. The profile's shares split it by owner.
                    "loop_cpu_ms_per_call": loop_cpu * 1000 / calls if calls else None,
                    "cpu_us_per_call": per_call,
                    # All of a call's CPU (every thread of the server and of its workers)
                    # split into the stages a call goes through.
                    "stages_us": profiling.call_breakdown(
                        profiling.stage_shares(target, server.pid, thread_cpu), per_call
                    ),
                    "file": str(target.relative_to(REPO_ROOT)),
                    "flamegraph": str(flame.relative_to(REPO_ROOT)) if flame.exists() else None,
                }
                ctx.say(f"profiled {server.spec.key} on {path}: {rps:.0f} calls/s, {summary.samples} samples")
    return out


def _background_wrk(
    ctx: Context,
    server: RunningServer,
    tool: str,
    sessions: dict[str, list[str]],
    path: str,
    connections: int,
    duration: float,
) -> subprocess.Popen[str]:
    wrk = load.wrk_path() or "wrk"
    argv = [
        wrk,
        f"-t{load.wrk_threads(connections)}",
        f"-c{connections}",
        f"-d{round(duration)}s",
        f"--timeout={load.WRK_TIMEOUT}",
        "-s",
        str(load.WRK_SCRIPT),
        server.url,
        "--",
        path,
        "tools/call",
        tool,
    ]
    if path == LEGACY:
        argv.append(str(sessions_file(ctx, server, sessions, connections)))
    return subprocess.Popen(
        servers.pinned(argv, servers.LOAD_CPU if ctx.options.pin else None),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    try:
        output, _ = process.communicate(timeout=120)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return output


def _rps(wrk_output: str) -> tuple[float, int]:
    """Calls per second and calls completed, from the wrk script's summary line."""
    for line in wrk_output.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON ") :])
            return float(data["requests"]) / (data["duration_us"] / 1e6), int(data["requests"])
    raise load.LoadError(f"wrk printed no summary:\n{wrk_output}")


def scenario_tools_list(ctx: Context) -> dict[str, Any]:
    """tools/list of 50 plugins x 10 tools: mcphost loading 50 generated plugin files, the
    reference registering the same 500 functions under the same names."""
    opts = ctx.options
    plugin_dir = ctx.scratch / "list-plugins"
    paths = catalog.write_plugins(plugin_dir, opts.list_plugins, opts.tools_per_plugin)
    # Inline: a listing is answered from the daemon's registry wherever the tools run, and
    # 50 worker processes would measure only a slower start.
    config = servers.derived_mcphost_config(
        ctx.scratch,
        "mcphost-list.toml",
        paths,
        [f"{catalog.PLUGIN_PREFIX}*"],
        plugin_tables=catalog.isolation(opts.list_plugins, "inline"),
    )
    specs = [
        servers.reference_spec(opts.list_plugins, opts.tools_per_plugin),
        servers.mcphost_spec(config, f"mcphost, {opts.list_plugins} plugins x {opts.tools_per_plugin} tools"),
    ]
    expected = opts.list_plugins * opts.tools_per_plugin
    with ctx.pool() as pool:
        running = start_all(pool, specs)
        rows = [Target(server.spec.key, server, "-", "sync") for server in running]
        probes = probe_all(ctx, rows, "tools/list")
        for key, answer in probes.items():
            if answer["tools"] != expected:
                raise load.LoadError(f"{key}: tools/list listed {answer['tools']} tools, not {expected}")
        sessions = prepare_sessions(ctx, running, opts.list_concurrency)
        records = []
        for path in PATHS:
            records += alternate(
                ctx,
                rows,
                sessions,
                method="tools/list",
                path=path,
                connections=opts.list_concurrency,
                rounds=opts.rounds,
                label="tools/list",
                # A 200 KB listing takes tens of milliseconds: short runs would complete few.
                duration=max(opts.duration, LIST_MIN_SECONDS),
            )
    return {
        "servers": {s.key: s.label for s in specs},
        "tools": expected,
        "probes": probes,
        "runs": records,
        "seconds": max(opts.duration, LIST_MIN_SECONDS),
    }


def scenario_memory(ctx: Context) -> dict[str, Any]:
    """Resident memory per idle session: fresh server, a few sessions and calls to get
    first-use allocations out of the way, RSS, N more sessions, RSS again."""
    opts = ctx.options
    specs = [servers.reference_spec(), servers.mcphost_spec()]
    if not opts.quick:
        specs.insert(1, servers.sdk_hypercorn_spec())
    records = []
    for round_index in range(opts.memory_rounds):
        for spec in specs:
            with ctx.pool() as pool:
                server = pool.start(spec)
                warm = load.open_sessions(server.url, 10, workers=2)
                load.probe(server.url, LEGACY, "tools/call", spec.tool, warm[0])
                time.sleep(0.5)
                before = server.rss_kib()
                began = time.monotonic()
                load.open_sessions(server.url, opts.memory_sessions)
                opened_in = time.monotonic() - began
                time.sleep(1.0)  # let the sessions' tasks settle into their idle wait
                after = server.rss_kib()
                server.check_alive()
            per_session = (after - before) / opts.memory_sessions
            records.append(
                {
                    "server": spec.key,
                    "round": round_index,
                    "sessions": opts.memory_sessions,
                    "rss_before_kib": before,
                    "rss_after_kib": after,
                    "per_session_kib": per_session,
                    "open_seconds": opened_in,
                }
            )
            ctx.say(f"memory {spec.key}: {before / 1024:.1f} -> {after / 1024:.1f} MiB, {per_session:.1f} KiB/session")
    traced = traced_sessions(ctx, 200 if opts.quick else 500) if opts.profile else None
    return {"servers": {s.key: s.label for s in specs}, "runs": records, "traced": traced}


def traced_sessions(ctx: Context, sessions: int) -> dict[str, Any] | None:
    """Which code holds an idle session's memory in mcphost: tracemalloc snapshots before
    and after opening ``sessions`` sessions, compared by file and by line."""
    output = ctx.scratch / "tracemalloc.json"
    output.unlink(missing_ok=True)
    with ctx.pool() as pool:
        server = pool.start(servers.traced_mcphost_spec(output))
        warm = load.open_sessions(server.url, 10, workers=2)
        load.probe(server.url, LEGACY, "tools/call", server.spec.tool, warm[0])
        os.kill(server.pid, signal.SIGUSR1)
        time.sleep(0.5)
        load.open_sessions(server.url, sessions)
        time.sleep(1.0)
        os.kill(server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 60
        while not output.exists() and time.monotonic() < deadline:
            server.check_alive()
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written in one go; give the write a moment to finish
    if not output.exists():
        ctx.say("tracemalloc report missing")
        return None
    report: dict[str, Any] = json.loads(output.read_text())
    report["sessions"] = sessions
    ctx.say(f"tracemalloc: {report['total_bytes'] / sessions / 1024:.1f} KiB of Python objects per session")
    return report


def scenario_cold_start(ctx: Context) -> dict[str, Any]:
    """Exec to ``READY=1`` over sd_notify and to the first 200 from /health, mcphost with 10
    generated plugins, each in a worker process of its own (as in production) and all
    inline; once ready, the memory of each: the daemon's RSS and each worker's unique
    memory (USS). The reference serving the same 100 tools is timed to its first HTTP
    answer, for scale. Each start is timed on one CPU (the servers' pinned CPU: what the
    processes of a start use adds up) and, when pinning is on, on both of the machine's CPUs
    too, where the workers start beside the daemon, as a 2-CPU host starts them."""
    opts = ctx.options
    count = opts.cold_start_plugins
    paths = catalog.write_plugins(ctx.scratch / "start-plugins", count, opts.tools_per_plugin)
    configs = {
        how: servers.derived_mcphost_config(
            ctx.scratch,
            f"mcphost-start-{how}.toml",
            paths,
            [f"{catalog.PLUGIN_PREFIX}*"],
            plugin_tables=catalog.isolation(count, how),
        )
        for how in ("inline", "process")
    }
    specs = [
        servers.reference_spec(count, opts.tools_per_plugin),
        servers.mcphost_spec(configs["inline"], f"mcphost, {count} plugins inline", "mcphost-inline"),
        servers.mcphost_spec(configs["process"], f"mcphost, {count} plugins, each in a worker process"),
    ]
    # (CPUs, pinned): with pinning off, every start may use every CPU.
    layouts = (
        [(1, True), (len(os.sched_getaffinity(0)), False)] if opts.pin else [(len(os.sched_getaffinity(0)), False)]
    )
    records: list[dict[str, Any]] = []
    for spec in specs:  # untimed: byte-compiles the generated plugins, warms the page cache
        with ctx.pool() as pool:
            pool.start(spec)
    for round_index in range(opts.cold_start_runs):
        for cpus, pin in layouts:
            for spec in specs:
                with ctx.pool(pin=pin) as pool:
                    server = pool.start(spec)
                    assert server.ready_after is not None
                    workers = server.plugin_workers()
                    records.append(
                        {
                            "server": spec.key,
                            "cpus": cpus,
                            "round": round_index,
                            "seconds": server.ready_after,
                            "ready_notified": server.notified_ready_after,
                            "rss_kib": server.rss_kib(),
                            "workers": len(workers),
                            "worker_uss_kib": sorted(servers.uss_kib(pid) for pid in workers),
                        }
                    )
                notified = f", READY=1 after {server.notified_ready_after:.3f}s" if server.notified_ready_after else ""
                ctx.say(
                    f"cold start {spec.key} on {cpus} CPU(s): first answer after {server.ready_after:.3f}s{notified}"
                )
    env = servers.clean_env({"PYTHONPATH": str(servers.MCPHOST_SOURCE)} if servers.MCPHOST_SOURCE else {})
    imports = profiling.import_times(sys.executable, COMMAND_IMPORTS, env=env)
    slowest = max(r["seconds"] for r in records if r["server"] == "mcphost" and r["cpus"] == layouts[0][0])
    return {
        "servers": {s.key: s.label for s in specs},
        "plugins": count,
        "runs": records,
        "imports": imports,
        "profile": startup_profile(ctx, specs[-1], slowest) if opts.profile and profiling.py_spy_path() else None,
    }


def scenario_start_instructions(ctx: Context) -> dict[str, Any]:
    """Instructions from exec to ready (callgrind), mcphost and the reference, each with one
    tool and with the cold-start catalogue: unlike seconds on a shared machine, the count
    repeats to a few tenths of a percent, so it shows what a change to start-up is worth.

    Opt-in (``--only start_instructions``): under callgrind a start takes over a minute.
    """
    if shutil.which("valgrind") is None:
        return {"not_measurable": "valgrind is not installed (`sudo apt-get install valgrind`)"}
    opts = ctx.options
    paths = catalog.write_plugins(ctx.scratch / "start-plugins", opts.cold_start_plugins, opts.tools_per_plugin)
    config = servers.derived_mcphost_config(ctx.scratch, "mcphost-start.toml", paths, [f"{catalog.PLUGIN_PREFIX}*"])
    catalogue = opts.cold_start_plugins * opts.tools_per_plugin
    until_ready = str(BENCH_DIR / "apps" / "until_ready.py")
    specs = [
        ("mcphost", 2, servers.mcphost_spec()),  # the no-op plugin: add and sleep
        ("mcphost", catalogue, servers.mcphost_spec(config)),
        ("reference", 1, servers.reference_spec()),
        ("reference", catalogue, servers.reference_spec(opts.cold_start_plugins, opts.tools_per_plugin)),
    ]
    # The servers' own command lines, after the interpreter (and script) that start them.
    starts = [
        (key, tools, [key, *spec.command(0)[spec.argv.index("serve") if key == "mcphost" else 2 :]])
        for key, tools, spec in specs
    ]
    env = servers.clean_env({"PYTHONPATH": str(servers.MCPHOST_SOURCE)} if servers.MCPHOST_SOURCE else {})

    def command(argv: list[str], log: Path | None) -> tuple[list[str], dict[str, str]]:
        state = Path(tempfile.mkdtemp(dir=ctx.scratch))
        counted = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", f"--log-file={log}"] if log else []
        return [*counted, sys.executable, until_ready, *argv], {**env, "STATE_DIRECTORY": str(state)}

    for _, _, argv in starts:  # uncounted: byte-compiles the generated plugins
        args, start_env = command(argv, None)
        subprocess.run(args, env=start_env, cwd=REPO_ROOT, capture_output=True, check=True, timeout=120)
    records: list[dict[str, Any]] = []
    # Two at a time, one per CPU: the count does not depend on what else runs.
    for pair in (starts[:2], starts[2:]):
        running = []
        for server, tools, argv in pair:
            log = ctx.scratch / f"callgrind-{server}-{tools}.log"
            args, start_env = command(argv, log)
            with log.with_suffix(".err").open("wb") as err:
                process = subprocess.Popen(args, env=start_env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err)
            running.append((server, tools, log, process))
        for server, tools, log, process in running:
            process.wait(timeout=900)
            counted = re.search(r"Collected\s*:\s*(\d+)", log.read_text())
            if process.returncode != 0 or counted is None:
                output = log.with_suffix(".err").read_text(errors="replace")[-500:]
                raise RuntimeError(f"{server} under callgrind failed ({process.returncode}): {output}")
            records.append({"server": server, "tools": tools, "instructions": int(counted.group(1))})
            ctx.say(f"start instructions {server}, {tools} tool(s): {int(counted.group(1)) / 1e9:.3f} G")
    return {"servers": {"reference": "SDK MCPServer on uvicorn (reference)", "mcphost": "mcphost"}, "runs": records}


def startup_profile(ctx: Context, spec: ServerSpec, expected: float) -> dict[str, Any] | None:
    """One more start of ``spec`` with py-spy attached from spawn to shortly after ready:
    where start-up time goes (imports, plugin loading, the rest)."""
    rate = 250
    target = PROFILES_DIR / "mcphost-startup.speedscope.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    with ctx.pool() as pool:
        server = pool.launch(spec)
        # Attached right after the spawn; the interpreter's first milliseconds may be missed.
        spy = profiling.start_recording(server.pid, target, math.ceil(expected * 1.5 + 1), rate)
        try:
            ready = server.wait_ready()
            output, _ = spy.communicate(timeout=expected * 2 + 60)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
    if spy.returncode != 0 or not target.exists():
        ctx.say(f"start-up profile failed: {output.decode(errors='replace')[-300:]}")
        return None
    summary = profiling.summarise(target, rate)
    ctx.say(f"start-up profile: ready in {ready:.2f}s, {summary.imports_percent:.0f} % of samples importing")
    return {**summary.as_dict(), "ready_s": ready, "file": str(target.relative_to(REPO_ROOT))}


def scenario_reload(ctx: Context) -> dict[str, Any]:
    """A plugin's source saved while 50 clients keep calling a tool and a 2025-11-25 session
    holds its event stream open: the time from the save to ``notifications/tools/list_changed``
    on that stream (``[reload] watch`` on), whether tools/list then shows the change, and
    errors among the calls in flight during the reloads."""
    opts = ctx.options
    plugins = catalog.write_plugins(ctx.scratch / "reload-plugins", opts.cold_start_plugins, opts.tools_per_plugin)
    # Every plugin in a worker process, as in production: a reload starts the changed
    # plugin's new worker and swaps it in.
    config = servers.derived_mcphost_config(
        ctx.scratch,
        "mcphost-reload.toml",
        [servers.NOOP_PLUGIN, *plugins],
        ["noop", f"{catalog.PLUGIN_PREFIX}*"],
        plugin_tables=catalog.isolation(opts.cold_start_plugins, "process"),
    )
    data = tomllib.loads(config.read_text())
    data["reload"] = {"watch": True}
    config.write_text(servers.to_toml(data))
    spec = servers.mcphost_spec(config, f"mcphost, {opts.cold_start_plugins + 1} plugins")
    reloads = 3 if opts.quick else 10
    records = []
    with ctx.pool() as pool:
        server = pool.start(spec)
        tools = len(load.probe(server.url, MODERN, "tools/list", "-").result()["tools"])
        stream = load.EventStream(server.url)
        load_seconds = 2 + reloads * 1.5
        began = time.monotonic()
        wrk = _background_wrk(ctx, server, server.spec.tool, {}, MODERN, 50, load_seconds)
        try:
            time.sleep(1.0)
            for index in range(reloads):
                # One more tool in the first plugin each time: a real change to pick up.
                plugins[0].write_text(catalog.plugin_source(0, opts.tools_per_plugin + index + 1))
                saved = time.monotonic()
                heard = stream.wait_for("notifications/tools/list_changed", after=saved, timeout=30.0)
                listed = len(load.probe(server.url, MODERN, "tools/list", "-").result()["tools"])
                latency = None if heard is None else heard - saved
                records.append({"reload": index, "seconds": latency, "visible": listed == tools + index + 1})
                ctx.say(
                    f"reload {index + 1}/{reloads}: list_changed after {latency or float('nan'):.3f}s, {listed} tools"
                )
                time.sleep(max(0.0, began + 1.0 + (index + 1) * 1.5 - time.monotonic()))
        finally:
            output = _finish(wrk)
            stream.close()
        server.check_alive()
    summary = json.loads(next(line for line in output.splitlines() if line.startswith("BENCH_JSON "))[11:])
    return {
        "plugins": opts.cold_start_plugins + 1,
        "debounce_ms": 200,
        "runs": records,
        "calls": {
            "requests": summary["requests"],
            "errors": sum(summary["errors"].values()),
            "rps": summary["requests"] / (summary["duration_us"] / 1e6),
        },
        "stall": reload_stalls(ctx),
    }


STALL_SESSIONS = (60, 1_000, 3_000)
"""Open 2025-11-25 sessions during the reload-stall measurement."""
SETTLE_PAUSE = 2.0
"""Seconds between opening the sessions and the first reload: past the collector's settle
after start-up, which is not what is measured."""
STALL_WINDOW = 3.0
"""Seconds after SIGHUP watched for a stall: the reload, and a second later the collector's settle."""


def with_extra_tool(source: str, index: int) -> str:
    """The no-op plugin's source serving one more tool, ``noop_extra_<index>``."""
    served = "    return [add, add_async, sleep]\n"
    assert served in source, "bench/plugins/noop.py no longer ends as this expects"
    extra = f'\n\ndef extra_{index}() -> int:\n    """One more tool."""\n    return {index}\n'
    return source.replace(served, f"    return [add, add_async, sleep, extra_{index}]\n") + extra


def reload_stalls(ctx: Context) -> list[dict[str, Any]]:
    """The event loop's longest stall around a reload (SIGHUP, with a tool added to the
    plugin, so its old version is replaced and every session is sent
    ``notifications/tools/list_changed``) while ``STALL_SESSIONS`` sessions are open and
    idle: the slowest ``/health`` answer in the ``STALL_WINDOW`` after the signal
    (:class:`load.StallProbe`), against the median answer in the second before it."""
    directory = ctx.scratch / "reload-stall"
    directory.mkdir(parents=True, exist_ok=True)
    plugin = directory / "noop.py"
    source = servers.NOOP_PLUGIN.read_text()
    plugin.write_text(source)
    config = servers.derived_mcphost_config(directory, "mcphost-reload-stall.toml", [plugin], ["noop"])
    reloads = 1 if ctx.options.quick else 3
    records = []
    for count in STALL_SESSIONS:
        with ctx.pool() as pool:
            server = pool.start(servers.mcphost_spec(config))
            load.open_sessions(server.url, count)
            time.sleep(SETTLE_PAUSE)  # past the collector's settle after start-up
            rss_before = server.rss_kib()
            probe = load.StallProbe(server.base_url)
            try:
                for index in range(reloads):
                    time.sleep(1.0)
                    # One more tool: the plugin is replaced and every session told (list_changed).
                    plugin.write_text(with_extra_tool(source, index))
                    signalled = time.monotonic()
                    os.kill(server.pid, signal.SIGHUP)
                    time.sleep(STALL_WINDOW)
                    before = probe.latencies(signalled - 1.0, signalled)
                    during = probe.latencies(signalled, signalled + STALL_WINDOW)
                    records.append(
                        {
                            "sessions": count,
                            "reload": index,
                            "stall_ms": max(during) * 1000,
                            "baseline_ms": statistics.median(before) * 1000,
                            "probes": len(during),
                            "rss_growth_kib": server.rss_kib() - rss_before,
                        }
                    )
                    ctx.say(f"reload stall, {count} sessions, reload {index + 1}: {max(during) * 1000:.1f} ms")
            finally:
                probe.close()
            server.check_alive()
            plugin.write_text(source)
    return records


def scenario_drain(ctx: Context) -> dict[str, Any]:
    """SIGTERM with 100 one-second calls in flight: how many are answered with their
    result, whether a new request during the drain is refused, and how long until exit."""
    in_flight, seconds = 100, 1.0
    with ctx.pool() as pool:
        server = pool.start(servers.mcphost_spec())
        sent = threading.Barrier(in_flight + 1)
        answers: list[tuple[float, load.Probe | None]] = []
        lock = threading.Lock()

        def one_call() -> None:
            sent.wait()
            try:
                answer: load.Probe | None = load.call(server.url, "noop_sleep", {"seconds": seconds})
            except OSError:
                answer = None
            with lock:
                answers.append((time.perf_counter(), answer))

        threads = [threading.Thread(target=one_call, daemon=True) for _ in range(in_flight)]
        for thread in threads:
            thread.start()
        sent.wait()
        # Let the calls reach their tool (each takes a second there) before the signal.
        time.sleep(0.4)
        signalled = time.perf_counter()
        os.kill(server.pid, signal.SIGTERM)
        time.sleep(0.1)
        try:
            late = load.call(server.url, "noop_add", {"a": 1, "b": 2}, timeout=10).status
        except OSError:
            late = None  # the listener is already closed: refused as well
        for thread in threads:
            thread.join(seconds + 60)
        try:
            server.process.wait(60)
            exited: float | None = time.perf_counter() - signalled
        except subprocess.TimeoutExpired:
            exited = None
        code = server.process.returncode
    completed = sum(1 for _, a in answers if a is not None and a.status == 200 and b"slept" in a.body)
    last = max((at for at, _ in answers), default=signalled) - signalled
    result = {
        "in_flight": in_flight,
        "call_seconds": seconds,
        "completed": completed,
        "failed": in_flight - completed,
        "last_answer_after_s": last,
        "exit_after_s": exited,
        "exit_code": code,
        "new_request_status": late,
    }
    ctx.say(f"drain: {completed}/{in_flight} answered, new request got {late}, exit after {exited}s (code {code})")
    return result


def not_yet_measurable(reason: str) -> Scenario:
    """A scenario whose feature does not exist yet: recorded with the reason. Replacing
    this with a real function is all it takes to measure it."""

    def scenario(ctx: Context) -> dict[str, Any]:
        return {"not_measurable": reason}

    return scenario


def scenario_workers(ctx: Context) -> dict[str, Any]:
    """tools/call at 50 clients from mcphost with one and with two worker processes, beside
    the reference and the TypeScript peer (the official TypeScript SDK on express with a
    session map; sessions only), none pinned: the kernel spreads connections (and wrk)
    over both cores."""
    unpinned = Context(replace(ctx.options, pin=False), ctx.scratch, ctx.results, ctx.started)
    two_workers = servers.derived_mcphost_config(ctx.scratch, "mcphost-2-workers.toml", workers=2)
    specs = [
        servers.reference_spec(),
        servers.ts_peer_spec(servers.install_ts_peer()),
        servers.mcphost_spec(label="mcphost, 1 worker"),
        servers.mcphost_spec(two_workers, "mcphost, 2 workers", "mcphost-2w"),
    ]
    connections = 50
    with unpinned.pool() as pool:
        running = start_all(pool, specs)
        rows = [Target(server.spec.key, server, server.spec.tool, "sync") for server in running]
        probe_all(unpinned, rows, "tools/call")
        sessions = prepare_sessions(unpinned, running, connections)
        warm_up(unpinned, rows, sessions, "tools/call")
        records = []
        for path in PATHS:
            records += alternate(
                unpinned,
                rows,
                sessions,
                method="tools/call",
                path=path,
                connections=connections,
                rounds=ctx.options.rounds,
                label="workers",
            )
    return {"servers": {spec.key: spec.label for spec in specs}, "connections": connections, "runs": records}


VICTIM_PLUGIN = '''"""A plugin whose worker the benchmark kills: its one tool says which process serves it."""

import os

import mcphost


def pid() -> int:
    """This worker's process id."""
    return os.getpid()


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [pid]
'''
KILL_INTERVAL = 0.5
"""Seconds between one kill of the victim's worker and the search for its successor."""


def scenario_worker_killed(ctx: Context) -> dict[str, Any]:
    """A witness plugin's tool under 50 clients' load (``noop_add``, 2026-07-28) while
    another plugin's worker is SIGKILLed again and again, both plugins isolated: the
    witness's errors (there must be none) and its latency, against runs without kills,
    alternating."""
    opts = ctx.options
    directory = ctx.scratch / "killed"
    directory.mkdir(parents=True, exist_ok=True)
    victim = directory / "victim.py"
    victim.write_text(VICTIM_PLUGIN)
    config = servers.derived_mcphost_config(
        directory,
        "mcphost-killed.toml",
        [servers.NOOP_PLUGIN, victim],
        ["noop", "victim"],
        plugin_tables={
            "noop": {"isolation": "process"},
            # Restarted however often it is killed: crash-loop protection would otherwise
            # settle it as failed after a few kills, and leave nothing to kill.
            "victim": {"isolation": "process", "max_restarts": 1_000_000, "restart_window": 1.0},
        },
    )
    connections, seconds = 50, max(opts.duration, 4.0)
    records = []
    with ctx.pool() as pool:
        server = pool.start(servers.mcphost_spec(config, "mcphost, witness and victim isolated", "mcphost-killed"))
        load.probe(server.url, MODERN, "tools/call", "noop_add")
        for round_index in range(opts.rounds):
            for killing in (False, True):
                stop = threading.Event()
                kills: list[float] = []
                killer = threading.Thread(target=_kill_repeatedly, args=(server, stop, kills), daemon=True)
                if killing:
                    killer.start()
                try:
                    result = load.run_wrk(
                        server.url,
                        protocol=MODERN,
                        method="tools/call",
                        tool="noop_add",
                        connections=connections,
                        duration=seconds,
                        pin=opts.pin,
                    )
                finally:
                    stop.set()
                    if killing:
                        killer.join(30)
                server.check_alive()
                records.append({"round": round_index, "killing": killing, "kills": len(kills), **result.as_dict()})
                ctx.say(
                    f"worker killed, round {round_index + 1}/{opts.rounds}, {'kills' if killing else 'no kills'}: "
                    f"{len(kills)} kills, {result.rps:.0f} calls/s, p99 {result.p99_ms:.1f} ms, "
                    f"{result.error_count} errors"
                )
    return {"connections": connections, "seconds": seconds, "kill_interval_s": KILL_INTERVAL, "runs": records}


def _kill_repeatedly(server: RunningServer, stop: threading.Event, kills: list[float]) -> None:
    """Ask the victim's tool for its worker's pid and SIGKILL it, until ``stop``; a call
    that fails (the worker is being restarted) is asked again shortly."""
    while not stop.is_set():
        answer = load.call(server.url, "victim_pid", {}, timeout=10)
        try:
            result: dict[str, Any] = answer.result() if answer.status == 200 else {"isError": True}
        except (ValueError, load.LoadError):
            result = {"isError": True}
        if result.get("isError"):
            stop.wait(0.05)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(result["content"][0]["text"]), signal.SIGKILL)
            kills.append(time.monotonic())
        stop.wait(KILL_INTERVAL)


OPT_IN = ("start_instructions",)
"""Scenarios a full run leaves out (each takes minutes); ``--only`` runs them."""

SCENARIOS: dict[str, Scenario] = {
    "calls": scenario_calls,
    "isolation": scenario_isolation,
    "profile": scenario_profile,
    "tools_list": scenario_tools_list,
    "memory": scenario_memory,
    "cold_start": scenario_cold_start,
    "start_instructions": scenario_start_instructions,
    "reload": scenario_reload,
    "drain": scenario_drain,
    "workers": scenario_workers,
    "worker_killed": scenario_worker_killed,
}


# --- the run --------------------------------------------------------------------------------


def options_from(argv: list[str] | None) -> Options:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark mcphost against the MCP SDK's own server; writes BENCHMARKS.md and bench/plots/.",
    )
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run (one round, short loads)")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        metavar="SCENARIO",
        help=f"run only this scenario (repeatable; one of {', '.join(SCENARIOS)}; a full run leaves out "
        f"{', '.join(OPT_IN)}); other sections of the report keep their last results",
    )
    parser.add_argument("--rounds", type=int, help="rounds of alternation per measurement (default 3; quick 1)")
    parser.add_argument(
        "--duration",
        type=int,
        help=f"whole seconds per wrk run (default 3, quick 2; x{MANY_CLIENTS_STRETCH:g} at {MANY_CLIENTS}+ clients)",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        help="comma-separated client counts (default 1,50,500; quick 1,50)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers to CPU 1 and wrk to CPU 0")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--rev",
        help="benchmark mcphost as committed at this git revision (e.g. HEAD) instead of the working tree; "
        "the harness, the config and the plugin still come from the working tree",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    return Options(
        quick=quick,
        rounds=args.rounds or (1 if quick else 3),
        # The worker's cost is a ratio near its bar, measured in pairs: more rounds than a
        # table cell, so that one disturbed round does not decide the median.
        isolation_rounds=2 if quick else 7,
        duration=args.duration or (2.0 if quick else 3.0),
        # Quick mode leaves out 500 clients: opening 500 sessions per server and the longer
        # runs they need would double its time.
        concurrency=args.concurrency or ((1, 50) if quick else (1, 50, 500)),
        list_concurrency=10,
        memory_sessions=1000,
        # RSS per session barely varies between fresh starts (tenths of a KiB): one is enough.
        memory_rounds=1,
        cold_start_runs=2 if quick else 5,
        cold_start_plugins=10,
        list_plugins=50,
        tools_per_plugin=10,
        warmup=0.0 if quick else 1.0,
        profile_duration=2.0 if quick else 6.0,
        profile=not args.no_profile,
        pin=not args.no_pin and servers.pinning_available(),
        only=tuple(args.only or ()),
        rev=args.rev,
    )


def preflight(selected: tuple[str, ...]) -> list[str]:
    """What is missing, each with how to get it; the harness installs no system packages
    (the TypeScript peer's npm packages it does, into a cache)."""
    problems = []
    if "workers" in selected:
        problems += [
            f"{tool} is not installed (the TypeScript peer needs it): `sudo apt-get install nodejs npm`"
            for tool in ("node", "npm")
            if shutil.which(tool) is None
        ]
    if load.wrk_path() is None:
        problems.append("wrk is not installed: `sudo apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`")
    for module, hint in (
        ("mcphost", "pip install -e ."),
        ("uvicorn", "pip install -r bench/requirements.txt"),
        ("matplotlib", "pip install -r bench/requirements.txt"),
    ):
        if importlib.util.find_spec(module) is None:
            problems.append(f"Python package {module!r} is missing in {sys.executable}: {hint}")
    if not Path("/proc/self/status").exists():
        problems.append("/proc is needed to read servers' memory (Linux only)")
    return problems


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    wrk_version = subprocess.run([load.wrk_path() or "wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": (wrk_version.stdout + wrk_version.stderr).split("\n", 1)[0].strip(),
        "load_average_at_start": os.getloadavg(),
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def checkout(rev: str, into: Path) -> Path:
    """``mcphost/`` as committed at ``rev``, extracted under ``into``; returns the directory
    to put on ``PYTHONPATH``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", rev, "mcphost"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def mcphost_revision(rev: str | None) -> str:
    """Which mcphost was measured: a commit, and whether the working tree differed from it."""
    git = ["git", "-C", str(REPO_ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", rev or "HEAD"], capture_output=True, text=True, check=False)
    name = commit.stdout.strip() or "unknown"
    if rev:
        return f"{name} (`--rev {rev}`)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "mcphost"], capture_output=True, text=True, check=False
    )
    return f"working tree at {name}" + (" with uncommitted changes to mcphost/" if dirty.stdout.strip() else "")


def _terminate(signum: int, _frame: Any) -> None:
    # SIGTERM becomes SystemExit, so every `with pool:` block stops its servers.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory for session files, generated plugins and derived configs."""
    with tempfile.TemporaryDirectory(prefix="mcphost-bench-") as name:
        yield Path(name)


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios and write the report."""
    opts = options_from(argv)
    selected = opts.only or tuple(name for name in SCENARIOS if name not in OPT_IN)
    problems = preflight(selected)
    if problems:
        print("cannot run the benchmark:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # Server logs are per run; old ones would only confuse.
    shutil.rmtree(RESULTS_DIR / "logs", ignore_errors=True)
    results_path = RESULTS_DIR / "results.json"
    results: dict[str, Any] = {}
    if opts.only and results_path.exists():
        # A partial run refreshes its sections and keeps the others from the last run.
        results = json.loads(results_path.read_text())
    run_meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "options": {k: v for k, v in opts.__dict__.items()},
        "machine": machine(),
        "scenarios": list(selected),
    }
    with scratch_dir() as scratch:
        if opts.rev:
            servers.MCPHOST_SOURCE = checkout(opts.rev, scratch / "rev")
        run_meta["mcphost"] = mcphost_revision(opts.rev)
        servers.write_keys_file(load.TOKEN)
        ctx = Context(opts, scratch, results)
        ctx.say(
            f"benchmark: {', '.join(selected)} ({'quick' if opts.quick else 'full'}; "
            f"{opts.rounds} round(s) of {opts.duration:g}s; pinning {'on' if opts.pin else 'off'})"
        )
        for name in selected:
            began = time.monotonic()
            ctx.say(f"== {name}")
            section = SCENARIOS[name](ctx)
            results[name] = {
                **section,
                "elapsed_s": round(time.monotonic() - began, 1),
                "date": run_meta["date"],
                "mcphost": run_meta["mcphost"],
                "quick": opts.quick,
                "rounds": opts.rounds,
                "duration_s": opts.duration,
            }
            results_path.write_text(json.dumps({**results, "meta": run_meta}, indent=1, default=str))
        run_meta["elapsed_s"] = round(time.monotonic() - ctx.started, 1)
        run_meta["load_average_at_end"] = os.getloadavg()
        results["meta"] = run_meta
        results_path.write_text(json.dumps(results, indent=1, default=str))
        report.write(results, OUTPUT, PLOTS_DIR)
        written = (OUTPUT, PLOTS_DIR, results_path)
        ctx.say("wrote " + ", ".join(str(p.relative_to(REPO_ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
