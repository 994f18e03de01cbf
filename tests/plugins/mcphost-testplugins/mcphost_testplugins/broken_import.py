"""A plugin that cannot even be imported."""

import mcphost_testplugins_missing_dependency  # noqa: F401
