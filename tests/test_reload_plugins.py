"""Plugins that leave and come back, as a sysadmin moves them: ``pip install``, reload,
``pip uninstall``, reload, ``pip install`` of a newer version, reload; disabled and enabled
again in ``[plugins]``; a path plugin that was broken when the daemon started, then fixed.
Each reload must serve what is installed and enabled now, and say truthfully how it went."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import site
import subprocess
import time
import venv
import zipfile
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mcphost.testing import RunningDaemon, start_daemon, stateless_request, to_toml

PLUGIN_SOURCE = '''
import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def version() -> str:
        """Which version answers."""
        return {version!r}

    return [version]
'''


def plugin_wheel(directory: Path, version: str) -> Path:
    """A wheel of ``mcphost-comeback`` at ``version`` (plugin ``comeback``, tool ``comeback_version``).

    Written by hand, as any wheel is a zip of the package and its ``.dist-info``: pip installs
    and uninstalls it like any other, and no build backend has to be fetched.
    """
    info = f"mcphost_comeback-{version}.dist-info"
    files = {
        "mcphost_comeback/__init__.py": PLUGIN_SOURCE.format(version=version),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: mcphost-comeback\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[mcphost]\ncomeback = mcphost_comeback\n",
    }
    record = ""
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(text.encode())}\n"
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    path = directory / f"mcphost_comeback-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


class Environment:
    """A throwaway virtualenv that pip installs into and uninstalls from; the daemon finds
    its packages through ``PYTHONPATH``. Everything else (pip, mcphost, its dependencies)
    comes from this environment, through a ``.pth`` line."""

    def __init__(self, root: Path):
        venv.EnvBuilder(with_pip=False).create(root)
        self.python = root / "bin" / "python"
        [self.site_packages] = root.glob("lib/python3*/site-packages")
        shared = site.getsitepackages()[0]
        (self.site_packages / "zz-shared.pth").write_text(f"import site; site.addsitedir({shared!r})\n")

    def pip(self, *args: str) -> None:
        command = [str(self.python), "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
        subprocess.run(command, check=True, timeout=120)


def reloaded(daemon: RunningDaemon) -> dict[str, Any]:
    """SIGHUP, then the ``reloaded`` log line of that reload."""
    done = sum(r.get("event") == "reloaded" for r in daemon.log_records())
    daemon.process.send_signal(signal.SIGHUP)
    return wait_for_reload(daemon, done)


def wait_for_reload(daemon: RunningDaemon, done: int, timeout: float = 20.0) -> dict[str, Any]:
    """The ``reloaded`` log line after the first ``done`` ones, waiting for it if need be."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [r for r in daemon.log_records() if r.get("event") == "reloaded"]
        if len(lines) > done:
            return lines[done]
        assert time.monotonic() < deadline, daemon.logs()[-3000:]
        time.sleep(0.05)


def watching(daemon: RunningDaemon, timeout: float = 20.0) -> int:
    """Once the daemon's file watcher is armed (it starts just after the daemon answers, so
    the config file is saved again until a reload shows it saw that), its reloads so far."""
    deadline = time.monotonic() + timeout
    while (done := sum(r.get("event") == "reloaded" for r in daemon.log_records())) == 0:
        assert time.monotonic() < deadline, daemon.logs()[-3000:]
        daemon.config_path.write_text(daemon.config_path.read_text())
        time.sleep(0.5)
    return done


def answer(daemon: RunningDaemon, tool: str, **arguments: Any) -> str:
    """The text a tool answers with; fails the test if it is not served."""
    body, headers = stateless_request("tools/call", {"name": tool, "arguments": arguments})
    result = httpx.post(daemon.url, json=body, headers=headers, timeout=30).json()
    assert "result" in result and not result["result"].get("isError"), result
    return result["result"]["content"][0]["text"]


def tools(daemon: RunningDaemon) -> set[str]:
    body, headers = stateless_request("tools/list")
    return {t["name"] for t in httpx.post(daemon.url, json=body, headers=headers).json()["result"]["tools"]}


def status(daemon: RunningDaemon) -> dict[str, Any]:
    code, body = daemon.get("/status", admin=True)
    assert code == 200, body
    return json.loads(body)


def plugin(daemon: RunningDaemon, name: str) -> dict[str, Any] | None:
    """The plugin's row in the admin listener's ``/status``."""
    return next((p for p in status(daemon)["plugins"] if p["name"] == name), None)


def reloads(daemon: RunningDaemon) -> dict[str, float]:
    """``mcphost_reloads_total`` by result, from the admin listener's ``/metrics``."""
    code, body = daemon.get("/metrics", admin=True)
    assert code == 200
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "mcphost_reloads_total"
    }


