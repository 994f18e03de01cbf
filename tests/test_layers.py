"""The package's layers: imports only go down, and no module imports itself round a cycle.

The graph is read from the source with ``ast``, so it holds every import: at module level,
inside functions (imported late to keep start-up light) and under ``TYPE_CHECKING`` (a type
a lower layer names still ties it to the higher one). The layers are the map in ``docs/development.md``.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS = ("cli", "daemon", "transport", "protocol", "auth", "plugins", "state", "ops", "core")
"""The subpackages of ``mcphost``, top to bottom: each may import those after it, never before."""
TOP = ("mcphost", "mcphost.__main__", "mcphost.testing")
"""The plugin API, the command's entry point and the pytest plugin: above every layer."""


@dataclass(frozen=True)
class Import:
    """One import of a module of the package by another."""

    source: str
    target: str
    where: str
    """``path:line`` of the import statement."""


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((root / "mcphost").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(root: Path) -> Iterator[Import]:
    """Every import, anywhere in a module, of another module of the package."""
    known = modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for source, path in known.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                # ``from a import b`` imports module ``a.b`` when there is one, else a name of ``a``.
                named = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            else:
                continue
            for name in named:
                target = resolve(name) if name.split(".")[0] == "mcphost" else None
                if target is not None and target != source:
                    yield Import(source, target, f"{path.relative_to(root)}:{node.lineno}")


def rank(module: str) -> int:
    """The module's depth: 0 for the top, then 1 + the index of its layer in :data:`LAYERS`."""
    if module in TOP:
        return 0
    layer = module.split(".")[1]
    if layer not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and to the map in docs/development.md")
    return 1 + LAYERS.index(layer)


def upward(root: Path) -> list[str]:
    """The imports that go up a layer (or to the top), each as ``where: source -> target``."""
    return [f"{i.where}: {i.source} -> {i.target}" for i in imports(root) if rank(i.target) < rank(i.source)]


def cycles(root: Path) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {module: set() for module in modules(root)}
    for found in imports(root):
        graph[found.source].add(found.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_every_module_is_in_a_layer() -> None:
    for module in modules(ROOT):
        rank(module)


def test_the_documented_map_is_these_layers() -> None:
    """The map in the development guide lists the folders in :data:`LAYERS`, in order."""
    text = (ROOT / "docs" / "development.md").read_text()
    assert re.findall(r"^\| `(\w+)/` \|", text, re.MULTILINE) == list(LAYERS)


def test_no_import_goes_up_a_layer() -> None:
    assert upward(ROOT) == []


def test_no_import_cycles() -> None:
    assert cycles(ROOT) == []


def test_first_party_plugins_use_the_plugin_api_only() -> None:
    """A plugin imports ``mcphost`` and its names, nothing of the host's insides."""
    found = []
    for path in sorted((ROOT / "plugins").glob("mcphost-*/mcphost_*/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.startswith("mcphost.")]
    assert found == []


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package's source to break on purpose."""
    shutil.copytree(ROOT / "mcphost", tmp_path / "mcphost", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_an_import_up_a_layer_is_found(copy: Path) -> None:
    config = copy / "mcphost" / "core" / "config.py"
    config.write_text(
        config.read_text() + "\n\ndef _late() -> None:\n    from mcphost.transport.http import HttpApp  # noqa\n"
    )
    (problem,) = upward(copy)
    assert problem.startswith("mcphost/core/config.py:")
    assert problem.endswith("mcphost.core.config -> mcphost.transport.http")


def test_a_type_only_cycle_within_a_layer_is_found(copy: Path) -> None:
    limiter = copy / "mcphost" / "state" / "limiter.py"
    limiter.write_text(
        limiter.read_text()
        + "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import redis_stores\n"
    )
    assert upward(copy) == []
    assert cycles(copy) == [["mcphost.state.limiter", "mcphost.state.redis_stores"]]


def test_a_module_outside_the_layers_is_found(copy: Path) -> None:
    (copy / "mcphost" / "helpers").mkdir()
    (copy / "mcphost" / "helpers" / "__init__.py").write_text("")
    with pytest.raises(AssertionError, match=r"mcphost\.helpers is in no layer"):
        for module in modules(copy):
            rank(module)
