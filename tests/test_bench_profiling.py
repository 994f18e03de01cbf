"""The benchmark's split of a call's CPU into stages weighs each kind of thread by the CPU it
used, not by how often a sampler saw it on a stack: a thread blocked in a system call, which
py-spy records as busy, is charged nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import profiling

SERVER, WORKER = 100, 200
FRAMES = [
    {"name": "unrolled_run", "file": "/venv/site-packages/trio/_core/_run.py"},
    {"name": "handle", "file": "/src/mcphost/transport/http.py"},
    {"name": "recv_fds", "file": "/usr/lib/python3.11/socket.py"},
    {"name": "request", "file": "/src/mcphost/plugins/worker/zygote_client.py"},
    {"name": "add", "file": "/src/bench/plugins/noop.py"},
    {"name": "run", "file": "/src/mcphost/plugins/worker/threads.py"},
]
LOOP, HTTP_APP, RECV, FORK_CLIENT, TOOL, CALL_THREAD = range(len(FRAMES))


def _thread(pid: int, tid: int, name: str, samples: list[list[int]]) -> dict[str, object]:
    return {"type": "sampled", "name": f'Process {pid} Thread {tid} "{name}"', "samples": samples}


@pytest.fixture
def speedscope(tmp_path: Path) -> Path:
    """A daemon whose event loop serves HTTP, beside a thread parked in ``recvmsg`` for the
    fork server that the sampler saw on every sample, and a worker whose pool threads ran
    the tool, each seen once."""
    path = tmp_path / "profile.speedscope.json"
    profiles = [
        _thread(SERVER, SERVER, "MainThread", [[LOOP, HTTP_APP]] * 10),
        _thread(SERVER, SERVER + 1, "mcphost-zygote", [[FORK_CLIENT, RECV]] * 10),
        _thread(WORKER, WORKER + 1, "mcphost-call_0", [[CALL_THREAD, TOOL]]),
        _thread(WORKER, WORKER + 2, "mcphost-call_1", [[CALL_THREAD, TOOL]]),
    ]
    path.write_text(json.dumps({"shared": {"frames": FRAMES}, "profiles": profiles}))
    return path


def test_a_thread_blocked_in_a_system_call_is_charged_the_cpu_it_used(speedscope: Path) -> None:
    cpu = {SERVER: 2.0, SERVER + 1: 0.0, WORKER + 1: 0.5, WORKER + 2: 0.0}
    shares = profiling.stage_shares(speedscope, SERVER, cpu)
    assert shares["server"] == {profiling.REQUEST_PATH: 1.0}
    assert shares["workers"] == {profiling.TOOL: 1.0}
    # By samples alone, the blocked thread took half the daemon's time, in the hop.
    assert profiling.stage_shares(speedscope, SERVER)["server"][profiling.HOP] == 0.5


def test_a_pool_of_threads_shares_its_cpu_by_the_samples_of_all(speedscope: Path) -> None:
    # The one thread seen busy was seen in the tool, so the other's CPU went there too.
    cpu = {SERVER: 1.0, SERVER + 1: 0.0, WORKER + 1: 0.0, WORKER + 2: 0.3}
    assert profiling.call_breakdown(profiling.stage_shares(speedscope, SERVER, cpu), {"workers": 300.0}) == {
        profiling.TOOL: 300.0
    }
