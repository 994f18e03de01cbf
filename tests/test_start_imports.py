"""What the fork server holds: the daemon forks it from itself once it has imported what
builds a plugin's tools, prompts and resource templates (which runs in the worker, forked from
the fork server), and before it imports the models of the whole config file or what reads
its environment overrides: a worker is handed its plugin's tables, and only the daemon reads
the file. A fork server started later (after an upgrade) imports the same, afresh."""

from __future__ import annotations

from tests.conftest import fresh

PLUGIN_BUILDING = ("mcp.server.mcpserver.tools.base", "mcp.server.mcpserver.prompts.base", "mcp.shared.uri_template")
CONFIG_FILE = ("mcphost.core.config", "pydantic_settings")


def test_the_fork_server_imports_what_builds_a_plugins_tools_for_its_workers() -> None:
    report = fresh(
        f"""
        import json, sys
        from mcphost import __main__ as command
        from mcphost.plugins.worker import zygote
        command.prepare()  # as the mcphost command does, then what it imports before the fork
        zygote.import_runtime()
        print(json.dumps({{"imported": [m for m in {PLUGIN_BUILDING!r} if m in sys.modules]}}))
        """
    )
    assert report["imported"] == list(PLUGIN_BUILDING)


def test_the_fork_server_does_not_import_what_reads_the_config_file() -> None:
    report = fresh(
        f"""
        import json, sys
        from mcphost import __main__ as command
        from mcphost.plugins.worker import zygote, main
        command.prepare()  # as the mcphost command does, then what it imports before the fork
        zygote.import_runtime()
        zygote.warm_up()
        main.PluginTables(limits={{"timeout": 5}}, plugins={{"enable": ["p"]}})  # as a worker validates its config
        print(json.dumps({{"imported": [m for m in {CONFIG_FILE!r} if m in sys.modules]}}))
        """
    )
    assert report["imported"] == []
