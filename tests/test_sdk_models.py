"""The SDK's wire models built on first use (:mod:`mcphost.ops.sdk_models`), as the ``mcphost``
command sets them up: in a fresh interpreter, since this one imported the SDK long ago."""

from __future__ import annotations

from mcphost.ops import sdk_models
from tests.conftest import fresh

FRESH_START = """
    import json
    from mcphost.ops import sdk_models
    deferred = sdk_models.build_on_first_use()
    import mcphost.cli.main  # everything the daemon imports
    import mcp_types._v2025_11_25 as revision
    from mcp_types import methods
    from pydantic import BaseModel

    models = [m for m in vars(revision).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    built_at_import = sum(m.__pydantic_complete__ for m in models)
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    parsed = methods.CLIENT_REQUESTS["tools/call", "2025-11-25"].model_validate(request)
    try:
        methods.CLIENT_REQUESTS["tools/call", "2025-11-25"].model_validate({**request, "params": {}})
        refused = False
    except ValueError:
        refused = True
    print(json.dumps({
        "deferred": deferred, "models": len(models), "built_at_import": built_at_import,
        "name": parsed.params.name, "refused": refused, "again": sdk_models.build_on_first_use(),
    }))
    """


def test_wire_models_are_built_on_first_use_and_validate_as_before() -> None:
    report = fresh(FRESH_START)
    assert report["deferred"] is True
    assert report["models"] > 100 and report["built_at_import"] < report["models"] / 10
    assert report["name"] == "echo" and report["refused"] is True
    assert report["again"] is False  # too late once the revisions are imported


def test_too_late_once_the_sdk_is_imported() -> None:
    import mcp_types.methods  # noqa: F401  (what the daemon imports)

    assert sdk_models.build_on_first_use() is False
