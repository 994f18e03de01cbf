"""A plugin with start-up, shut-down and readiness hooks that leave traces in a directory."""

from __future__ import annotations

from pathlib import Path

import trio

import mcphost


class Settings(mcphost.PluginSettings):
    """Where to leave traces, and whether start-up should fail."""

    trace_dir: Path
    fail_startup: bool = False


@mcphost.hookimpl
def mcphost_settings_model() -> type[Settings]:
    return Settings


@mcphost.hookimpl
async def mcphost_startup(settings: Settings) -> None:
    await trio.sleep(0.01)  # a real plugin would connect to something here
    if settings.fail_startup:
        raise ConnectionError("backend unreachable")
    (settings.trace_dir / "started").write_text("yes")


@mcphost.hookimpl
async def mcphost_shutdown(settings: Settings) -> None:
    (settings.trace_dir / "stopped").write_text("yes")


@mcphost.hookimpl
def mcphost_ready(settings: Settings) -> bool:
    return not (settings.trace_dir / "unready").exists()


@mcphost.hookimpl
def mcphost_tools() -> list[object]:
    def ping() -> str:
        """Answer pong."""
        return "pong"

    return [ping]
