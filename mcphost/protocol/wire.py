"""Checks on a raw request to the MCP endpoint that the SDK leaves loose, answered the way
the JSON-RPC and MCP specs ask, before the SDK sees the request.

- An ``MCP-Protocol-Version`` header naming no revision we serve gets 400 with the
  ``UNSUPPORTED_PROTOCOL_VERSION`` error listing the revisions we do (the SDK would route
  it to the 2026-07-28 entry and complain about the body instead).
- On the handshake-era path, a body that is JSON but not one JSON-RPC message (a batch, a
  wrong ``jsonrpc``, an ``id`` that is an object or null) gets 400 with -32600 Invalid
  Request (the SDK answers -32602 with a validation dump echoing the input, or takes an
  object ``id`` for a notification and never answers it).
"""

from __future__ import annotations

import json
from typing import Any

from mcp_types import (
    INVALID_REQUEST,
    LOG_LEVEL_META_KEY,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

SUPPORTED_VERSIONS = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)


NOTIFYING_META_KEYS = frozenset({"progressToken", LOG_LEVEL_META_KEY})
"""``_meta`` keys with which a request asks for notifications (progress, log messages)
before its response."""


def error_body(code: int, message: str, request_id: Any = None, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC error response (``id`` is ``null`` when the request's could not be read)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def version_error(version: str, body: bytes) -> dict[str, Any]:
    """The error for an ``MCP-Protocol-Version`` header naming a revision we do not serve.

    It carries the id of the request in ``body``, and tells a request in the 2026-07-28
    envelope the revisions that era serves (the list ``server/discover`` gives).
    """
    try:
        message = json.loads(body) if body else {}
    except (ValueError, RecursionError):
        message = {}
    message = message if isinstance(message, dict) else {}
    request_id = message.get("id")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        request_id = None
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    modern = isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta
    data = {"supported": list(MODERN_PROTOCOL_VERSIONS if modern else SUPPORTED_VERSIONS), "requested": version}
    message_text = f"Unsupported protocol version: {version[:64]}"
    return error_body(UNSUPPORTED_PROTOCOL_VERSION, message_text, request_id, data)


def decoded(body: bytes) -> Any:
    """The decoded JSON of ``body``, or ``None`` when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def parse(body: bytes) -> tuple[Any, dict[str, Any] | None]:
    """A handshake-era POST body decoded, and the error for it when it is not one JSON-RPC
    message (``None`` when it is)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None, error_body(PARSE_ERROR, "Parse error: the body is not valid JSON")
    return message, envelope_error(message)


def envelope_error(message: Any) -> dict[str, Any] | None:
    """The error for a decoded body that is not one JSON-RPC message, or ``None``."""
    if not isinstance(message, dict):
        return error_body(INVALID_REQUEST, "Invalid Request: the body must be one JSON-RPC message object")
    has_id = "id" in message
    request_id = message.get("id")
    valid_id = isinstance(request_id, str | int) and not isinstance(request_id, bool)
    if message.get("jsonrpc") != "2.0":
        return error_body(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', request_id if valid_id else None)
    if has_id and not valid_id:
        return error_body(INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer')
    if "method" in message:
        if not isinstance(message["method"], str):
            return error_body(INVALID_REQUEST, 'Invalid Request: "method" must be a string', request_id)
        if "params" in message and not isinstance(message["params"], dict):
            return error_body(INVALID_REQUEST, 'Invalid Request: "params" must be an object', request_id)
        return None
    if has_id and ("result" in message) != ("error" in message):
        return None  # a client's response to a server request
    problem = 'Invalid Request: a message needs a "method", or an "id" and a result'
    return error_body(INVALID_REQUEST, problem, request_id)
