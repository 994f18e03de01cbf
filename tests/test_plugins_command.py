"""``mcphost plugins``: one row per discovered plugin with its name, version, origin, status, and
its tools when loaded or its error when failed; ``--json`` gives the same as JSON.

Each listing is the real CLI in its own process; the module runs them all at once before the
first test (a process costs about two seconds of imports).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcphost.testing import to_toml

RUN_TIMEOUT = 120.0
"""Seconds before a listing counts as hung (a guard, not an assertion)."""

MIXED = {
    "plugins": {
        "enable": ["echo", "faulty", "broken_import", "broken_hook", "bad_shape"],
        "disable": ["clash"],
        "faulty": {"isolation": "inline"},
    }
}
CLASH = {"plugins": {"enable": ["echo", "clash"], "clash": {"prefix": "echo"}}}
LOCAL_PLUGIN = "localdemo"
LOCAL_PLUGIN_SOURCE = '''"""A plugin loaded from a path, written by the test."""

import mcphost


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    def hello(name: str) -> str:
        """Say hello."""
        return f"hello, {name}"

    return [hello]
'''
ECHO_TOOLS = ["echo_greet", "echo_echo", "echo_add", "echo_slow", "echo_sleep_sync", "echo_whoami"]
FAULTY_TOOLS = [
    "faulty_crash",
    "faulty_refuse",
    "faulty_hang",
    "faulty_block",
    "faulty_block_long",
    "faulty_huge",
    "faulty_bad_return",
    "faulty_exit_validating",
    "faulty_exit_process",
]


@dataclass(frozen=True)
class Listing:
    """The outcome of one ``mcphost plugins`` run."""

    returncode: int
    stdout: str
    stderr: str

    def rows(self) -> dict[str, dict[str, str]]:
        """The table parsed: ``name -> {version, origin, isolation, status, detail}``."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert re.split(r"\s{2,}", lines[0].strip()) == ["PLUGIN", "VERSION", "ORIGIN", "ISOLATION", "STATUS", "TOOLS"]
        table = {}
        for line in lines[1:]:
            cells = re.split(r"\s{2,}", line.rstrip(), maxsplit=5)
            name, version, origin, isolation, status, *detail = cells
            table[name] = {
                "version": version,
                "origin": origin,
                "isolation": isolation,
                "status": status,
                "detail": "".join(detail),
            }
        return table

    def records(self) -> dict[str, dict[str, Any]]:
        """The ``--json`` output parsed: ``name -> record``."""
        return {record["name"]: record for record in json.loads(self.stdout)}


def clean_env() -> dict[str, str]:
    """This process's environment without any ``MCPHOST_*`` variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MCPHOST_")}


def list_plugins(config_path: Path, *extra: str) -> Listing:
    """Run ``mcphost plugins --config PATH [extra...]``."""
    done = subprocess.run(
        [sys.executable, "-m", "mcphost", "plugins", "--config", str(config_path), *extra],
        capture_output=True,
        text=True,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        cwd=config_path.parent,
        timeout=RUN_TIMEOUT,
    )
    return Listing(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Listings:
    """Every listing of the module, and the path plugin's file."""

    mixed: Listing
    mixed_json: Listing
    clash: Listing
    local: Listing
    local_json: Listing
    invalid: Listing
    local_file: Path


@pytest.fixture(scope="module")
def listings(tmp_path_factory: pytest.TempPathFactory) -> Listings:
    """Write the configs (and the path plugin), then run every listing concurrently."""
    workdir = tmp_path_factory.mktemp("plugins-command")
    local_file = workdir / f"{LOCAL_PLUGIN}.py"
    local_file.write_text(LOCAL_PLUGIN_SOURCE)
    configs: dict[str, Mapping[str, Any]] = {
        "mixed": MIXED,
        "clash": CLASH,
        "local": {"plugins": {"enable": [LOCAL_PLUGIN], "paths": [str(local_file)]}},
        "invalid": {"server": {"port": "eighty"}},
    }
    for name, config in configs.items():
        (workdir / f"{name}.toml").write_text(to_toml(config))
    jobs = {
        "mixed": ("mixed",),
        "mixed_json": ("mixed", "--json"),
        "clash": ("clash",),
        "local": ("local",),
        "local_json": ("local", "--json"),
        "invalid": ("invalid",),
    }
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 1) as pool:
        futures = {
            name: pool.submit(list_plugins, workdir / f"{config}.toml", *extra)
            for name, (config, *extra) in jobs.items()
        }
        done = {name: future.result() for name, future in futures.items()}
    return Listings(**done, local_file=local_file)


def test_exit_status_says_whether_a_plugin_failed(listings: Listings) -> None:
    """The whole table goes to stdout either way; the exit status is 1 when a plugin failed to
    load, 0 when every enabled plugin loaded, 2 when the config itself is invalid."""
    assert listings.mixed.returncode == 1, listings.mixed.stderr
    assert listings.mixed_json.returncode == 1, listings.mixed_json.stderr
    assert len(listings.mixed.rows()) == len(listings.mixed_json.records()) > 5
    assert listings.local.returncode == 0, listings.local.stderr
    assert listings.invalid.returncode == 2 and "configuration is invalid" in listings.invalid.stderr


def test_loaded_plugin_row_shows_version_origin_and_tools(listings: Listings) -> None:
    """``echo`` is loaded from its package, with its version and every tool by public name."""
    row = listings.mixed.rows()["echo"]
    assert row["version"] == "0.1.0"
    assert row["origin"] == "package"
    assert row["status"] == "loaded"
    assert row["detail"].split(", ") == ECHO_TOOLS


