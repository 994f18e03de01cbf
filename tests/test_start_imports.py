"""What the daemon imports on its way to ``READY=1``: not what a plugin's own tools, prompts
and resource templates are built with, which runs in the process that runs the plugin (a
worker, forked from a fork server that has imported it for all of them), nor what renders a
tool's question to the user until a tool asks one. And what the fork server imports: not
the models of the whole config file, nor what reads its environment overrides: a worker is
handed its plugin's tables, and only the daemon reads the file."""

from __future__ import annotations

from tests.conftest import fresh

PLUGIN_BUILDING = ("mcp.server.mcpserver.tools.base", "mcp.server.mcpserver.prompts.base", "mcp.shared.uri_template")
ASKING = ("mcp.server.elicitation",)
CONFIG_FILE = ("mcphost.core.config", "pydantic_settings")


def test_the_daemon_starts_without_what_builds_a_plugins_tools() -> None:
    report = fresh(
        f"""
        import json, sys
        from mcphost import __main__ as command
        command.prepare()  # as the mcphost command does
        import mcphost.cli.main  # everything the daemon imports
        print(json.dumps({{"imported": [m for m in {PLUGIN_BUILDING + ASKING!r} if m in sys.modules]}}))
        """
    )
    assert report["imported"] == []


def test_the_fork_server_imports_what_builds_a_plugins_tools_for_its_workers() -> None:
    report = fresh(
        f"""
        import json, sys
        from mcphost.plugins.worker import zygote
        zygote.preload()
        print(json.dumps({{"imported": [m for m in {PLUGIN_BUILDING!r} if m in sys.modules]}}))
        """
    )
    assert report["imported"] == list(PLUGIN_BUILDING)


def test_the_fork_server_does_not_import_what_reads_the_config_file() -> None:
    report = fresh(
        f"""
        import json, sys
        from mcphost.plugins.worker import zygote, main
        zygote.preload()
        main.PluginTables(limits={{"timeout": 5}}, plugins={{"enable": ["p"]}})  # as a worker validates its config
        print(json.dumps({{"imported": [m for m in {CONFIG_FILE!r} if m in sys.modules]}}))
        """
    )
    assert report["imported"] == []
