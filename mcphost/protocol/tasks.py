"""Tasks (2026-07-28, the ``io.modelcontextprotocol/tasks`` extension): a long tool call
answered with a task the client polls (``tasks/get``), answers questions of
(``tasks/update``) and may cancel (``tasks/cancel``), from any process and after a restart.

Only a request that declares the extension in its own ``_meta`` client capabilities may get
a task, and only for a tool that may run as one (:meth:`Tasks.support`). Such a call starts
in this module's nursery, and its request waits for the first of: the call returns (it is
answered as usual), it asks a question before going on (a 2026-07-28 input round, as usual),
the tool goes on as a task (``ToolContext.detach``), or ``[tasks] handoff_after`` passes. In
the last two cases the task's record is written to the store first, then the request is
answered with the task, and the call runs on under its limits; its outcome goes into the
record: a value (an ``isError`` result included) → ``completed``, a protocol error →
``failed``. Every change is a compare-and-set on the record, so a task cancelled elsewhere
stays cancelled whatever its run writes late.

The process running tasks renews a lease in the store; a task whose process's lease lapsed
(it was killed, or its machine lost) is reported ``failed`` by whichever process is asked
about it next. A caller sees only its own tasks: any other id is answered as unknown.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import mcp_types as types
import structlog
import trio
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, Field, ValidationError

from mcphost.auth.identity import current_identity
from mcphost.core.config import TasksConfig
from mcphost.ops.drain import Drain
from mcphost.ops.metrics import Metrics
from mcphost.plugins.definitions import TaskSupport
from mcphost.plugins.registry import RegisteredTool
from mcphost.state.sessions import StoreUnavailable
from mcphost.state.tasks import TaskRecord, TaskStore, change

log = structlog.get_logger("mcphost.tasks")

Ctx = ServerRequestContext[Any, Any]

EXTENSION = "io.modelcontextprotocol/tasks"
"""The extension's identifier, in ``capabilities.extensions`` on both sides."""
WATCH_INTERVAL = 0.25
"""Seconds between two looks at the record of a task this process runs: how soon a
cancellation or an answer made through another process reaches it."""
PROGRESS_INTERVAL = 0.5
"""The least number of seconds between two status messages written for a task's progress."""
SWEEP_INTERVAL = 60.0
"""Seconds between two sweeps of expired records."""
LOST = "the process running this task stopped before the task finished"
SHUT_DOWN = "the server shut down before the task finished"


class TaskParams(types.RequestParams):
    """``tasks/get`` and ``tasks/cancel``."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    task_id: str = Field(alias="taskId")


class UpdateTaskParams(TaskParams):
    """``tasks/update``: answers by key. Values are not validated here: an answer to a key
    that is not outstanding is ignored, whatever its shape."""

    input_responses: dict[str, Any] = Field(default_factory=dict, alias="inputResponses")


def declares_tasks(ctx: Ctx) -> bool:
    """Whether this request (2026-07-28) declared the tasks extension in its own ``_meta``."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and EXTENSION in capabilities.extensions)


