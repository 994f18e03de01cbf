"""An MCP server on stdio in the standard library alone (it starts in an instant, even on an
emulated machine): three tools, ``pid``, ``setsid_child``, which starts a long-lived child
in a session of its own, and ``add_note``, which adds a resource and says the list changed;
resources but no templates, whose method it does not know. The cgroup tests host it with
``[plugins.bare] command``."""

from __future__ import annotations

import json
import os
import sys

TOOLS = [
    {"name": "pid", "description": "The server's process id.", "inputSchema": {"type": "object"}},
    {
        "name": "setsid_child",
        "description": "Start a long-lived child in a session of its own; its pid.",
        "inputSchema": {"type": "object"},
    },
    {"name": "add_note", "description": "Add a resource note://N.", "inputSchema": {"type": "object"}},
]
RESOURCES = [{"uri": "note://0", "name": "note 0"}]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def call(name: str) -> str:
    if name == "pid":
        return str(os.getpid())
    if name == "add_note":
        RESOURCES.append({"uri": f"note://{len(RESOURCES)}", "name": f"note {len(RESOURCES)}"})
        send({"jsonrpc": "2.0", "method": "notifications/resources/list_changed"})
        return RESOURCES[-1]["uri"]
    child = os.fork()
    if child == 0:
        os.setsid()
        os.execvp("sleep", ["sleep", "600"])
    return str(child)


def answer(message: dict) -> dict | None:
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        return None  # a notification
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion"),
            "capabilities": {"tools": {}, "resources": {"listChanged": True}},
            "serverInfo": {"name": "bare", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "resources/list":
        result = {"resources": RESOURCES}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": call(params["name"])}]}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "unknown method"}}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


for line in sys.stdin:
    if line.strip() and (reply := answer(json.loads(line))) is not None:
        send(reply)
