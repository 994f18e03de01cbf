"""``ToolContext``: what a tool (or prompt) may know and do about the call it is serving.

A function asks for it by annotating a parameter ``ctx: mcphost.ToolContext``; that
parameter is left out of the input schema. It hides the SDK's request context so plugins
depend on this small surface only.

Every method is a coroutine. A sync tool, which runs in a worker thread, calls them
through Trio: ``trio.from_thread.run(ctx.report_progress, 1, 10)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, get_args

import mcp_types as types
import trio
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel
from pydantic_core import core_schema
from typing_extensions import TypeVar

from mcphost.ops.log import current_caller
from mcphost.plugins import client_input
from mcphost.plugins.settings import PluginSettings

if TYPE_CHECKING:
    from mcp.server.connection import Connection
    from mcp.server.context import ServerRequestContext

SettingsT = TypeVar("SettingsT", bound=PluginSettings, default=PluginSettings)

LogLevel = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
"""The levels of ``notifications/message``, least severe first."""
_LEVELS = get_args(LogLevel)

LOG_LEVEL_STATE_KEY = "mcphost.log_level"
"""Where a 2025-11-25 session's ``logging/setLevel`` choice is kept on its connection."""

# Logging and sampling are deprecated in 2026-07-28 but still part of the revisions we
# serve; the SDK warns on every use, which says nothing a plugin author can act on.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning, module=r"mcphost\.")


