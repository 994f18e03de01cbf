"""A plugin's worker process: it loads one plugin with the daemon's own plugin host and
serves that plugin's tools, resources, prompts and completions to the daemon over the
socket it was given, with MCP's own methods.

Run by the daemon as ``python -m mcphost.plugins.worker.main FD LEVEL``: FD is its end of
the socket pair, LEVEL the log level. Its log lines are JSON on stderr, which the daemon
reads and logs again tagged with the plugin. Each call runs through the same fence as an
inline call; what the fence cannot stop (a coroutine that never yields, a crash) the
daemon handles by ending this process.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
import structlog
import trio
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ValidationError

from mcphost.core.errors import INVALID_PARAMS, METHOD_NOT_FOUND
from mcphost.core.plugin_tables import DefaultLimits, PluginTables
from mcphost.core.problems import Loaded
from mcphost.ops import log as logs
from mcphost.plugins import client_input, damage, fence, leftovers, notify, results, serving
from mcphost.plugins.host import PluginHost, PluginRecord, find, plugin_files
from mcphost.plugins.registry import RegisteredPrompt, RegisteredResource, RegisteredTool, invalid_arguments
from mcphost.plugins.watchdog import Watchdog
from mcphost.plugins.worker.context import INPUT_REQUIRED, META_REQUEST, STALLED, WorkerToolContext
from mcphost.plugins.worker.threads import ThreadCalls, on_thread, reply_of
from mcphost.plugins.worker.ticks import at_batch_end
from mcphost.plugins.worker.wire import Channel, Message

log = structlog.get_logger("mcphost.worker")

REQUEST_CANCELLED = -32800
"""The code of a call the daemon cancelled (as the Language Server Protocol names it): never seen by a client."""
LEFTOVER_GRACE = 0.5
"""Seconds what the plugin started has, after SIGTERM, before SIGKILL: well within the time
the daemon gives a stopping worker before it kills the worker's group."""


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
        # The same watchdog as the daemon's: code blocking this loop is named and stopped
        # here, before the daemon's ping or a call's deadline has to end the whole worker.
        # The daemon counts each stall and marks the plugin degraded, as for one of its own.
        self.watchdog = Watchdog(
            DefaultLimits().stall_timeout,
            lambda plugin: self.channel.notify(STALLED, {}),
            lambda plugin, why: self.channel.notify(STALLED, {"degraded": why}),
        )
        self.served: dict[str, Callable[[Message, Message], Awaitable[Any]]] = {
            "tools/call": self.call_tool,
            "resources/read": self.read_resource,
            "prompts/get": self.get_prompt,
            "completion/complete": self.complete,
        }
        # What the plugin announces goes to the daemon, whose subscribers hear of it.
        notify.install(self.announce)

    async def serve(self) -> None:
        """Serve until the daemon closes its end, the loop-stall watchdog running beside."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.watchdog.run)
            await self.channel.run()
            nursery.cancel_scope.cancel()

    async def handle(self, message: Message) -> None:
        """Answer one request of the daemon."""
        threads = self.threads
        if threads is None:
            await self._handle(message)
            return
        threads.fencing()
        try:
            await self._handle(message)
        finally:
            threads.fenced_done()

    async def _handle(self, message: Message) -> None:
        request_id, method, params = message["id"], message.get("method"), message.get("params") or {}
        try:
            if method in self.served:
                result: Any = await self.serve_call(request_id, params, self.served[method])
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
        except (KeyError, TypeError, AssertionError, ValidationError) as error:
            self.channel.respond_error(request_id, INVALID_PARAMS, f"bad {method} request: {error!r}")
            return
        except client_input.InputRequired:
            self.channel.respond_error(request_id, INPUT_REQUIRED, "input required")
            return
        except MCPError as error:
            self.channel.respond_error(request_id, error.error.code, error.error.message, error.error.data)
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
        """``initialize``: load the plugin as the daemon's config says, from where the daemon
        found it (``distribution``, else the config's ``paths``); answer with its tools."""
        name = params["plugin"]
        # What the daemon settled from its file and its environment, validated again from its
        # values alone: this process's environment is the plugin's, not a source of the host's settings.
        config = PluginTables(**params["config"])
        daemons = [str(p) for p in params.get("path", ())]
        sys.path[:] = [*daemons, *(p for p in sys.path if p not in daemons)]
        self.watchdog.stall_timeout = config.limits.stall_timeout
        self.host = PluginHost(Loaded(config, params.get("source", "<daemon>"), ""))
        found = find(name, config.plugins.paths, params.get("distribution"))
        records = {r.name: r for r in await self.host.load_all(found)}
        record = records.get(name)
        if record is None or record.status != "loaded":
            problems = [{"key": p.key, "message": p.message} for p in record.problems] if record else []
            return {"error": record.error if record else f"no plugin named {name!r} is installed", "problems": problems}
        self.record = record
        registry = record.registry
        nursery = self._nursery
        assert nursery is not None
        self.threads = ThreadCalls(
            self.channel, int(self.host.threads.total_tokens), lambda message: nursery.start_soon(self.handle, message)
        )
        self.threaded = frozenset(t.name for t in registry.tools.values() if on_thread(t))
        nursery.start_soon(self.threads.expire)
        pools: dict[int, int] = {}
        describe = functools.partial(_describe, pools)
        return {
            "version": record.version,
            "hooks": list(record.hooks),
            "files": [str(f) for f in plugin_files(record)],
            "tools": [describe(t, t.wire, t.context_param) | {"task": t.task} for t in registry.tools.values()],
            "resources": [describe(r, r.wire) for r in (*registry.resources.values(), *registry.templates)],
            "prompts": [describe(p, p.wire, p.context_param) for p in registry.prompts.values()],
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
        if not meta.get("budget", 1) > 0:  # its slot came as its deadline passed: the fence times it out unrun
            return False
        return self.threads.start(message, tool, arguments, meta)

    async def announce(self, uri: str) -> None:
        """``notify_resource_updated`` in this process: tell the daemon."""
        self.channel.notify("notifications/resources/updated", {"uri": uri})

    async def serve_call(
        self, request_id: Any, params: Message, serve: Callable[[Message, Message], Awaitable[Any]]
    ) -> Any:
        """Run one of the plugin's functions for the daemon, cancellable by the daemon, its log
        lines tagged with the client's request."""
        assert self.record is not None
        meta = (params.get("_meta") or {}).get(META_REQUEST) or {}
        token = logs.current_request.set(
            logs.RequestRecord(request_id=str(meta.get("id", request_id)), session_id=meta.get("session"))
        )
        scope = self.calls[request_id] = trio.CancelScope()
        try:
            if serve == self.call_tool:
                # A tool's call runs in this scope as the fence's own, under its timeout: a
                # scope costs as much as a small call's validation, and every call pays it.
                return await self.call_tool(params, meta, scope)
            with scope:
                return await serve(params, meta)
            raise MCPError(code=REQUEST_CANCELLED, message="the request was cancelled")
        finally:
            self.calls.pop(request_id, None)
            logs.current_request.reset(token)

    def _context(self, entry: RegisteredTool | RegisteredPrompt, meta: Message) -> WorkerToolContext:
        return WorkerToolContext(entry.plugin, entry.name, entry.settings, meta, self.channel, meta.get("call"))

    async def call_tool(self, params: Message, meta: Message, scope: trio.CancelScope | None = None) -> Message:
        """``tools/call``: validate, run inside the fence (in ``scope``, the daemon's way to
        cancel it), convert: what an inline call does."""
        assert self.record is not None
        tool = self.record.registry.tools.get(params["name"])
        if tool is None:
            return {"status": "error", "message": f"Unknown tool: {params['name']}"}
        return await self._run(tool, params.get("arguments") or {}, meta, scope)

    async def read_resource(self, params: Message, meta: Message) -> Message:
        """``resources/read``: read a static resource or a template's, as inline."""
        assert self.record is not None
        uri = str(params["uri"])
        found = self.record.registry.find_resource(uri)
        if found is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown resource: {uri}", data={"uri": uri})
        return _dump(await serving.read_resource(found[0], uri, found[1]))

    async def get_prompt(self, params: Message, meta: Message) -> Message:
        """``prompts/get``: render a prompt, as inline."""
        assert self.record is not None
        prompt = self.record.registry.prompts.get(params["name"])
        if prompt is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {params['name']}")
        context = self._context(prompt, meta) if prompt.context_param else None
        return _dump(await serving.get_prompt(prompt, params.get("arguments") or {}, context))

    async def complete(self, params: Message, meta: Message) -> Message:
        """``completion/complete``: every suggestion (the daemon keeps what one answer may carry)."""
        assert self.record is not None
        request = types.CompleteRequestParams.model_validate(params, by_name=False)
        entry, what, _ = self.record.registry.completable(request.ref)
        if entry is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown {what}")
        context = request.context.arguments if request.context and request.context.arguments else {}
        values = await serving.suggest(entry, request.argument.name, request.argument.value, context, what)
        return {"completion": {"values": values}}

    async def _run(
        self, tool: RegisteredTool, arguments: Message, meta: Message, scope: trio.CancelScope | None
    ) -> Message:
        assert tool.sdk_tool is not None
        fn_meta = tool.sdk_tool.fn_metadata
        what = f"tool {tool.name!r}"
        try:
            kwargs = fn_meta.validate_arguments(arguments)
        except ValidationError as error:
            return {"status": "invalid_arguments", "message": invalid_arguments(tool.name, error)}
        except BaseException as error:  # a validator of the plugin's own types raised
            if fence.own_cancellation(error):
                raise
            return {"status": "error", "message": str(fence.failure(error, tool.plugin, what))}
        if tool.context_param:
            kwargs[tool.context_param] = self._context(tool, meta)
        try:
            # A call that waited in the daemon for a slot of its pool has only the rest of its
            # timeout (``budget``), as inline, where the wait counts against it. The daemon
            # measures the result it gets, whole (it does not trust this process to).
            budget = None if meta.get("budget") is None else float(meta["budget"])
            outcome, result = await results.call(tool, kwargs, budget, scope, whole=False)
        except client_input.InputRequired:
            return {"status": "input_required"}
        except fence.FenceError as error:
            return {"status": error.status, "message": str(error)}
        except MCPError as error:
            return {
                "status": "error",
                "message": error.error.message,
                "code": error.error.code,
                "data": error.error.data,
            }
        return reply_of(tool, outcome, result)


def _dump(result: BaseModel) -> Message:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def _describe(
    pools: dict[int, int],
    entry: RegisteredTool | RegisteredResource | RegisteredPrompt,
    wire: BaseModel,
    context: str | None = None,
) -> Message:
    """What the daemon needs of a tool, resource, template or prompt to list it and bound its
    calls; ``pool`` numbers the concurrency pools (``pools`` keeps the numbers), so that the
    daemon shares one among the entries that share it here, as it would inline."""
    return {
        "wire": _dump(wire),
        "timeout": entry.limits.timeout,
        "max_concurrency": entry.limits.max_concurrency,
        "pool": pools.setdefault(id(entry.limits.pool), len(pools)),
        "max_result_bytes": entry.limits.max_result_bytes,
        "context": context,
    }


def main(argv: list[str] | None = None) -> None:
    """The worker process's entry point, when started as a fresh interpreter
    (:mod:`mcphost.plugins.worker.__main__`)."""
    args = sys.argv[1:] if argv is None else argv
    serve(int(args[0]), args[1] if len(args) > 1 else "info")


def serve(fd: int, level: str) -> None:
    """Serve the daemon on the socket ``fd`` until it closes its end, then exit the process."""
    logs.configure(level, "json")
    # Plugins that print would write into nothing the daemon reads as protocol: send their
    # output to the log instead.
    sys.stdout = sys.stderr
    damage.keep_std_streams()  # what the fence puts back if the plugin closes one
    damage.check_once_per_tick(at_batch_end)  # one plugin here: whichever call did the damage
    trio.run(Worker(socket.socket(fileno=fd)).serve)
    # What the plugin started in process groups of their own would outlive the group the
    # daemon kills: end them as the daemon ends an inline plugin's.
    leftovers.end_children(LEFTOVER_GRACE)
    # Threads of calls abandoned at their timeout would hold up a normal exit.
    sys.stderr.flush()
    os._exit(0)
