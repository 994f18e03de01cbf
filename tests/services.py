"""Real servers the deployment tests run beside mcphost: Redis, and the programs they need
found (or installed from Debian's packages when running as root, as CI does), else the test
is skipped saying which package is missing; and mcphost on a listening socket the test
holds, as systemd's mcphost.socket holds it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import venv as venv_module
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mcphost.testing import RunningDaemon, free_port, to_toml

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
"""Git-ignored: the npm packages of the end-to-end client live here."""
MCPHOST = Path(sys.executable).with_name("mcphost")
START_TIMEOUT = 30.0
MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
"""Variables a service manager sets; none may leak in from whatever runs the tests."""


def program(name: str, package: str) -> str:
    """The path of ``name``; installed from Debian package ``package`` when missing and we
    are root, else the calling test is skipped."""
    found = _find(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=900)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        found = _find(name)
    if found is None:
        pytest.skip(f"needs {name} from the Debian package {package!r}, which could not be installed")
    return found


def _find(name: str) -> str | None:
    # nginx lives in /usr/sbin, which a non-root PATH may lack.
    return shutil.which(name) or next(
        (path for d in ("/usr/sbin", "/sbin") if os.access(path := f"{d}/{name}", os.X_OK)), None
    )


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port} after {timeout}s")
        time.sleep(0.05)


@dataclass
class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port, with no persistence."""

    binary: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it accepts connections."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop it; everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test froze it
            self.process.terminate()
            self.process.wait(10)

    def freeze(self) -> None:
        """Stop it from answering while its connections stay open (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server answer again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def command(self, *args: str) -> str:
        """Run one command with ``redis-cli``; its output."""
        cli = str(Path(self.binary).with_name("redis-cli"))
        result = subprocess.run([cli, "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return result.stdout.strip()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running :class:`RedisServer`, stopped afterwards."""
    server = RedisServer(program("redis-server", "redis-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def node_client() -> tuple[str, Path]:
    """``node``, and the directory holding the scripts of ``tests/e2e`` and the official TypeScript MCP SDK
    (installed with npm into the git-ignored cache, once per ``package.json``); skips
    without Node or the SDK."""
    node = program("node", "nodejs")
    npm = program("npm", "npm")
    source, target = REPO / "tests" / "e2e", CACHE / "e2e-node"
    target.mkdir(parents=True, exist_ok=True)
    manifest = (source / "package.json").read_text()
    installed = target / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
    if not installed.exists() or (target / "package.json").read_text() != manifest:
        (target / "package.json").write_text(manifest)
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.skip(f"npm could not install the TypeScript MCP SDK: {result.stderr[-500:]}")
    # Node resolves an ES module's imports from where the module is: next to node_modules.
    for script in source.glob("*.mjs"):
        shutil.copy(script, target / script.name)
    return node, target


def sign_in(url: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What ``tests/e2e/sign-in.mjs`` reports connecting to ``url``: the official TypeScript
    client with an OAuth provider and no token, as Claude Code connects to a server that was
    added without a ``--header``."""
    node, directory = node_client()
    done = subprocess.run(
        [node, str(directory / "sign-in.mjs"), url],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert reports, done.stdout + done.stderr
    return reports[-1]


def venv_with_test_dependencies(venv: Path, work: Path) -> None:
    """Make ``venv`` a virtualenv that shares this environment's third-party packages, so
    that no dependency is downloaded or built again, for a script that pip-installs into a
    venv it finds there (``packaging/install.sh``, ``scripts/serve``).

    Everything the script does to the venv is real; only the venv's creation
    (``python3 -m venv``) and the dependencies' installation are skipped. Dependencies come
    through a .pth entry naming a directory (in ``work``) with this environment's packages
    minus mcphost's own: the test plugins must not leak in, and mcphost and the bundled
    plugins must come from what the script installs.
    """
    venv_module.EnvBuilder(with_pip=False).create(venv)
    shared = work / "shared-site-packages"
    shared.mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if entry.name.startswith(("mcphost", "__editable__")) or entry.suffix == ".pth":
            continue
        (shared / entry.name).symlink_to(entry)
    [site_packages] = venv.glob("lib/python3*/site-packages")
    (site_packages / "zz-shared-test-dependencies.pth").write_text(f"{shared}\n")


def daemon_env(state_dir: Path) -> dict[str, str]:
    """The environment of a daemon a test starts itself: JSON logs, its own state, no service manager."""
    env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARIABLES}
    return {**env, "MCPHOST_LOG__FORMAT": "json", "STATE_DIRECTORY": str(state_dir)}


def wait_until_serving(daemon: RunningDaemon, timeout: float = START_TIMEOUT) -> RunningDaemon:
    """``daemon`` once it logged ``serving``; fails if it exits or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise AssertionError(f"mcphost exited with {daemon.process.returncode}:\n{daemon.logs()[-4000:]}")
        if any(r.get("event") == "serving" for r in daemon.log_records()):
            return daemon
        time.sleep(0.05)
    daemon.stop(signal.SIGKILL)
    raise AssertionError(f"mcphost did not serve within {timeout}s:\n{daemon.logs()[-4000:]}")


HANDOFF = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)  # SD_LISTEN_FDS_START
if fd != 3:
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""
"""Pass a listening socket the way systemd does: as fd 3, with LISTEN_FDS and LISTEN_PID naming
the process that gets it (the pid is only known in the child, hence exec from there)."""


def start_on_socket(
    listener: socket.socket, workdir: Path, name: str, config: Mapping[str, Any], state_dir: Path
) -> RunningDaemon:
    """Start ``mcphost serve`` on a listening socket this test holds, as mcphost.socket holds it."""
    config_path = workdir / f"{name}.toml"
    config_path.write_text(to_toml(config))
    log_path = workdir / f"{name}.log"
    fd = listener.fileno()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", HANDOFF, str(fd), str(MCPHOST), "serve", "--config", str(config_path)],
            pass_fds=(fd,),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=daemon_env(state_dir),
        )
    return wait_until_serving(RunningDaemon(process, listener.getsockname()[1], config_path, log_path))


def held_listener(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port``, or one the kernel picks), as a socket unit
    would hold it."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    return listener
