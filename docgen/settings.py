"""Every setting of ``mcphost.toml``, walked from the config models: its key path, type,
default, description and environment variable; and the keys a TOML file documents."""

from __future__ import annotations

import copy
import re
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic._internal._docs_extraction import extract_docstrings_from_cls
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from docgen.sources import ENV_PREFIX, HostConfig
from mcphost.core.problems import choices_of, is_model

PLACEHOLDERS = {"tools": "<tool>"}
"""The placeholder of a table's entries, by the table's key; any other table's is ``<name>``."""


@dataclass(frozen=True)
class Setting:
    """One key (or table) of ``mcphost.toml``."""

    path: tuple[str, ...]
    """Its keys from the top, with a placeholder (``<name>``) for a name the user chooses."""
    type: str
    default: str | None
    """As TOML, or ``None`` where there is none to show (a table, a required key)."""
    description: str
    table: bool
    """A ``[table]`` (its keys follow as settings of their own)."""
    required: bool = False

    @property
    def dotted(self) -> str:
        """``plugins.<name>.timeout``."""
        return ".".join(self.path)

    @property
    def environment(self) -> str:
        """The environment variable that sets it: ``MCPHOST_LOG__FORMAT``."""
        return ENV_PREFIX + "__".join(part.upper() for part in self.path)

    @property
    def facts(self) -> list[str]:
        """Its type, default (or that it is required, or unset) and environment variable, in Markdown."""
        if self.required:
            default = "required"
        elif self.default is not None:
            default = f"default `{self.default}`"
        else:
            default = "unset by default"
        return [self.type, default, f"environment `{self.environment}`"]

    @property
    def anchor(self) -> str:
        """An id for links to it: ``plugins-name-timeout``."""
        return re.sub(r"[^a-z0-9_]+", "-", self.dotted.lower()).strip("-")


def settings() -> list[Setting]:
    """Every setting, tables first within their parent, in the models' order."""
    return list(_walk(HostConfig, ()))


