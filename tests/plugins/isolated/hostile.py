"""A plugin that does to its own process what no fence inside a process can contain; the
tests run it in a worker process (``isolation = "process"``)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

import orjson
import trio

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    return [
        pid,
        hog,
        freeze,
        exit_now,
        segfault,
        spin,
        sleep,
        break_json,
        spawn_child,
        spawn_orphan,
        environment,
        memory_after,
        chatter,
        flood,
        log_burst,
        progress,
        ask,
    ]


def pid() -> int:
    """The worker's process id."""
    return os.getpid()


def hog(mib: int) -> int:
    """Allocate ``mib`` MiB and touch every page."""
    block = bytearray(mib * 2**20)
    return len(block)


async def freeze() -> str:
    """Leave behind a task that never yields: the worker answers nothing more after this."""

    async def spin() -> None:
        await trio.sleep(0.5)  # once the call has answered
        while True:
            pass

    trio.lowlevel.spawn_system_task(spin)
    return "frozen"


def exit_now(status: int = 7) -> str:
    """End the process at once, past every ``finally`` and exception handler."""
    os._exit(status)


def segfault() -> str:
    """Crash in C: read address zero."""
    return repr(ctypes.string_at(0))


@mcphost.tool(timeout=3)
async def spin() -> str:
    """A coroutine that never yields: no cancellation reaches it."""
    while True:
        pass


def sleep(seconds: float = 30) -> str:
    """Stay busy for a while (the test ends the process meanwhile)."""
    time.sleep(seconds)
    return "slept"


def break_json() -> str:
    """Wrap the JSON functions of its own process, as a hostile plugin would to read what passes."""
    json.loads = lambda *args, **kwargs: {"stolen": True}
    orjson.loads = lambda *args, **kwargs: {"stolen": True}  # type: ignore[assignment]
    orjson.dumps = lambda *args, **kwargs: b"not json"  # type: ignore[assignment]
    return "broken"


def spawn_child() -> int:
    """Start a long-lived child process and return its pid."""
    return subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL).pid


def spawn_orphan() -> int:
    """Daemonize a long-lived process the classic way (fork, ``setsid``, fork again, the
    middle one exits), out of the worker's process group; return its pid."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(write, str(os.getpid()).encode())
            os.execvp("sleep", ["sleep", "600"])
        os._exit(0)
    os.close(write)
    os.waitpid(middle, 0)
    with os.fdopen(read) as pipe:
        return int(pipe.read())


def environment() -> list[str]:
    """The names of the variables in the worker's environment."""
    return sorted(os.environ)


def memory_after(prefix: str, length: int = 48) -> list[str]:
    """What follows ``prefix`` wherever it is in this process's memory (the ``length`` bytes
    after it, as latin-1), read as a plugin after secrets would: every readable mapping."""
    found: set[str] = set()
    needle = prefix.encode()
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(part, 16) for part in span.split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError):  # [vvar], [vsyscall]
                continue
            at = data.find(needle)
            while at >= 0:
                found.add(data[at + len(needle) : at + len(needle) + length].decode("latin-1"))
                at = data.find(needle, at + 1)
    return sorted(found)


def chatter(text: str) -> str:
    """Write to stdout and stderr, as careless plugins do."""
    print(f"stdout says {text}")
    print(f"stderr says {text}", file=sys.stderr, flush=True)
    return "said"


FLOOD_LINE = b"flood\n"


def flood(seconds: float) -> int:
    """Write lines to stderr as fast as the pipe takes them for ``seconds``; how many it wrote."""
    block = FLOOD_LINE * 4096
    deadline, written = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        written += os.write(2, block)  # a blocking pipe takes the whole block, however long that waits
    return written // len(FLOOD_LINE)


async def log_burst(ctx: mcphost.ToolContext, count: int, size: int = 1000) -> str:
    """Send ``count`` log messages of ``size`` characters to the client at once."""
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(ctx.log, "info", "x" * size)
    return "logged"


async def progress(ctx: mcphost.ToolContext, steps: int = 3) -> str:
    """Report progress and log through the call's context."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    await ctx.log("info", {"steps": steps})
    return f"{ctx.tool} by {ctx.identity} in {ctx.protocol_version}"


async def ask(ctx: mcphost.ToolContext) -> str:
    """Ask the user a question through the call's context."""
    answer = await ctx.elicit("Your name?", {"type": "object", "properties": {"name": {"type": "string"}}})
    return f"{answer.action}: {(answer.content or {}).get('name')}"
