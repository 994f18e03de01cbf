"""The man pages ``mcphost(1)`` and ``mcphost.toml(5)``, in roff, from the command's parser
and the config models (the sources of the site's references)."""

from __future__ import annotations

import re

from docgen import sources
from docgen.commands import Argument, commands
from docgen.settings import settings


def pages() -> dict[str, str]:
    """Every man page by its file name."""
    return {"mcphost.1": command_page(), "mcphost.toml.5": config_page()}


def command_page() -> str:
    """``mcphost(1)``: every command and option."""
    found = commands()
    top, subcommands = found[0], [c for c in found[1:] if not any(o.name.startswith(c.name + " ") for o in found)]
    lines = _header("MCPHOST", 1, "User Commands")
    lines += [
        ".SH NAME",
        r"mcphost \- " + _roff(top.description[:1].lower() + top.description[1:].rstrip(".")),
        ".SH SYNOPSIS",
    ]
    for command in subcommands:
        lines += [".PP", _roff(command.usage)]
    lines += [
        ".SH DESCRIPTION",
        _roff(
            "mcphost serves MCP (Model Context Protocol) tools from plugins, pip-installable Python packages, "
            "over Streamable HTTP to every client of a team, or over stdio to one local client. Its "
            "configuration is described in `mcphost.toml`(5). Logs go to stderr, never to stdout."
        ),
        ".SH OPTIONS",
    ]
    lines += _arguments(top.arguments)
    lines.append(".SH COMMANDS")
    for command in subcommands:
        lines += [f'.SS "{_roff("mcphost " + command.name)}"']
        if command.description:
            lines += [_roff(command.description), ".PP"]
        lines += [".nf", _roff(command.usage), ".fi"]
        lines += _arguments(command.arguments)
    default = ", else ".join(str(p) for p in sources.DEFAULT_PATHS)
    lines += [
        ".SH FILES",
        ".TP",
        f".I {_roff(default)}",
        _roff("The configuration, when neither `--config` nor `$MCPHOST_CONFIG` names one (and it exists)."),
        ".SH ENVIRONMENT",
        ".TP",
        ".B MCPHOST_CONFIG",
        _roff("The configuration file, unless `--config` names one."),
        ".TP",
        f".B {_roff(sources.ENV_PREFIX)}<TABLE>__<KEY>",
        _roff("Overrides a setting of the file, e.g. `MCPHOST_LOG__LEVEL=debug`; see `mcphost.toml`(5)."),
        ".SH SEE ALSO",
        r".BR mcphost.toml (5),",
        r".BR systemctl (1)",
    ]
    return "\n".join(lines) + "\n"


def _arguments(arguments: list[Argument]) -> list[str]:
    lines = []
    for argument in arguments:
        lines += [".TP", f".B {_roff(argument.names)}", _roff(argument.text)]
    return lines


def config_page() -> str:
    """``mcphost.toml(5)``: every key of the configuration."""
    lines = _header("MCPHOST.TOML", 5, "File Formats")
    lines += [
        ".SH NAME",
        r"mcphost.toml \- configuration of the mcphost MCP host daemon",
        ".SH SYNOPSIS",
        f".I {_roff(str(sources.DEFAULT_PATHS[0]))}",
        ".SH DESCRIPTION",
        _roff(
            "The configuration of `mcphost`(1), a TOML file. Every key is optional unless marked required, and "
            "is shown below with its "
            "type, its default and the environment variable that overrides it "
            "(`MCPHOST_<TABLE>__<KEY>`, two underscores between the keys; the environment wins over the file). "
            "A table written `<name>` takes any name (a plugin's, an API key's), `<tool>` a tool's name without "
            "its plugin's prefix. Unknown keys are errors. Check a file with `mcphost check-config PATH`."
        ),
    ]
    for setting in settings():
        if setting.table:
            macro = ".SH" if len(setting.path) == 1 else ".SS"
            lines += [f'{macro} "{_roff("[" + setting.dotted + "]")}"', _roff(setting.description)]
            continue
        lines += [
            ".TP",
            f".B {_roff(setting.path[-1])}",
            _roff("; ".join(setting.facts) + "."),
            ".br",
            _roff(setting.description),
        ]
    lines += [".SH SEE ALSO", r".BR mcphost (1)"]
    return "\n".join(lines) + "\n"


def _header(title: str, section: int, manual: str) -> list[str]:
    # No date: the page changes only when what it documents does. No hyphenation: names
    # such as MCPHOST_SERVER__KEEP_ALIVE_TIMEOUT must be read (and copied) whole.
    return [f'.TH "{title}" "{section}" "" "mcphost {sources.version()}" "{manual}"', ".nh"]


def _roff(text: str) -> str:
    """Text with Markdown `code` as roff: escaped, `code` in bold, non-ASCII by its code point."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]*)`", r"\\fB\1\\fR", text)
    text = "".join(ch if ord(ch) < 128 else f"\\[u{ord(ch):04X}]" for ch in text)
    return "\\&" + text if text.startswith((".", "'")) else text
