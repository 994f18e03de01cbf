"""The README's commands on a checkout: ``scripts/serve`` installs into ``.venv`` only when a
``pyproject.toml`` changed since its last install (saying so as it goes), and serves the
bundled plugins and nothing else, whatever ``scripts/test`` installed for the tests into its
own ``.venv-test``; ``scripts/docs`` installs into ``.venv-docs`` and serves the documentation."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mcphost.testing import RunningDaemon, free_port, stateless_request
from tests.services import REPO, venv_with_test_dependencies

CHECKOUT = [
    "pyproject.toml",
    "README.md",
    "mcphost",
    "plugins",
    "etc",
    "scripts",
    "tests",
    "mkdocs.yml",
    "docs",
    "docgen",
    "BENCHMARKS.md",
    "bench",
]
"""What of a checkout the scripts read."""
BUNDLED_TOOLS = 11
"""``mcphost-sysinfo``'s six tools and ``mcphost-files``' five."""


@dataclass
class Serve:
    """One ``scripts/serve`` run: what it printed, and the daemon it ended in."""

    output: str
    daemon: RunningDaemon


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of this checkout whose ``.venv`` and ``.venv-test`` exist but hold only the
    dependencies (shared with this environment, so nothing is downloaded): mcphost and the
    plugins are not there yet. The TypeScript client scripts/test would fetch counts as
    fetched, and the container root it would make (as root) as made."""
    work = tmp_path_factory.mktemp("scripts")
    root = work / "checkout"
    root.mkdir()
    for name in CHECKOUT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "results"))
        else:
            shutil.copy(source, root / name)
    (root / ".cache" / "e2e-node").mkdir(parents=True)
    shutil.copy(root / "tests" / "e2e" / "package.json", root / ".cache" / "e2e-node" / "package.json")
    root_spec = re.search(r'^root_spec="(.+)"$', (root / "scripts" / "test").read_text(), re.MULTILINE)
    assert root_spec is not None
    (root / ".cache" / "nspawn-root.spec").write_text(f"{root_spec[1]}\n")
    for venv in (".venv", ".venv-test", ".venv-docs"):
        (work / venv).mkdir()
        venv_with_test_dependencies(root / venv, work / venv)
    yield root


def serve(root: Path) -> Serve:
    """``scripts/serve --port P`` in ``root``, until its daemon answers ``/health``."""
    port, admin_port = free_port(), free_port()
    log_path = root / f"serve-{port}.log"
    env = {"PATH": "/usr/bin:/bin", "MCPHOST_ADMIN__PORT": str(admin_port), "STATE_DIRECTORY": str(root / "state")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(root / "scripts" / "serve"), "--port", str(port)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    daemon = RunningDaemon(process, port, root / "etc" / "mcphost.toml", log_path, admin_port=admin_port)
    daemon.wait_until_healthy(timeout=600)  # the first run installs mcphost and the plugins
    # /health answers once the listener is up; "serving" is logged once the rest has started.
    daemon.wait_for_log(lambda record: record.get("event") == "serving")
    return Serve(daemon.logs(), daemon)


def tools(daemon: RunningDaemon) -> list[str]:
    body, headers = stateless_request("tools/list")
    return sorted(t["name"] for t in httpx.post(daemon.url, json=body, headers=headers).json()["result"]["tools"])


def versions(daemon: RunningDaemon) -> dict[str, str]:
    status, body = daemon.get("/status", admin=True)
    assert status == 200
    return {p["name"]: p["version"] for p in json.loads(body)["plugins"]}


def stop(run: Serve) -> None:
    assert run.daemon.stop(signal.SIGTERM) == 0, run.daemon.logs()[-2000:]


def test_serve_installs_once_and_serves_only_the_bundled_plugins(checkout: Path) -> None:
    tests = subprocess.run(
        [str(checkout / "scripts" / "test"), "--collect-only", "-q", "tests/test_packaging.py"],
        capture_output=True,
        text=True,
        timeout=900,
        env={"PATH": os.environ["PATH"]},
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "mcphost: installing mcphost, its plugins and the test plugins into .venv-test" in tests.stderr

    first = serve(checkout)
    try:
        names = tools(first.daemon)
    finally:
        stop(first)
    # What it does on the way, before it serves.
    installing = first.output.index("mcphost: installing mcphost and the bundled plugins into .venv")
    assert installing < first.output.index("Successfully installed") < first.output.index('"serving"')
    # The tests' environment has the test plugins; the checkout's .venv must not.
    assert len(names) == BUNDLED_TOOLS and all(n.startswith(("sysinfo_", "files_")) for n in names), names

    second = serve(checkout)
    try:
        assert tools(second.daemon) == names
    finally:
        stop(second)
    assert "installing" not in second.output and "pip" not in second.output, second.output[:2000]

    # A changed pyproject.toml (a new version, a new dependency, a new entry point) is installed.
    pyproject = checkout / "plugins" / "mcphost-sysinfo" / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(re.sub(r'(?m)^version = ".*"$', 'version = "0.1.1"', text, count=1))
    third = serve(checkout)
    try:
        assert versions(third.daemon)["sysinfo"] == "0.1.1"
    finally:
        stop(third)
    assert "mcphost: installing" in third.output


def test_docs_installs_and_serves_the_site(checkout: Path) -> None:
    """``scripts/docs`` installs mcphost and the documentation tools into ``.venv-docs``, then
    serves the site, generated pages included."""
    # The shared environment lends .venv-docs its packages but not their commands; mkdocstrings
    # runs ruff's to lay out signatures.
    ruff = checkout / ".venv-docs" / "bin" / "ruff"
    if not ruff.exists():
        ruff.symlink_to(Path(sys.executable).parent / "ruff")
    port = free_port()
    log_path = checkout / f"docs-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(checkout / "scripts" / "docs"), "--dev-addr", f"127.0.0.1:{port}"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"},
            start_new_session=True,
        )
    try:
        page = None
        deadline = time.monotonic() + 600  # the first run installs
        while page is None and process.poll() is None and time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/reference/configuration/", timeout=5)
            except httpx.TransportError:
                time.sleep(0.5)
        output = log_path.read_text()
        assert page is not None and page.status_code == 200, output[-3000:]
        assert "MCPHOST_LOG__FORMAT" in page.text
        assert "mcphost: installing mcphost and the documentation tools into .venv-docs" in output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # MkDocs' server now and then misses a Ctrl-C that lands as it starts its watcher;
            # what is under test is that it served, so it is ended for good.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_scripts_are_shellcheck_clean() -> None:
    scripts = [str(REPO / "scripts" / name) for name in ("serve", "test", "docs", "venv.sh")]
    done = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stdout
