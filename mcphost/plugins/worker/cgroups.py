"""Per-worker cgroup v2 limits, when the daemon's own cgroup is delegated to it (systemd's
``Delegate=``): the daemon and its fork server move into a leaf of it, ``daemon``, and each
worker gets a child cgroup of its own, ``worker-<plugin>-<daemon pid>-<n>``, holding its
``memory.max`` (with ``memory.oom.group`` and no swap), ``pids.max`` and ``cpu.weight``. A
worker joins its cgroup before it runs plugin code; when it ends, whatever is left in its
cgroup is killed (``cgroup.kill``), whichever process group or session it moved to, and the
cgroup is removed.

Delegated means: the cgroup is on a cgroup2 mount, the daemon may write it, it offers the
``memory`` controller, and it was handed over: owned by the daemon's (non-root) user, as
systemd does for a ``User=`` service, or marked with the ``trusted.delegate`` or
``user.delegate`` extended attribute, as systemd marks the cgroups it delegates. A root
process in a session's cgroup may write it too, and a user's own processes under their
service manager (``user@<uid>.service``) own theirs, but neither is theirs to divide.

Without one, nothing here is used: ``memory_max`` is the worker's ``RLIMIT_AS``. This module
knows nothing of workers beyond their plugin's name and limits.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import signal
import time
from dataclasses import dataclass

PROC_CGROUP = "/proc/self/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
DAEMON_LEAF = "daemon"
"""The child cgroup the daemon and its fork server move into: cgroup v2 lets a cgroup that
hands controllers to its children hold no process itself."""
CONTROLLERS = ("memory", "pids", "cpu")
"""What each worker's cgroup is given, where the delegated cgroup offers it (``memory`` must)."""
REMOVE_TIMEOUT = 5.0
"""Seconds the processes of a worker's cgroup may take to die before it is left in place."""

_names = itertools.count(1)
_in_force: Delegation | None = None
_why_not = "cgroups were not looked for (a command other than serve or stdio)"


def size(value: int) -> str:
    """A byte count as the config writes it: ``536870912`` is ``"512M"``."""
    for suffix, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        if value % 1024**power == 0:
            return f"{value // 1024**power}{suffix}"
    return str(value)


def _write(path: str, text: str) -> None:
    # One write(2) per value: the kernel takes a cgroup file's value from a single write.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _own_cgroup() -> str | None:
    """The path of this process's cgroup on the cgroup2 filesystem, or None."""
    for line in _read(PROC_CGROUP).splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _mount(cgroup: str) -> str | None:
    """Where ``cgroup`` (a path within the cgroup2 filesystem) is in the file tree, or None."""
    for line in _read(MOUNTINFO).splitlines():
        fields = line.split(" - ", 1)
        if len(fields) != 2 or not fields[1].startswith("cgroup2 "):
            continue
        root, point = (f.replace("\\040", " ") for f in fields[0].split()[3:5])
        if cgroup == root or cgroup.startswith(root.rstrip("/") + "/"):
            return os.path.join(point, os.path.relpath(cgroup, root))
    return None


def _handed_over(path: str) -> bool:
    """Whether ``path`` was delegated to this process's user (see the module's docstring)."""
    uid = os.geteuid()
    # Under a user's service manager every cgroup is the user's, delegated or not: there
    # only the mark counts.
    if uid != 0 and os.stat(path).st_uid == uid and "/user@" not in path:
        return True
    for name in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(path, name).strip(b"\0") == b"1":
                return True
    return False


@dataclass(frozen=True)
class Delegation:
    """The delegated cgroup the daemon divides among its workers."""

    path: str
    controllers: frozenset[str]
    """Those of :data:`CONTROLLERS` each worker's cgroup has."""

    def describe(self) -> str:
        """Which limits are in force, for the log and the status report."""
        return f"cgroup v2 at {self.path} ({', '.join(sorted(self.controllers))})"

    def worker(self, plugin: str, memory_max: int | None, max_tasks: int | None, cpu_weight: int | None) -> Cgroup:
        """A new cgroup for a worker of ``plugin``, with its limits set; raises :class:`OSError`."""
        name = f"worker-{re.sub(r'[^A-Za-z0-9_-]', '_', plugin)}-{os.getpid()}-{next(_names)}"
        cgroup = Cgroup(os.path.join(self.path, name), memory_max)
        os.mkdir(cgroup.path)
        try:
            settings: list[tuple[str, str]] = []
            if "memory" in self.controllers:
                # The whole worker is killed when it is over its limit, not one of its
                # threads' allocations; and it may not go on in swap past it.
                settings += [("memory.oom.group", "1"), ("memory.swap.max", "0")]
                settings.append(("memory.max", "max" if memory_max is None else str(memory_max)))
            if "pids" in self.controllers and max_tasks is not None:
                settings.append(("pids.max", str(max_tasks)))
            if "cpu" in self.controllers and cpu_weight is not None:
                settings.append(("cpu.weight", str(cpu_weight)))
            for file, value in settings:
                target = os.path.join(cgroup.path, file)
                if file == "memory.swap.max" and not os.path.exists(target):
                    continue  # a kernel without swap accounting
                _write(target, value)
        except OSError:
            cgroup.remove()
            raise
        return cgroup


