"""The ``mcphost`` command: ``serve``, ``stdio``, ``check-config``, ``reload``, ``plugins``, ``keys`` and ``status``.

Output meant for the user (tables, check results) goes to stdout; logs go to stderr.
``stdio`` never writes to stdout itself: there stdout is the protocol channel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import structlog
import trio
from pydantic import TypeAdapter, ValidationError

from mcphost.auth import authenticator as auth
from mcphost.auth import keys
from mcphost.cli import reload as reload_command
from mcphost.cli import status
from mcphost.core import config as config_module
from mcphost.core.config import ConfigError, KeyName, LoadedConfig
from mcphost.core.problems import Problem
from mcphost.core.rate import Rate
from mcphost.core.version import version
from mcphost.daemon import workers
from mcphost.daemon.daemon import Daemon, session_secret
from mcphost.daemon.startup import StartupError
from mcphost.daemon.workers import WORKER_FD
from mcphost.ops import heap, log
from mcphost.plugins import leftovers
from mcphost.plugins.host import PluginHost, PluginRecord
from mcphost.plugins.worker.launch import discard_early
from mcphost.protocol import tracing
from mcphost.transport import metrics_endpoint

logger = structlog.get_logger("mcphost.cli")

EXIT_CONFIG = 2
"""Exit status for an invalid config (``serve``, ``stdio``) or a failed check."""
EXIT_STARTUP = 1
"""Exit status of ``serve`` and ``stdio`` when they cannot start (:class:`StartupError`)."""
EXIT_PLUGINS = 1
"""Exit status of ``plugins`` when a plugin failed to load, and of ``check-config --strict``
when there is a warning (a plugin that fails to load is not an invalid config: a reload
with it goes through, and the others serve)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcphost", description="A production MCP host daemon.")
    parser.add_argument("--version", action="version", version=f"mcphost {version()}")
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
    serve.add_argument("--dev", action="store_true", help="development: reload on file changes ([reload] watch = true)")
    add("stdio", "Serve one MCP client over stdin/stdout.")
    check = commands.add_parser(
        "check-config",
        help="Validate a config file and every enabled plugin's settings.",
        description="Validate a config file and every enabled plugin's settings.",
    )
    check.add_argument("path", nargs="?", metavar="PATH", help="config file (default as for serve)")
    check.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_PLUGINS} on warnings too: a plugin that fails to load, a table or pattern naming no plugin",
    )
    reload = add(
        "reload",
        "Check the config, then send the running daemon SIGHUP and wait until it reports the reload applied.",
    )
    reload.add_argument("--pid", type=int, required=True, help="the daemon's process id (under systemd: $MAINPID)")
    reload.add_argument(
        "--timeout",
        type=float,
        default=reload_command.TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the reload (default {reload_command.TIMEOUT:g})",
    )
    plugins = add("plugins", "List plugins: name, version, origin, status, tools.")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    keys_parser = commands.add_parser("keys", help="Make and list API keys.", description="Make and list API keys.")
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    new = keys_commands.add_parser(
        "new",
        help="Make an API key: print its token (once) and the config line with its hash.",
        description="Make an API key: print its token (once) and the config line with its hash.",
    )
    new.add_argument("name", type=_key_name, help="the key's name: the caller's identity in logs and tools")
    new.add_argument(
        "--tools",
        action="append",
        required=True,
        metavar="PATTERN",
        help="glob pattern of the tool and prompt names and resource URIs the key may use "
        "('sysinfo_*', 'jobs://*'); repeat for more, '*' for all",
    )
    new.add_argument("--rate-limit", type=_rate, metavar="RATE", help="the key's own budget, e.g. 1000/hour")
    listing = keys_commands.add_parser("list", help="List the configured keys (never their tokens).")
    listing.add_argument("--config", "-c", metavar="PATH", help="config file (default as for serve)")
    status_command = add("status", "Show the running daemon: plugins, calls, errors, latencies, rate limits, reloads.")
    status_command.add_argument(
        "--admin-url", metavar="URL", help="the daemon's admin listener (default: [admin] host and port of the config)"
    )
    status_command.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _key_name(value: str) -> str:
    try:
        return TypeAdapter(KeyName).validate_python(value)
    except ValidationError:
        raise argparse.ArgumentTypeError("use letters, digits and . _ @ - (at most 64)") from None


