"""The fork server: a process that has imported mcphost's plugin runtime once and forks a
worker from itself for each isolated plugin, so that workers share its pages and start in
milliseconds rather than re-importing everything.

The daemon's first one is forked from the daemon (:func:`run_forked`, see
:mod:`mcphost.plugins.worker.launch`) once it has imported the runtime and before it reads
its config: it forgets what is the daemon's (:func:`forget_daemon`: the environment it was
started with, overwritten in memory, its open files). One started later is a fresh
interpreter, ``python -m mcphost.plugins.worker.zygote FD DAEMON_PID``, with an environment of
its own (``PATH``, ``HOME``, ``LANG``, ``PYTHONPATH``, ``MALLOC_ARENA_MAX``). Either way
every worker inherits this process's memory, so it never reads the config, a credential or
the daemon's environment, and never imports plugin code. FD is a ``SOCK_SEQPACKET`` socket to
the daemon; each message is a JSON object, with file descriptors alongside where it says so:

- daemon → here: ``{"fork": id, "env", "level", "memory_max", "max_open_files", "cgroup"}``
  with the worker's socket and the write end of its output pipe; ``{"retire": true}``: end
  once the last worker has ended; ``{"check": id}``: has a file it imported changed since?
- here → daemon: ``{"ready": true}`` once warmed up; ``{"fork": id, "pid"}`` with the worker's
  pidfd (or ``{"fork": id, "error"}``); ``{"check": id, "changed"}``; ``{"exited": pid,
  "status"}`` for each worker that ends (``status`` as :attr:`subprocess.Popen.returncode`:
  negative for a signal).

It is a child subreaper: what a worker leaves behind when it ends is adopted here and killed.
It dies with the daemon (``PR_SET_PDEATHSIG``); a worker it forked does not die with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import select
import signal
import socket
import sys
import traceback
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

from mcphost.ops import sdk_models, sdk_packages
from mcphost.ops.prctl import PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE, PR_SET_PDEATHSIG, prctl
from mcphost.plugins.worker import cgroups
from mcphost.plugins.worker.launch import MALLOC_ARENA_MAX, kept_environment

MAX_MESSAGE = 1 << 20
TITLE = "mcphost.plugins.worker.zygote"
"""The command line a fork server forked from the daemon shows, as an exec'd one's names it."""
M_ARENA_MAX = -8
"""``mallopt``'s parameter for that (glibc's ``malloc.h``)."""
SWEEP_INTERVAL = 1.0
"""Seconds between looks for adopted orphans when no worker ends meanwhile."""
GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What a terminal (Ctrl-C, hanging up) or ``kill -- -PGID`` sends the daemon's whole process
group: this process ignores them (:func:`main`), its workers do not."""
_inherited: dict[int, Any] = {}
"""How this process took :data:`GROUP_SIGNALS` before it ignored them: what a worker restores."""


def stamp(path: str) -> tuple[int, int, int] | None:
    """What tells the file at ``path`` apart from one written there later (an upgrade writes
    new files: a new inode, time or size), or ``None`` when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_ino, found.st_mtime_ns, found.st_size)


def imports() -> dict[str, tuple[int, int, int] | None]:
    """Every file a module imported so far was loaded from, with its :func:`stamp`."""
    paths = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    return {path: stamp(path) for path in paths if isinstance(path, str)}


def import_runtime() -> None:
    """Import the worker's runtime, without any plugin: what the workers then share instead of
    each importing it again. Call before anything imports the SDK."""
    # A worker speaks to the daemon in JSON of its own, never with the SDK's per-revision
    # models: most are never used in a worker, and one that is builds there. Nor does it use
    # the SDK's client or HTTP transport, which its packages' __init__ would import.
    sdk_models.build_on_first_use()
    sdk_packages.defer_inits()
    import trio  # noqa: F401

    # What a plugin's tools, prompts and resource templates are built with (the registry
    # imports them only where it builds them, which in a worker is after the fork).
    from mcp.server.mcpserver.prompts.base import Prompt  # noqa: F401
    from mcp.server.mcpserver.tools.base import Tool  # noqa: F401
    from mcp.shared.uri_template import UriTemplate  # noqa: F401

    from mcphost.plugins.worker import main  # noqa: F401  (the runtime every worker runs)


def warm_up() -> None:
    """Run the runtime's hot paths once (after :func:`import_runtime`), so that the workers
    share what they build: schemas, validators, Trio's run loop."""
    import trio
    from mcp.server.mcpserver.tools.base import Tool

    def add(a: int, b: int = 1) -> dict[str, int]:
        """A tool that exists only to warm up schema building, validation and conversion."""
        return {"sum": a + b}

    tool = Tool.from_function(add)
    tool.fn_metadata.convert_result(add(**tool.fn_metadata.validate_arguments({"a": 1})))
    orjson.loads(orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {}}))
    trio.run(trio.sleep, 0)