def test_an_uninstalled_plugin_installed_again_serves_its_newest_version(tmp_path: Path) -> None:
    environment = Environment(tmp_path / "env")
    daemon = start_daemon(
        tmp_path,
        {"plugins": {"enable": ["echo", "comeback"]}},
        env={"PYTHONPATH": str(environment.site_packages)},
    )
    try:
        assert "comeback_version" not in tools(daemon)
        steps = [
            ("install", "1.0.0"),
            ("uninstall", None),
            ("install", "2.0.0"),
            ("install", "3.0.0"),  # an upgrade in place, without uninstalling first
            ("uninstall", None),
            ("install", "1.0.0"),  # and back down
        ]
        for action, version in steps:
            if action == "install":
                assert version is not None
                environment.pip("install", "--no-deps", str(plugin_wheel(tmp_path, version)))
            else:
                environment.pip("uninstall", "--yes", "mcphost-comeback")
            line = reloaded(daemon)
            assert line["failed"] == [], (action, version, line)
            assert "comeback" in line["changed"], (action, version, line)
            row = plugin(daemon, "comeback")
            if version is None:
                assert "comeback_version" not in tools(daemon)
                assert row is None, "an uninstalled plugin leaves no stale row"
            else:
                assert answer(daemon, "comeback_version") == version
                assert row is not None and row["version"] == version and row["status"] == "loaded"
                assert row["error"] is None and row["reload_error"] is None
            assert status(daemon)["last_reload"]["result"] == "ok"
            assert daemon.get("/ready")[0] == 200
        assert reloads(daemon)["ok"] == len(steps) and reloads(daemon)["failed"] == 0
        assert answer(daemon, "echo_greet", name="world") == "hello, world"
    finally:
        daemon.stop()


def test_a_disabled_plugin_enabled_again_comes_back(tmp_path: Path) -> None:
    plugins: dict[str, Any] = {"enable": ["echo", "lifecycle"], "lifecycle": {"settings": {"trace_dir": str(tmp_path)}}}
    daemon = start_daemon(tmp_path, {"plugins": plugins})
    try:
        assert answer(daemon, "echo_greet", name="world") == "hello, world"
        for round in range(2):
            daemon.config_path.write_text(to_toml({"plugins": {**plugins, "disable": ["echo"]}}))
            line = reloaded(daemon)
            assert line["changed"] == ["echo"] and line["failed"] == [], line
            assert not any(name.startswith("echo_") for name in tools(daemon))
            row = plugin(daemon, "echo")
            assert row is not None and row["status"] == "disabled" and row["error"] is None

            daemon.config_path.write_text(to_toml({"plugins": plugins}))
            line = reloaded(daemon)
            assert line["changed"] == ["echo"] and line["failed"] == [], (round, line)
            assert answer(daemon, "echo_greet", name="world") == "hello, world"
            row = plugin(daemon, "echo")
            assert row is not None and row["status"] == "loaded" and row["error"] is None
        assert answer(daemon, "lifecycle_ping") == "pong"
        assert reloads(daemon) == {"ok": 4, "failed": 0, "invalid_config": 0}
    finally:
        daemon.stop()


def test_a_reload_that_fails_to_load_a_plugin_counts_as_failed(tmp_path: Path) -> None:
    """``broken_import`` fails at start and again at each reload, which tries it again: each
    of those reloads failed, in the metric, in ``/status`` and in the log."""
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo", "broken_import"]}})
    try:
        for count in (1, 2):
            line = reloaded(daemon)
            assert line["failed"] == ["broken_import"], line
            assert reloads(daemon) == {"ok": 0, "failed": count, "invalid_config": 0}
            report = status(daemon)
            assert report["last_reload"]["result"] == "failed"
            assert report["last_reload"]["failed"] == ["broken_import"]
        assert answer(daemon, "echo_greet", name="world") == "hello, world"
    finally:
        daemon.stop()


BROKEN = "import mcphost\n\ndef broken(:\n"


def test_a_path_plugin_broken_at_start_is_watched_until_fixed(tmp_path: Path) -> None:
    """A plugin file that did not even import when the daemon started is watched like a
    loaded one: fixing it is a reload, and its tools are served."""
    (tmp_path / "plugins").mkdir()  # not beside the config file, which is watched anyway
    plugin_file = tmp_path / "plugins" / "mended.py"
    plugin_file.write_text(BROKEN)
    config = {"reload": {"watch": True, "debounce_ms": 50}, "plugins": {"paths": [str(plugin_file)]}}
    daemon = start_daemon(tmp_path, {**config, "plugins": {**config["plugins"], "enable": ["mended"]}})
    try:
        row = plugin(daemon, "mended")
        assert row is not None and row["status"] == "failed" and "SyntaxError" in row["error"]
        done = watching(daemon)
        plugin_file.write_text(PLUGIN_SOURCE.format(version="mended"))
        line = wait_for_reload(daemon, done)
        assert line["changed"] == ["mended"] and line["failed"] == [], line
        assert answer(daemon, "mended_version") == "mended"
        row = plugin(daemon, "mended")
        assert row is not None and row["status"] == "loaded" and row["error"] is None
    finally:
        daemon.stop()


