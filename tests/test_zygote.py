"""Workers forked by the fork server: their parent is the fork server, which the daemon forks
from itself at its start and which holds nothing of the daemon's (no secret of its
environment, not even in memory a plugin can read), outlives nothing (what a worker
daemonizes goes with it), may die without taking a plugin down, and is replaced on reload
when a module it imported has changed, so that it is imported anew."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from pathlib import Path

import pytest
import sniffio
import trio

from mcphost.plugins.worker.zygote import SWEEP_INTERVAL
from mcphost.testing import RunningDaemon, to_toml
from tests.isolationkit import (
    COMEBACK,
    PLUGINS,
    SECRET_VARIABLE,
    WITNESS_BOUND,
    alive,
    call,
    ends_within,
    is_fork_server,
    witness_answers,
    worker_pid,
)

CONFIG = {
    "plugins": {
        "enable": ["hostile", "witness"],
        "paths": [str(PLUGINS / "hostile.py"), str(PLUGINS / "witness.py")],
        "hostile": {"isolation": "process", "max_restarts": 100},
        "witness": {"isolation": "process", "required": True},
    }
}
CANARY = "mcphost-canary-"
"""What every secret of these tests begins with: a plugin looks for it in its memory."""


@pytest.fixture(scope="module")
def daemon_secrets() -> dict[str, str]:
    """The daemon's secrets, in its environment: one of mcphost's own variables, one not."""
    return {name: f"{CANARY}daemon-{secrets.token_hex(16)}" for name in (SECRET_VARIABLE, "DATABASE_PASSWORD")}


@pytest.fixture(scope="module")
def worker_secret() -> str:
    """What the hostile plugin is given in its own environment (``[plugins.hostile] env``)."""
    return f"{CANARY}worker-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def daemon(module_daemon, daemon_secrets: dict[str, str], worker_secret: str) -> RunningDaemon:
    hostile = CONFIG["plugins"]["hostile"] | {"env": {"HOSTILE_SECRET": worker_secret}}
    return module_daemon({"plugins": CONFIG["plugins"] | {"hostile": hostile}}, env=daemon_secrets)


def status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dictionary."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, value in (line.split(":", 1) for line in lines)}


def parent(pid: int) -> int:
    return int(status(pid)["PPid"])


def environ(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_text()


async def test_workers_are_forked_by_the_fork_server(daemon: RunningDaemon) -> None:
    hostile, witness = await worker_pid(daemon, "hostile"), await worker_pid(daemon, "witness")
    zygote = parent(hostile)
    assert zygote == parent(witness) != daemon.process.pid
    assert is_fork_server(zygote) and parent(zygote) == daemon.process.pid


async def test_no_daemon_secret_in_the_fork_server_or_a_worker(daemon: RunningDaemon, daemon_secrets) -> None:
    assert all(secret in environ(daemon.process.pid) for secret in daemon_secrets.values())
    hostile = await worker_pid(daemon, "hostile")
    for pid in (parent(hostile), hostile):
        assert not any(secret in environ(pid) or name in environ(pid) for name, secret in daemon_secrets.items())
    names = (await call(daemon, "hostile_environment")).structured_content["result"]
    assert not set(daemon_secrets) & set(names) and "PATH" in names


async def test_no_daemon_secret_anywhere_in_a_workers_memory(
    daemon: RunningDaemon, daemon_secrets, worker_secret
) -> None:
    # The fork server was forked from the daemon, whose environment held the secrets: a
    # plugin reading every byte of its own memory finds its own secret, and none of the daemon's.
    found = (await call(daemon, "hostile_memory_after", {"prefix": CANARY})).structured_content["result"]
    assert any(text.startswith(worker_secret.removeprefix(CANARY)) for text in found), "the search finds a secret"
    leaked = [name for name, secret in daemon_secrets.items() if any(secret.removeprefix(CANARY) in t for t in found)]
    assert leaked == []


async def test_an_orphan_a_worker_daemonized_is_killed_when_the_worker_ends(daemon: RunningDaemon) -> None:
    pid = await worker_pid(daemon, "hostile")
    orphan = int((await call(daemon, "hostile_spawn_orphan")).content[0].text)
    assert os.getsid(orphan) != os.getsid(pid), "it left the worker's session"
    await trio.sleep(2 * SWEEP_INTERVAL)
    assert alive(orphan), "it lives as long as its worker does"
    os.kill(pid, signal.SIGKILL)
    assert await trio.to_thread.run_sync(ends_within, orphan, 5.0), "the orphan was killed with its worker"


async def test_killing_the_fork_server_takes_no_plugin_down(daemon: RunningDaemon) -> None:
    hostile = await worker_pid(daemon, "hostile")
    zygote = parent(hostile)
    os.kill(zygote, signal.SIGKILL)
    await trio.to_thread.run_sync(daemon.wait_for_log, lambda r: r.get("event", "").startswith("the fork server ended"))
    assert await witness_answers(daemon) < WITNESS_BOUND
    assert await worker_pid(daemon, "hostile") == hostile, "the workers it forked serve on"
    os.kill(hostile, signal.SIGKILL)
    with trio.fail_after(COMEBACK):
        while True:
            again = await worker_pid(daemon, "hostile")
            if again != hostile:
                break
            await trio.sleep(0.1)
    assert is_fork_server(parent(again)) and parent(again) != zygote, "forked by a new fork server"
    assert await witness_answers(daemon) < WITNESS_BOUND


VERSIONED = '''
import os
import mcphost
import sniffio._version


@mcphost.hookimpl
def mcphost_tools():
    return [version]


def version() -> str:
    """This module's version, the worker's pid, and the mark of the sniffio it has imported."""
    return f"{version} {{os.getpid()}} {{getattr(sniffio._version, 'MARK', '-')}}"
'''


def versioned_daemon(mcphost_daemon, tmp_path: Path, fork_server: bool = True, **kwargs) -> tuple[RunningDaemon, Path]:
    """A daemon serving the ``versioned`` plugin from a worker (forked by the fork server, or
    not), and the plugin's file (at v1)."""
    source = tmp_path / "versioned.py"
    source.write_text(VERSIONED.format(version="v1"))
    plugins = {
        "enable": ["versioned"],
        "paths": [str(source)],
        "fork_server": fork_server,
        "versioned": {"isolation": "process"},
    }
    return mcphost_daemon({"plugins": plugins}, **kwargs), source


