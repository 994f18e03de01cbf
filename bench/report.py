"""``BENCHMARKS.md`` and ``bench/plots/*.png`` from ``bench/results/results.json``.

Run by ``bench/run.py`` at the end of a run; ``python bench/report.py`` re-renders the
report from the last results without measuring anything.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import profiling

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

REFERENCE = "reference"
MCPHOST = "mcphost"
CEILING = "bare"
BAR_CONCURRENCY = 50
COLD_START_LIMIT_S = 1.5
ISOLATION_CPU_LIMIT = 1.15
"""The most server CPU per call a worker process may cost, over the same plugin inline."""
WORKER_USS_LIMIT_MIB = 15
"""The most unique memory a plugin's worker process may hold."""
PEER_P99_LIMIT = 0.25
"""mcphost's p99 with two workers, at most this share of the TypeScript peer's."""
INLINE = "mcphost-inline"
TS_PEER = "ts-peer"
TWO_WORKERS = "mcphost-2w"
RELOAD_STALL_LIMIT_MS = 50
"""The most a reload may hold the event loop with the most sessions measured open."""
PATH_NAMES = {
    "2025-11-25": "2025-11-25 (sessions)",
    "2026-07-28": "2026-07-28 (self-contained requests)",
}
COLORS = {
    "reference": "#4c72b0",
    "reference-async": "#9db4dc",
    "sdk-hypercorn": "#8172b2",
    "bare": "#999999",
    "mcphost": "#dd8452",
    "mcphost-async": "#f2b98f",
    "mcphost-inline": "#c44e52",
    "mcphost-inline-async": "#e8a0a2",
    "mcphost-2w": "#8c613c",
    "ts-peer": "#55a868",
}
OWNER_COLORS = {
    "mcphost": "#dd8452",
    "structlog": "#c44e52",
    "stdlib logging": "#f1a3a5",
    "Trio": "#55a868",
    "anyio": "#a6d8a8",
    "asyncio": "#4c72b0",
    "uvicorn": "#9db4dc",
    "Hypercorn": "#8172b2",
    "h11 (Hypercorn's HTTP/1.1 parser)": "#c2b6e0",
    "MCP SDK": "#937860",
    "sse-starlette (the SDK's SSE responses)": "#c9ae92",
    "Starlette": "#e5d4c0",
    "pydantic": "#da8bc3",
    "OpenTelemetry": "#ccb974",
    "stdlib json": "#64b5cd",
}
"""Profile owners' colours: mcphost and logging warm, the event loops green/blue, the SDK brown."""


# --- figures ------------------------------------------------------------------------------


def med(values: Iterable[float]) -> float:
    """Median of a non-empty iterable."""
    return float(statistics.median(list(values)))


def cold_layouts(runs: Sequence[dict[str, Any]]) -> list[int]:
    """The CPU counts cold starts were timed on, fewest first (runs from before there was a
    choice were on the servers' one pinned CPU)."""
    return sorted({r.get("cpus", 1) for r in runs})


def cold_runs(runs: Sequence[dict[str, Any]], server: str, cpus: int) -> list[dict[str, Any]]:
    """The cold starts of ``server`` on ``cpus`` CPUs."""
    return [r for r in runs if r["server"] == server and r.get("cpus", 1) == cpus]


def cpus_label(cpus: int) -> str:
    """``cpus`` as a table's words."""
    return "one CPU" if cpus == 1 else f"{cpus} CPUs"


def cell(runs: Sequence[dict[str, Any]], server: str, path: str, concurrency: int) -> list[dict[str, Any]]:
    """The wrk runs of one server at one path and concurrency (one per round)."""
    return [r for r in runs if r["server"] == server and r["path"] == path and r["concurrency"] == concurrency]


