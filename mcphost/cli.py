"""The ``mcphost`` command: ``serve``, ``stdio``, ``check-config`` and ``plugins``.

Output meant for the user (tables, check results) goes to stdout; logs go to stderr.
``stdio`` never writes to stdout itself: there stdout is the protocol channel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import trio

import mcphost
from mcphost import config as config_module
from mcphost import log
from mcphost.config import ConfigError, LoadedConfig
from mcphost.daemon import Daemon
from mcphost.plugins import PluginHost, PluginRecord

EXIT_CONFIG = 2
"""Exit status for an invalid config (``serve``, ``stdio``) or a failed check."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcphost", description="A production MCP host daemon.")
    parser.add_argument("--version", action="version", version=f"mcphost {mcphost.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            help="config file (default: $MCPHOST_CONFIG, else /etc/mcphost/mcphost.toml if it "
            "exists, else the built-in defaults)",
        )
        return sub

    serve = add("serve", "Serve MCP over Streamable HTTP.")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    add("stdio", "Serve one MCP client over stdin/stdout.")
    check = commands.add_parser(
        "check-config",
        help="Validate a config file and every enabled plugin's settings.",
        description="Validate a config file and every enabled plugin's settings.",
    )
    check.add_argument("path", nargs="?", metavar="PATH", help="config file (default as for serve)")
    plugins = add("plugins", "List plugins: name, version, origin, status, tools.")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mcphost`` command."""
    args = _parser().parse_args(argv)
    path = getattr(args, "path", None) or getattr(args, "config", None)
    try:
        loaded = config_module.load(config_module.resolve_path(path))
    except ConfigError as error:
        log.configure("warning")
        print(error, file=sys.stderr)
        if args.command == "check-config" and error.plugins_only is not None:
            report_plugin_problems(error.plugins_only)
        print(f"mcphost: {error.source}: configuration is invalid", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if args.command == "serve":
        if args.host is not None:
            loaded.config.server.host = args.host
        if args.port is not None:
            loaded.config.server.port = args.port
    # Commands that only report keep the log to warnings: their output is the report.
    level = loaded.config.log.level if args.command in ("serve", "stdio") else "warning"
    log.configure(level, os.environ.get("MCPHOST_LOG_FORMAT", loaded.config.log.format))  # type: ignore[arg-type]
    if args.command == "serve":
        trio.run(Daemon(loaded).serve_http)
    elif args.command == "stdio":
        trio.run(Daemon(loaded).serve_stdio)
    elif args.command == "check-config":
        sys.exit(check_config(loaded))
    elif args.command == "plugins":
        list_plugins(loaded, as_json=args.json)


def check_config(loaded: LoadedConfig) -> int:
    """Validate like ``nginx -t``: every problem on stderr with its key and line; 0 if none."""
    records = report_plugin_problems(loaded)
    if records is None:
        print(f"mcphost: {loaded.source}: configuration is invalid", file=sys.stderr)
        return EXIT_CONFIG
    loaded_count = sum(r.status == "loaded" for r in records)
    tools = sum(len(r.tools) for r in records)
    print(f"mcphost: {loaded.source}: configuration is valid ({loaded_count} plugins, {tools} tools)")
    return 0


def report_plugin_problems(loaded: LoadedConfig) -> list[PluginRecord] | None:
    """Load the enabled plugins and print what is wrong with them; ``None`` if anything is."""
    host = PluginHost(loaded)
    records = host.load_all()
    problems = host.problems()
    problems += [
        loaded.problem(("plugins", r.name), f"plugin failed to load: {r.error}")
        for r in records
        if r.status == "failed" and not r.problems
    ]
    for problem in problems:
        print(problem.render(loaded.source), file=sys.stderr)
    return None if problems else records


def list_plugins(loaded: LoadedConfig, *, as_json: bool) -> None:
    """Print every discovered plugin with its version, origin, status and tools (or error)."""
    records = PluginHost(loaded).load_all()
    if as_json:
        print(json.dumps([_as_dict(r) for r in records], indent=2))
        return
    rows = [("PLUGIN", "VERSION", "ORIGIN", "STATUS", "TOOLS")]
    for r in records:
        detail = ", ".join(r.tools) if r.status == "loaded" else (r.error or "")
        rows.append((r.name, r.version or "-", r.origin.split(" ", 1)[0], r.status, detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])


def _as_dict(record: PluginRecord) -> dict[str, object]:
    return {
        "name": record.name,
        "version": record.version,
        "origin": record.origin,
        "status": record.status,
        "tools": record.tools,
        "hooks": list(record.hooks),
        "error": record.error,
    }


if __name__ == "__main__":  # pragma: no cover
    main()