RESAVED_SOURCE = '''
import os
from pathlib import Path

import mcphost

NEXT = {next!r}


@mcphost.hookimpl
def mcphost_startup():
    # The next version saved while the reload that started this one runs.
    if NEXT:
        source = Path(__file__)
        source.write_text(NEXT)
        later = source.stat().st_mtime + 2
        os.utime(source, (later, later))


@mcphost.hookimpl
def mcphost_tools():
    def version() -> str:
        """Which version answers."""
        return "{version}"

    return [version]
'''


def test_a_file_saved_during_a_watched_reload_is_reloaded_too(tmp_path: Path) -> None:
    """With ``[reload] watch``, a plugin saved while a reload runs is picked up once it has
    ended: the watcher goes on across reloads instead of starting anew after each."""
    (tmp_path / "plugins").mkdir()
    plugin_file = tmp_path / "plugins" / "resaved.py"
    plugin_file.write_text(RESAVED_SOURCE.format(version="v1", next=""))
    config = {
        "reload": {"watch": True, "debounce_ms": 50},
        "plugins": {"enable": ["resaved"], "paths": [str(plugin_file)]},
    }
    daemon = start_daemon(tmp_path, config)
    try:
        done = watching(daemon)
        plugin_file.write_text(RESAVED_SOURCE.format(version="v2", next=RESAVED_SOURCE.format(version="v3", next="")))
        assert wait_for_reload(daemon, done)["changed"] == ["resaved"]
        assert wait_for_reload(daemon, done + 1)["changed"] == ["resaved"], "the save during the reload was missed"
        assert answer(daemon, "resaved_version") == "v3"
    finally:
        daemon.stop()


SELF_MENDING_SOURCE = '''
from pathlib import Path

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def version() -> str:
        """Which version answers."""
        return "first"

    return [version]


@mcphost.hookimpl
async def mcphost_startup():
    # Written after the daemon read this file and before its watcher is up.
    Path(__file__).write_text({second!r})
'''


def test_a_plugin_changed_before_the_watcher_is_up_is_reloaded(tmp_path: Path) -> None:
    """A file written after the daemon read it but before its file watcher was watching (here
    by the plugin's own start-up hook, which runs in between) is reloaded all the same, not
    missed until the next change."""
    (tmp_path / "plugins").mkdir()
    plugin_file = tmp_path / "plugins" / "mending.py"
    plugin_file.write_text(SELF_MENDING_SOURCE.format(second=PLUGIN_SOURCE.format(version="second")))
    plugins = {"paths": [str(plugin_file)], "enable": ["mending"]}
    daemon = start_daemon(tmp_path, {"reload": {"watch": True, "debounce_ms": 50}, "plugins": plugins})
    try:
        line = wait_for_reload(daemon, 0)
        assert line["changed"] == ["mending"] and line["failed"] == [], line
        assert answer(daemon, "mending_version") == "second"
    finally:
        daemon.stop()


TRACED_SOURCE = '''
from pathlib import Path

import mcphost

TRACE = Path({trace!r})


@mcphost.hookimpl
def mcphost_startup():
    with TRACE.open("a") as trace:
        trace.write("{version} started\\n")


@mcphost.hookimpl
def mcphost_shutdown():
    with TRACE.open("a") as trace:
        trace.write("{version} stopped\\n")


@mcphost.hookimpl
def mcphost_tools():
    def version() -> str:
        """Which version answers."""
        return "{version}"

    return [version]
'''


def test_a_replaced_version_is_shut_down_with_its_own_hooks(tmp_path: Path) -> None:
    """A reload that replaces a plugin runs the old version's ``mcphost_shutdown``, and
    leaves the new version (started just before) running."""
    trace = tmp_path / "trace"
    plugin_file = tmp_path / "traced.py"
    # Both versions dated within one second, the same size: as an edit in place right after
    # the last one is. Python's bytecode cache, which checks whole seconds and size, would
    # take v1's compiled copy for v2.
    second = time.time_ns() // 10**9 * 10**9
    plugin_file.write_text(TRACED_SOURCE.format(trace=str(trace), version="v1"))
    os.utime(plugin_file, ns=(second + 100_000_000,) * 2)
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["traced"], "paths": [str(plugin_file)]}})
    try:
        plugin_file.write_text(TRACED_SOURCE.format(trace=str(trace), version="v2"))
        os.utime(plugin_file, ns=(second + 600_000_000,) * 2)
        assert reloaded(daemon)["changed"] == ["traced"]
        assert answer(daemon, "traced_version") == "v2"
        assert trace.read_text().splitlines() == ["v1 started", "v2 started", "v1 stopped"]
        daemon.config_path.write_text(to_toml({"plugins": {"enable": [], "paths": [str(plugin_file)]}}))
        assert reloaded(daemon)["changed"] == ["traced"]
        assert trace.read_text().splitlines()[-1] == "v2 stopped"
    finally:
        daemon.stop()
