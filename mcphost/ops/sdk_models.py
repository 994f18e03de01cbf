"""The MCP SDK's per-revision wire models, built when first used instead of at import.

``mcp_types`` has a pydantic model for every message of every protocol revision it speaks
(``mcp_types._v2025_11_25`` and ``_v2026_07_28``, some 300 models, the validators behind
``mcp_types.methods``), and pydantic builds each one's validator and serializer as its
module is imported: about a tenth of the daemon's cold start. A deployment uses a few dozen
of them. Marking their shared base ``defer_build`` before those modules are imported makes
pydantic build each on its first use instead, a few milliseconds on the first request of
each kind.

This reaches into the SDK's private base class (``mcp_types._wire_base.WireModel``); where
it is gone, nothing changes but the start-up time.
"""

from __future__ import annotations

import sys

REVISION_MODULES = ("mcp_types._v2025_11_25", "mcp_types._v2026_07_28")


def build_on_first_use() -> bool:
    """Defer building the SDK's wire models to their first use. Call before importing the
    SDK; returns ``False`` when that is too late or the SDK no longer has their base."""
    if any(name in sys.modules for name in REVISION_MODULES):
        return False
    try:
        from mcp_types._wire_base import WireModel
    except ImportError:
        return False
    WireModel.model_config["defer_build"] = True
    return True