class Zygote:
    """The fork server's loop: fork on request, report each worker's end, kill orphans."""

    def __init__(self, control: socket.socket):
        self.control = control
        self.workers: set[int] = set()
        self.retiring = False
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.imported = imports()
        """What it imported, as it was then: a worker forked from it runs that code."""

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """One message to the daemon (it gone, the next receive ends the loop)."""
        with contextlib.suppress(OSError):
            socket.send_fds(self.control, [orjson.dumps(message)], fds or [])

    def serve(self) -> None:
        """Serve the daemon until it closes its end, or until retired with no worker left."""
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.send({"ready": True})
        while not (self.retiring and not self.workers):
            readable, _, _ = select.select([self.control.fileno(), self.wakeup_r], [], [], SWEEP_INTERVAL)
            if self.wakeup_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wakeup_r, 4096)
            if self.control.fileno() in readable and not self.receive():
                break
            self.reap()
        # The daemon is gone, or told us to end: what is left of ours goes with us.
        for pid in self.workers:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def receive(self) -> bool:
        """Handle one message of the daemon; False once it has closed its end."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 2)
        except OSError:
            return False
        if not data:
            return False
        try:
            message = orjson.loads(data)
            if message.get("retire"):
                self.retiring = True
            elif "check" in message:
                changed = any(stamp(path) != was for path, was in self.imported.items())
                self.send({"check": message["check"], "changed": changed})
            elif "fork" in message and len(fds) == 2:
                self.fork(message, fds[0], fds[1])
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def fork(self, request: dict[str, Any], sock: int, output: int) -> None:
        """Fork a worker for ``request``; it runs :func:`become_worker` and never returns here."""
        try:
            pid = os.fork()
        except OSError as error:
            self.send({"fork": request["fork"], "error": f"cannot fork a worker: {error}"})
            return
        if pid == 0:
            status = 1
            try:
                self.forget()
                become_worker(request, sock, output)
                status = 0
            except BaseException:
                traceback.print_exc()  # to the worker's output, which the daemon logs
            finally:
                os._exit(status)
        self.workers.add(pid)
        # Opened before this loop can reap it, so the pidfd is this worker's and no other's.
        pidfd = os.pidfd_open(pid)
        try:
            self.send({"fork": request["fork"], "pid": pid}, [pidfd])
        finally:
            os.close(pidfd)

    def forget(self) -> None:
        """In a new worker: drop what is the fork server's (its socket, signal set-up)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (self.wakeup_r, self.wakeup_w, self.control.fileno()):
            os.close(fd)
        self.control.detach()

    def reap(self) -> None:
        """Collect every child that ended: report workers, and kill the orphans adopted."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.workers:
                self.workers.discard(pid)
                self.send({"exited": pid, "status": os.waitstatus_to_exitcode(status)})
        for pid in self.children() - self.workers:
            # Adopted: it outlived the worker that started it (or left its process group).
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def children() -> set[int]:
        """This process's children as the kernel knows them (forked or adopted)."""
        pid = os.getpid()
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return {int(child) for child in listing.read().split()}


def become_worker(request: dict[str, Any], sock: int, output: int) -> None:
    """In the forked child: a session of its own, its cgroup or limits and environment, then the worker."""
    os.setsid()
    if request.get("cgroup"):
        # Its own cgroup, joined before any plugin code runs: what it and its children use is
        # counted there from the start.
        cgroups.Cgroup(request["cgroup"], None).join()
    # Orphans of its descendants come to it, so they are still in the family when it ends
    # and this fork server adopts (and kills) them.
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_DUMPABLE, 0)
    null = os.open(os.devnull, os.O_RDONLY)
    for source, fd in ((null, 0), (output, 1), (output, 2)):
        os.dup2(source, fd)
    os.close(null)
    os.close(output)
    for limit, key in ((resource.RLIMIT_AS, "memory_max"), (resource.RLIMIT_NOFILE, "max_open_files")):
        if request.get(key) is not None:
            resource.setrlimit(limit, (request[key], request[key]))
    os.environ.clear()
    os.environ.update(request["env"])
    for signum, handler in _inherited.items():  # a worker ends on them as before
        signal.signal(signum, handler)
    gc.enable()
    from mcphost.plugins.worker.main import serve

    serve(sock, request["level"])


