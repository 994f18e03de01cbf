"""The documentation: the example config documents exactly the keys the models have, the
man pages are current and render cleanly, and the site builds strictly (no broken link or
anchor, no page left out of the navigation) with every generated reference whole."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

import mcphost
from docgen.commands import commands
from docgen.man import pages
from docgen.metrics import metrics
from docgen.settings import documented_keys, settings

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "packaging" / "man"


def test_the_example_config_documents_every_key_the_models_have() -> None:
    """etc/mcphost.toml shows every setting (commented-out examples count) and nothing else."""
    documented, unknown = documented_keys((ROOT / "etc" / "mcphost.toml").read_text())
    assert unknown == set(), "etc/mcphost.toml documents keys the config models do not have"
    assert {s.dotted for s in settings()} - documented == set(), "etc/mcphost.toml misses keys of the models"


def test_documented_keys_finds_unknown_and_missing_keys() -> None:
    """The check itself: a misspelt key, one inside an inline table and one in a commented
    table are unknown; prose and a plugin's own settings are not keys."""
    documented, unknown = documented_keys(
        "[server]\n"
        "# Listen address and port. Behind a proxy keep the loopback address.\n"
        "hots = 1\n"
        "# [auth.keys]\n"
        '# alice = { hash = "x", tools = [], scope = "y" }\n'
        "#     bob = { nonsense = 1 }\n"
        "[plugins.files.settings]\n"
        "roots = []\n"
        "[plugins.files.tools.read]\n"
        "# timeout = 5.0\n"
    )
    assert unknown == {"server.hots", "auth.keys.alice.scope"}
    assert {"auth.keys.<name>.hash", "plugins.<name>.settings", "plugins.<name>.tools.<tool>.timeout"} <= documented
    assert "server.host" not in documented


@pytest.mark.parametrize("name", sorted(pages()))
def test_man_page_is_current(name: str) -> None:
    """The committed page is what the parser and the models make now."""
    committed = (MAN / name).read_text() if (MAN / name).exists() else ""
    assert committed == pages()[name], f"packaging/man/{name} is out of date: run .venv-test/bin/python -m docgen"


@pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (Debian: groff-base; scripts/test installs it)")
@pytest.mark.parametrize("name", sorted(pages()))
def test_man_page_renders(name: str) -> None:
    """groff renders the page without a warning, and the text names every command or key."""
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", str(MAN / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GROFF_NO_SGR": "1"},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = re.sub(r".\x08", "", done.stdout)  # overstrike (bold, underline) to plain text
    if name == "mcphost.1":
        expected = [f"mcphost {c.name}" for c in commands()[1:]]
        expected += [a.names for c in commands() for a in c.arguments]
    else:
        expected = [s.environment for s in settings() if not s.table]
    missing = [e for e in expected if " ".join(e.split()) not in " ".join(text.split())]
    assert missing == [], f"{name} renders without {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as CI builds it: strict, so any warning fails."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _text(site: Path, page: str) -> str:
    body = (site / page / "index.html").read_text()
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def test_site_builds_strictly(site: Path) -> None:
    """Every page in the nav was built, the README's front door links only to pages that exist."""
    for page in ("getting-started", "plugins", "operating/troubleshooting", "hosting-servers", "benchmarks"):
        assert (site / page / "index.html").is_file(), page
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"


def test_configuration_reference_has_every_key(site: Path) -> None:
    text = _text(site, "reference/configuration")
    for setting in settings():
        assert setting.dotted in text, setting.dotted
        if not setting.table:
            assert setting.environment in text, setting.environment


def test_cli_reference_has_every_command_and_option(site: Path) -> None:
    text = _text(site, "reference/cli")
    for command in commands():
        assert f"mcphost {command.name}".strip() in text
        for argument in command.arguments:
            assert argument.names in text, (command.name, argument.names)


def test_metrics_reference_has_every_metric(site: Path) -> None:
    text = _text(site, "reference/metrics")
    for metric in metrics():
        assert metric.name in text, metric.name


def test_api_reference_has_every_name_and_hook(site: Path) -> None:
    text = _text(site, "reference/api")
    for name in mcphost.__all__:
        assert f"mcphost.{name}" in text, name
    for hook in ("mcphost_settings_model", "mcphost_tools", "mcphost_startup", "mcphost_ready"):
        assert hook in text
    # mkdocstrings rendered the docstrings, not just the names.
    assert "The calling request, as a tool sees it" in text


async def test_the_readme_plugin_serves_its_tool(mcphost_daemon, tmp_path: Path) -> None:
    """The README's plugin, as it is written there, is served: the front door's example works."""
    readme = (ROOT / "README.md").read_text()
    [code] = re.findall(r"## A plugin\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert len(code.strip().splitlines()) <= 12
    plugin = tmp_path / "hello.py"
    plugin.write_text(code)
    daemon = mcphost_daemon({"plugins": {"enable": ["hello"], "paths": [str(plugin)]}})
    async with Client(daemon.url, mode="2026-07-28") as client:
        result = await client.call_tool("hello_greet", {"name": "Ada"})
    assert result.content[0].text == "Hello, Ada!"


@pytest.mark.parametrize("path", ["packaging/prometheus/mcphost-alerts.yml", "packaging/grafana/mcphost.json"])
def test_every_metric_the_alerts_and_dashboard_use_is_in_the_reference(path: str) -> None:
    """The alert rules and the dashboard name only metrics the daemon serves (histograms by
    their series: ``_bucket``, ``_sum``, ``_count``)."""
    served = {m.name for m in metrics()}
    used = set(re.findall(r"\b((?:mcp|mcphost)_[a-z_]+)", (ROOT / path).read_text()))
    unknown = {name for name in used if re.sub(r"_(bucket|sum|count)$", "", name) not in served}
    assert used and unknown == set(), f"{path} uses metrics the daemon does not serve: {unknown}"
