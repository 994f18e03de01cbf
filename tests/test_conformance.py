"""The official MCP conformance suite (``@modelcontextprotocol/conformance``) against a real
mcphost serving the ``conformance`` test plugin, unprefixed, the way any plugin is served.

Every server scenario of the latest release runs, and every server scenario of the newest
alpha: at each scenario's own revision (extensions such as tasks included, which no
``--spec-version`` run selects), and again those that apply to 2025-11-25 and to 2026-07-28.
A failed check fails the test unless ``conformance-expected-failures.toml`` lists it (with
the reason and the upstream issue); a listed check that passes fails it too, so the list does
not go stale. So does a run whose exit status disagrees with its checks, and a scenario that
left no results (one that crashes the runner writes none).

The suite needs Node.js 22 or later. It is installed with npm into ``.cache/conformance``
(git-ignored), along with a Node 22 binary when the system's Node is older.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcphost.testing import RunningDaemon
from tests.conftest import ISOLATIONS, isolated

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "conformance"
EXPECTED_FAILURES = Path(__file__).with_name("conformance-expected-failures.toml")
PACKAGE = "@modelcontextprotocol/conformance"
RUN_TIMEOUT = 300

RUNS = [
    pytest.param("0.1.16", None, id="0.1.16"),
    pytest.param("0.2.0-alpha.12", None, id="0.2.0-alpha.12"),
    pytest.param("0.2.0-alpha.12", "2025-11-25", id="0.2.0-alpha.12@2025-11-25"),
    pytest.param("0.2.0-alpha.12", "2026-07-28", id="0.2.0-alpha.12@2026-07-28"),
]

CONFIG = {
    "sessions": {"store": "none"},
    "plugins": {"enable": ["conformance"], "conformance": {"prefix": ""}},
}

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed: cannot fetch the suite")


def npm_install(directory: Path, spec: str) -> None:
    """``npm install spec`` into ``directory``, unless an earlier run already did."""
    marker = directory / ".installed"
    if marker.exists() and marker.read_text() == spec:
        return
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--prefix", str(directory), "--no-audit", "--no-fund", "--loglevel=error", spec],
        check=True,
        timeout=RUN_TIMEOUT,
    )
    marker.write_text(spec)


def node_major(node: str) -> int:
    """The major version of the Node.js binary ``node`` (0 if it does not run)."""
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return 0
    match = re.match(r"v(\d+)", version.strip())
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="module")
def node() -> str:
    """A Node.js binary of version 22 or later."""
    system = shutil.which("node")
    if system and node_major(system) >= 22:
        return system
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    package = f"node-{platform.system().lower()}-{arch}"
    npm_install(CACHE / "node22", f"{package}@22")
    return str(CACHE / "node22" / "node_modules" / package / "bin" / "node")


@pytest.fixture(scope="module", params=ISOLATIONS)
def daemon(module_daemon, request: pytest.FixtureRequest) -> RunningDaemon:
    """The conformance plugin inline, then in a worker process: the same checks pass both ways."""
    return module_daemon(isolated(CONFIG, request.param))


@pytest.fixture(scope="module")
def expected_failures() -> set[tuple[str, str, str, str, str]]:
    """``(suite version, spec version or "", scenario, check, isolation or "")`` of every known failure."""
    entries = tomllib.loads(EXPECTED_FAILURES.read_text()).get("failure", [])
    return {(e["suite"], e.get("spec", ""), e["scenario"], e["check"], e.get("isolation", "")) for e in entries}


def checks(output: Path) -> Iterator[tuple[str, dict[str, object]]]:
    """``(scenario, check)`` for every check the suite wrote under ``output``."""
    for path in sorted(output.glob("*/checks.json")):
        # The suite names each result directory server-<scenario>-<timestamp>.
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", path.parent.name)
        for check in json.loads(path.read_text()):
            yield scenario, check


@pytest.mark.parametrize(("version", "spec"), RUNS)
def test_conformance(
    version: str,
    spec: str | None,
    node: str,
    daemon: RunningDaemon,
    expected_failures: set[tuple[str, str, str, str, str]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    suite = CACHE / version
    npm_install(suite, f"{PACKAGE}@{version}")
    cli = suite / "node_modules" / PACKAGE / "dist" / "index.js"
    args = [node, str(cli), "server", "--url", daemon.url, "--suite", "all", "-o", str(tmp_path)]
    if spec:
        args += ["--spec-version", spec]
    run = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    results = list(checks(tmp_path))
    output = f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert results, f"the suite produced no results:\n{output}"
    announced = re.search(r"Running all suite \((\d+) scenarios\)", run.stdout)
    assert announced, f"the suite did not say how many scenarios it runs:\n{output}"
    written = len(list(tmp_path.glob("*/checks.json")))
    assert written == int(announced.group(1)), f"{announced.group(1)} scenarios ran, {written} wrote results:\n{output}"
    isolation = request.node.callspec.params["daemon"]
    mine = {(s, c) for v, sp, s, c, i in expected_failures if (v, sp) == (version, spec or "") and i in ("", isolation)}
    failed = {(scenario, str(check["id"])): check for scenario, check in results if check["status"] == "FAILURE"}
    unexpected = [f"{s} / {c}: {check.get('errorMessage')}" for (s, c), check in failed.items() if (s, c) not in mine]
    fixed = sorted(mine - set(failed))
    assert not unexpected, "conformance checks failed:\n" + "\n".join(unexpected)
    assert not fixed, f"listed in {EXPECTED_FAILURES.name} but passing now (remove them): {fixed}"
    # The runner exits 1 exactly when a check failed: anything else means it broke.
    assert run.returncode == (1 if failed else 0), f"the suite exited {run.returncode}:\n{output}"
