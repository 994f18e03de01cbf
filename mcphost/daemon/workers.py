"""Several worker processes on one port: ``[server] workers = N``.

The master binds one listening socket per worker, all on the same port with
``SO_REUSEPORT``, and starts N ``mcphost serve`` processes, each inheriting its own: the
kernel spreads new connections evenly between the sockets. On one shared socket, whichever
worker woke first took every connection waiting (a daemon's accept loop takes them all at
once), so a burst of clients, a proxy opening its pool, landed mostly on one worker while
the other idled, and each wake-up woke both. The master keeps every socket open, so the
connections queued at a worker that died wait there for the one started in its place.
Socket-activated, the workers share systemd's one socket (connections queued there wait
for the next service instance too).

Each worker is a whole daemon with its own Trio loop; what must be shared is shared through
the state directory (sessions are rebuilt by whichever worker a request lands on) and the
session secret.

The master is what systemd sees: it reports ``READY=1`` once the socket answers
``/health``, pings the watchdog, forwards SIGHUP (reload) and SIGTERM/SIGINT (drain) to the
workers, and restarts a worker that dies. Each worker has a process group of its own, so a
signal to the master's group (Ctrl-C in a terminal) reaches a worker once, from the master,
and each is sent SIGTERM when the master ends however it ends (:func:`follow_master`).
Per-process state is not shared: rate-limit budgets and the event store are per worker
unless a shared backend is configured.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import structlog

from mcphost.core.config import LoadedConfig
from mcphost.daemon import startup
from mcphost.ops import systemd
from mcphost.ops.prctl import PR_SET_PDEATHSIG, prctl
from mcphost.plugins.worker import launch

log = structlog.get_logger("mcphost.workers")

WORKER_FD = "MCPHOST_WORKER_FD"
"""The environment variable naming the listening socket a worker inherits."""
MASTER_PID = "MCPHOST_MASTER_PID"
"""The environment variable naming the master that started a worker (:func:`follow_master`)."""
RESTART_PAUSE = 1.0
"""Seconds before a worker that died is started again (a crash loop must not spin)."""


def listening_sockets(loaded: LoadedConfig, count: int) -> list[socket.socket]:
    """The listening socket of each of ``count`` workers: systemd's one socket for all when
    socket-activated, else one each bound to ``[server] host:port`` with ``SO_REUSEPORT``."""
    fds = systemd.listen_fds()
    if fds:
        return [socket.socket(fileno=fds[0])] * count
    server = loaded.config.server
    # A plain socket first: it fails, with the usual advice, when anything listens there
    # already, where a socket with SO_REUSEPORT would silently share the port with another
    # server of this user. It also picks the port when the setting is 0.
    with startup.listen(server.host, server.port, startup.MCP_LISTENER) as probe:
        port = probe.getsockname()[1]
    return [startup.listen(server.host, port, startup.MCP_LISTENER, reuse_port=True) for _ in range(count)]


def run(loaded: LoadedConfig, config_path: Path | None, count: int) -> int:
    """Run ``count`` workers until SIGTERM or SIGINT; returns the exit status."""
    sockets = listening_sockets(loaded, count)
    host, port = sockets[0].getsockname()[:2]
    notifier = systemd.Notifier()
    os.environ.pop("NOTIFY_SOCKET", None)  # only the master speaks to systemd
    command = launch.python("mcphost", "serve", *(["--config", str(config_path)] if config_path else []))
    stopping = False
    forwarded: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
        forwarded.append(signum)

    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(handled, on_signal)

    def start(index: int) -> subprocess.Popen[bytes]:
        fd = sockets[index].fileno()
        env = {
            **os.environ,
            "PYTHONPATH": launch.import_path(),
            WORKER_FD: str(fd),
            MASTER_PID: str(os.getpid()),
            "MCPHOST_WORKER_INDEX": str(index),
        }
        if index:
            env["MCPHOST_ADMIN__ENABLED"] = "false"  # one admin listener, on the first worker
        # A group of its own: a signal to the master's whole group (Ctrl-C in a terminal,
        # `kill -- -PGID`) reaches the worker once, passed on by the master, not twice.
        return subprocess.Popen(command, env=env, pass_fds=[fd], process_group=0)

    workers = [start(i) for i in range(count)]
    log.info("workers started", count=count, pids=[w.pid for w in workers], port=port)
    ready = False
    interval = systemd.watchdog_interval()
    last_ping = 0.0
    while True:
        while forwarded:
            signum = forwarded.pop(0)
            if signum == signal.SIGHUP:
                notifier.reloading()
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signum)
            if signum == signal.SIGHUP:
                notifier.ready(f"{count} workers")
            elif stopping:
                notifier.stopping()
        if stopping and all(w.poll() is not None for w in workers):
            break
        for index, worker in enumerate(workers):
            if worker.poll() is not None and not stopping:
                time.sleep(RESTART_PAUSE)
                workers[index] = start(index)
                # Both pids, so that whoever follows the workers by pid can tell which took over.
                log.error(
                    "worker exited; started another",
                    pid=worker.pid,
                    status=worker.returncode,
                    replacement=workers[index].pid,
                )
        if not ready and _healthy(host, port):
            ready = True
            notifier.ready(f"{count} workers")
        if interval is not None and time.monotonic() - last_ping > interval:
            notifier.watchdog()
            last_ping = time.monotonic()
        time.sleep(0.1)
    for sock in set(sockets):
        sock.close()
    log.info("workers stopped")
    return max((w.returncode for w in workers), default=0)


def _healthy(host: str, port: int) -> bool:
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    host = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def follow_master() -> bool:
    """In a worker: be sent SIGTERM, and so drain and end, when the master ends, however it
    ends (its workers have process groups of their own, so nothing sent to its group reaches
    them). False when the master has ended already; True in a lone daemon."""
    master = os.environ.pop(MASTER_PID, None)
    if master is None:
        return True
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == int(master)


def inherited_fds() -> list[int]:
    """The listening socket a worker inherited from its master (empty for a lone daemon)."""
    fd = os.environ.pop(WORKER_FD, None)
    return [int(fd)] if fd else []