def write_later(path: Path, text: str) -> None:
    """``path`` holds ``text`` now, dated later (as a save or an upgrade would be)."""
    path.write_text(text)
    later = path.stat().st_mtime + 2
    os.utime(path, (later, later))


def write_version(source: Path, version: str) -> None:
    """The plugin at ``source`` becomes ``version``."""
    write_later(source, VERSIONED.format(version=version))


async def reload_to(daemon: RunningDaemon, source: Path, version: str) -> list[str]:
    """Change the plugin to ``version``, reload, and what its tool answers then."""
    write_version(source, version)
    ended = await trio.to_thread.run_sync(daemon.reload)
    assert ended["event"] == "reloaded" and "versioned" in ended["changed"]
    return (await call(daemon, "versioned_version")).content[0].text.split()


def test_a_reload_keeps_the_fork_server_when_nothing_it_imported_changed(mcphost_daemon, tmp_path: Path) -> None:
    daemon, source = versioned_daemon(mcphost_daemon, tmp_path)

    async def main() -> None:
        first, old_pid, _ = (await call(daemon, "versioned_version")).content[0].text.split()
        zygote = parent(int(old_pid))
        assert first == "v1" and is_fork_server(zygote)
        second, new_pid, _ = await reload_to(daemon, source, "v2")
        assert second == "v2" and new_pid != old_pid, "the changed plugin was imported anew, in a new worker"
        assert parent(int(new_pid)) == zygote, "forked by the fork server that was running"

    trio.run(main)


