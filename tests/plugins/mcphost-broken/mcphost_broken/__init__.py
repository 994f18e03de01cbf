"""A plugin installed without a dependency it imports, as happens with a careless `pip install`."""

import mcphost_broken_missing_dependency  # noqa: F401
