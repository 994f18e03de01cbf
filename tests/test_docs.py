"""The documentation: the example config documents exactly the keys the models have, the
man pages are current and render, and the site builds strictly (no broken link, no page
left out of the navigation)."""

from __future__ import annotations

from pathlib import Path

from docgen.settings import documented_keys, settings

ROOT = Path(__file__).resolve().parent.parent


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
