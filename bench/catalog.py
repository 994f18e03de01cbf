"""The synthetic tool catalogues: the no-op ``add`` tool and the "N plugins x M tools" sets
that ``tools/list`` and cold start are measured with.

mcphost gets each plugin as a generated ``.py`` file (loaded through ``[plugins] paths``);
the SDK reference registers the same functions under the same public names
(``<plugin>_<tool>``) with the same docstrings, so both serve byte-comparable catalogues.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

PLUGIN_PREFIX = "bench"
"""Generated plugins are named ``bench00``, ``bench01``, ...; the config enables ``bench*``."""


def plugin_name(index: int) -> str:
    """The name of generated plugin number ``index`` (also its file's stem)."""
    return f"{PLUGIN_PREFIX}{index:02d}"


def tool_doc(plugin: str, tool: int) -> str:
    """The docstring, hence the wire description, of one generated tool."""
    return f"Tool t{tool} of plugin {plugin}: add two integers and return the sum."


def plugin_source(index: int, tools: int) -> str:
    """Source of one generated mcphost plugin with ``tools`` synchronous no-op tools."""
    name = plugin_name(index)
    lines = [f'"""Generated benchmark plugin {name}."""', "", "import mcphost", ""]
    for t in range(tools):
        lines += ["", f"def t{t}(a: int, b: int) -> int:", f'    """{tool_doc(name, t)}"""', "    return a + b", ""]
    names = ", ".join(f"t{t}" for t in range(tools))
    lines += ["", "@mcphost.hookimpl", "def mcphost_tools():", f"    return [{names}]", ""]
    return "\n".join(lines)


def write_plugins(directory: Path, plugins: int, tools: int) -> list[Path]:
    """Write ``plugins`` generated plugin files into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(plugins):
        path = directory / f"{plugin_name(index)}.py"
        path.write_text(plugin_source(index, tools))
        paths.append(path)
    return paths


def isolation(plugins: int, how: str) -> dict[str, dict[str, str]]:
    """``[plugins.<name>] isolation = how`` for each of ``plugins`` generated plugins."""
    return {plugin_name(index): {"isolation": how} for index in range(plugins)}


def reference_tools(plugins: int, tools: int) -> list[tuple[str, Callable[[int, int], int], str]]:
    """``(public name, function, description)`` for the SDK reference: the same catalogue
    as :func:`write_plugins` produces for mcphost."""

    def make() -> Callable[[int, int], int]:
        # A fresh function object per tool, as each plugin file defines its own.
        def fn(a: int, b: int) -> int:
            return a + b

        return fn

    return [
        (f"{plugin_name(p)}_t{t}", make(), tool_doc(plugin_name(p), t)) for p in range(plugins) for t in range(tools)
    ]