def stats(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Medians over rounds, plus the throughput range and summed errors (zeros for a cell
    that was not measured)."""
    if not rows:
        return dict.fromkeys(("rps", "rps_min", "rps_max", "p50", "p99", "errors", "bytes", "cpu", "requests"), 0.0)
    return {
        "rps": med(r["rps"] for r in rows),
        "rps_min": min(r["rps"] for r in rows),
        "rps_max": max(r["rps"] for r in rows),
        "p50": med(r["p50_ms"] for r in rows),
        "p99": med(r["p99_ms"] for r in rows),
        "errors": sum(r["error_count"] for r in rows),
        "bytes": med(r["bytes_per_response"] for r in rows),
        "cpu": med(r.get("cpu_ms_per_call") or 0.0 for r in rows),
        "requests": sum(r["requests"] for r in rows),
    }


def rows_of(calls: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The calls section's rows: key -> server label, server key and tool kind (results
    from before the async rows had one sync row per server)."""
    rows: dict[str, dict[str, str]] = calls.get("rows") or {
        key: {"label": label, "server": key, "kind": "sync"} for key, label in calls["servers"].items()
    }
    return rows


def reference_for(rows: dict[str, dict[str, str]], key: str) -> str:
    """The reference row a row is compared with: the one whose tool is written the same way."""
    twin = f"{REFERENCE}-async"
    return twin if rows[key]["kind"] == "async" and twin in rows else REFERENCE


def row_label(rows: dict[str, dict[str, str]], key: str) -> str:
    """A row's name in plots: its server and, where the server has both, its tool's kind."""
    info = rows[key]
    both = any(r["server"] == info["server"] and r["kind"] != info["kind"] for r in rows.values())
    return f"{info['label']}, {info['kind']}" if both else info["label"]


def fmt_ms(value: float) -> str:
    """Milliseconds with precision that suits their size."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23x``, or a dash without a denominator."""
    return f"{a / b:.2f}x" if b else "-"


def verdict(ok: bool | None) -> str:
    """A pass/fail cell."""
    return "—" if ok is None else ("**pass**" if ok else "**FAIL**")


def nearest(values: Iterable[int], target: int) -> int:
    """The measured concurrency closest to ``target``."""
    return min(values, key=lambda v: abs(v - target))


# --- the bar ------------------------------------------------------------------------------


def calls_bars(calls: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The bar's rows from the calls table: throughput and p99 against the reference for
    each tool kind, the stack's ceiling, errors."""
    runs, names = calls["runs"], rows_of(calls)
    levels = {r["concurrency"] for r in runs}
    n, most = nearest(levels, BAR_CONCURRENCY), max(levels)
    out: list[tuple[str, str, bool | None]] = []
    mine = [key for key in (MCPHOST, f"{MCPHOST}-async") if key in names]
    where = "plugin in a worker process" if INLINE in calls.get("servers", {}) else "production config"
    for path in PATH_NAMES:
        for key in mine:
            kind, ref_key = names[key]["kind"], reference_for(names, key)
            m, ref = stats(cell(runs, key, path, n)), stats(cell(runs, ref_key, path, n))
            out.append(
                (
                    f"tools/call on {path}, {kind} tool, {n} clients ({where}): calls/s ≥ 1.0x reference",
                    f"{m['rps']:.0f} vs {ref['rps']:.0f} calls/s = {ratio(m['rps'], ref['rps'])} "
                    f"(server CPU per call {m['cpu']:.2f} vs {ref['cpu']:.2f} ms = {ratio(m['cpu'], ref['cpu'])})",
                    m["rps"] >= ref["rps"],
                )
            )
            for clients in sorted({n, most}):
                m, ref = stats(cell(runs, key, path, clients)), stats(cell(runs, ref_key, path, clients))
                out.append(
                    (
                        f"tools/call on {path}, {kind} tool, {clients} clients: p99 no worse than reference",
                        f"{fmt_ms(m['p99'])} vs {fmt_ms(ref['p99'])} ms = {ratio(m['p99'], ref['p99'])}",
                        m["p99"] <= ref["p99"],
                    )
                )
    for path in PATH_NAMES:
        m, top = stats(cell(runs, MCPHOST, path, n)), stats(cell(runs, CEILING, path, n))
        out.append(
            (
                f"fraction of the Hypercorn/Trio ceiling (row 3) on {path}, {n} clients",
                f"{m['rps']:.0f} of {top['rps']:.0f} calls/s = {100 * m['rps'] / top['rps']:.0f} %"
                if top["rps"]
                else "-",
                None,
            )
        )
    own = sum(r["error_count"] for r in runs if r["server"].startswith(MCPHOST))
    out.append(("errors in mcphost's tools/call runs", f"{own}", own == 0))
    others = [r for r in runs if not r["server"].startswith(MCPHOST) and r["error_count"]]
    where_errors = "; ".join(
        f"{r['error_count']} in {r['server']} {r['path']} at {r['concurrency']} clients "
        f"({', '.join(f'{k} {v}' for k, v in r['errors'].items() if v)})"
        for r in others
    )
    out.append(("errors in the other servers' runs", where_errors or "0", None))
    return out


def paired_ratios(runs: Sequence[dict[str, Any]], process: str, inline: str, path: str) -> list[float]:
    """Process ÷ inline server CPU per call, one per round in which both were measured on ``path``."""
    cpu = {(r["server"], r["round"]): r.get("cpu_ms_per_call") or 0.0 for r in runs if r["path"] == path}
    rounds = sorted({r["round"] for r in runs})
    return [cpu[process, i] / cpu[inline, i] for i in rounds if cpu.get((process, i)) and cpu.get((inline, i))]


def isolation_pairs(
    isolation: dict[str, Any],
) -> Iterator[tuple[str, str, int, list[float], dict[str, float], dict[str, float]]]:
    """Each pair of the isolation scenario on each path: ``(path, tool kind, clients, each
    round's process ÷ inline ratio, process stats, inline stats)``."""
    runs, names = isolation["runs"], isolation["rows"]
    n = runs[0]["concurrency"]
    for path in PATH_NAMES:
        for process, inline in isolation["pairs"]:
            ratios = paired_ratios(runs, process, inline, path)
            if ratios:
                yield (
                    path,
                    names[process]["kind"],
                    n,
                    ratios,
                    stats(cell(runs, process, path, n)),
                    stats(cell(runs, inline, path, n)),
                )


def isolation_bars(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The worker's cost over inline, from the isolation scenario's paired rounds (or, for
    results from before it, from the calls table's cells)."""
    out: list[tuple[str, str, bool | None]] = []
    isolation = results.get("isolation")
    if isolation and isolation.get("runs"):
        for path, kind, n, ratios, m, base in isolation_pairs(isolation):
            out.append(
                (
                    f"a worker process costs ≤ {ISOLATION_CPU_LIMIT - 1:.0%} server CPU per call over inline "
                    f"({path}, {kind} tool, {n} clients; median of {len(ratios)} paired rounds)",
                    f"{med(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x); "
                    f"{m['cpu']:.2f} vs {base['cpu']:.2f} ms",
                    med(ratios) <= ISOLATION_CPU_LIMIT,
                )
            )
        return out
    calls = results.get("calls")
    if not calls or not calls.get("runs"):
        return out
    runs, names = calls["runs"], rows_of(calls)
    n = nearest({r["concurrency"] for r in runs}, BAR_CONCURRENCY)
    for path in PATH_NAMES:
        for key in (MCPHOST, f"{MCPHOST}-async"):
            inline = key.replace(MCPHOST, INLINE, 1)
            if key not in names or not cell(runs, inline, path, n):
                continue
            m, base = stats(cell(runs, key, path, n)), stats(cell(runs, inline, path, n))
            out.append(
                (
                    f"a worker process costs ≤ {ISOLATION_CPU_LIMIT - 1:.0%} server CPU per call over inline "
                    f"({path}, {names[key]['kind']} tool, {n} clients)",
                    f"{m['cpu']:.2f} vs {base['cpu']:.2f} ms = {ratio(m['cpu'], base['cpu'])}; "
                    f"calls/s {ratio(m['rps'], base['rps'])}",
                    m["cpu"] <= ISOLATION_CPU_LIMIT * base["cpu"],
                )
            )
    return out


def bars(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """``(criterion, measured, passed)`` for each of the issue's bars."""
    rows: list[tuple[str, str, bool | None]] = []
    calls = results.get("calls")
    if calls and calls.get("runs"):
        rows += calls_bars(calls)
    rows += isolation_bars(results)
    memory = results.get("memory")
    if memory and memory.get("runs"):
        kib = med(r["per_session_kib"] for r in memory["runs"] if r["server"] == MCPHOST)
        ref_kib = med(r["per_session_kib"] for r in memory["runs"] if r["server"] == REFERENCE)
        rows.append(
            (
                "memory per idle session ≤ reference",
                f"{kib:.1f} vs {ref_kib:.1f} KiB = {ratio(kib, ref_kib)}",
                kib <= ref_kib,
            )
        )
    reload = results.get("reload")
    if reload and reload.get("runs"):
        times = [r["seconds"] for r in reload["runs"] if r["seconds"] is not None]
        heard = len(times) == len(reload["runs"])
        rows.append(
            (
                "reload < 1 s (plugin file saved → tools/list_changed on an open session, median)",
                f"{med(times) * 1000:.0f} ms" + ("" if heard else f" ({len(reload['runs']) - len(times)} never came)"),
                heard and med(times) < 1.0,
            )
        )
        errors, calls = reload["calls"]["errors"], reload["calls"]["requests"]
        rows.append(("no call lost during the reloads", f"{errors} errors in {calls:,} calls", not errors))
    if reload and reload.get("stall"):
        most = max(r["sessions"] for r in reload["stall"])
        worst = max(r["stall_ms"] for r in reload["stall"] if r["sessions"] == most)
        rows.append(
            (
                f"a reload stalls the event loop ≤ {RELOAD_STALL_LIMIT_MS} ms with {most:,} sessions open (slowest)",
                f"{worst:.0f} ms",
                worst <= RELOAD_STALL_LIMIT_MS,
            )
        )
    drain = results.get("drain")
    if drain and "completed" in drain:
        rows.append(
            (
                "drain loses nothing (SIGTERM with calls in flight)",
                f"{drain['completed']} of {drain['in_flight']} answered; exit {drain['exit_code']}",
                drain["completed"] == drain["in_flight"] and drain["exit_code"] == 0,
            )
        )
    cold = results.get("cold_start") or {}
    for cpus in cold_layouts(cold.get("runs", [])):
        mine = cold_runs(cold["runs"], MCPHOST, cpus)
        notified = [r["ready_notified"] for r in mine if r.get("ready_notified") is not None]
        seconds = med(notified) if len(notified) == len(mine) else med(r["seconds"] for r in mine)
        signal = "READY=1 over sd_notify" if len(notified) == len(mine) else "first 200 from /health"
        isolated = any(r.get("workers") for r in mine)
        rows.append(
            (
                f"cold start with {cold['plugins']} plugins{', each in a worker process,' if isolated else ''} "
                f"on {cpus_label(cpus)} < {COLD_START_LIMIT_S} s (exec → {signal})",
                f"{seconds:.2f} s (median)"
                + "".join(
                    f"; {name} {med(r['seconds'] for r in cold_runs(cold['runs'], key, cpus)):.2f} s = "
                    f"{ratio(seconds, med(r['seconds'] for r in cold_runs(cold['runs'], key, cpus)))}"
                    for key, name in ((INLINE, "inline"), (REFERENCE, "reference's first answer"))
                    if cold_runs(cold["runs"], key, cpus)
                ),
                seconds < COLD_START_LIMIT_S,
            )
        )
    uss = [kib for r in cold.get("runs", []) if r["server"] == MCPHOST for kib in r.get("worker_uss_kib", [])]
    if uss:
        rows.append(
            (
                f"unique memory (USS) per plugin's worker ≤ {WORKER_USS_LIMIT_MIB} MiB ({cold['plugins']} plugins)",
                f"{med(uss) / 1024:.1f} MiB (median of {len(uss)}; largest {max(uss) / 1024:.1f})",
                med(uss) / 1024 <= WORKER_USS_LIMIT_MIB,
            )
        )
    rows += peer_bars(results.get("workers"))
    killed = results.get("worker_killed")
    if killed and killed.get("runs"):
        during = [r for r in killed["runs"] if r["killing"]]
        calm = [r for r in killed["runs"] if not r["killing"]]
        errors, kills = sum(r["error_count"] for r in during), sum(r["kills"] for r in during)
        rows.append(
            (
                "a worker killed under load: the witness plugin's calls fail 0 times",
                f"{errors} errors in {sum(r['requests'] for r in during):,} calls during {kills} kills; "
                f"p99 {fmt_ms(med(r['p99_ms'] for r in during))} vs {fmt_ms(med(r['p99_ms'] for r in calm))} ms "
                f"without kills = {ratio(med(r['p99_ms'] for r in during), med(r['p99_ms'] for r in calm))}",
                errors == 0 and kills > 0,
            )
        )
    return rows


def peer_bars(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """mcphost with two workers against the TypeScript peer on the sessions path."""
    if not data or not data.get("runs") or TS_PEER not in data["servers"]:
        return []
    runs, n, path = data["runs"], data["connections"], "2025-11-25"
    two, peer = stats(cell(runs, TWO_WORKERS, path, n)), stats(cell(runs, TS_PEER, path, n))
    return [
        (
            f"tools/call on {path}, {n} clients, `workers = 2`: calls/s ≥ 1.0x the TypeScript SDK on express",
            f"{two['rps']:.0f} vs {peer['rps']:.0f} calls/s = {ratio(two['rps'], peer['rps'])}",
            two["rps"] >= peer["rps"],
        ),
        (
            f"tools/call on {path}, {n} clients, `workers = 2`: p99 ≤ {PEER_P99_LIMIT:g}x the TypeScript peer's",
            f"{fmt_ms(two['p99'])} vs {fmt_ms(peer['p99'])} ms = {ratio(two['p99'], peer['p99'])}",
            two["p99"] <= PEER_P99_LIMIT * peer["p99"],
        ),
    ]


# --- markdown -----------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> list[str]:
    """A markdown table; ``align`` has one of l/c/r per column."""
    align = align or "l" + "r" * (len(header) - 1)
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join({"l": ":--", "c": ":-:"}.get(a, "--:") for a in align) + "|",
    ]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def earlier_runs(results: dict[str, Any]) -> str:
    """Which sections an ``--only`` run kept from earlier runs, and when and what those measured."""
    meta = results.get("meta", {})
    kept: dict[str, list[str]] = {}
    for name, section in results.items():
        if name != "meta" and isinstance(section, dict) and "date" in section and name not in meta.get("scenarios", ()):
            when = f"{section['date']}, mcphost {section.get('mcphost', '?')}"
            kept.setdefault(when, []).append(name)
    return "".join(f" Kept from an earlier run ({when}): {', '.join(names)}." for when, names in kept.items())


def section_calls(results: dict[str, Any]) -> list[str]:
    calls = results.get("calls")
    if not calls or not calls.get("runs"):
        return []
    runs, names = calls["runs"], rows_of(calls)
    levels = sorted({r["concurrency"] for r in runs})
    out = [
        "## tools/call: throughput and latency",
        "",
        f"Median of {calls['rounds']} round(s) of {calls['duration_s']:g} s per cell{longer_runs(calls)}; "
        "rows loaded in alternation. `x ref` is "
        "relative to the reference row whose tool is written the same way (sync or async); `range` is the lowest "
        "and highest round. Latency is wrk's, per request, client side. `CPU ms/call` is the server's CPU time "
        "(all threads of the server and of its worker processes, from `/proc`) over the run divided by the calls "
        "completed: on a machine shared with other work, calls/s moves with the CPU time the server gets, CPU per "
        "call much less, so it is the steadier comparison. Errors count socket errors, timeouts, non-200 answers "
        "and answers without a JSON-RPC `result` (or with `isError`). The stack's ceiling and the SDK on "
        "Hypercorn explain the other rows and are measured at one client count only.",
        "",
        "![tools/call throughput](bench/plots/calls_throughput.png)",
        "",
        "![tools/call latency](bench/plots/calls_latency.png)",
        "",
        "![tools/call CPU per call](bench/plots/calls_cpu.png)",
        "",
    ]
    for path, title in PATH_NAMES.items():
        out += [f"### {title}", ""]
        rows = []
        for n in levels:
            for key, info in names.items():
                rows_ = cell(runs, key, path, n)
                if not rows_:
                    continue
                s, ref = stats(rows_), stats(cell(runs, reference_for(names, key), path, n))
                rows.append(
                    (
                        n,
                        f"**{info['label']}**" if info["server"] == MCPHOST else info["label"],
                        info["kind"] if info["server"] != CEILING else "-",
                        f"{s['rps']:.0f}",
                        f"{s['rps_min']:.0f}-{s['rps_max']:.0f}",
                        ratio(s["rps"], ref["rps"]),
                        fmt_ms(s["p50"]),
                        fmt_ms(s["p99"]),
                        ratio(s["p99"], ref["p99"]),
                        f"{s['cpu']:.2f}",
                        ratio(s["cpu"], ref["cpu"]),
                        s["errors"],
                        f"{s['bytes']:.0f}",
                    )
                )
        out += table(
            (
                "clients",
                "server",
                "tool",
                "calls/s",
                "range",
                "x ref",
                "p50 ms",
                "p99 ms",
                "p99 x ref",
                "CPU ms/call",
                "CPU x ref",
                "errors",
                "body bytes",
            ),
            rows,
            "rllrrrrrrrrrr",
        )
    out += isolation_table(runs, names, levels)
    out += ceiling_table(runs, names)
    if calls.get("log_lines"):
        sent, lines = calls.get("requests_sent", {}), calls["log_lines"]
        out += [
            f"Request logging was on: mcphost wrote {lines.get(MCPHOST, 0):,} log lines for "
            f"{sent.get(MCPHOST, 0):,} measured calls (plus sessions, probes and warm-up); the reference's "
            f"uvicorn access log {lines.get(REFERENCE, 0):,} lines.",
            "",
        ]
    return out


def longer_runs(calls: dict[str, Any]) -> str:
    """How much longer the runs with many clients were, if the results say."""
    longer = calls.get("longer_runs")
    return f" (x{longer['times']:g} from {longer['from_clients']} clients on)" if longer else ""


def isolation_table(runs: list[dict[str, Any]], names: dict[str, dict[str, str]], levels: list[int]) -> list[str]:
    """mcphost with its plugin in a worker process against the same plugin inline."""
    pairs = [(key, key.replace(MCPHOST, INLINE, 1)) for key in names if names[key]["server"] == MCPHOST]
    pairs = [(key, inline) for key, inline in pairs if inline in names]
    if not pairs:
        return []
    rows = []
    for path in PATH_NAMES:
        for n in levels:
            for key, inline in pairs:
                m, base = stats(cell(runs, key, path, n)), stats(cell(runs, inline, path, n))
                rows.append(
                    (
                        path,
                        n,
                        names[key]["kind"],
                        f"{base['cpu']:.2f}",
                        f"{m['cpu']:.2f}",
                        f"**{ratio(m['cpu'], base['cpu'])}**",
                        f"{base['rps']:.0f}",
                        f"{m['rps']:.0f}",
                        ratio(m["rps"], base["rps"]),
                        ratio(m["p99"], base["p99"]),
                    )
                )
    return [
        "### What the worker process costs: process over inline",
        "",
        'The same mcphost and plugin, `[plugins.noop] isolation = "process"` (as deployed) against '
        '`"inline"`, from the tables above (same run, alternating; each figure the median of its cells). '
        "The bar is measured in pairs of its own, in the next section.",
        "",
        *table(
            (
                "path",
                "clients",
                "tool",
                "CPU ms/call inline",
                "process",
                "process ÷ inline",
                "calls/s inline",
                "process",
                "÷",
                "p99 ÷",
            ),
            rows,
            "lrlrrrrrrr",
        ),
    ]


def section_isolation(results: dict[str, Any]) -> list[str]:
    """The isolation scenario: process ÷ inline server CPU per call, round by round."""
    isolation = results.get("isolation")
    if not isolation or not isolation.get("runs"):
        return []
    rows = [
        (
            path,
            kind,
            f"{base['cpu']:.3f}",
            f"{m['cpu']:.3f}",
            " ".join(f"{r:.2f}" for r in ratios),
            f"**{med(ratios):.2f}x**",
            verdict(med(ratios) <= ISOLATION_CPU_LIMIT),
        )
        for path, kind, n, ratios, m, base in isolation_pairs(isolation)
    ]
    n = isolation["runs"][0]["concurrency"]
    return [
        "## What a worker process costs (the bar's measurement)",
        "",
        f"The same mcphost and plugin with the plugin in a worker process (as deployed) and inline, "
        f"nothing else loaded: {n} clients, {isolation['isolation_rounds']} rounds of "
        f"{isolation['duration_s']:g} s per server. Each round loads the two side by side (which goes first "
        "swaps every round), and its ratio is process ÷ inline server CPU per call (daemon and worker together, "
        "all threads, from `/proc`) of that round: drift on a shared machine falls on both sides of a ratio. "
        f"The bar: the median over rounds at most {ISOLATION_CPU_LIMIT:.2f}x.",
        "",
        *table(
            ("path", "tool", "CPU ms/call inline", "process", "process ÷ inline, each round", "median", "bar"),
            rows,
            "llrrlrc",
        ),
    ]


def ceiling_table(runs: list[dict[str, Any]], names: dict[str, dict[str, str]]) -> list[str]:
    """Each sync row's calls/s as a share of the bare ASGI app's, where both were measured."""
    rows = []
    sync = [key for key, info in names.items() if info["kind"] == "sync" and key != CEILING]
    for path in PATH_NAMES:
        for n in sorted({r["concurrency"] for r in runs if r["server"] == CEILING}):
            top = stats(cell(runs, CEILING, path, n))["rps"]
            rows.append(
                (
                    path,
                    n,
                    *(f"{100 * stats(cell(runs, key, path, n))['rps'] / top:.0f} %" if top else "-" for key in sync),
                )
            )
    if not rows:
        return []
    return [
        "### Share of the stack's ceiling (row 3), sync tool",
        "",
        *table(("path", "clients", *(names[k]["label"] for k in sync)), rows, "lr" + "r" * len(sync)),
    ]


def section_tools_list(results: dict[str, Any]) -> list[str]:
    data = results.get("tools_list")
    if not data or not data.get("runs"):
        return []
    runs, labels = data["runs"], data["servers"]
    n = data["runs"][0]["concurrency"]
    rows = []
    for path in PATH_NAMES:
        ref = stats(cell(runs, REFERENCE, path, n))
        for key, label in labels.items():
            s = stats(cell(runs, key, path, n))
            rows.append(
                (
                    path,
                    label,
                    f"{s['rps']:.0f}",
                    ratio(s["rps"], ref["rps"]),
                    fmt_ms(s["p50"]),
                    fmt_ms(s["p99"]),
                    ratio(s["p99"], ref["p99"]),
                    s["errors"],
                    f"{s['bytes'] / 1024:.0f}",
                )
            )
    return [
        f"## tools/list with {data['tools']} tools (50 plugins x 10 tools)",
        "",
        f"{n} clients, median of {data['rounds']} round(s) of {data['seconds']:g} s (a listing is ~200 KB, so fewer "
        "clients than for calls keep latency within the run). mcphost loads 50 generated "
        "plugin files through `[plugins] paths`; the reference registers the same 500 functions under the same "
        "names and descriptions.",
        "",
        "![tools/list](bench/plots/tools_list.png)",
        "",
        *table(
            ("path", "server", "lists/s", "x ref", "p50 ms", "p99 ms", "p99 x ref", "errors", "body KiB"),
            rows,
            "llrrrrrrr",
        ),
    ]


def section_memory(results: dict[str, Any]) -> list[str]:
    data = results.get("memory")
    if not data or not data.get("runs"):
        return []
    runs, labels = data["runs"], data["servers"]
    ref = med(r["per_session_kib"] for r in runs if r["server"] == REFERENCE)
    rows = []
    for key, label in labels.items():
        mine = [r for r in runs if r["server"] == key]
        per = med(r["per_session_kib"] for r in mine)
        rows.append(
            (
                label,
                f"{med(r['rss_before_kib'] for r in mine) / 1024:.1f}",
                f"{med(r['rss_after_kib'] for r in mine) / 1024:.1f}",
                f"{per:.1f}",
                ratio(per, ref),
                f"{med(r['open_seconds'] for r in mine):.1f}",
            )
        )
    sessions = runs[0]["sessions"]
    return [
        f"## Memory per idle session ({sessions:,} open sessions)",
        "",
        f"(VmRSS after opening {sessions:,} sessions - VmRSS before) / {sessions:,}, read from `/proc/PID/status`; "
        "each server fresh, with 10 sessions and a call made first so first-use allocations are not counted. "
        "A session is `initialize` + `notifications/initialized`, then idle. "
        f"Median of {len({r['round'] for r in runs})} fresh start(s) per server.",
        "",
        "![memory per session](bench/plots/memory.png)",
        "",
        *table(("server", "RSS before MiB", "RSS after MiB", "KiB/session", "x ref", "seconds to open"), rows),
        *traced_memory(data.get("traced")),
        *memory_gap(runs),
    ]


def memory_gap(runs: list[dict[str, Any]]) -> list[str]:
    """When mcphost holds more per idle session than the reference: how much of that is the
    stack (the SDK's app on Hypercorn/Trio) and how much mcphost, and what would close it."""
    per = {key: med(r["per_session_kib"] for r in runs if r["server"] == key) for key in {r["server"] for r in runs}}
    ref, stack, mine = per.get(REFERENCE), per.get("sdk-hypercorn"), per.get("mcphost")
    if ref is None or stack is None or mine is None or mine <= ref:
        return []
    return [
        f"**Why the bar is not met, and what would meet it.** Of the {mine - ref:.1f} KiB per session over the "
        f"reference, {stack - ref:+.1f} KiB is the stack: the SDK's own app costs that much more on Hypercorn/Trio "
        f"than on uvicorn (Trio and anyio's tasks, cancel scopes and memory streams for each session's server "
        f"task, the largest rows above); mcphost itself differs from that by {mine - stack:+.1f} KiB. Each idle "
        "session also keeps the last request that reached it: the SDK's dispatcher holds its last message "
        "(with the ASGI scope) and its receive stream the sender's context. What would close the gap is not "
        "keeping a task per idle session at all: park a session that has no stream open and nothing in flight as "
        "its store record "
        "(protocol version, client parameters, owner), answer direct requests from the record, and rebuild the "
        "session, as a restart already does, for the next request only the SDK can serve.",
        "",
    ]


def traced_memory(traced: dict[str, Any] | None) -> list[str]:
    """Where mcphost's per-session memory sits, from the tracemalloc comparison."""
    if not traced:
        return []
    n = traced["sessions"]
    return [
        f"Where it goes in mcphost: tracemalloc snapshots around opening {n} more sessions (Python allocations "
        f"only, so less than RSS): {traced['total_bytes'] / n / 1024:.1f} KiB per session, largest first.",
        "",
        *table(
            ("file (where the memory was allocated)", "bytes/session", "blocks/session"),
            ((f"`{r['file']}`", f"{r['bytes'] / n:.0f}", f"{r['blocks'] / n:.1f}") for r in traced["files"][:12]),
        ),
        *table(
            ("line", "bytes/session"),
            ((f"`{r['file']}:{r['line']}`", f"{r['bytes'] / n:.0f}") for r in traced["lines"][:10]),
        ),
    ]


def section_cold_start(results: dict[str, Any]) -> list[str]:
    data = results.get("cold_start")
    if not data or not data.get("runs"):
        return []
    runs, labels = data["runs"], data["servers"]
    layouts = cold_layouts(runs)
    rows = []
    for cpus in layouts:
        reference = med(r["seconds"] for r in cold_runs(runs, REFERENCE, cpus))
        for key, label in labels.items():
            own = cold_runs(runs, key, cpus)
            times = [r["seconds"] for r in own]
            notified = [r["ready_notified"] for r in own if r.get("ready_notified") is not None]
            uss = [kib for r in own for kib in r.get("worker_uss_kib", [])]
            rows.append(
                (
                    label,
                    cpus_label(cpus),
                    f"{med(notified):.2f}" if notified else "-",
                    f"{med(times):.2f}",
                    f"{med(times) / reference:.2f}x",
                    f"{min(times):.2f}",
                    f"{max(times):.2f}",
                    len(times),
                    f"{med(r['rss_kib'] for r in own) / 1024:.1f}" if "rss_kib" in own[0] else "-",
                    f"{med(r.get('workers', 0) for r in own):.0f}",
                    f"{med(uss) / 1024:.1f} ({min(uss) / 1024:.1f}-{max(uss) / 1024:.1f})" if uss else "-",
                )
            )
    out = [
        f"## Cold start with {data['plugins']} plugins",
        "",
        "Exec → `READY=1` over sd_notify (mcphost, given a `NOTIFY_SOCKET` as systemd would) and exec → first "
        "`200` from `/health` (mcphost) or first HTTP answer of any kind (the reference, serving the same 100 tools, "
        "for scale, in alternation with mcphost: the machine's speed moves both). One untimed start first "
        "byte-compiles the generated plugins and warms the page cache. mcphost starts with the plugins inline "
        'and with each in a worker process of its own (`isolation = "process"`, as deployed); once it is '
        "ready, the memory: the server's RSS and each worker's unique memory (USS: `Private_Clean + "
        "Private_Dirty` of `/proc/PID/smaps_rollup`, what the worker alone holds), median and range over "
        "every worker of every start. Each start is timed on one CPU (the servers' pinned CPU, where what the "
        "daemon, its fork server and its workers do adds up) and on both of this machine's CPUs, where the workers "
        "start beside the daemon, as on a 2-CPU host.",
        "",
        "![cold start](bench/plots/cold_start.png)",
        "",
        *table(
            (
                "server",
                "on",
                "READY=1 median s",
                "first answer median s",
                "x ref",
                "min s",
                "max s",
                "runs",
                "RSS MiB",
                "workers",
                "USS per worker MiB",
            ),
            rows,
        ),
    ]
    startup = data.get("profile")
    if startup:
        owners = ", ".join(f"{o} {p:.0f} %" for o, p in list(startup["owners_self"].items())[:6])
        mine = ", ".join(
            f"`{r['file'] if r['function'] == '<module>' else r['function']}` {r['percent']:.0f} %"
            for r in startup["mcphost_inclusive"][:6]
        )
        out += [
            f"A start profiled from spawn to ready ({startup['ready_s']:.2f} s with py-spy attached, "
            f"{startup['samples']} samples at {startup['rate']}/s; `{startup['file']}`): "
            f"**{startup['imports_percent']:.0f} % of the samples are imports**. Self time by owner: {owners}. "
            f"mcphost's functions, inclusive: {mine}.",
            "",
        ]
    imports = data.get("imports")
    if imports and imports.get("packages"):
        out += [
            f"The command's imports take {imports['total_ms']:.0f} ms of that (`python -X importtime` on "
            "`mcphost.cli.main`, imported as the `mcphost` command does: collector paused, the SDK's wire models "
            "left to build on first use; self time summed by top-level package, and the single largest modules):",
            "",
            *table(("package", "ms"), ((f"`{r['package']}`", f"{r['self_ms']:.0f}") for r in imports["packages"])),
            *table(
                ("module", "self ms", "cumulative ms"),
                ((f"`{r['module']}`", f"{r['self_ms']:.0f}", f"{r['cumulative_ms']:.0f}") for r in imports["modules"]),
            ),
        ]
    counted = results.get("start_instructions")
    if counted and counted.get("runs"):
        out += start_instructions(counted)

    def ready(key: str) -> float | None:
        # On the fewest CPUs: where a start's CPU adds up.
        own = cold_runs(runs, key, layouts[0])
        notified = [r["ready_notified"] for r in own if r.get("ready_notified") is not None]
        return med(notified) if notified else None

    reference = med(r["seconds"] for r in cold_runs(runs, REFERENCE, layouts[0]))

    isolated, inline = ready(MCPHOST), ready(INLINE)
    if isolated is not None and inline is not None and isolated >= COLD_START_LIMIT_S:
        out += [
            f"**Why the bar is not met.** With every plugin inline mcphost was ready after {inline:.2f} s; each "
            f"plugin in a worker process of its own took it to {isolated:.2f} s, on {cpus_label(layouts[0])}. The "
            "workers are forked from the fork server, which the daemon forks from itself once it has imported "
            "the worker runtime (mcphost's plugin layer and the MCP SDK), so that import is paid once; then each "
            f"worker imports its plugin and builds its tools, {data['plugins']} of them, which on one CPU adds up "
            "with the daemon's own start. Once forked, a worker shares the fork server's pages (the USS column); "
            "what is left is mostly the MCP SDK's import, paid by the daemon.",
            "",
        ]
    notified_inline = inline if isolated is not None else ready(MCPHOST)
    if notified_inline is not None and notified_inline >= COLD_START_LIMIT_S:
        out += [
            "**Why the bar is not met, and what would meet it.** Start-up is CPU work only (nothing in it waits), "
            f"and most of it is imports. The reference, started in alternation, took {reference:.2f} s in this "
            "run: the seconds follow this machine's speed, which moves by half between phases of its load. "
            "Counted in instructions (`--only start_instructions`), which do not move with it, the two starts "
            "differ only in the stacks' imports: the tools cost both the same (the SDK's `Tool.from_function`: "
            "two pydantic models and two JSON schemas a tool), and mcphost adds Trio, Hypercorn (with h2 and "
            "wsproto, imported whatever the protocol), structlog, pydantic-settings, prometheus-client and its "
            "own modules, while the MCP SDK's imports are most of both. A start under "
            f"{COLD_START_LIMIT_S:g} s in this machine's slow phases would take an SDK that imports less (its "
            "`mcp` package imports the client and the high-level `MCPServer` whatever is asked of it) or fewer "
            "tools built before serving.",
            "",
        ]
    return out


def start_instructions(counted: dict[str, Any]) -> list[str]:
    """The cold-start section's instruction counts (``--only start_instructions``)."""
    runs = counted["runs"]

    def count(server: str, most: bool) -> dict[str, Any]:
        own = sorted((r for r in runs if r["server"] == server), key=lambda r: r["tools"])
        return own[-1] if most else own[0]

    rows = []
    for key, label in counted["servers"].items():
        few, many = count(key, False), count(key, True)
        rows.append(
            (
                label,
                f"{few['instructions'] / 1e9:.2f} ({few['tools']})",
                f"{many['instructions'] / 1e9:.2f} ({many['tools']})",
                f"{(many['instructions'] - few['instructions']) / 1e9:.2f}",
                f"{many['instructions'] / count(REFERENCE, True)['instructions']:.2f}x",
            )
        )
    return [
        f"Instructions from exec to ready, counted by callgrind (`python bench/run.py --only start_instructions`, "
        f"{counted.get('date', '?')}, mcphost {counted.get('mcphost', '?')}): repeatable to a few tenths of a "
        "percent whatever else the machine does, so they show what a change to start-up is worth where the "
        "seconds above cannot. Ready is `READY=1` for mcphost and the end of uvicorn's start-up (lifespan, "
        "socket bound) for the reference.",
        "",
        *table(
            ("server", "G instructions, few tools (tools)", "G instructions, catalogue (tools)", "the tools", "x ref"),
            rows,
        ),
    ]


def section_reload(results: dict[str, Any]) -> list[str]:
    data = results.get("reload")
    if not data or not data.get("runs"):
        return []
    times = [r["seconds"] for r in data["runs"] if r["seconds"] is not None]
    visible = sum(r["visible"] for r in data["runs"])
    calls = data["calls"]
    rows = [
        ("reloads (one plugin's source saved each time)", len(data["runs"])),
        ("saved → notifications/tools/list_changed, median", f"{med(times) * 1000:.0f} ms" if times else "-"),
        ("saved → notifications/tools/list_changed, slowest", f"{max(times) * 1000:.0f} ms" if times else "-"),
        ("tools/list showed the change right after", f"{visible} of {len(data['runs'])}"),
        ("tools/call answered during the reloads (50 clients, 2026-07-28)", f"{calls['requests']:,}"),
        ("errors among them", calls["errors"]),
    ]
    return [
        f"## Reload under load ({data['plugins']} plugins)",
        "",
        "mcphost (`[reload] watch = true`) serving the no-op plugin and 10 generated plugins while wrk keeps "
        "50 clients calling `noop_add`; a 2025-11-25 session holds its event stream open. Each reload adds a tool "
        "to one plugin's file and times the save to `notifications/tools/list_changed` on that stream (this "
        f"includes the watcher's {data.get('debounce_ms', 200)} ms debounce, `[reload] debounce_ms`), then lists "
        "the tools.",
        "",
        *table(("", "measured"), rows, "lr"),
        *reload_stall_table(data.get("stall", [])),
    ]


def reload_stall_table(stall: list[dict[str, Any]]) -> list[str]:
    """The reload's event-loop stall by open sessions, if it was measured."""
    if not stall:
        return []
    rows = []
    for count in sorted({r["sessions"] for r in stall}):
        runs = [r for r in stall if r["sessions"] == count]
        stalls = [r["stall_ms"] for r in runs]
        rows.append(
            (
                f"{count:,}",
                len(runs),
                f"{med(stalls):.0f}",
                f"{max(stalls):.0f}",
                f"{med(r['baseline_ms'] for r in runs):.1f}",
                f"{runs[-1]['rss_growth_kib'] / 1024:.1f}",
            )
        )
    return [
        "### Event-loop stall of a reload, by open sessions",
        "",
        "mcphost (production config, the no-op plugin) with that many 2025-11-25 sessions open and idle, no "
        "other load; each reload adds a tool to the plugin (SIGHUP), so its old version is replaced and every "
        "session is sent `notifications/tools/list_changed`. A probe asks `/health` every 2 ms on one keep-alive "
        "connection: the stall is its slowest answer in the 3 s after the signal (the collector would settle "
        "one second in); the baseline is its median answer in the second before. RSS growth: over all the reloads.",
        "",
        *table(
            ("sessions", "reloads", "stall ms, median", "stall ms, slowest", "baseline ms", "RSS growth MiB"),
            rows,
        ),
    ]


def section_workers(results: dict[str, Any]) -> list[str]:
    data = results.get("workers")
    if not data or not data.get("runs"):
        return []
    runs, names, n = data["runs"], data["servers"], data["connections"]
    rows = []
    for path in PATH_NAMES:
        ref, peer = stats(cell(runs, REFERENCE, path, n)), stats(cell(runs, TS_PEER, path, n))
        for key, label in names.items():
            if not cell(runs, key, path, n):
                continue
            m = stats(cell(runs, key, path, n))
            rows.append(
                (
                    path,
                    label,
                    f"{m['rps']:.0f}",
                    ratio(m["rps"], ref["rps"]),
                    ratio(m["rps"], peer["rps"]),
                    fmt_ms(m["p50"]),
                    fmt_ms(m["p99"]),
                    ratio(m["p99"], peer["p99"]),
                    f"{m['cpu']:.2f}",
                    m["errors"],
                )
            )
    return [
        "## One worker process or two, and the TypeScript peer",
        "",
        f"tools/call (sync tool) with {n} clients, median of {data.get('rounds', '?')} round(s) of "
        f"{data.get('duration_s', 0):g} s, nothing pinned: each server may use both cores, which it shares with "
        "wrk. `[server] workers = 2` runs two Trio processes on one socket (sessions move between them through the "
        "session store), each with its own worker process for the plugin; the kernel spreads connections over "
        "them. The TypeScript peer is the official `@modelcontextprotocol/sdk` (pinned in "
        "`bench/peers/ts/package-lock.json`) serving the same `add` tool with `StreamableHTTPServerTransport` on "
        "express with a session map and an in-memory event store, as the SDK's own example "
        "(`simpleStreamableHttp`) builds it, on one Node process; it serves sessions only (the TypeScript SDK "
        "has no 2026-07-28 requests). It checks no key and writes no log line per request; mcphost does both.",
        "",
        *table(
            (
                "path",
                "server",
                "calls/s",
                "x reference",
                "x TS peer",
                "p50 ms",
                "p99 ms",
                "p99 x TS peer",
                "CPU ms/call",
                "errors",
            ),
            rows,
            "llrrrrrrrr",
        ),
    ]


def section_worker_killed(results: dict[str, Any]) -> list[str]:
    data = results.get("worker_killed")
    if not data or not data.get("runs"):
        return []
    rows = []
    for killing in (False, True):
        own = [r for r in data["runs"] if r["killing"] == killing]
        rows.append(
            (
                "SIGKILL to the victim's worker every time it is back" if killing else "no kills",
                len(own),
                sum(r["kills"] for r in own),
                f"{sum(r['requests'] for r in own):,}",
                sum(r["error_count"] for r in own),
                f"{med(r['rps'] for r in own):.0f}",
                fmt_ms(med(r["p50_ms"] for r in own)),
                fmt_ms(med(r["p99_ms"] for r in own)),
                fmt_ms(max(r["max_ms"] for r in own)),
            )
        )
    return [
        "## A worker killed under load",
        "",
        f"mcphost (production config) with two plugins, each in a worker process: the witness (`noop`) under "
        f"{data['connections']} clients' `noop_add` calls on the 2026-07-28 path for {data['seconds']:g} s a "
        "round, and a victim whose one tool returns its worker's pid. During the runs with kills a thread asks "
        f"the victim for its pid and SIGKILLs it, then {data['kill_interval_s']:g} s later asks again (the "
        "supervisor has restarted it by then, or the call fails and is asked again; the victim's restart limit "
        "is set high so it is never settled as failed). Runs with and without kills alternate; the worker's "
        "restart competes for the server's CPU, which the latency shows.",
        "",
        *table(
            ("", "runs", "kills", "witness calls", "witness errors", "calls/s", "p50 ms", "p99 ms", "max ms"),
            rows,
            "lrrrrrrrr",
        ),
    ]


def section_drain(results: dict[str, Any]) -> list[str]:
    data = results.get("drain")
    if not data or "completed" not in data:
        return []
    exit_after = data["exit_after_s"]
    rows = [
        (f"calls in flight at SIGTERM (each sleeps {data['call_seconds']:g} s)", data["in_flight"]),
        ("answered with their result", data["completed"]),
        ("failed or cut off", data["failed"]),
        ("last answer after SIGTERM", f"{data['last_answer_after_s']:.2f} s"),
        ("a new request sent 0.1 s after SIGTERM got", data["new_request_status"] or "connection refused"),
        ("process exit after SIGTERM", f"{exit_after:.2f} s" if exit_after is not None else "did not exit in 60 s"),
        ("exit status", data["exit_code"]),
    ]
    return [
        "## Drain on SIGTERM",
        "",
        f"{data['in_flight']} concurrent 2026-07-28 calls of `noop_sleep` (a {data['call_seconds']:g}-second async "
        "tool allowed 100 at once), SIGTERM 0.4 s after the last request was written.",
        "",
        *table(("", "measured"), rows, "lr"),
    ]


def section_not_measurable(results: dict[str, Any]) -> list[str]:
    rows = [
        (name, results[name]["not_measurable"])
        for name in ("reload", "drain")
        if name in results and "not_measurable" in results[name]
    ]
    if not rows:
        return []
    return ["## Not yet measurable", "", *table(("scenario", "why, and what will be measured"), rows, "ll")]


def section_profile(results: dict[str, Any]) -> list[str]:
    data = results.get("profile")
    if not data:
        return []
    if "skipped" in data:
        return ["## Profile", "", f"Skipped: {data['skipped']}.", ""]
    labels = {
        "mcphost": "mcphost (worker process)",
        "mcphost-inline": "mcphost (inline)",
        "sdk-hypercorn": "SDK on Hypercorn/Trio",
        "reference": "SDK on uvicorn (ref)",
    }
    out = [
        "## Profile: where mcphost's CPU goes",
        "",
        f"py-spy, {data['rate']} samples/s for {data['seconds']:g} s per server, under {data['connections']}-client "
        "tools/call load, on the event-loop (main) thread, which is what limits a single-process server. "
        "The first table splits the event loop's CPU time per call (main-thread CPU from `/proc` over the run, "
        "divided by the calls completed) by the profile's shares. Owners: the innermost frame's package; time in "
        "stdlib helpers (contextlib, weakref) is charged to the package that called them. mcphost's own profiles: "
        + ", ".join(f"`{p[MCPHOST]['file']}`" for p in data["paths"].values() if MCPHOST in p)
        + " (open in https://www.speedscope.app), and flame graphs "
        + ", ".join(
            f"`{p[MCPHOST]['flamegraph']}`" for p in data["paths"].values() if p.get(MCPHOST, {}).get("flamegraph")
        )
        + ".",
        "",
        "![profile](bench/plots/profile.png)",
        "",
        *call_stages(data, labels),
    ]
    for path, servers_ in data["paths"].items():
        keys = [k for k in labels if k in servers_]
        cpu = {k: servers_[k]["loop_cpu_ms_per_call"] or 0.0 for k in keys}
        owners = sorted(
            {o for k in keys for o in servers_[k]["owners_self"]},
            # Ties (owners mcphost never hits) by name, so a re-render changes nothing.
            key=lambda o: (-servers_.get(MCPHOST, {}).get("owners_self", {}).get(o, 0.0), o),
        )
        rows = [("**all (event-loop CPU ms/call)**", *(f"**{cpu[k]:.2f}**" for k in keys))]
        for o in owners:
            cells = [servers_[k]["owners_self"].get(o, 0.0) * cpu[k] / 100 for k in keys]
            if max(cells) >= 0.01:
                rows.append((o, *(f"{c:.2f}" for c in cells)))
        m = servers_.get(MCPHOST)
        out += [
            f"### {PATH_NAMES.get(path, path)}",
            "",
            "Event-loop CPU per call by owner, ms ("
            + ", ".join(f"{labels[k]}: {servers_[k]['calls_per_s']:.0f} calls/s while profiled" for k in keys)
            + "):",
            "",
            *table(("owner", *(labels[k] for k in keys)), rows),
        ]
        if m:
            out += [
                "mcphost's top functions by self time (% of event-loop samples):",
                "",
                *table(
                    ("function", "file", "owner", "self %"),
                    (
                        (f"`{r['function']}`", f"`{r['file']}`", r["owner"], f"{r['percent']:.1f}")
                        for r in m["top_self"][:15]
                    ),
                    "lllr",
                ),
                "Time inside the event loop (Trio, anyio) by the code that asked for it:",
                "",
                *table(
                    ("caller", "file", "owner", "%"),
                    (
                        (
                            f"`{r['function']}`" if r["file"] else r["function"],
                            f"`{r['file']}`" if r["file"] else "",
                            r["owner"],
                            f"{r['percent']:.1f}",
                        )
                        for r in m["loop_callers"][:10]
                    ),
                    "lllr",
                ),
                f"Samples with structlog or stdlib logging on the stack: {m['logging_percent']:.1f} %. "
                f"mcphost's own functions, inclusive: "
                + ", ".join(f"`{r['function']}` {r['percent']:.1f} %" for r in m["mcphost_inclusive"][:6])
                + ".",
                "",
            ]
    return out


def call_stages(data: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Where each microsecond of a call goes, by stage, per path and server."""
    out = [
        "### Where a call's microseconds go",
        "",
        "All of a call's CPU time (every thread of the server and of its worker processes, from `/proc` over the "
        "profiled load, divided by the calls completed) split into the stages a call passes through: each "
        "thread's CPU while profiled (from `/proc`) by the stages of its busy samples, so a thread blocked in a "
        "system call, which the sampler may count as busy, weighs what it ran: nothing. A sample belongs to the "
        "innermost frame that is not a helper, validation (pydantic), JSON or the event loop's machinery: those "
        "are charged to whoever called them; the event loop's own row is its scheduling with nobody above it. In "
        "the worker, its Trio loop, socket wire and dispatch are the worker's side of the hop; the fence it runs "
        "around the tool is mcphost's.",
        "",
    ]
    for path, servers_ in data["paths"].items():
        keys = [k for k in labels if k in servers_ and servers_[k].get("stages_us")]
        if not keys:
            continue
        stages = [name for name in profiling.STAGES if any(servers_[k]["stages_us"].get(name) for k in keys)]
        rows = [(name, *(f"{servers_[k]['stages_us'].get(name, 0.0):.0f}" for k in keys)) for name in stages]
        totals = {k: sum(servers_[k]["stages_us"].values()) for k in keys}
        rows.append(("**all: CPU µs per call**", *(f"**{totals[k]:.0f}**" for k in keys)))
        rows.append(
            ("of which in worker processes", *(f"{servers_[k]['cpu_us_per_call'].get('workers', 0):.0f}" for k in keys))
        )
        out += [
            f"{PATH_NAMES.get(path, path)}, µs of CPU per call ({data['connections']} clients, sync tool):",
            "",
            *table(("stage", *(labels[k] for k in keys)), rows),
        ]
    return out


def load_note(meta: dict[str, Any]) -> str:
    """The machine's load average around the run: on 2 CPUs, above 2 means other work competed."""
    before = meta.get("machine", {}).get("load_average_at_start")
    after = meta.get("load_average_at_end")
    if not before or not after:
        return ""
    return f", load average {before[0]:.1f} at the start and {after[0]:.1f} at the end"


def section_method(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    options = meta.get("options", {})
    pin = options.get("pin")
    return [
        "## How it was measured",
        "",
        "Servers of the same no-op tool `add(a: int, b: int) -> int`, each written twice: a plain synchronous "
        "function, which the SDK and mcphost alike run in a thread, and `async def add_async`, which both run on "
        "the event loop (a sync tool alone would flatter whichever side hands threads work more cheaply):",
        "",
        '1. **reference**: the SDK\'s `MCPServer("bench")` with `@mcp.tool()`, `streamable_http_app()` on uvicorn, '
        'one worker, with the settings `MCPServer.run(transport="streamable-http")` uses (log level INFO: an '
        f"access-log line per request). uvicorn ran on {machine.get('uvicorn_loop', '?')} with "
        f"{machine.get('uvicorn_http', '?')}, as `pip install mcp` gives it (no uvloop/httptools).",
        "2. **sdk-hypercorn**: the same app on `hypercorn.trio.serve`, access log on.",
        "3. **bare**: an ASGI app answering a fixed JSON-RPC result (echoing the id) on `hypercorn.trio.serve`, no "
        "logging: the ceiling of Hypercorn + h11 + Trio. It answers in the wire shape the SDK uses per path.",
        "4. **mcphost**: `mcphost serve --config bench/mcphost-production.toml`, the tools in `bench/plugins/noop.py` "
        "(loaded through `[plugins] paths`, served as `noop_add` and `noop_add_async`), every production feature on: "
        "a bearer key checked on every request, rate limits per caller, plugin and tool (set high: checked, never "
        "refusing), metrics, one JSON log line per request on stderr redirected to a file, the session store, the "
        'event store, and the plugin in a worker process of its own (`isolation = "process"`).',
        '5. **mcphost, plugin inline**: the same with `isolation = "inline"`, to show what the process costs.',
        "",
        "The TypeScript peer (the official TypeScript SDK on express) joins the comparison of one and two "
        "worker processes, where it can use the second core as mcphost's two workers do.",
        "",
        "Load: wrk with `bench/wrk/mcp.lua`, one connection per simulated client, `-t min(clients, 2)`. On the "
        "2025-11-25 path the harness first opens one session per client (`initialize`, then "
        "`notifications/initialized`) and the script rotates requests over them with `Mcp-Session-Id` and "
        "`MCP-Protocol-Version: 2025-11-25`; the SDK answers those POSTs with SSE (`text/event-stream`), mcphost "
        "answers a call that can send nothing before its result with one JSON body "
        "(`mcphost/protocol/direct.py`). On the 2026-07-28 path every request is self-contained: `params._meta` "
        "carries the protocol version and client capabilities and the `MCP-Protocol-Version`, `Mcp-Method` and "
        "`Mcp-Name` headers match the body; the SDK answers a quick handler with plain JSON even in SSE mode. "
        "Before any load each server gets one checked request per path; a non-200 stops the run.",
        "",
        ("Servers were pinned to CPU 1 and wrk to CPU 0 (`taskset`); " if pin else "No CPU pinning; ")
        + "the rows run one at a time under load while the others idle, in alternation (A, B, C, D, A, B, C, D …), "
        "each run starting once every server is idle (under 5 % of a CPU over 0.2 s, together; a server that "
        "goes on answering the calls of clients that have left would otherwise spend the next row's run on them, "
        "its own or, on the CPU they share, another server's), "
        "and every figure is a median over rounds, so drift on a shared machine falls on all of them alike. "
        "Servers run without `PYTHONUNBUFFERED`/`PYTHONDONTWRITEBYTECODE`, as a service would.",
        "",
        "Differences between the stacks that the figures include: the SDK runs sync tools on anyio's default "
        "thread limiter (40 threads), mcphost on the plugin's pool (`[limits] max_concurrency`, 64 by default) and "
        "at most 32 threads a plugin (`max_threads_per_plugin`); "
        "uvicorn's access log and mcphost's request log are both on, Hypercorn's access log is on for row 2. "
        "At 500 clients the Hypercorn/Trio rows (the bare app included) show a low median and a long tail while "
        "uvicorn serves more evenly. mcphost's tail is the first request on each of wrk's 500 new connections: they "
        "come at once, and while the loop accepts them and reads those requests every turn of its scheduler runs "
        "hundreds of tasks, so the calls already holding a plugin slot advance one step per long turn and hardly "
        "any completes in the first 0.4 s; the requests read last then wait for the whole queue as well. Timed with "
        "the kernel's receive timestamps, a request waited up to 0.6 s between its arrival and its read, all of "
        "those in a run's first second (at most 25 ms after it). Opening and closing a connection costs mcphost's "
        "listener 0.59 ms of CPU and uvicorn 0.19 ms (the bare app, a connection per request against one kept "
        "alive). Taking 8 connections per wake-up instead of 128 made the "
        "tail longer, and serving the slot's queue in order of arrival did not shorten it. The listen backlog is "
        "not the cause: the kernel counted no listen overflow.",
        "",
        f"Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} CPUs, {machine.get('memory_gib', '?')} GiB, "
        f"Linux {machine.get('kernel', '?')}, Python {machine.get('python', '?')}, {machine.get('wrk', 'wrk')}; "
        f"load average (1, 5, 15 min) {', '.join(f'{x:.1f}' for x in machine.get('load_average_at_start', []))} "
        f"at the start and {', '.join(f'{x:.1f}' for x in meta.get('load_average_at_end', []))} at the end "
        "(2 CPUs: above 2, other work was competing for them). "
        f"Packages: {packages}.",
        "",
    ]


def render(results: dict[str, Any]) -> str:
    """The whole of BENCHMARKS.md."""
    meta = results.get("meta", {})
    out = [
        "# Benchmarks",
        "",
        "mcphost against the MCP SDK's own server, same machine, same run. Regenerate with:",
        "",
        "```sh",
        "sudo apt-get install wrk                 # or: brew install wrk",
        "pip install -e . -r bench/requirements.txt",
        "python bench/run.py                      # full run, about 20 minutes on 2 cores",
        "python bench/run.py --quick              # 2-3 minutes, for a smoke check",
        "python bench/run.py --only calls         # one scenario; others keep their last results",
        "python bench/run.py --only start_instructions  # start-up in instructions (valgrind), 2 minutes",
        "```",
        "",
        f"This report: `{meta.get('command', 'python bench/run.py')}` on {meta.get('date', '?')}, "
        f"mcphost {meta.get('mcphost', '?')}, "
        f"{meta.get('elapsed_s', 0) / 60:.1f} minutes"
        + (" (**quick mode: one short round, indicative only**)" if meta.get("options", {}).get("quick") else "")
        + load_note(meta)
        + ". Raw numbers: `bench/results/results.json` (not committed)."
        + earlier_runs(results),
        "",
        "## The bar",
        "",
        *table(("criterion", "measured", "result"), ((c, m, verdict(ok)) for c, m, ok in bars(results)), "llc"),
        "Where a bar fails, the sections below show why: the profile for throughput and latency, the start-up "
        "profile and import times for cold start, the profile's per-session objects for memory.",
        "",
    ]
    for section in (
        section_calls,
        section_isolation,
        section_tools_list,
        section_memory,
        section_cold_start,
        section_reload,
        section_drain,
        section_workers,
        section_worker_killed,
        section_not_measurable,
        section_profile,
        section_method,
    ):
        out += section(results)
    return "\n".join(out).rstrip() + "\n"


# --- plots --------------------------------------------------------------------------------


def plot(results: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Write the PNGs the report links to; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        path = plots_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def grouped(
        ax: Any,
        groups: Sequence[Any],
        series: dict[str, list[float]],
        labels: dict[str, str],
        lows: dict[str, list[float]] | None = None,
        highs: dict[str, list[float]] | None = None,
    ) -> None:
        width = 0.8 / max(1, len(series))
        for i, (key, values) in enumerate(series.items()):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            err = None
            if lows and highs:
                err = [
                    [v - lo for v, lo in zip(values, lows[key], strict=True)],
                    [hi - v for v, hi in zip(values, highs[key], strict=True)],
                ]
            ax.bar(xs, values, width, label=labels[key], color=COLORS.get(key), yerr=err, capsize=2)
        ax.set_xticks(range(len(groups)), [str(g) for g in groups])

    calls = results.get("calls")
    if calls and calls.get("runs"):
        runs, names = calls["runs"], rows_of(calls)
        labels = {key: row_label(names, key) for key in names}
        levels = sorted({r["concurrency"] for r in runs})
        fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
        for ax, path in zip(axes, PATH_NAMES, strict=True):
            st = {k: [stats(cell(runs, k, path, n)) for n in levels] for k in labels}
            grouped(
                ax,
                levels,
                {k: [s["rps"] for s in v] for k, v in st.items()},
                labels,
                {k: [s["rps_min"] for s in v] for k, v in st.items()},
                {k: [s["rps_max"] for s in v] for k, v in st.items()},
            )
            ax.set_title(f"tools/call, {PATH_NAMES[path]}", fontsize=10)
            ax.set_xlabel("concurrent clients")
        axes[0].set_ylabel("calls/s (median; bars: range over rounds)")
        axes[0].legend(fontsize=8)
        save(fig, "calls_throughput.png")

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
        for ax, path in zip(axes, PATH_NAMES, strict=True):
            grouped(ax, levels, {k: [stats(cell(runs, k, path, n))["cpu"] for n in levels] for k in labels}, labels)
            ax.set_title(f"server CPU per call, {path}", fontsize=10)
            ax.set_xlabel("concurrent clients")
        axes[0].set_ylabel("CPU ms per call (all threads; median)")
        axes[0].legend(fontsize=8)
        save(fig, "calls_cpu.png")

        fig, axes = plt.subplots(2, 2, figsize=(12, 7))
        for col, path in enumerate(PATH_NAMES):
            for row, (key, name) in enumerate((("p50", "p50"), ("p99", "p99"))):
                ax = axes[row][col]
                grouped(
                    ax,
                    levels,
                    {k: [stats(cell(runs, k, path, n))[key] or math.nan for n in levels] for k in labels},
                    labels,
                )
                ax.set_yscale("log")
                ax.set_title(f"{name} latency, {path}", fontsize=10)
                ax.set_ylabel("ms (log scale)")
                ax.set_xlabel("concurrent clients")
        axes[0][0].legend(fontsize=8)
        save(fig, "calls_latency.png")

    data = results.get("tools_list")
    if data and data.get("runs"):
        runs, labels = data["runs"], data["servers"]
        n = runs[0]["concurrency"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        paths = list(PATH_NAMES)
        grouped(axes[0], paths, {k: [stats(cell(runs, k, p, n))["rps"] for p in paths] for k in labels}, labels)
        axes[0].set_ylabel("tools/list per second")
        grouped(axes[1], paths, {k: [stats(cell(runs, k, p, n))["p99"] for p in paths] for k in labels}, labels)
        axes[1].set_ylabel("p99 latency, ms")
        axes[0].set_title(f"tools/list, {data['tools']} tools, {n} clients", fontsize=10)
        axes[0].legend(fontsize=8)
        save(fig, "tools_list.png")

    data = results.get("memory")
    if data and data.get("runs"):
        labels = data["servers"]
        fig, ax = plt.subplots(figsize=(7, 4))
        values = [med(r["per_session_kib"] for r in data["runs"] if r["server"] == k) for k in labels]
        ax.bar(list(labels.values()), values, color=[COLORS.get(k) for k in labels])
        ax.set_ylabel("KiB of RSS per idle session")
        ax.set_title(f"memory per idle session, {data['runs'][0]['sessions']:,} sessions", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        save(fig, "memory.png")

    data = results.get("cold_start")
    if data and data.get("runs"):
        labels = data["servers"]
        bars = [(key, cpus) for cpus in cold_layouts(data["runs"]) for key in labels]
        fig, ax = plt.subplots(figsize=(9, 4))
        for i, (key, cpus) in enumerate(bars):
            times = [r["seconds"] for r in cold_runs(data["runs"], key, cpus)]
            ax.bar(i, med(times), color=COLORS.get(key, "#dd8452"), alpha=1.0 if cpus == 1 else 0.55)
            ax.plot([i] * len(times), times, "k.", alpha=0.6)
        ax.axhline(COLD_START_LIMIT_S, color="red", linestyle="--", label=f"bar: {COLD_START_LIMIT_S} s")
        ticks = [f"{labels[key]}\n({cpus_label(cpus)})" for key, cpus in bars]
        ax.set_xticks(range(len(bars)), ticks, fontsize=7)
        ax.set_ylabel("seconds, exec → first answer")
        ax.legend(fontsize=8)
        save(fig, "cold_start.png")

    data = results.get("profile")
    if data and data.get("paths"):
        paths = list(data["paths"])
        fig, axes = plt.subplots(1, len(paths), figsize=(12, 4.5), sharex=True)
        axes = axes if len(paths) > 1 else [axes]
        others = plt.get_cmap("Greys")
        owners = sorted(
            {o for p in paths for s in data["paths"][p].values() for o in s["owners_self"]},
            key=lambda o: (o not in OWNER_COLORS, list(OWNER_COLORS).index(o) if o in OWNER_COLORS else o),
        )
        for ax, path in zip(axes, paths, strict=True):
            servers_ = data["paths"][path]
            keys = list(servers_)
            for row, key in enumerate(keys):
                left = 0.0
                cpu = servers_[key]["loop_cpu_ms_per_call"] or 0.0
                for j, o in enumerate(owners):
                    width = servers_[key]["owners_self"].get(o, 0.0) * cpu / 100
                    ax.barh(
                        row,
                        width,
                        left=left,
                        color=OWNER_COLORS.get(o, others(0.3 + 0.1 * (j % 5))),
                        label=o if row == 0 and path == paths[0] else None,
                    )
                    left += width
            ax.set_yticks(range(len(keys)), keys)
            ax.set_title(f"event-loop CPU per call, {path}", fontsize=10)
            ax.set_xlabel("ms per call")
        fig.legend(loc="lower center", ncol=4, fontsize=7)
        fig.subplots_adjust(bottom=0.3)
        target = plots_dir / "profile.png"
        fig.savefig(target, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(target)
    return written


def write(results: dict[str, Any], output: Path, plots_dir: Path) -> None:
    """Plots first (the markdown links them), then the markdown."""
    plot(results, plots_dir)
    output.write_text(render(results))


if __name__ == "__main__":
    data = json.loads((BENCH_DIR / "results" / "results.json").read_text())
    write(data, REPO_ROOT / "BENCHMARKS.md", BENCH_DIR / "plots")
    sys.exit(0)