def _rate(value: str) -> str:
    try:
        Rate.parse(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mcphost`` command."""
    args = _parser().parse_args(argv)
    if args.command == "keys" and args.keys_command == "new":
        new_key(args.name, args.tools, args.rate_limit)
        return
    config_path = config_module.resolve_path(getattr(args, "path", None) or getattr(args, "config", None))
    if args.command == "status":
        # Before the config is validated: with --admin-url, a config being edited must not stop it.
        log.configure("warning")
        sys.exit(show_status(args.admin_url, config_path, as_json=args.json))
    if args.command == "reload":
        log.configure("warning")
        sys.exit(reload_daemon(args.pid, config_path, args.timeout))
    try:
        loaded = config_module.load(config_path)
    except ConfigError as error:
        log.configure("warning")
        print(error, file=sys.stderr)
        if args.command == "check-config" and error.plugins_only is not None:
            examine_plugins(error.plugins_only)
        print(f"mcphost: {error.source}: configuration is invalid", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if args.command == "serve" and (args.host is not None or args.port is not None or args.dev):
        # Command-line overrides become environment overrides, so a reload that re-reads
        # the file applies them again.
        if args.host is not None:
            os.environ["MCPHOST_SERVER__HOST"] = args.host
        if args.port is not None:
            os.environ["MCPHOST_SERVER__PORT"] = str(args.port)
        if args.dev:
            os.environ["MCPHOST_RELOAD__WATCH"] = "true"
        loaded = config_module.load(config_path)
    # Commands that only report keep the log to warnings: their output is the report.
    level = loaded.config.log.level if args.command in ("serve", "stdio") else "warning"
    log.configure(level, loaded.config.log.format)
    if args.command in ("serve", "stdio") and WORKER_FD not in os.environ:  # the master has said it
        for problem in config_module.unknown_environment():
            logger.warning("environment variable ignored", variable=problem.key, problem=problem.message)
    if args.command in ("serve", "stdio"):
        sys.exit(run_daemon(args.command, loaded, config_path))
    elif args.command == "check-config":
        sys.exit(check_config(loaded, strict=args.strict))
    elif args.command == "plugins":
        sys.exit(list_plugins(loaded, as_json=args.json))
    elif args.command == "keys":
        sys.exit(list_keys(loaded))


def run_daemon(command: str, loaded: LoadedConfig, config_path: Path | None) -> int:
    """``serve`` or ``stdio`` until stopped; what stops it from starting is told in a few
    lines, not a traceback. Returns the exit status."""
    if not workers.follow_master():
        return 0  # a worker whose master ended while it started: nothing to serve for
    try:
        if command == "serve" and loaded.config.server.workers > 1 and WORKER_FD not in os.environ:
            # Made (or found wanting) once, here, rather than by each worker as it starts.
            session_secret(loaded.config.sessions)
            heap.settle()  # the master's start-up is done (see mcphost.__main__); it only watches workers now
            discard_early()  # each worker process starts a fork server of its own
            return workers.run(loaded, config_path, loaded.config.server.workers)
        daemon = Daemon(loaded, config_path)
        trio.run(daemon.serve_http if command == "serve" else daemon.serve_stdio)
        leftovers.exit_past_threads(0)
    except ConfigError as error:
        print(error, file=sys.stderr)
        print(f"mcphost: {error.source}: refusing to start", file=sys.stderr)
        return EXIT_CONFIG
    except StartupError as error:
        print(f"mcphost: {error.what}: {error.because}", file=sys.stderr)
        print(f"mcphost: {error.fix}", file=sys.stderr)
        return EXIT_STARTUP
    return 0


def reload_daemon(pid: int, config_path: Path | None, timeout: float) -> int:
    """``mcphost reload``: check the config as ``check-config`` does, then signal ``pid`` and
    wait for its verdict; an invalid config is not signalled (exit :data:`EXIT_CONFIG`).

    Keys in a systemd credential are checked only where ``$CREDENTIALS_DIRECTORY`` can be
    read: systemd 252 shows the credential to ``ExecStart=`` alone, not to the ``ExecReload=``
    that runs this (it sets the variable but hides the directory). The daemon reads its copy
    at the reload and refuses keys it cannot take, which this command then reports as a
    refused reload."""
    try:
        loaded = config_module.load(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        checked = EXIT_CONFIG
    else:
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        readable = credentials is not None and os.access(credentials, os.R_OK | os.X_OK)
        checked = check_config(loaded, credential=readable)
    if checked != 0:
        print("mcphost reload: the configuration is invalid; nothing was signalled", file=sys.stderr)
        return checked
    return reload_command.reload(pid, loaded, timeout)


def check_config(loaded: LoadedConfig, *, strict: bool = False, credential: bool = True) -> int:
    """Validate like ``nginx -t``: every problem and warning on stderr with its key and line.

    0 when the config is valid, even if a plugin fails to load (a warning: ``mcphost reload``
    runs this, and a reload must go through while one plugin is broken), :data:`EXIT_CONFIG`
    when it is invalid, :data:`EXIT_PLUGINS` with ``strict`` and a warning. ``credential``
    false leaves the keys of ``[auth] credential`` unread.
    """
    records, problems, warnings = examine_plugins(loaded)
    environment = config_module.unknown_environment()
    for problem in environment:
        print(problem.render("environment"), file=sys.stderr)
    invalid = bool(problems or environment)
    for check in (partial(auth.load, credential=credential), metrics_endpoint.check_public, tracing.check):
        try:
            check(loaded)
        except ConfigError as error:
            print(error, file=sys.stderr)
            invalid = True
    if invalid:
        print(f"mcphost: {loaded.source}: configuration is invalid", file=sys.stderr)
        return EXIT_CONFIG
    loaded_count = sum(r.status == "loaded" for r in records)
    tools = sum(len(r.tools) for r in records)
    counts = f"{loaded_count} plugins, {tools} tools"
    if warnings:
        counts += f", {len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
    print(f"mcphost: {loaded.source}: configuration is valid ({counts})")
    if strict and warnings:
        print(f"mcphost: {loaded.source}: failing on warnings (--strict)", file=sys.stderr)
        return EXIT_PLUGINS
    return 0


def examine_plugins(loaded: LoadedConfig) -> tuple[list[PluginRecord], list[Problem], list[Problem]]:
    """Load the enabled plugins as the daemon would and print what is wrong with the
    config's plugin tables (problems) and with the plugins themselves (warnings)."""
    host = PluginHost(loaded)
    records = trio.run(host.load_all)
    host.close()
    problems, warnings = host.problems(), host.warnings()
    for problem in problems + warnings:
        print(problem.render(loaded.source), file=sys.stderr)
    return records, problems, warnings


def list_plugins(loaded: LoadedConfig, *, as_json: bool) -> int:
    """Print every discovered plugin with its version, origin, status and tools (or error);
    returns :data:`EXIT_PLUGINS` if one failed to load, else 0."""
    host = PluginHost(loaded)
    records = trio.run(host.load_all)
    host.close()
    if as_json:
        print(json.dumps([_as_dict(r) for r in records], indent=2))
    else:
        rows = [("PLUGIN", "VERSION", "ORIGIN", "ISOLATION", "STATUS", "TOOLS")]
        for r in records:
            detail = ", ".join(r.tools) if r.status == "loaded" else (r.error or "")
            rows.append((r.name, r.version or "-", r.origin.split(" ", 1)[0], r.isolation, r.status, detail))
        print_table(rows)
    return EXIT_PLUGINS if any(r.status == "failed" for r in records) else 0


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` in aligned columns; the last column, often long, is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


def new_key(name: str, tools: list[str], rate_limit: str | None) -> None:
    """``keys new``: a fresh token, shown once, and the config line that stores only its hash."""
    token = keys.new_token()
    line = keys.config_line(name, keys.hash_token(token), tools, rate_limit)
    print(f"token:  {token}")
    print(f"config: {line}")
    print()
    print("The token is shown only this once; only its hash goes into the config. Add the config")
    print("line under [auth.keys] in mcphost.toml, or under [keys] in the keys file ([auth] keys_file")
    print("or the systemd credential), and restart mcphost. Clients send the token as the header")
    print("    Authorization: Bearer <token>")


def list_keys(loaded: LoadedConfig) -> int:
    """``keys list``: each configured key's name, where it is defined, its tools and its rate limit."""
    try:
        found = keys.read_keys(loaded.config.auth, loaded.source)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    rows = [("NAME", "SOURCE", "RATE LIMIT", "TOOLS")]
    rows += [(n, source, k.rate_limit or "-", ", ".join(k.tools)) for n, (k, source) in sorted(found.items())]
    print_table(rows)
    return 0


def _as_dict(record: PluginRecord) -> dict[str, object]:
    return {
        "name": record.name,
        "version": record.version,
        "origin": record.origin,
        "isolation": record.isolation,
        "status": record.status,
        "tools": record.tools,
        "hooks": list(record.hooks),
        "error": record.error,
    }


def show_status(url: str | None, config_path: Path | None, *, as_json: bool) -> int:
    """The ``status`` command: the running daemon's report, as a table or JSON; returns the exit status."""
    configured, token = None, None
    try:
        configured, token = status.admin_url(config_path)
    except ConfigError as error:
        if url is None:  # nothing to go on; with --admin-url, go on without the token
            print(error, file=sys.stderr)
            print(f"mcphost status: {error.source}: configuration is invalid", file=sys.stderr)
            return status.EXIT_USAGE
    url = url or configured
    if url is None:
        print(
            "mcphost status: the admin listener is off ([admin] enabled = false); name one with --admin-url",
            file=sys.stderr,
        )
        return status.EXIT_USAGE
    try:
        report = status.fetch(url, token)
    except urllib.error.HTTPError as error:
        hint = " (set [admin] metrics_token to the daemon's)" if error.code == 401 else ""
        print(f"mcphost status: {url}/status answered {error.code}{hint}", file=sys.stderr)
        return status.EXIT_UNREACHABLE
    except (OSError, ValueError) as error:
        print(f"mcphost status: no daemon answers at {url}: {error}", file=sys.stderr)
        return status.EXIT_UNREACHABLE
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(status.render(report)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