def _walk(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[Setting]:
    for name, field in model.model_fields.items():
        yield from _setting((*path, name), field.annotation, _documented(model, name, field), name)
    extra = _extra(model)
    if extra is not None:
        # [plugins.<name>]: a table whose extra keys are tables of their own.
        yield from _setting((*path, "<name>"), extra, None, "<name>")


def _setting(path: tuple[str, ...], annotation: Any, field: FieldInfo | None, name: str) -> Iterator[Setting]:
    model = _model(annotation)
    if model is not None:
        description = (field.description if field else None) or _first_paragraph(model.__doc__)
        yield Setting(path, "table", None, _text(description), table=True)
        yield from _walk(model, path)
        return
    entries = _dict_of_models(annotation)
    if entries is not None:
        description = field.description if field and field.description else _first_paragraph(entries.__doc__)
        placeholder = PLACEHOLDERS.get(name, "<name>")
        yield Setting(path, f"table of {placeholder} tables", None, _text(description), table=True)
        yield from _setting((*path, placeholder), entries, None, placeholder)
        return
    assert field is not None, path
    required = field.is_required()
    yield Setting(
        path,
        type_name(annotation),
        None if required else _default(field),
        _text(field.description or ""),
        table=False,
        required=required,
    )


def _documented(model: type[BaseModel], name: str, field: FieldInfo) -> FieldInfo:
    """``field`` with its description: its own, else the docstring under the field in the
    class that declares it. The config models leave those docstrings to this (pydantic's
    ``use_attribute_docstrings`` would read every model's source each time the daemon starts)."""
    if field.description is not None:
        return field
    owner = next(c for c in model.__mro__ if name in vars(c).get("__annotations__", {}))
    documented = copy.copy(field)
    documented.description = extract_docstrings_from_cls(owner, use_inspect=True).get(name)
    return documented


def _extra(model: type[BaseModel]) -> Any:
    """The type of a model's extra keys, when it allows them (``[plugins]``)."""
    if model.model_config.get("extra") != "allow":
        return None
    hints = typing.get_type_hints(model)
    extra = hints.get("__pydantic_extra__")
    return typing.get_args(extra)[-1] if extra is not None else None


def _model(annotation: Any) -> type[BaseModel] | None:
    return next((c for c in choices_of(annotation) if is_model(c)), None)


def _dict_of_models(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is not dict:
        return None
    return _model(typing.get_args(annotation)[-1])


def type_name(annotation: Any) -> str:
    """A TOML reader's name for a type: ``string``, ``array of strings``, ``"auto" | "json"``."""
    choices = [c for c in choices_of(annotation) if c is not type(None)]
    if len(choices) > 1:
        return " or ".join(type_name(c) for c in choices)
    annotation = choices[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        # A rate is a string checked by a validator of its own ("100/minute").
        if any("_rate" in repr(m) for m in metadata):
            return "rate"
        return type_name(base)
    if origin is Literal:
        return " | ".join(f'"{value}"' for value in typing.get_args(annotation))
    if origin is list:
        return f"array of {_plural(type_name(typing.get_args(annotation)[0]))}"
    if origin is dict:
        value = typing.get_args(annotation)[-1]
        return "table" if value is Any else f"table of {_plural(type_name(value))}"
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(name: str) -> str:
    if " | " in name or name.startswith(("array", "table")):
        return f"({name})"
    return f"{name}s"


def _default(field: FieldInfo) -> str | None:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, Path):
            return None  # found in the environment: the description says how
    elif field.default is PydanticUndefined:
        return None
    else:
        value = field.default
    return toml_value(value)


def toml_value(value: Any) -> str | None:
    """``value`` written as TOML; ``None`` for no value (the key unset)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) or "" for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def _first_paragraph(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0]


def _text(docstring: str) -> str:
    """A docstring as one paragraph of Markdown: reST ``code`` becomes `code`."""
    return " ".join(docstring.split()).replace("``", "`")


def documented_keys(text: str) -> tuple[set[str], set[str]]:
    """The settings a TOML file such as ``etc/mcphost.toml`` documents (by their dotted
    paths, placeholders included), and the keys it names that no model has.

    A commented-out ``# key = value`` or ``# [table]`` line counts as documented (it is an
    example of the default being left alone); a comment whose text after ``# `` is not a
    line of TOML by itself is prose. Keys and tables under a documented key count too.
    """
    tree = _tree(settings())
    documented: set[str] = set()
    unknown: set[str] = set()
    table: tuple[str, ...] = ()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            stripped = stripped[1:]
            if not stripped.startswith(" ") or stripped[1:2] in (" ", ""):
                continue  # prose (indented examples in prose included)
            stripped = stripped[1:]
        if not stripped:
            continue
        if header := re.fullmatch(r"\[([^\[\]]+)\]\s*(#.*)?", stripped):
            try:
                table = _dotted_keys(header[1])
            except tomllib.TOMLDecodeError:
                continue
            _resolve(tree, table, {}, documented, unknown)
            continue
        try:
            parsed = tomllib.loads(stripped)
        except tomllib.TOMLDecodeError:
            continue  # prose
        key = _dotted_keys(stripped.partition("=")[0])
        value: Any = parsed
        for part in key:
            value = value[part]
        _resolve(tree, table + key, value, documented, unknown)
    return documented, unknown


def _dotted_keys(text: str) -> tuple[str, ...]:
    """The parts of a TOML key (``a."b.c".d``) as TOML reads them."""
    parsed: Any = tomllib.loads(f"{text.strip()} = 0")
    parts = []
    while isinstance(parsed, dict):
        ((key, parsed),) = parsed.items()
        parts.append(key)
    return tuple(parts)


_Tree = dict[str, Any]


def _tree(found: list[Setting]) -> _Tree:
    """The settings as nested dicts by key; a leaf is ``None``."""
    root: _Tree = {}
    for setting in found:
        node = root
        for part in setting.path[:-1]:
            node = node.setdefault(part, {})
        node.setdefault(setting.path[-1], {} if setting.table else None)
    return root


def _resolve(tree: _Tree, path: tuple[str, ...], value: Any, documented: set[str], unknown: set[str]) -> None:
    """Mark the setting at concrete ``path`` (and its parents) documented, descending into an
    inline table's keys; a path no model has goes into ``unknown``."""
    node: Any = tree
    resolved: list[str] = []
    for part in path:
        if node is None:
            return  # inside a leaf such as a plugin's own settings: not the host's keys
        if part in node:
            step = part
        elif placeholder := next((k for k in node if k.startswith("<")), None):
            step = placeholder
        else:
            unknown.add(".".join(path))
            return
        resolved.append(step)
        documented.add(".".join(resolved))
        node = node[step]
    if isinstance(node, dict) and isinstance(value, dict):
        for key, inner in value.items():
            _resolve(tree, (*path, key), inner, documented, unknown)
