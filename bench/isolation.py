"""What ``isolation = "process"`` costs, against ``inline`` in the same run:
``python bench/isolation.py`` (about 3 minutes).

1. **CPU per call**: mcphost in its production configuration serving the no-op
   ``noop_add`` inline, and the same with ``[plugins.noop] isolation = "process"``, loaded
   in turn by wrk on the 2026-07-28 path at each concurrency; CPU is the daemon's plus its
   worker's (``/proc``), divided by the calls wrk completed. Rounds alternate the two.
2. **Memory per worker**: 10 generated plugins, all isolated, with workers forked by the
   fork server (``process``) and started as fresh interpreters (``process-spawn``:
   ``[plugins] fork_server = false``): each worker's unique memory (USS: ``Private_Clean +
   Private_Dirty`` of ``smaps_rollup``), the fork server's, and the daemon's RSS, against the
   daemon's RSS with the same 10 plugins inline.
3. **Cold start**: exec to ``READY=1`` with the 10 plugins inline, then isolated both ways.

Results go to ``bench/results/isolation.json`` and are printed as tables; servers run
pinned to one CPU and wrk to the other (``--no-pin`` turns that off).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import catalog
import load
import servers
from load import MODERN
from servers import BENCH_DIR, NOOP_PLUGIN, PRODUCTION_CONFIG, RunningServer, ServerPool

RESULTS = BENCH_DIR / "results" / "isolation.json"
PLUGINS = 10


def config(directory: Path, name: str, plugin_paths: list[Path], enable: list[str], isolation: str) -> Path:
    """The production config with these plugins: ``inline``, ``process`` (forked by the fork
    server) or ``process-spawn`` (fresh interpreters)."""
    data = tomllib.loads(PRODUCTION_CONFIG.read_text())
    paths = [str(p) for p in plugin_paths]
    data["plugins"] = {"enable": enable, "paths": paths, "fork_server": isolation != "process-spawn"}
    if isolation != "inline":
        for plugin in enable:
            data["plugins"][plugin] = {"isolation": "process"}
    data.get("rate_limits", {}).pop("plugins", None)
    path = directory / name
    path.write_text(servers.to_toml(data))
    return path


def children(pid: int) -> list[int]:
    """``pid``'s child processes."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def fork_servers(server: RunningServer) -> list[int]:
    """The daemon's fork server (none with ``fork_server = false``)."""
    return [p for p in children(server.pid) if b"worker.zygote" in Path(f"/proc/{p}/cmdline").read_bytes()]


def workers(server: RunningServer) -> list[int]:
    """The daemon's workers: its children, or its fork server's."""
    zygotes = fork_servers(server)
    return [w for p in [server.pid, *zygotes] for w in children(p) if w not in zygotes]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / servers.CLOCK_TICKS


def total_cpu(server: RunningServer) -> float:
    """The daemon's CPU and its workers'."""
    return server.cpu_seconds() + sum(cpu_seconds(pid) for pid in workers(server))


def uss_kib(pid: int) -> int:
    """Memory only this process holds (unique set size), in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return int(fields["Private_Clean"].split()[0]) + int(fields["Private_Dirty"].split()[0])


def cpu_per_call(pool: ServerPool, specs: dict[str, servers.ServerSpec], args: argparse.Namespace) -> list[dict]:
    started = {key: pool.start(spec) for key, spec in specs.items()}
    for server in started.values():  # warm-up, untimed
        load.run_wrk(
            server.url, protocol=MODERN, method="tools/call", tool="noop_add", connections=8, duration=2, pin=args.pin
        )
    rows = []
    for round_index in range(args.rounds):
        for connections in args.concurrency:
            for key, server in started.items():
                before = total_cpu(server)
                result = load.run_wrk(
                    server.url,
                    protocol=MODERN,
                    method="tools/call",
                    tool="noop_add",
                    connections=connections,
                    duration=args.duration,
                    pin=args.pin,
                )
                spent = total_cpu(server) - before
                row = {
                    "isolation": key,
                    "round": round_index,
                    "connections": connections,
                    "calls": result.requests,
                    "errors": result.error_count,
                    "rps": result.rps,
                    "p50_ms": result.p50_ms,
                    "cpu_us_per_call": spent / result.requests * 1e6 if result.requests else None,
                }
                rows.append(row)
                print(f"  {key:8} c={connections:<3} {row['cpu_us_per_call']:.0f} µs/call, {result.rps:.0f} calls/s")
    for server in started.values():
        pool.stop(server)
    return rows


def memory_and_start(pool: ServerPool, specs: dict[str, servers.ServerSpec], runs: int) -> dict:
    starts: dict[str, list[float]] = {key: [] for key in specs}
    memory: dict[str, Any] = {}
    for _ in range(runs):
        for key, spec in specs.items():
            server = pool.start(spec)
            assert server.notified_ready_after is not None
            starts[key].append(server.notified_ready_after)
            memory.setdefault(f"daemon_rss_kib_{key}", []).append(server.rss_kib())
            if key != "inline":
                found = workers(server)
                memory.setdefault(f"worker_uss_kib_{key}", []).append(statistics.median(uss_kib(p) for p in found))
                memory.setdefault(f"workers_{key}", []).append(len(found))
                for zygote in fork_servers(server):
                    memory.setdefault("fork_server_uss_kib", []).append(uss_kib(zygote))
            print(f"  {key:13} READY=1 after {server.notified_ready_after:.2f} s")
            pool.stop(server)
    return {"ready_seconds": starts, **memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 50])
    parser.add_argument("--start-runs", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args()
    servers.write_keys_file(load.TOKEN)
    with tempfile.TemporaryDirectory(prefix="mcphost-isolation-") as scratch:
        directory = Path(scratch)
        specs = {
            key: servers.mcphost_spec(config(directory, f"{key}.toml", [NOOP_PLUGIN], ["noop"], key), key)
            for key in ("inline", "process")
        }
        paths = catalog.write_plugins(directory / "plugins", PLUGINS, 10)
        names = [catalog.plugin_name(i) for i in range(PLUGINS)]
        many = {
            key: servers.mcphost_spec(config(directory, f"many-{key}.toml", paths, names, key), key)
            for key in ("inline", "process", "process-spawn")
        }
        with ServerPool(directory / "logs", pin=args.pin) as pool:
            print("CPU per call (daemon + worker), noop_add, 2026-07-28:")
            calls = cpu_per_call(pool, specs, args)
            print(f"{PLUGINS} plugins: memory and exec to READY=1:")
            started = memory_and_start(pool, many, args.start_runs)
    summary = {}
    for connections in args.concurrency:
        medians = {
            key: statistics.median(
                r["cpu_us_per_call"] for r in calls if r["isolation"] == key and r["connections"] == connections
            )
            for key in ("inline", "process")
        }
        summary[f"c={connections}"] = {**medians, "ratio": medians["process"] / medians["inline"]}
    result = {
        "machine": {"cpus": servers.os.cpu_count(), "python": sys.version.split()[0], "pinned": args.pin},
        "calls": calls,
        "cpu_per_call_median_us": summary,
        "start_and_memory": started,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({"cpu_per_call_median_us": summary, "start_and_memory": started}, indent=2))


if __name__ == "__main__":
    main()
