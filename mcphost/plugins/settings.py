"""The base class of a plugin's settings model, kept import-light for plugin authors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PluginSettings(BaseModel):
    """Base for a plugin's ``[plugins.<name>.settings]`` model.

    Unknown keys are errors (a misspelt setting must not be silently ignored) and the
    settings are frozen: tools see the values the plugin was loaded with.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
