"""An MCP server on stdio in the standard library alone that offers resource subscriptions and
can hold its answers to them: with ``HOLD=1`` in its environment, each ``resources/subscribe``
is answered only once its tool ``release`` is called (which also ends the holding). Its tool
``subscribed`` lists the URIs it is subscribed to, in the order it was asked, with how many
subscribe requests it received."""

from __future__ import annotations

import json
import os
import sys

RESOURCES = [{"uri": f"held://{name}", "name": name} for name in ("a", "b")]
TOOLS = [
    {"name": name, "description": description, "inputSchema": {"type": "object"}}
    for name, description in (
        ("subscribed", "The URIs subscribed to, and the requests."),
        ("release", "Answer the subscriptions held, and hold no more."),
    )
]
holding = os.environ.get("HOLD") == "1"
held: list[dict] = []
asked = 0
subscribed: dict[str, None] = {}


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def call(name: str) -> str:
    global holding
    if name == "subscribed":
        return json.dumps({"uris": list(subscribed), "asked": asked})
    holding = False
    for reply in held:
        send(reply)
    held.clear()
    return "released"


def answer(message: dict) -> dict | None:
    global asked
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        return None  # a notification
    reply: dict = {"jsonrpc": "2.0", "id": message["id"], "result": {}}
    if method == "initialize":
        reply["result"] = {
            "protocolVersion": params.get("protocolVersion"),
            "capabilities": {"tools": {}, "resources": {"subscribe": True}},
            "serverInfo": {"name": "held", "version": "1"},
        }
    elif method == "tools/list":
        reply["result"] = {"tools": TOOLS}
    elif method == "resources/list":
        reply["result"] = {"resources": RESOURCES}
    elif method == "tools/call":
        reply["result"] = {"content": [{"type": "text", "text": call(params["name"])}]}
    elif method == "resources/subscribe":
        asked += 1
        subscribed[params["uri"]] = None
        if holding:
            held.append(reply)
            return None
    elif method == "resources/unsubscribe":
        subscribed.pop(params["uri"], None)
    elif method != "ping":
        return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "unknown method"}}
    return reply


for line in sys.stdin:
    if line.strip() and (reply := answer(json.loads(line))) is not None:
        send(reply)