def test_misbehaving_tools_still_load(listings: Listings) -> None:
    """``faulty``'s tools fail only when called, so the plugin itself is loaded with all its tools."""
    row = listings.mixed.rows()["faulty"]
    assert row["status"] == "loaded"
    assert row["detail"].split(", ") == FAULTY_TOOLS


def test_disabled_plugin_row_has_no_tools_or_error(listings: Listings) -> None:
    """``clash`` is disabled: listed with its version and origin, nothing in the last column."""
    row = listings.mixed.rows()["clash"]
    assert row == {"version": "0.1.0", "origin": "package", "isolation": "process", "status": "disabled", "detail": ""}


def test_the_isolation_column_says_which_plugin_runs_where(listings: Listings) -> None:
    """Every plugin runs in a worker process unless its table says ``inline``."""
    rows = listings.mixed.rows()
    assert rows["echo"]["isolation"] == "process" and rows["faulty"]["isolation"] == "inline"
    assert listings.mixed_json.records()["faulty"]["isolation"] == "inline"


def test_plugin_not_enabled_is_listed_as_disabled(listings: Listings) -> None:
    """Installed plugins the config does not enable (the bundled ``files``) are listed as disabled."""
    assert listings.mixed.rows()["files"]["status"] == "disabled"


def test_import_failure_row_shows_the_module_not_found_error(listings: Listings) -> None:
    """``broken_import`` failed, and its row says which module could not be found."""
    row = listings.mixed.rows()["broken_import"]
    assert row["status"] == "failed"
    assert row["origin"] == "package"
    assert "ModuleNotFoundError" in row["detail"]
    assert "mcphost_testplugins_missing_dependency" in row["detail"]


def test_raising_hook_row_shows_the_hook_error(listings: Listings) -> None:
    """``broken_hook`` failed, and its row carries the hook's error."""
    row = listings.mixed.rows()["broken_hook"]
    assert row["status"] == "failed"
    assert "cannot list tools" in row["detail"]


def test_bad_shape_row_shows_the_shape_error(listings: Listings) -> None:
    """``bad_shape`` failed, and its row says the hook must return a list."""
    row = listings.mixed.rows()["bad_shape"]
    assert row["status"] == "failed"
    assert "must return a list" in row["detail"]


def test_plugins_are_listed_in_name_order(listings: Listings) -> None:
    """Rows come in name order, the order plugins load in."""
    names = list(listings.mixed.rows())
    assert names == sorted(names)


def test_json_gives_the_same_rows_as_the_table(listings: Listings) -> None:
    """``--json`` lists the same plugins with the same version, origin, status, tools and error."""
    rows, records = listings.mixed.rows(), listings.mixed_json.records()
    assert list(records) == list(rows)
    for name, row in rows.items():
        record = records[name]
        assert (record["version"] or "-") == row["version"], name
        assert record["origin"].split(" ", 1)[0] == row["origin"], name
        assert record["status"] == row["status"], name
        detail = ", ".join(record["tools"]) if record["status"] == "loaded" else (record["error"] or "")
        assert detail == row["detail"], name


def test_json_record_of_loaded_plugin(listings: Listings) -> None:
    """The JSON record of ``echo``: full origin, tools, hooks implemented, no error."""
    record = listings.mixed_json.records()["echo"]
    assert record["origin"] == "package mcphost-testplugins 0.1.0"
    assert record["status"] == "loaded" and record["isolation"] == "process"
    assert record["tools"] == ECHO_TOOLS
    assert "mcphost_tools" in record["hooks"]
    assert record["error"] is None


def test_json_record_of_failed_plugin(listings: Listings) -> None:
    """The JSON record of ``broken_import``: failed, no tools, the import error."""
    record = listings.mixed_json.records()["broken_import"]
    assert record["status"] == "failed"
    assert record["tools"] == []
    assert record["error"].startswith("import failed: ModuleNotFoundError")


def test_tool_clash_fails_the_plugin_that_loads_second(listings: Listings) -> None:
    """With ``clash`` prefixed ``echo``, both want ``echo_echo``; plugins load in name order, so
    ``clash`` serves it and ``echo`` fails with an error naming the clashing tool."""
    rows = listings.clash.rows()
    assert rows["clash"]["status"] == "loaded"
    assert rows["clash"]["detail"] == "echo_echo"
    assert rows["echo"]["status"] == "failed"
    assert "'echo_echo'" in rows["echo"]["detail"]
    assert "already served" in rows["echo"]["detail"]


def test_path_plugin_shows_origin_path(listings: Listings) -> None:
    """A plugin loaded from ``[plugins] paths`` shows origin ``path``, no version, and its tools."""
    row = listings.local.rows()[LOCAL_PLUGIN]
    assert row == {
        "version": "-",
        "origin": "path",
        "isolation": "process",
        "status": "loaded",
        "detail": f"{LOCAL_PLUGIN}_hello",
    }


def test_path_plugin_json_names_its_file(listings: Listings) -> None:
    """In JSON, a path plugin's origin names the file it was loaded from, and its version is null."""
    record = listings.local_json.records()[LOCAL_PLUGIN]
    assert record["origin"] == f"path {listings.local_file}"
    assert record["version"] is None
    assert record["status"] == "loaded"
