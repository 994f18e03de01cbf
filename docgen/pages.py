"""The documentation site's generated pages, as Markdown, by their path in the site."""

from __future__ import annotations

from collections.abc import Callable

from docgen import sources
from docgen.commands import commands
from docgen.metrics import metrics
from docgen.settings import Setting, settings

GENERATED = "<!-- Generated from the code at build time (docgen); edit the code, not this page. -->\n\n"


def generated() -> dict[str, str]:
    """Every generated page by its path under ``docs/``."""
    pages: dict[str, Callable[[], str]] = {
        "reference/configuration.md": configuration,
        "reference/cli.md": cli,
        "reference/metrics.md": metrics_page,
        "reference/api.md": api,
        "reference/mcphost-toml.md": example_config,
    }
    return {path: GENERATED + page() for path, page in pages.items()}


def configuration() -> str:
    """Every key of ``mcphost.toml``: type, default, environment variable and description."""
    lines = [
        "# Configuration reference",
        "",
        "Every key of `mcphost.toml`, as the config models define it. "
        "[`etc/mcphost.toml`](mcphost-toml.md) shows each with its default; "
        "the [configuration guide](../operating/configuration.md) tells how they combine. "
        "A table marked `<name>` takes any name (a plugin's, a key's), `<tool>` a tool's name without its "
        "prefix. Each key can be set from the environment instead, by the variable named; such a variable wins over "
        "the file.",
        "",
    ]
    for setting in settings():
        lines += _setting(setting)
    return "\n".join(lines) + "\n"


def _setting(setting: Setting) -> list[str]:
    depth = min(len(setting.path) + 1, 6)
    title = f"`[{setting.dotted}]`" if setting.table else f"`{setting.dotted}`"
    lines = [f"{'#' * depth} {title} {{#{setting.anchor}}}", ""]
    if not setting.table:
        lines += [" · ".join(setting.facts), ""]
    if setting.description:
        lines += [setting.description, ""]
    return lines


def example_config() -> str:
    """``etc/mcphost.toml``, the config installed by default, which shows every key with its default."""
    text = (sources.ROOT / "etc" / "mcphost.toml").read_text()
    return (
        "# Example mcphost.toml\n\n"
        "`etc/mcphost.toml` in the source tree, which `packaging/install.sh` installs as "
        "`/etc/mcphost/mcphost.toml`: every setting with its default, commented where it has none. "
        "The [configuration reference](configuration.md) says the same of each key, from the code.\n\n"
        f"```toml\n{text}```\n"
    )


def cli() -> str:
    """Every command and option of ``mcphost``, from its argument parser."""
    lines = [
        "# Command line reference",
        "",
        "What `mcphost --help` and `mcphost COMMAND --help` print, for every command. "
        "The [operating guide](../operating/commands.md) tells what each does in more detail, with its exit statuses.",
        "",
    ]
    for command in commands():
        title = f"mcphost {command.name}".strip()
        lines += [f"## `{title}` {{#{(command.name or 'mcphost').replace(' ', '-')}}}", ""]
        if command.description:
            lines += [command.description, ""]
        lines += ["```text", command.usage, "```", ""]
        lines += ["| argument | |", "|---|---|"]
        for argument in command.arguments:
            lines.append(f"| `{argument.names}` | {_cell(argument.text)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def metrics_page() -> str:
    """Every metric of ``/metrics``, from the registry a daemon builds."""
    lines = [
        "# Metrics reference",
        "",
        "Every metric a daemon serves at `/metrics` on its admin listener, with the help text it carries there. "
        "[Monitoring](../operating/monitoring.md) tells how to scrape them and what the labels' values mean.",
        "",
        "| metric | type | labels | what |",
        "|---|---|---|---|",
    ]
    for metric in metrics():
        labels = ", ".join(f"`{label}`" for label in metric.labels)
        lines.append(f"| `{metric.name}` | {metric.type} | {labels} | {_cell(metric.help)} |")
    return "\n".join(lines) + "\n"


def api() -> str:
    """The plugin API (``mcphost.__all__``) and the hooks, from their docstrings."""
    lines = [
        "# Plugin API reference",
        "",
        "Everything a plugin needs is a name of the `mcphost` package (its `__all__`), documented here from the "
        "code. [Writing a plugin](../plugins/index.md) shows how they fit together.",
        "",
        "## Hooks",
        "",
        f"::: {sources.hookspecs.__name__}",
        "    options:",
        "      show_root_heading: false",
        "      show_source: false",
        "      filters: ['^mcphost_', '^hookimpl$']",
        "",
        "## Names",
        "",
    ]
    for name in sources.api_names():
        if name == "__version__":
            lines += ["### `mcphost.__version__`", "", "The installed mcphost's version, a string.", ""]
        elif name == "types":
            lines += [
                "### `mcphost.types`",
                "",
                "The MCP SDK's protocol types (`mcp_types`): content blocks such as `TextContent`, `ImageContent`, "
                "`EmbeddedResource`, `ResourceLink`, and `InputRequiredResult`.",
                "",
            ]
        else:
            lines += [f"::: mcphost.{name}", "    options:", "      heading_level: 3", ""]
    lines += [
        "## Testing",
        "",
        f"Installing mcphost gives pytest these, from `{sources.testing.__name__}` "
        "([Testing a plugin](../plugins/testing.md)).",
        "",
        f"::: {sources.testing.__name__}.mcphost_daemon",
        "    options:",
        "      heading_level: 3",
        "",
        f"::: {sources.testing.__name__}.RunningDaemon",
        "    options:",
        "      heading_level: 3",
        "",
    ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