class ToolContext(Generic[SettingsT]):
    """The calling request, as a tool sees it; ``ToolContext[Settings]`` types ``settings``.

    For a prompt, ``tool`` is the prompt's public name.
    """

    __slots__ = ("_exchange", "_request", "plugin", "settings", "tool")

    def __init__(
        self,
        plugin: str,
        tool: str,
        settings: SettingsT,
        request: ServerRequestContext[Any, Any] | None = None,
        exchange: client_input.Exchange | None = None,
    ):
        self.plugin = plugin
        """The name of the plugin the tool belongs to."""
        self.tool = tool
        """The tool's public name, prefix included."""
        self.settings = settings
        """The plugin's validated settings."""
        self._request = request
        self._exchange = exchange

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        # Opaque to pydantic: the SDK validates prompt calls, and this is no data to validate.
        return core_schema.is_instance_schema(cls)

    @property
    def session_id(self) -> str | None:
        """The client's ``Mcp-Session-Id``, or ``None`` for stateless requests and stdio."""
        http_request = None if self._request is None else self._request.request
        headers = getattr(http_request, "headers", None)
        return headers.get("mcp-session-id") if headers is not None else None

    @property
    def protocol_version(self) -> str | None:
        """The protocol revision the client speaks on this request."""
        return None if self._request is None else self._request.protocol_version

    @property
    def identity(self) -> str | None:
        """Who is calling: the API key's name or the access token's subject (never a secret);
        ``None`` when no authentication applies (a loopback daemon without it, stdio)."""
        caller = current_caller()
        return None if caller is None else caller.name

    @property
    def client_capabilities(self) -> types.ClientCapabilities | None:
        """What the client declared it can do (``sampling``, ``elicitation``, ``roots``…), or
        ``None`` if it declared nothing."""
        return None if self._request is None else self._request.session.client_capabilities

    @property
    def input_responses(self) -> Mapping[str, Any]:
        """2026-07-28, low level: the client's answers to the questions of a previous
        ``InputRequiredResult`` the tool returned itself, by key (empty on the first round)."""
        return {} if self._exchange is None else self._exchange.offered

    @property
    def request_state(self) -> str | None:
        """2026-07-28, low level: the ``request_state`` of the ``InputRequiredResult`` the tool
        returned in the previous round, verified unaltered by the host."""
        params = None if self._request is None else self._request.params
        state = None if params is None else params.get("requestState")
        return state if isinstance(state, str) else None

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Send a progress notification, if the client asked for progress on this call; in
        a call running as a task, show it as the task's status message instead."""
        if (task := self._task()) is not None:
            done = f"{progress:g}/{total:g}" if total is not None else f"{progress:g}"
            await task.progress(f"{message} ({done})" if message else done)
        elif self._request is not None:
            await self._request.session.report_progress(progress, total, message)

    async def detach(self) -> bool:
        """Go on as a task, if the client accepts tasks (2026-07-28): its request is answered
        at once with a task the client polls, and this call runs on until it returns (its
        timeout and limits still apply). Call it once the quick part is done, questions asked
        to decide whether to go on included. Returns whether the call runs as a task; on a
        request that cannot take one it does nothing (the call is answered when it returns).

        A call that does not detach becomes a task anyway once it has run ``[tasks]
        handoff_after`` seconds, if its tool may run as a task."""
        if self._exchange is None or self._exchange.task is None:
            return False
        return await self._exchange.task.detach()

    async def close_sse_stream(self) -> None:
        """End the SSE stream this call answers on, asking the client to reconnect and resume
        it (SSE polling, 2025-11-25): a long call stops holding an HTTP connection open, and
        what it sends meanwhile is replayed when the client comes back. Does nothing where
        the stream cannot be resumed (no event store, or an older or stateless client)."""
        if self._request is not None and self._request.close_sse_stream is not None:
            await self._request.close_sse_stream()

    async def log(self, level: LogLevel, data: Any, logger: str | None = None) -> None:
        """Send a log message to the client, on this call's stream, if it wants that level:
        at or above its ``logging/setLevel`` (2025-11-25) or the level this request opted in
        to (2026-07-28); without either, a 2025-11-25 client gets every level."""
        if self._request is None or self._task() is not None:
            return  # a task has no stream to log on: logging is not supported on tasks
        if self._request.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            # The SDK leaves filtering by logging/setLevel to the server (2026-07-28 filters itself).
            wanted = connection_of(self._request).state.get(LOG_LEVEL_STATE_KEY)
            if wanted is not None and _LEVELS.index(level) < _LEVELS.index(wanted):
                return
        await self._request.session.send_log_message(level, data, logger, related_request_id=self._request.request_id)

    async def elicit(
        self, message: str, schema: Mapping[str, Any] | type[BaseModel], *, key: str | None = None
    ) -> types.ElicitResult:
        """Ask the user for input (a form): ``schema`` is a JSON Schema of flat primitive
        properties (strings, numbers, booleans, enums) or a pydantic model of them.

        Returns the client's answer: ``action`` (``accept``, ``decline`` or ``cancel``) and,
        when accepted, ``content``. On 2026-07-28 the call may end here and run again once
        the client answers; ``key`` names the question (default ``elicit-<n>``, the n-th
        question of the call). If the client did not declare elicitation, the call fails:
        with a ``ToolError`` on 2025-11-25 (also when the connection cannot reach the client),
        with the protocol's ``MissingRequiredClientCapability`` error on 2026-07-28.
        """
        if isinstance(schema, type):
            # Imported by the first tool that asks with a model: the SDK's module builds its
            # validators as it is imported, which a daemon whose plugins run in workers never needs.
            from mcp.server.elicitation import render_elicitation_schema

            requested = render_elicitation_schema(schema)
        else:
            requested = dict(schema)
        request = types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=requested))
        return await self._ask(request, types.ElicitResult, key, "elicit")

    async def sample(
        self,
        messages: str | Sequence[types.SamplingMessage],
        *,
        max_tokens: int,
        system_prompt: str | None = None,
        temperature: float | None = None,
        model_preferences: types.ModelPreferences | None = None,
        key: str | None = None,
    ) -> types.CreateMessageResult:
        """Ask the client's LLM for a completion of ``messages`` (a string is one user
        message). Like :meth:`elicit` for ``key``, rounds and errors."""
        if isinstance(messages, str):
            messages = [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=messages))]
        params = types.CreateMessageRequestParams(
            messages=list(messages),
            max_tokens=max_tokens,
            system_prompt=system_prompt,
            temperature=temperature,
            model_preferences=model_preferences,
        )
        return await self._ask(types.CreateMessageRequest(params=params), types.CreateMessageResult, key, "sample")

    async def list_roots(self, *, key: str | None = None) -> types.ListRootsResult:
        """Ask the client for its roots (the directories it works in). Like :meth:`elicit`
        for ``key``, rounds and errors."""
        return await self._ask(types.ListRootsRequest(), types.ListRootsResult, key, "roots")

    async def gather(self, *questions: Awaitable[Any]) -> list[Any]:
        """Ask several questions (``ctx.elicit(…)``, ``ctx.sample(…)``, ``ctx.list_roots(…)``
        not yet awaited) in one round and return their answers in order. On 2026-07-28 the
        client gets all the open ones at once (in a task too); on 2025-11-25 they are asked
        one by one."""
        if self._task() is not None:
            return await _concurrently(questions)
        answers, missing, pending = [], False, list(questions)
        try:
            while pending:
                try:
                    answers.append(await pending.pop(0))
                except client_input.InputRequired:
                    missing = True
        finally:
            for question in pending:  # left over by an error: close them, unawaited
                getattr(question, "close", lambda: None)()
        if missing:
            raise client_input.InputRequired
        return answers

    def _task(self) -> client_input.TaskChannel | None:
        """The task this call runs as, once it does."""
        task = None if self._exchange is None else self._exchange.task
        return task if task is not None and task.detached else None

    async def _ask(
        self, request: types.InputRequest, result_type: type[client_input.ResultT], key: str | None, kind: str
    ) -> client_input.ResultT:
        if self._request is None or self._exchange is None:
            raise client_input.ClientInputError("there is no client to ask outside of a request")
        key = key or self._exchange.next_key(kind)
        return await client_input.ask(self._request, self._exchange, key, request, result_type)


async def _concurrently(questions: Sequence[Awaitable[Any]]) -> list[Any]:
    """The answers of ``questions`` awaited at once, in order."""
    answers: list[Any] = [None] * len(questions)

    async def answer(index: int, question: Awaitable[Any]) -> None:
        answers[index] = await question

    async with trio.open_nursery() as nursery:
        for index, question in enumerate(questions):
            nursery.start_soon(answer, index, question)
    return answers


def connection_of(request: ServerRequestContext[Any, Any]) -> Connection:
    """The connection of the request's client: its per-connection ``state`` and ``exit_stack``.

    ``ServerRequestContext`` does not expose it yet (the SDK's own ``Context`` does, but the
    runner does not build one), so this reaches through the session.
    """
    return request.session._connection