def missing_extension(what: str) -> MCPError:
    """The -32021 error for a request that needs the tasks extension and did not declare it."""
    data = types.MissingRequiredClientCapabilityErrorData(
        required_capabilities=types.ClientCapabilities(extensions={EXTENSION: {}})
    )
    return MCPError(
        code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"{what} needs the client's {EXTENSION} extension",
        data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_fields(record: TaskRecord) -> dict[str, Any]:
    """The ``Task`` the client sees."""
    fields: dict[str, Any] = {
        "taskId": record.id,
        "status": record.status,
        "createdAt": _iso(record.created),
        "lastUpdatedAt": _iso(record.updated),
        "ttlMs": max(1, round((record.expires - record.created) * 1000)),
        "pollIntervalMs": record.poll_ms,
    }
    if record.status_message:
        fields["statusMessage"] = record.status_message
    return fields


def detailed_task(record: TaskRecord) -> dict[str, Any]:
    """``tasks/get``'s answer: the task, with its questions, result or error."""
    fields = {"resultType": "complete", **task_fields(record)}
    if record.status == "input_required":
        fields["inputRequests"] = record.input_requests
    elif record.status == "completed":
        fields["result"] = record.result
    elif record.status == "failed":
        fields["error"] = record.error
    return fields


def _error_data(error: MCPError) -> dict[str, Any]:
    return error.error.model_dump(by_alias=True, mode="json", exclude_none=True)


class Tasks:
    """The tasks this process runs, and the ``tasks/*`` methods over the store."""

    def __init__(self, store: TaskStore, config: TasksConfig, metrics: Metrics, drain: Drain):
        self.store = store
        self.drain = drain
        """A task runs as a request in flight: a shutdown lets it finish, up to its deadline."""
        self.config = config
        self.metrics = metrics
        self.owner = secrets.token_urlsafe(12)
        """This process, in the store: the owner of the tasks it runs."""
        self.running: dict[str, TaskRun] = {}
        """Tasks this process runs, by id."""
        self._nursery: trio.Nursery | None = None

    def support(self, tool: RegisteredTool) -> TaskSupport:
        """Whether calls of ``tool`` may, must or may not run as tasks: the author's word,
        else optional for a tool whose timeout is at least ``[tasks] min_timeout``."""
        if not self.config.enabled or self._nursery is None:
            return "forbidden"
        if tool.task is not None:
            return tool.task
        return "optional" if tool.limits.timeout >= self.config.min_timeout else "forbidden"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run tasks, renew this process's lease and forget expired records, until cancelled."""
        async with trio.open_nursery() as nursery:
            await self._heartbeat()
            nursery.start_soon(self._renew)
            nursery.start_soon(self._sweep)
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                # Whatever this process leaves unfinished is reported failed at once, not a lease later.
                with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(StoreUnavailable):
                    await self.store.release(self.owner)

    async def _heartbeat(self) -> None:
        try:
            await self.store.heartbeat(self.owner, time.time() + self.config.lease)
        except StoreUnavailable as error:
            log.warning("cannot renew this process's task lease", error=str(error))

    async def _renew(self) -> None:
        while True:
            await trio.sleep(self.config.lease / 3)
            await self._heartbeat()

    async def _sweep(self) -> None:
        while True:
            try:
                if expired := await self.store.expire(time.time()):
                    self.metrics.task_event("expired", expired)
            except StoreUnavailable as error:
                log.warning("cannot expire finished tasks", error=str(error))
            await trio.sleep(SWEEP_INTERVAL)

    async def call(self, tool: RegisteredTool, run: Callable[[TaskRun], Awaitable[Any]]) -> Any:
        """Run a call that may become a task; returns the request's answer (the call's own,
        or the task) or raises its protocol error."""
        assert self._nursery is not None
        task_run = TaskRun(self, tool)
        self._nursery.start_soon(task_run.main, run)
        try:
            with trio.move_on_after(self.config.handoff_after):
                await task_run.settled.wait()
            if not task_run.settled.is_set():
                await task_run.detach()
            await task_run.settled.wait()
        finally:
            if not task_run.detached:
                task_run.scope.cancel()  # the request went away before the call became a task
        if task_run.error is not None:
            raise task_run.error
        return task_run.answer

    async def _find(self, ctx: Ctx, params: TaskParams, method: str) -> TaskRecord:
        """The caller's task named in a ``tasks/*`` request, its process's death noted."""
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found", data=method)
        headers = getattr(ctx.request, "headers", None)
        if headers is not None and decode_header_value(headers.get(MCP_NAME_HEADER)) != params.task_id:
            raise MCPError(
                code=types.HEADER_MISMATCH, message=f"{MCP_NAME_HEADER} header does not match the request's 'taskId'"
            )
        if not declares_tasks(ctx):
            raise missing_extension(method)
        try:
            record = await self.store.get(params.task_id)
            identity = current_identity()
            # Another caller's task is answered exactly like one that does not exist.
            if record is None or record.identity != (identity.key if identity is not None else None):
                raise MCPError(code=types.INVALID_PARAMS, message="Failed to retrieve task: Task not found")
            if (
                not record.terminal
                and self.running.get(record.id) is None
                and (record.owner == self.owner or not await self.store.alive(record.owner))
            ):
                record = await self._lost(record)
        except StoreUnavailable as error:
            log.warning("task store unavailable", error=str(error))
            raise MCPError(code=types.INTERNAL_ERROR, message="the task store is unavailable; try again") from None
        return record

    async def _lost(self, record: TaskRecord) -> TaskRecord:
        error = {"code": types.INTERNAL_ERROR, "message": LOST}
        changed = await change(
            self.store, record.id, lambda r: None if r.terminal else self.ended(r, "failed", error=error)
        )
        if changed is not None and changed.version != record.version and changed.status == "failed":
            self.metrics.task_event("lost")
            log.warning("task failed: its process stopped", task=record.id, tool=record.tool)
        return changed or record

    def ended(self, record: TaskRecord, status: Any, **fields: Any) -> TaskRecord:
        """``record`` in a terminal ``status``, kept ``[tasks] retention`` from now."""
        if status == "failed":
            fields.setdefault("status_message", fields["error"]["message"])
        return replace(
            record,
            status=status,
            input_requests={},
            answers={},
            expires=time.time() + self.config.retention,
            **fields,
        )

    async def get(self, ctx: Ctx, params: TaskParams) -> dict[str, Any]:
        """``tasks/get``: the task as it is now."""
        return detailed_task(await self._find(ctx, params, "tasks/get"))

    async def update(self, ctx: Ctx, params: UpdateTaskParams) -> dict[str, Any]:
        """``tasks/update``: answers to the task's questions; keys it does not wait on are ignored."""
        record = await self._find(ctx, params, "tasks/update")

        def answer(r: TaskRecord) -> TaskRecord | None:
            taken = {k: v for k, v in params.input_responses.items() if k in r.input_requests}
            if r.terminal or not taken:
                return None
            left = {k: v for k, v in r.input_requests.items() if k not in taken}
            return replace(
                r,
                input_requests=left,
                answers={**r.answers, **taken},
                status="input_required" if left else "working",
            )

        await self._change(record.id, answer)
        if (local := self.running.get(record.id)) is not None:
            local.wake()
        return {}

    async def cancel(self, ctx: Ctx, params: TaskParams) -> dict[str, Any]:
        """``tasks/cancel``: end the task as cancelled (an ended one stays as it is)."""
        record = await self._find(ctx, params, "tasks/cancel")
        message = "cancelled by the client"
        changed = await self._change(
            record.id, lambda r: None if r.terminal else self.ended(r, "cancelled", status_message=message)
        )
        if changed is not None and changed.version != record.version and changed.status == "cancelled":
            self.metrics.task_event("cancelled")
        if (local := self.running.get(record.id)) is not None:
            local.scope.cancel()
        return {}

    async def _change(self, task_id: str, edit: Callable[[TaskRecord], TaskRecord | None]) -> TaskRecord | None:
        try:
            return await change(self.store, task_id, edit)
        except StoreUnavailable as error:
            log.warning("task store unavailable", error=str(error))
            raise MCPError(code=types.INTERNAL_ERROR, message="the task store is unavailable; try again") from None


class TaskRun:
    """One call that may become a task: the request's answer until it does, then the task
    (the :class:`~mcphost.plugins.client_input.TaskChannel` its tool's context uses)."""

    def __init__(self, tasks: Tasks, tool: RegisteredTool):
        self.tasks = tasks
        self.tool = tool
        identity = current_identity()
        self.identity = identity.key if identity is not None else None
        self.record: TaskRecord | None = None
        self.settled = trio.Event()
        """Set once the request has its answer: the call's own, or the task."""
        self.answer: Any = None
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()
        """The call's; cancelled with its task."""
        self._lock = trio.Lock()
        self._refused = False
        self._wake = trio.Event()
        self._done = trio.Event()
        self._keys: set[str] = set()
        self._progress_at = 0.0

    @property
    def detached(self) -> bool:
        """Whether the call runs as a task."""
        return self.record is not None

    def wake(self) -> None:
        """Have the call look at its record again (answers came)."""
        self._wake.set()

    async def main(self, run: Callable[[TaskRun], Awaitable[Any]]) -> None:
        """Run the call, and put its outcome where it goes: the request, or the task."""
        try:
            with self.tasks.drain.request(), self.scope:
                try:
                    result = await run(self)
                except MCPError as error:
                    await self._end(error=error)
                except Exception as error:  # the handlers let nothing else out; this is a bug of ours
                    log.error("task run failed", tool=self.tool.name, exc_info=error)
                    await self._end(error=MCPError(code=types.INTERNAL_ERROR, message="the call failed"))
                else:
                    await self._end(result=result)
        finally:
            self._done.set()
            self.settled.set()
            if self.record is not None:
                self.tasks.running.pop(self.record.id, None)

    async def _end(self, *, result: Any = None, error: MCPError | None = None) -> None:
        async with self._lock:
            if self.record is None:
                self.answer, self.error = result, error
                self.settled.set()
                return
        if isinstance(result, dict):  # a worker's result, as the JSON object it wrote: the task keeps it only valid
            try:
                result = types.CallToolResult.model_validate(result, by_name=False)
            except ValidationError:
                message = f"tool {self.tool.name!r} returned a result that is not a tool result"
                error = MCPError(code=types.INTERNAL_ERROR, message=message)
        if error is not None:
            status, fields = "failed", {"error": _error_data(error)}
        elif isinstance(result, types.CallToolResult):
            status, fields = "completed", {"result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
        else:  # a low-level InputRequiredResult of the tool's own: it has no round to take in a task
            message = f"tool {self.tool.name!r} asked for input in a way a task cannot carry"
            status, fields = "failed", {"error": {"code": types.INTERNAL_ERROR, "message": message}}
        with trio.CancelScope(shield=True):
            try:
                changed = await change(
                    self.tasks.store,
                    self.record.id,
                    lambda r: None if r.terminal else self.tasks.ended(r, status, **fields),
                )
            except StoreUnavailable as error_:
                log.error("cannot record a task's outcome", task=self.record.id, error=str(error_))
                return
        if changed is not None and changed.status == status:
            self.tasks.metrics.task_event(status)

    async def detach(self) -> bool:
        """Write the task, answer the request with it, and go on as a task."""
        async with self._lock:
            if self.record is not None:
                return True
            if self.settled.is_set() or self._refused:
                return False
            now = time.time()
            config = self.tasks.config
            record = TaskRecord(
                id=secrets.token_urlsafe(24),
                identity=self.identity,
                tool=self.tool.name,
                owner=self.tasks.owner,
                created=now,
                updated=now,
                # Until it ends (the run's timeout at most), then [tasks] retention from then.
                expires=now + self.tool.limits.timeout + config.retention,
                poll_ms=config.poll_interval_ms,
            )
            try:
                await self.tasks.store.create(record)
            except StoreUnavailable as error:
                # The call goes on and is answered on its request, as if tasks were off.
                log.warning("cannot create a task: answering on the request", tool=self.tool.name, error=str(error))
                self._refused = True
                return False
            self.record = record
            self.tasks.running[record.id] = self
            self.answer = {"resultType": "task", **task_fields(record)}
            self.settled.set()
        self.tasks.metrics.task_event("created")
        assert self.tasks._nursery is not None
        self.tasks._nursery.start_soon(self._watch, record.id)
        return True

    async def _watch(self, task_id: str) -> None:
        """Follow the record while the call runs: a cancellation or answers made elsewhere."""
        while not self._done.is_set():
            with trio.move_on_after(WATCH_INTERVAL):
                await self._done.wait()
            try:
                record = await self.tasks.store.get(task_id)
            except StoreUnavailable:
                continue
            if record is None or record.terminal:
                self.scope.cancel()
                return
            if record.answers:
                self.wake()

    async def ask(self, key: str, request: types.InputRequest) -> Any:
        """Put a question on the task and wait for its answer."""
        unique = key
        # A key answered once is never asked again (the client would take the old answer for it).
        while unique in self._keys:
            unique = f"{key}-{len(self._keys)}-{secrets.token_hex(2)}"
        self._keys.add(unique)
        question = request.model_dump(by_alias=True, mode="json", exclude_none=True)
        await self._change(
            lambda r: (
                None
                if r.terminal
                else replace(r, status="input_required", input_requests={**r.input_requests, unique: question})
            )
        )
        while True:
            record = await self._change(lambda r: None)
            if unique in record.answers:
                answer = record.answers[unique]
                await self._change(lambda r: replace(r, answers={k: v for k, v in r.answers.items() if k != unique}))
                return answer
            with trio.move_on_after(WATCH_INTERVAL * 4):
                await self._wake.wait()
            self._wake = trio.Event()

    async def progress(self, message: str) -> None:
        """Show ``message`` as the task's status (at most every :data:`PROGRESS_INTERVAL`)."""
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_INTERVAL:
            return
        self._progress_at = now
        await self._change(lambda r: None if r.terminal else replace(r, status_message=message[:1000]))

    async def _change(self, edit: Callable[[TaskRecord], TaskRecord | None]) -> TaskRecord:
        """The record after ``edit`` (``lambda r: None`` only reads it), retried while the
        store is unavailable; cancels the call once the task has ended (or gone)."""
        assert self.record is not None
        while True:
            try:
                record = await change(self.tasks.store, self.record.id, edit)
            except StoreUnavailable:
                await trio.sleep(WATCH_INTERVAL * 4)
                continue
            if record is None or record.terminal:
                self.scope.cancel()
                await trio.lowlevel.checkpoint()
            assert record is not None
            return record


def shut_down_error() -> MCPError:
    """What a task still running when the server stops ends with."""
    return MCPError(code=types.INTERNAL_ERROR, message=SHUT_DOWN)