def main(argv: list[str] | None = None) -> None:
    """The entry point of a fork server started as a process of its own (``FD DAEMON_PID``)."""
    fd, daemon_pid = (sys.argv[1:] if argv is None else argv)[:2]
    run(socket.socket(fileno=int(fd)), int(daemon_pid))


def run_forked(control: socket.socket, daemon_pid: int) -> None:
    """Become the fork server in a child the daemon forked once it had imported the worker's
    runtime (:func:`import_runtime`) and before it read anything else: forget what is the
    daemon's (see :func:`forget_daemon`), then serve it as a fork server started anew would."""
    forget_daemon(control.fileno())
    run(control, daemon_pid)


def forget_daemon(control: int) -> None:
    """In a child forked from the daemon: leave it what an exec'd fork server would have of it.

    Its open files are closed (a socket it was handed by systemd, above all), its standard
    input is ``/dev/null`` and its output goes to the daemon's stderr. Every byte of the
    environment the daemon was started with is overwritten where this process holds it (the
    block the kernel wrote, Python's copy) and only :func:`kept_environment` is kept: every worker
    inherits this process's memory, and a plugin reading its own must find none of the
    daemon's secrets in it. Nothing else of the daemon's is there to forget: it forks before
    it reads its config or any credential. The group signals are as exec would leave them, and
    nothing traces or profiles it.
    """
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd > 2 and fd != control:
            with contextlib.suppress(OSError):  # the listing's own, closed by now
                os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    keep = kept_environment()
    libc = ctypes.CDLL(None)
    libc.strlen.argtypes, libc.strlen.restype = [ctypes.c_void_p], ctypes.c_size_t
    block = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    index = 0
    while block[index]:
        ctypes.memset(block[index], 0, libc.strlen(block[index]))
        index += 1
    libc.clearenv()
    data = bytes.__basicsize__ - 1  # where a bytes object's bytes begin
    for value in os.environb.values():
        if len(value) > 1:  # shorter ones are the interpreter's shared singletons
            ctypes.memset(id(value) + data, 0, len(value))
    os.environb.clear()
    os.environ.update(keep | {"MALLOC_ARENA_MAX": str(MALLOC_ARENA_MAX)})
    # The environment variable is read when malloc starts, which it has in the daemon.
    libc.mallopt(M_ARENA_MAX, MALLOC_ARENA_MAX)
    # What watches the daemon's code (a profiler, coverage, tracemalloc) is not for workers.
    sys.settrace(None)
    sys.setprofile(None)
    tracemalloc.stop()
    for signum in GROUP_SIGNALS:
        ignored = signal.getsignal(signum) == signal.SIG_IGN
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, signal.SIG_IGN if ignored else default)
    retitle(TITLE)


def retitle(title: str) -> None:
    """Show ``title`` as this process's command line (``ps``, ``/proc/PID/cmdline``), cut to
    the length of the one it was started with: the kernel shows the memory the arguments were
    written to at exec, which is this process's own to overwrite (as ``setproctitle`` does)."""
    fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48 and 49)
    shown = title.encode()[: end - start - 1]
    ctypes.memmove(start, shown.ljust(end - start, b"\0"), end - start)


def run(control: socket.socket, daemon_pid: int) -> None:
    """Be the daemon's fork server on ``control`` until it ends (see :meth:`Zygote.serve`)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon_pid:
        return  # the daemon ended before the line above took effect
    prctl(PR_SET_DUMPABLE, 0)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    # A signal to the daemon's process group is the daemon's to act on: Ctrl-C in a terminal
    # sends SIGINT to every process of the group, this one included (a worker has a session
    # of its own), `kill -TERM -- -PGID` SIGTERM. Left to kill this process, it ended it (with
    # a traceback for SIGINT) before the daemon, stopping, retired it, and the daemon logged a
    # failed fork server on every such stop. It ends when retired, or with the daemon.
    for signum in GROUP_SIGNALS:
        _inherited[signum] = signal.signal(signum, signal.SIG_IGN)
    # Everything imported here is shared with the workers: frozen, a worker's collections never
    # touch (and so never copy) those pages. No collection runs before the freeze: the imports'
    # garbage (some 3,000 objects, 1.4 MiB that the workers share) is frozen with the rest and
    # never written, where collecting it cost some 40 ms during the imports and 35 ms in a full
    # collection before the freeze, on the way to the first worker, and left each worker's
    # private memory no smaller (measured with the cold-start bench's plugins).
    gc.disable()
    import_runtime()
    warm_up()
    gc.freeze()
    Zygote(control).serve()


if __name__ == "__main__":
    main()
