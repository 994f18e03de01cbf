"""A Debian 12 booted with systemd as PID 1 in ``systemd-nspawn``, for tests that need a real
service manager: units started, reloaded and stopped by systemd itself, its journal, its
credentials and its sandboxing.

The root file system is made once by ``scripts/test`` (debootstrap, into the git-ignored
``.cache/nspawn-root``) and never changed: each boot writes to a throwaway overlay in memory
(``--volatile=overlay``), so every boot starts from the same clean system. The container has
a network namespace of its own with only loopback in it (``--private-network``); a test talks
to what listens there from a thread that joined that namespace (:meth:`Container.in_network`).

There is no ``machined`` on the host, so the container is not registered (``--register=no
--keep-unit``): it is driven with ``nsenter`` into its namespaces rather than ``machinectl``.
Where the host runs no service manager of its own, the container gets a cgroup made for it,
removed with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / ".cache" / "nspawn-root"
"""The container's root file system, made by ``scripts/test``."""
BOOT_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0
CLONE_NEWNET = 0x40000000
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENV = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
"""The environment of commands run in the container: its own, not the test process's."""

T = TypeVar("T")


class BootFailed(RuntimeError):
    """The container did not come up: nothing of what a test installs in it is to blame."""


def unavailable() -> str | None:
    """Why no container can be booted here, or ``None`` when one can."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for program, package in (
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
    ):
        if shutil.which(program) is None:
            return f"needs {program} (Debian package {package})"
    if not (ROOT / "lib/systemd/systemd").exists():
        return f"no container root in {ROOT}: scripts/test makes it as root with debootstrap"
    return None


def python_version() -> str:
    """The container's Python as ``MAJOR.MINOR`` (the wheels installed into it must match)."""
    return (ROOT / "usr/bin/python3").readlink().name.removeprefix("python")


class Container:
    """A booted container: run commands in it, read and write its files, reach its network."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, cgroups: list[Path]):
        self.process = process
        self.log = log
        self._cgroups = cgroups
        self.leader = 0
        """The pid, on the host, of the container's PID 1 (systemd)."""

    @classmethod
    @contextlib.contextmanager
    def booted(cls, name: str, work: Path, binds: Mapping[Path, str]) -> Iterator[Container]:
        """Boot a container named ``name`` with ``binds`` (host path: path inside, read-only)
        and shut it down, with everything it started, when the block ends however it ends."""
        log = work / f"{name}.log"
        argv = [
            "systemd-nspawn",
            f"--directory={ROOT}",
            f"--machine={name}",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            "--private-network",
            "--console=read-only",
            *(f"--bind-ro={host}:{inside}" for host, inside in binds.items()),
        ]
        cgroups = _own_cgroups(name)
        # The shell moves itself into the container's own cgroups, then becomes nspawn; should
        # the test process die without shutting the container down, nspawn gets SIGTERM
        # (setpriv) and shuts it down itself.
        enter = "".join(f'echo $$ >"{group}/cgroup.procs" && ' for group in cgroups)
        try:
            with log.open("wb") as out:
                process = subprocess.Popen(
                    ["setpriv", "--pdeathsig=TERM", "--", "sh", "-c", f'{enter}exec "$@"', "nspawn", *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
                    start_new_session=True,
                )
        except BaseException:
            for group in cgroups:
                _remove_cgroup(group)
            raise
        container = cls(process, log, cgroups)
        try:
            container._wait_until_booted()
            yield container
        finally:
            container._shut_down()

    def _wait_until_booted(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.leader:
            self._check_alive(deadline)
            self.leader = self._find_leader() or 0
            time.sleep(0.05)
        while True:
            self._check_alive(deadline)
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.1)
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise BootFailed(f"the container booted degraded:\n{failed}")

    def _find_leader(self) -> int | None:
        """nspawn's child that is PID 1 in a pid namespace of its own (nspawn forks helpers first)."""
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split():
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and line.split()[1:] == [child, "1"]:
                        return int(child)
        return None

    def _check_alive(self, deadline: float) -> None:
        if self.process.poll() is not None:
            raise BootFailed(f"systemd-nspawn exited with {self.process.returncode}:\n{self.boot_log()}")
        if time.monotonic() > deadline:
            raise BootFailed(f"the container did not boot within {BOOT_TIMEOUT}s:\n{self.boot_log()}")

    def boot_log(self) -> str:
        """The end of what nspawn and the container's console printed."""
        return self.log.read_text(errors="replace")[-4000:]

    def _shut_down(self) -> None:
        # SIGTERM asks nspawn to shut the container down the way `poweroff` does; if that
        # hangs, killing the container's PID 1 kills every process in its pid namespace.
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            if self.leader:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGKILL)
            self.process.kill()
            self.process.wait()
        for group in self._cgroups:
            _remove_cgroup(group)

    # -- inside the container ------------------------------------------------------------------

    def command(self, *argv: str, user: str | None = None) -> list[str]:
        """``argv`` as run in the container, as root or as ``user`` (with that user's groups)."""
        prefix = ["nsenter", f"--target={self.leader}", "--all", "--"]
        if user is not None:
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        return [*prefix, "env", "-i", *(f"{k}={v}" for k, v in ENV.items()), *argv]

    def run(
        self, *argv: str, check: bool = True, user: str | None = None, timeout: float = 120.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the container and wait for it; with ``check``, raise if it fails."""
        done = subprocess.run(
            self.command(*argv, user=user), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def path(self, inside: str) -> Path:
        """The host's way to a file in the container (through its PID 1's root)."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def in_network(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, called in a thread that joined the container's network namespace:
        every socket it makes is one of the container's, so ``127.0.0.1`` is the container's
        loopback. (A thread can change network namespace on its own; the rest of the test
        process stays where it is.)"""
        result: list[outcome.Outcome[T]] = []

        def joined() -> T:
            with open(f"/proc/{self.leader}/ns/net") as namespace:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the container's network namespace")
            return fn(*args)

        def thread() -> None:
            result.append(outcome.capture(joined))

        runner = threading.Thread(target=thread, name="in-container-network")
        runner.start()
        runner.join()
        return result[0].unwrap()  # type: ignore[no-any-return]


async def to_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread of its own, awaited from Trio.

    ``trio.to_thread`` would not do inside :meth:`Container.in_network`: its threads are
    cached and shared by every Trio loop of the process, so a call could run in a thread of
    the host's network namespace, and a thread made there could later serve a test on the
    host. This thread is made by the calling one, so it is in the same namespace, and it ends
    with the call.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[outcome.Outcome[T]] = []

    def thread() -> None:
        result.append(outcome.capture(fn, *args))
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    threading.Thread(target=thread, name="to-thread", daemon=True).start()
    await done.wait()
    return result[0].unwrap()


def _own_cgroups(name: str) -> list[Path]:
    """Fresh cgroups for the container, where the test process sits at the root of the
    hierarchies nspawn uses (no service manager on the host gave it one of its own): nspawn
    makes its ``payload`` and ``supervisor`` groups beside itself, and two containers, or one
    leaving them behind, would share them."""
    mounts = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, kind, options = line.split()[:4]
        if kind == "cgroup2":
            mounts[""] = Path(point)
        elif kind == "cgroup" and "name=systemd" in options.split(","):
            mounts["name=systemd"] = Path(point)
    groups = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in mounts and path == "/":
            group = mounts[controllers] / name
            group.mkdir()
            groups.append(group)
    return groups


def _remove_cgroup(group: Path) -> None:
    """Remove a cgroup and what nspawn left under it, deepest first."""
    if not group.is_dir():
        return
    for directory in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    group.rmdir()
