"""A plugin's worker process: it loads one plugin with the daemon's own plugin host and
serves that plugin's tools to the daemon over the socket it was given.

Run by the daemon as ``python -m mcphost.plugins.worker.main FD LEVEL``: FD is its end of
the socket pair, LEVEL the log level. Its log lines are JSON on stderr, which the daemon
reads and logs again tagged with the plugin. Each call runs through the same fence as an
inline call; what the fence cannot stop (a coroutine that never yields, a crash) the
daemon handles by ending this process.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import structlog
import trio
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mcphost.core.config import HostConfig, LoadedConfig
from mcphost.ops import log as logs
from mcphost.plugins import client_input, fence, results
from mcphost.plugins.host import PluginHost, PluginRecord, plugin_files
from mcphost.plugins.registry import RegisteredTool, invalid_arguments
from mcphost.plugins.worker.context import META_REQUEST, WorkerToolContext
from mcphost.plugins.worker.threads import ThreadCalls, on_thread, reply_of
from mcphost.plugins.worker.wire import Channel, Message

log = structlog.get_logger("mcphost.worker")

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class Worker:
    """The worker's side of the wire."""

    def __init__(self, sock: socket.socket):
        self.channel = Channel(sock, self.handle, self.notified, self.take)
        self.host: PluginHost | None = None
        self.record: PluginRecord | None = None
        self.calls: dict[Any, trio.CancelScope] = {}
        self.threads: ThreadCalls | None = None
        self.threaded: frozenset[str] = frozenset()
        """The tools whose calls :meth:`take` may start on a thread."""
        self._nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        """Serve until the daemon closes its end."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.channel.run()
            nursery.cancel_scope.cancel()

    async def handle(self, message: Message) -> None:
        """Answer one request of the daemon."""
        request_id, method, params = message["id"], message.get("method"), message.get("params") or {}
        try:
            if method == "tools/call":
                result: Any = await self.call_tool(request_id, params)
            elif method == "initialize":
                result = await self.load(params)
            elif method == "mcphost/start":
                result = await self.start()
            elif method == "mcphost/ready":
                assert self.host is not None
                result = list((await self.host.readiness()).get(params["plugin"], (False, "not loaded")))
            elif method == "mcphost/stop":
                if self.host is not None:
                    await self.host.stop_all()
                result = {}
            elif method == "ping":
                result = {}
            else:
                self.channel.respond_error(request_id, METHOD_NOT_FOUND, f"unknown method {method!r}")
                return
        except (KeyError, TypeError, AssertionError) as error:
            self.channel.respond_error(request_id, INVALID_PARAMS, f"bad {method} request: {error!r}")
            return
        self.channel.respond(request_id, result)

    async def notified(self, message: Message) -> None:
        """``notifications/cancelled``: cancel the call it names."""
        if message.get("method") == "notifications/cancelled":
            request_id = (message.get("params") or {}).get("requestId")
            scope = self.calls.get(request_id)
            if self.threads is not None:
                self.threads.cancel(request_id)
            if scope is not None:
                scope.cancel()

    async def load(self, params: Message) -> Message:
        """``initialize``: load the plugin as the daemon's config says; answer with its tools."""
        name = params["plugin"]
        config = HostConfig(**params["config"])
        self.host = PluginHost(LoadedConfig(config, params.get("source", "<daemon>"), ""))
        records = {r.name: r for r in await self.host.load_all()}
        record = records.get(name)
        if record is None or record.status != "loaded":
            problems = [{"key": p.key, "message": p.message} for p in record.problems] if record else []
            return {"error": record.error if record else f"no plugin named {name!r} is installed", "problems": problems}
        self.record = record
        assert self._nursery is not None
        registry = record.registry
        nursery = self._nursery
        self.threads = ThreadCalls(
            self.channel, int(self.host.threads.total_tokens), lambda message: nursery.start_soon(self.handle, message)
        )
        self.threaded = frozenset(t.name for t in registry.tools.values() if on_thread(t))
        self._nursery.start_soon(self.threads.expire)
        if registry.resources or registry.templates or registry.prompts:
            return {
                "error": 'with isolation = "process" a plugin serves tools only; this one also has '
                'resources or prompts: set isolation = "inline" for it'
            }
        return {
            "version": record.version,
            "hooks": list(record.hooks),
            "files": [str(f) for f in plugin_files(record)],
            "tools": [_describe(t) for t in registry.tools.values()],
        }

    async def start(self) -> Message:
        """``mcphost/start``: run the plugin's start-up hook."""
        assert self.host is not None
        await self.host.start_all()
        failed = next((r for r in self.host.records if r.status == "failed"), None)
        return {"error": failed.error} if failed is not None else {}

    def take(self, message: Message) -> bool:
        """Start a ``tools/call`` of a sync tool without a ``ToolContext`` on a thread that
        answers it (:mod:`.threads`), without a task of its own; ``False``: not such a call,
        or its tokens are not free now (then :meth:`handle` runs it in the fence)."""
        if message.get("method") != "tools/call" or self.threads is None or self.record is None:
            return False
        params = message.get("params") or {}
        tool = self.record.registry.tools.get(str(params.get("name")))
        arguments = params.get("arguments") or {}
        if tool is None or tool.name not in self.threaded or not isinstance(arguments, dict):
            return False
        meta = (params.get("_meta") or {}).get(META_REQUEST) or {}
        return self.threads.start(message, tool, arguments, meta)

    async def call_tool(self, request_id: Any, params: Message) -> Message:
        """``tools/call``: validate, run inside the fence, convert: what an inline call does."""
        assert self.record is not None
        tool = self.record.registry.tools.get(params["name"])
        if tool is None:
            return {"status": "error", "message": f"Unknown tool: {params['name']}"}
        meta = (params.get("_meta") or {}).get(META_REQUEST) or {}
        token = logs.current_request.set(
            logs.RequestRecord(request_id=str(meta.get("id", request_id)), session_id=meta.get("session"))
        )
        try:
            with trio.CancelScope() as scope:
                self.calls[request_id] = scope
                return await self._run(tool, params.get("arguments") or {}, meta)
            return {"status": "cancelled", "message": f"tool {tool.name!r} was cancelled"}
        finally:
            self.calls.pop(request_id, None)
            logs.current_request.reset(token)

    async def _run(self, tool: RegisteredTool, arguments: Message, meta: Message) -> Message:
        assert tool.sdk_tool is not None
        fn_meta = tool.sdk_tool.fn_metadata
        try:
            kwargs = fn_meta.validate_arguments(arguments)
        except ValidationError as error:
            return {"status": "invalid_arguments", "message": invalid_arguments(tool.name, error)}
        if tool.context_param:
            kwargs[tool.context_param] = WorkerToolContext(
                tool.plugin, tool.name, tool.settings, meta, self.channel, meta.get("call")
            )
        try:
            outcome, result = await results.call(tool, kwargs)
        except client_input.InputRequired:
            return {"status": "input_required"}
        except fence.FenceError as error:
            return {"status": error.status, "message": str(error)}
        except MCPError as error:
            return {"status": "error", "message": error.error.message, "code": error.error.code}
        return reply_of(tool, outcome, result)


def _describe(tool: RegisteredTool) -> Message:
    """What the daemon needs of a tool to list it and bound its calls."""
    return {
        "tool": tool.wire.model_dump(mode="json", by_alias=True, exclude_none=True),
        "timeout": tool.limits.timeout,
        "max_concurrency": tool.limits.max_concurrency,
        "max_result_bytes": tool.limits.max_result_bytes,
        "context": tool.context_param,
    }


def main(argv: list[str] | None = None) -> None:
    """The worker process's entry point, when started as a fresh interpreter."""
    args = sys.argv[1:] if argv is None else argv
    serve(int(args[0]), args[1] if len(args) > 1 else "info")


def serve(fd: int, level: str) -> None:
    """Serve the daemon on the socket ``fd`` until it closes its end, then exit the process."""
    logs.configure(level, "json")
    # Plugins that print would write into nothing the daemon reads as protocol: send their
    # output to the log instead.
    sys.stdout = sys.stderr
    trio.run(Worker(socket.socket(fileno=fd)).serve)
    # Threads of calls abandoned at their timeout would hold up a normal exit.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
