"""The plugin contract: every hook is documented with its exact signature, every hook is
exercised by a test plugin, and the lifecycle hooks run when they should."""

from __future__ import annotations

import inspect
import json
import re
import signal
from pathlib import Path

import pytest
from mcp import Client

import mcphost
from mcphost.plugins import hookspecs

ROOT = Path(__file__).resolve().parent.parent
TEST_PLUGINS = ROOT / "tests" / "plugins" / "mcphost-testplugins" / "mcphost_testplugins"
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("mcphost_"))


def _signature(name: str) -> str:
    fn = getattr(hookspecs, name)
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    guide = (ROOT / "docs" / "plugins" / "index.md").read_text()
    assert f"`{_signature(hook)}`" in guide, f"docs/plugins/index.md lacks `{_signature(hook)}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook: str) -> None:
    assert (getattr(hookspecs, hook).__doc__ or "").strip()


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_a_test_plugin(hook: str) -> None:
    sources = "\n".join(p.read_text() for p in TEST_PLUGINS.glob("*.py"))
    assert re.search(rf"@mcphost\.hookimpl\n(async )?def {hook}\(", sources), f"no test plugin implements {hook}"


def test_misspelt_hook_fails_the_plugin_loudly(mcphost_daemon, tmp_path: Path) -> None:
    plugin = tmp_path / "typo.py"
    plugin.write_text("import mcphost\n@mcphost.hookimpl\ndef mcphost_tool():\n    return []\n")
    daemon = mcphost_daemon({"plugins": {"enable": ["typo"], "paths": [str(plugin)]}})
    report = json.loads(daemon.get("/ready", admin=True)[1])
    assert report["plugins"]["typo"]["status"] == "failed"
    assert "unknown hook(s) mcphost_tool" in report["plugins"]["typo"]["error"]


async def test_lifecycle_hooks_run_in_order(mcphost_daemon, tmp_path: Path) -> None:
    daemon = mcphost_daemon(
        {"plugins": {"enable": ["lifecycle"], "lifecycle": {"settings": {"trace_dir": str(tmp_path)}}}}
    )
    assert (tmp_path / "started").exists() and not (tmp_path / "stopped").exists()
    async with Client(daemon.url, mode="2026-07-28") as client:
        assert (await client.call_tool("lifecycle_ping", {})).content[0].text == "pong"
    assert daemon.stop(signal.SIGTERM) == 0
    assert (tmp_path / "stopped").exists()


def test_readiness_hook_drives_ready(mcphost_daemon, tmp_path: Path) -> None:
    daemon = mcphost_daemon(
        {
            "plugins": {
                "enable": ["lifecycle"],
                "lifecycle": {"required": True, "settings": {"trace_dir": str(tmp_path)}},
            }
        }
    )
    assert daemon.get("/ready", admin=True)[0] == 200
    (tmp_path / "unready").write_text("")
    status, body = daemon.get("/ready", admin=True)
    assert status == 503 and json.loads(body)["plugins"]["lifecycle"]["ready"] is False
    (tmp_path / "unready").unlink()
    assert daemon.get("/ready", admin=True)[0] == 200


def test_failing_startup_marks_only_that_plugin_failed(mcphost_daemon, tmp_path: Path) -> None:
    daemon = mcphost_daemon(
        {
            "plugins": {
                "enable": ["lifecycle", "echo"],
                "lifecycle": {"settings": {"trace_dir": str(tmp_path), "fail_startup": True}},
            }
        }
    )
    report = json.loads(daemon.get("/ready", admin=True)[1])
    assert report["plugins"]["lifecycle"]["status"] == "failed"
    assert "backend unreachable" in report["plugins"]["lifecycle"]["error"]
    assert report["plugins"]["echo"]["status"] == "loaded"


def test_public_api_is_documented() -> None:
    for name in mcphost.__all__:
        if name != "__version__":
            assert (getattr(mcphost, name).__doc__ or "").strip(), f"mcphost.{name} has no docstring"