@dataclass(frozen=True)
class Cgroup:
    """One worker's cgroup."""

    path: str
    memory_max: int | None

    def join(self, pid: int = 0) -> None:
        """Move process ``pid`` (0: the caller) into this cgroup; raises :class:`OSError`."""
        _write(os.path.join(self.path, "cgroup.procs"), str(pid))

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (those a worker started in sessions of their own
        too); :meth:`remove` repeats it until none is left."""
        try:
            _write(os.path.join(self.path, "cgroup.kill"), "1")
            return
        except FileNotFoundError:
            pass  # before Linux 5.14: one process at a time
        except OSError:
            return
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        """The processes in the cgroup."""
        with contextlib.suppress(OSError):
            return [int(pid) for pid in _read(os.path.join(self.path, "cgroup.procs")).split()]
        return []

    def over_memory(self) -> bool:
        """Whether the kernel killed a process of this cgroup for being over ``memory.max``."""
        with contextlib.suppress(OSError):
            for line in _read(os.path.join(self.path, "memory.events")).splitlines():
                key, _, count = line.partition(" ")
                if key in ("oom_kill", "oom_group_kill") and int(count) > 0:
                    return True
        return False

    def remove(self) -> None:
        """Kill what is left in the cgroup and remove it (blocking: a thread from Trio)."""
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while True:
            self.kill()
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() > deadline:
                    import structlog  # here: the command imports this module before its fork server

                    structlog.get_logger("mcphost.worker").warning(
                        "cannot remove a worker's cgroup", path=self.path, error=str(error)
                    )
                    return
            time.sleep(0.01)


def set_up() -> None:
    """At the daemon's start, before its fork server: find a delegated cgroup and prepare it
    (the daemon's processes into :data:`DAEMON_LEAF`, the controllers enabled for its
    children, cgroups left by a daemon that has ended removed); :func:`in_force` is then
    that cgroup, or None when there is none or it cannot be prepared (:func:`describe`
    says why)."""
    global _in_force, _why_not
    try:
        _in_force, _why_not = _prepare()
    except OSError as error:
        _in_force, _why_not = None, f"the delegated cgroup cannot be used: {error}"


def _prepare() -> tuple[Delegation | None, str]:
    own = _own_cgroup()
    path = _mount(own) if own is not None else None
    if own is None or path is None:
        return None, "no cgroup2 hierarchy holds this process"
    if os.path.basename(path) == DAEMON_LEAF and _handed_over(os.path.dirname(path)):
        path = os.path.dirname(path)  # set up already (a daemon that re-executed itself)
    offered = set(_read(os.path.join(path, "cgroup.controllers")).split())
    if "memory" not in offered:
        return None, f"its cgroup {path} does not offer the memory controller"
    if not (os.access(os.path.join(path, "cgroup.procs"), os.W_OK) and _handed_over(path)):
        return None, f"its cgroup {path} is not delegated to it"
    leaf = os.path.join(path, DAEMON_LEAF)
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf)
    # Every process of the delegated cgroup is the service's: all go into the leaf, or the
    # controllers cannot be handed on.
    for pid in Cgroup(path, None).pids():
        with contextlib.suppress(ProcessLookupError):
            _write(os.path.join(leaf, "cgroup.procs"), str(pid))
    controllers = frozenset(c for c in CONTROLLERS if c in offered)
    enabled = set(_read(os.path.join(path, "cgroup.subtree_control")).split())
    if missing := controllers - enabled:
        _write(os.path.join(path, "cgroup.subtree_control"), " ".join(f"+{c}" for c in sorted(missing)))
    _remove_stale(path)
    return Delegation(path, controllers), ""


def _remove_stale(path: str) -> None:
    """Remove the workers' cgroups of a daemon that is no longer running (killed, say)."""
    for entry in os.scandir(path):
        match = re.fullmatch(r"worker-.*-(\d+)-\d+", entry.name)
        if match and entry.is_dir() and not os.path.exists(f"/proc/{match[1]}"):
            Cgroup(entry.path, None).remove()


def in_force() -> Delegation | None:
    """The delegated cgroup :func:`set_up` prepared in this process, if any."""
    return _in_force


def describe() -> str:
    """Which worker limits are in force, and why (for the start-up log line and status)."""
    if _in_force is not None:
        return _in_force.describe()
    return f"rlimits (memory_max as RLIMIT_AS): {_why_not}"
