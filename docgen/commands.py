"""The ``mcphost`` command's subcommands and options, read from its argument parser."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

from docgen.sources import parser


@dataclass(frozen=True)
class Argument:
    """One option or positional argument."""

    names: str
    """``--config PATH, -c PATH``, or ``PATH`` for a positional one."""
    help: str
    required: bool

    @property
    def text(self) -> str:
        """Its help, saying when an option is required."""
        return self.help + (" (required)" if self.required and self.names.startswith("-") else "")


@dataclass(frozen=True)
class Command:
    """``mcphost`` itself or one of its subcommands (``keys new``)."""

    name: str
    """``serve``, ``keys new``; empty for ``mcphost`` itself."""
    usage: str
    description: str
    arguments: list[Argument]


def commands() -> list[Command]:
    """``mcphost`` and every subcommand, in the parser's order."""
    return list(_walk(parser(), ""))


def _walk(command: argparse.ArgumentParser, name: str) -> Iterator[Command]:
    # The parser's actions are not public API, but they are what argparse's own help is
    # formatted from; what matters here has not changed since subcommands existed.
    actions = command._actions
    subcommands = next((a for a in actions if isinstance(a, argparse._SubParsersAction)), None)
    arguments = [_argument(a) for a in actions if a is not subcommands and a.help != argparse.SUPPRESS]
    command.formatter_class = _wide  # one usage line, whatever the terminal
    usage = " ".join(command.format_usage().removeprefix("usage:").split())
    yield Command(name, usage, command.description or "", arguments)
    if subcommands is not None:
        for sub_name, sub in subcommands.choices.items():
            yield from _walk(sub, f"{name} {sub_name}".strip())


def _wide(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=10_000)


def _argument(action: argparse.Action) -> Argument:
    if not action.option_strings:
        return Argument(str(action.metavar or action.dest), action.help or "", required=action.required)
    takes_value = action.nargs != 0
    metavar = str(action.metavar or action.dest.upper())
    names = ", ".join(f"{flag} {metavar}" if takes_value else flag for flag in action.option_strings)
    return Argument(names, action.help or "", required=action.required)
