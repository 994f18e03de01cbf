"""The SDK's package ``__init__`` run on the first name asked of the package
(:mod:`mcphost.ops.sdk_packages`): the daemon and the fork server start without the SDK's
client and the fork server without its HTTP transport, and every name of the SDK's packages
is there as before, in the daemon's process and in a plugin's worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.conftest import fresh
from tests.isolationkit import call

CLIENT_AND_TRANSPORT = ("mcp.client", "httpx2", "mcp.server.lowlevel.server", "mcp.server.streamable_http", "uvicorn")


def test_the_daemon_starts_without_the_sdks_client() -> None:
    report = fresh(
        f"""
        import json, sys
        from mcphost import __main__ as command
        command.prepare()  # as the mcphost command does
        import mcphost.cli.main  # everything the daemon imports
        print(json.dumps({{"imported": [m for m in {CLIENT_AND_TRANSPORT!r} if m in sys.modules]}}))
        """
    )
    assert report["imported"] == ["mcp.server.lowlevel.server", "mcp.server.streamable_http", "uvicorn"]


def test_the_fork_server_starts_without_the_sdks_client_and_http_transport() -> None:
    report = fresh(
        f"""
        import json, sys
        from mcphost import __main__ as command
        from mcphost.plugins.worker import zygote
        command.prepare()  # as the mcphost command does
        zygote.import_runtime()  # what it imports before it forks the fork server
        zygote.warm_up()  # and what the fork server does then
        print(json.dumps({{"imported": [m for m in {CLIENT_AND_TRANSPORT!r} if m in sys.modules]}}))
        """
    )
    assert report["imported"] == []


def test_the_sdks_package_names_are_there_when_asked_for() -> None:
    report = fresh(
        """
        import json
        from mcphost.ops import sdk_packages
        deferred = sdk_packages.defer_inits()
        from mcp.shared.exceptions import MCPError  # a module: the packages' __init__ still waits
        import mcp
        client = mcp.Client.__name__
        from mcp.server import Server
        from mcp.server.mcpserver import MCPServer
        star = {}
        exec("from mcp import *", star)
        print(json.dumps({
            "deferred": deferred, "again": sdk_packages.defer_inits(), "client": client,
            "server": Server.__module__, "mcpserver": MCPServer.__module__, "tool": mcp.types.Tool.__name__,
            "star": sorted(set(star) - {"__builtins__"}) == sorted(mcp.__all__), "missing": hasattr(mcp, "nothing"),
        }))
        """
    )
    assert report["deferred"] is True and report["again"] is False
    assert report["client"] == "Client" and report["tool"] == "Tool"
    assert report["server"] == "mcp.server.lowlevel.server"
    assert report["mcpserver"] == "mcp.server.mcpserver.server"
    assert report["star"] is True and report["missing"] is False


SDK_PLUGIN = '''
import mcp
from mcp.server.mcpserver import MCPServer

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def names() -> str:
        """The SDK's top-level names, as a plugin in a worker sees them."""
        from mcp.server import Server

        return " ".join((mcp.Client.__name__, Server.__name__, MCPServer.__name__, mcp.types.Tool.__name__))

    return [names]
'''


def test_a_plugin_in_a_worker_imports_the_sdks_package_names(mcphost_daemon, tmp_path: Path) -> None:
    plugin = tmp_path / "sdkuser.py"
    plugin.write_text(SDK_PLUGIN)
    config = {"plugins": {"enable": ["sdkuser"], "paths": [str(plugin)], "sdkuser": {"isolation": "process"}}}
    daemon = mcphost_daemon(config)
    result = trio.run(call, daemon, "sdkuser_names")
    assert not result.is_error, result.content
    assert result.content[0].text == "Client Server MCPServer Tool"


IMPORTS_PLUGIN = f'''
import sys

import mcphost


@mcphost.hookimpl
def mcphost_tools():
    def imported() -> str:
        """Which of the SDK's client and HTTP transport modules this worker holds."""
        return " ".join(m for m in {CLIENT_AND_TRANSPORT!r} if m in sys.modules) or "none"

    return [imported]
'''


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "fresh interpreter"])
def test_a_worker_holds_none_of_the_sdks_client_and_http_transport(
    mcphost_daemon, tmp_path: Path, fork_server: bool
) -> None:
    plugin = tmp_path / "imports.py"
    plugin.write_text(IMPORTS_PLUGIN)
    plugins = {"enable": ["imports"], "paths": [str(plugin)], "fork_server": fork_server}
    daemon = mcphost_daemon({"plugins": {**plugins, "imports": {"isolation": "process"}}})
    result = trio.run(call, daemon, "imports_imported")
    assert not result.is_error, result.content
    assert result.content[0].text == "none"