def test_a_reload_forks_from_a_fresh_fork_server_when_an_import_changed(mcphost_daemon, tmp_path: Path) -> None:
    # A copy of a package the fork server imports, first on its sys.path (its cwd): what a
    # `pip install --upgrade` then rewrites.
    cwd = tmp_path / "cwd"
    shutil.copytree(Path(sniffio.__file__).parent, cwd / "sniffio")
    marked = cwd / "sniffio" / "_version.py"
    original = marked.read_text()
    marked.write_text(original + 'MARK = "old"\n')
    daemon, source = versioned_daemon(mcphost_daemon, tmp_path, cwd=cwd)

    async def main() -> None:
        _, old_pid, mark = (await call(daemon, "versioned_version")).content[0].text.split()
        old_zygote = parent(int(old_pid))
        assert mark == "old" and is_fork_server(old_zygote), "the fork server imported the copy"
        # Dated later, as an upgrade's files are: the same size within the second the old
        # copy was compiled in would pass the bytecode cache's check, and import the old one.
        write_later(marked, original + 'MARK = "new"\n')
        version, new_pid, mark = await reload_to(daemon, source, "v2")
        assert version == "v2" and mark == "new", "the upgraded package was imported anew"
        new_zygote = parent(int(new_pid))
        assert is_fork_server(new_zygote) and new_zygote != old_zygote, "forked by a fork server started afresh"
        assert await trio.to_thread.run_sync(ends_within, old_zygote, 10.0), "the old one ended with its worker"

    trio.run(main)


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "fresh interpreter"])
@pytest.mark.parametrize("where", ["pythonpath", "cwd"])
def test_workers_import_what_the_daemon_does(mcphost_daemon, tmp_path: Path, fork_server: bool, where: str) -> None:
    # A marked copy of a package the worker runtime imports: in a directory only the daemon's
    # PYTHONPATH names (a source checkout run in place, say), which workers must import too;
    # or in the daemon's working directory, off the daemon's own path (PYTHONSAFEPATH; a
    # console script's path starts at its bin directory), which workers must not import.
    copy = tmp_path / where
    shutil.copytree(Path(sniffio.__file__).parent, copy / "sniffio")
    marked = copy / "sniffio" / "_version.py"
    marked.write_text(marked.read_text() + f'MARK = "{where}"\n')
    if where == "pythonpath":
        pythonpath = os.pathsep.join(p for p in (str(copy), os.environ.get("PYTHONPATH")) if p)
        daemon, _ = versioned_daemon(mcphost_daemon, tmp_path, fork_server, env={"PYTHONPATH": pythonpath})
    else:
        daemon, _ = versioned_daemon(mcphost_daemon, tmp_path, fork_server, cwd=copy, env={"PYTHONSAFEPATH": "1"})

    async def main() -> None:
        _, pid, mark = (await call(daemon, "versioned_version")).content[0].text.split()
        assert is_fork_server(parent(int(pid))) == fork_server
        assert mark == ("pythonpath" if where == "pythonpath" else "-"), "the daemon's, not what the defaults find"

    trio.run(main)


def test_without_the_fork_server_workers_are_fresh_interpreters(mcphost_daemon) -> None:
    plugins = {**CONFIG["plugins"], "fork_server": False}
    daemon = mcphost_daemon({"plugins": plugins})

    async def main() -> None:
        hostile = await worker_pid(daemon, "hostile")
        assert parent(hostile) == daemon.process.pid
        assert b"\0-m\0mcphost.plugins.worker\0" in await trio.Path(f"/proc/{hostile}/cmdline").read_bytes()
        assert await witness_answers(daemon) < WITNESS_BOUND

    trio.run(main)


def children(pid: int) -> set[int]:
    """``pid``'s children, as the kernel knows them."""
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_no_fork_server_is_kept_while_every_enabled_plugin_runs_inline(mcphost_daemon) -> None:
    # A table asks for a worker, but of a plugin that is not enabled; and any plugin without
    # a table would run isolated, but none is enabled.
    plugins = {**CONFIG["plugins"], "enable": ["witness"], "witness": {"isolation": "inline"}}
    daemon = mcphost_daemon({"plugins": plugins})

    async def main() -> None:
        assert not any(is_fork_server(pid) for pid in children(daemon.process.pid))
        assert await witness_answers(daemon) < WITNESS_BOUND
        # A reload that enables an isolated plugin starts one for its worker.
        daemon.config_path.write_text(to_toml({"plugins": {**plugins, "enable": ["witness", "hostile"]}}))
        assert (await trio.to_thread.run_sync(daemon.reload))["event"] == "reloaded"
        hostile = await worker_pid(daemon, "hostile")
        assert is_fork_server(parent(hostile)) and parent(parent(hostile)) == daemon.process.pid

    trio.run(main)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_to_the_process_group_stops_the_daemon_cleanly(mcphost_daemon, sig: int) -> None:
    """Ctrl-C in a terminal sends SIGINT to the daemon and to the fork server it started (one
    process group; a worker has a session of its own), ``kill -TERM -- -PGID`` SIGTERM: the
    daemon stops as on a signal of its own, taking the fork server with it, and nothing of the
    stop is logged as a failure."""
    daemon = mcphost_daemon(CONFIG)
    zygote = parent(await worker_pid(daemon, "hostile"))
    for pid in (zygote, daemon.process.pid):  # the fork server first: it must not end on it
        os.kill(pid, sig)
    assert await trio.to_thread.run_sync(daemon.process.wait, 30) == 0
    assert await trio.to_thread.run_sync(ends_within, zygote, 5.0)
    failures = [r for r in daemon.log_records() if r.get("level") in ("error", "critical")]
    assert failures == [] and "Traceback" not in daemon.logs()
