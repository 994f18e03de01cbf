"""A config's problems, located in its source: what ``check-config``, a refused start or
reload and a plugin's settings report, as ``source:line: key: message``.

Kept apart from the models of the whole file (:mod:`mcphost.core.config`) so that a plugin
host that is handed only its own tables (a plugin's worker) locates its plugin's problems
without importing those.
"""

from __future__ import annotations

import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

C = TypeVar("C", covariant=True)
"""The config a :class:`Loaded` holds (read only: a host of the whole file is a host of its tables)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config, located as precisely as the source allows.

    A warning is something amiss that does not make the config invalid: a plugin that fails
    to load, a table or pattern naming no plugin there is.
    """

    key: str
    message: str
    line: int | None = None
    warning: bool = False

    def render(self, source: str) -> str:
        """``source:line: [warning: ]key: message``, the shape compilers and ``nginx -t`` use."""
        where = f"{source}:{self.line}" if self.line else source
        what = f"{self.key}: {self.message}" if self.key else self.message
        return f"{where}: warning: {what}" if self.warning else f"{where}: {what}"


@dataclass(frozen=True, slots=True)
class Loaded(Generic[C]):
    """A validated config and where it came from, kept for locating later problems: the whole
    file (:class:`mcphost.core.config.LoadedConfig`), or the tables a plugin's worker is handed."""

    config: C
    source: str
    text: str

    def problem(self, loc: tuple[str | int, ...], message: str, *, warning: bool = False) -> Problem:
        """A :class:`Problem` at ``loc`` with its line in the source file when it has one."""
        return Problem(_dotted(loc), message, locate(self.text, loc), warning)


def problems_from(
    error: ValidationError, text: str, prefix: tuple[str | int, ...] = (), model: type[BaseModel] | None = None
) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` s located in ``text`` (keys under ``prefix``).

    A problem shows the value it is about, unless that value may be a secret (see
    :func:`may_be_secret`; ``model`` is what ``error`` validated, for its secret fields):
    a secret must not reach a terminal or the journal, valid or not.
    """
    problems = []
    for e in error.errors(include_url=False):
        loc = prefix + tuple(e["loc"])
        message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if (
            e["type"] not in ("extra_forbidden", "missing")
            and "input" in e
            and not isinstance(e["input"], dict)
            and not may_be_secret(tuple(e["loc"]), model)
        ):
            message += f" (got {e['input']!r})"
        if variable := _environment_variable(loc):
            problems.append(Problem(_dotted(loc), f"{message} (set by environment variable {variable})"))
        else:
            problems.append(Problem(_dotted(loc), message, locate(text, loc)))
    return problems


_SECRET_NAME = re.compile(r"token|passw|secret|credential|key|auth|cookie|header|url|dsn", re.IGNORECASE)


def may_be_secret(loc: tuple[str | int, ...], model: type[BaseModel] | None = None) -> bool:
    """Whether the value at ``loc`` may be a secret: a key on its path names one (a token,
    a password, a key, a URL that may carry credentials, headers...), or ``model`` declares
    the field as a pydantic ``SecretStr`` or ``SecretBytes``. Errs towards secret."""
    if any(isinstance(part, str) and _SECRET_NAME.search(part) for part in loc):
        return True
    annotation: Any = model
    for part in loc:
        choices = choices_of(annotation)
        fields = [c.model_fields[part] for c in choices if is_model(c) and part in c.model_fields]
        if fields:
            annotation = fields[0].annotation
        else:  # a list's item or a dict's value
            annotation = next((typing.get_args(c)[-1] for c in choices if typing.get_args(c)), None)
        if any(isinstance(c, type) and issubclass(c, SecretStr | SecretBytes) for c in choices_of(annotation)):
            return True
    return False


def choices_of(annotation: Any) -> tuple[Any, ...]:
    """The types a (maybe ``X | None``) annotation allows."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


def is_model(annotation: Any) -> bool:
    """Whether ``annotation`` is a pydantic model (a table of the configuration)."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _environment_variable(loc: tuple[str | int, ...]) -> str | None:
    """The ``MCPHOST_…`` variable that set the value at ``loc`` (or a table above it), if any."""
    parts = [str(part).upper() for part in loc if isinstance(part, str)]
    names = {name.upper(): name for name in os.environ if name.upper().startswith("MCPHOST_")}
    for end in range(len(parts), 0, -1):
        if found := names.get("MCPHOST_" + "__".join(parts[:end])):
            return found
    return None


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", dotted)
    return tuple(next(p for p in groups if p) if any(groups) else "" for groups in parts)


def locate(text: str, loc: tuple[str | int, ...]) -> int | None:
    """The line that defines the key at ``loc`` (or its closest defined parent), if any."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            table = _split_key(header[1])
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            lines.setdefault(table + _split_key(key[1]), number)
    path = tuple(str(part) for part in loc if isinstance(part, str))
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
