"""Sessions that outlive the process: the SDK's session manager, rebuilding a 2025-11-25
session in a process that did not create it.

A session's id is signed (:mod:`mcphost.transport.session_ids`): any process holding the
server secret can tell an id it issued from a forged one without a lookup. What a session
needs to go on after a restart (its negotiated protocol version, the client's ``initialize``
parameters, the identity that opened it, and later its resource subscriptions) is written to a
:class:`~mcphost.state.sessions.SessionStore` once the handshake completes. When a request
names a session this process does not hold, the id is verified, the record loaded, and the
session rebuilt already initialized, so the client never notices. A forged, deleted or
expired id still gets 404.

The trade-off: what lives only in a session's memory (an open GET stream, requests in flight,
a ``logging/setLevel`` choice) does not survive; the client reconnects its stream as it would
after any network blip. The store is written at session start, end, and every
``idle_timeout / 4`` of activity, never on each request.

Only the store ends a session for every process: a ``DELETE`` removes the record and tells
every process holding a copy (:meth:`SessionStore.ended`), which drops it before it answers
its next request for it; an idle session expires from the store once no process has touched
it for :func:`record_lifetime`. A process whose own copy idles just drops the copy: the
client may be busy on another process, and its next request here rebuilds it.

This module extends the SDK's session manager at its documented seams (admission, the
per-session server task, discarding); it knows nothing about plugins or tools.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import anyio
import structlog
import trio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, AuthorizationContext, authorization_context
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import InitializeRequestParams

from mcphost.auth.identity import current_identity
from mcphost.core.errors import UNAVAILABLE
from mcphost.ops.log import current_request
from mcphost.plugins.context import connection_of
from mcphost.protocol import wire
from mcphost.state import eventstore
from mcphost.state.sessions import SessionRecord, SessionStore, StoreUnavailable, record_lifetime
from mcphost.transport.asgi import send_json
from mcphost.transport.session_ids import SessionIds

log = structlog.get_logger("mcphost.sessions")

_HEADER = MCP_SESSION_ID_HEADER.lower().encode()

_SessionStart = tuple[StreamableHTTPServerTransport, "SessionRecord | None", trio.Event]
"""A session for :meth:`PersistentSessionManager._start_sessions` to start, and the event
it sets once the session takes messages."""


class PersistentSessionManager(StreamableHTTPSessionManager):
    """The SDK's session manager, with signed ids, records in a store, and rebuilt sessions.

    ``store`` may be ``None``: ids are still signed, but sessions die with the process.
    """

    def __init__(
        self,
        *args: Any,
        ids: SessionIds,
        store: SessionStore | None,
        init_options: InitializationOptions | None = None,
        max_sessions_per_identity: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.ids = ids
        self.store = store
        self.init_options = init_options
        self.max_sessions_per_identity = max_sessions_per_identity
        """The sessions one authenticated caller may hold here (``None``: no share of its own)."""
        if store is not None:
            self.app.middleware.append(self._record_on_initialize)
        self.connections: dict[str, Connection] = {}
        """The live connections, for server-initiated notifications (list_changed)."""
        self._held: dict[str, OrderedDict[str, None]] = {}
        """Each caller's sessions here (by identity key), least recently used first."""
        self._holder: dict[str, str] = {}
        self._touched: dict[str, float] = {}
        self._unverified: set[str] = set()
        """Sessions held here that may have been deleted while this process could not hear of
        it: each is looked up in the store on its next request."""
        self._taking_ended = trio.Lock()
        self._closing = False
        self._starts: trio.MemorySendChannel[_SessionStart] | None = None
        self.on_rebuilt: Callable[[Connection, SessionRecord], Awaitable[None]] | None = None
        """Awaited with a session rebuilt here from its record, before it takes messages (to
        restore what the record keeps beyond the handshake: its subscriptions)."""

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Run the manager; sessions cut off by shutdown stay in the store for the next process."""
        async with super().run():
            assert self._task_group is not None
            send, receive = trio.open_memory_channel[_SessionStart](math.inf)
            self._starts = send
            self._task_group.start_soon(self._start_sessions, receive)
            if self.store is not None:
                self._task_group.start_soon(self.store.watch, self._take_ended)
                self._task_group.start_soon(self._keep_store)
            try:
                yield
            finally:
                self._closing = True

    async def _handle_stateful_request(self, scope: Any, receive: Any, send: Any) -> None:
        session_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER), None)
        if session_id is None:
            await self._open(scope, receive, send)
            return
        if self.store is not None:
            if self.store.ended_unseen():
                await self._take_ended()
            if scope["method"] == "DELETE":
                send = self._deleting(session_id, send)
        refusal = None
        try:
            if session_id in self._unverified:
                await self._verify(session_id)
            if session_id in self._server_instances:
                self._touch(session_id)
            elif self.store is not None:
                refusal = await self._rebuild(session_id, scope)
        except StoreUnavailable:
            # The store logs its outage once; each refusal shows in its request line.
            await _refuse(send, "Session store unavailable; try again shortly", retry_after=1)
            return
        if refusal is not None:
            await _refuse(send, refusal)
            return
        await super()._handle_stateful_request(scope, receive, send)

    async def _open(self, scope: Any, receive: Any, send: Any) -> None:
        """A request without a session id: as the SDK's, admission (with room made in the
        caller's share) is decided under the lock, the request served outside it."""
        async with self._session_creation_lock:
            refusal = await self._make_room()
            transport = None if refusal else self._admit_session(_requestor(scope))
        if transport is None:
            await _refuse(send, refusal or "Too many open sessions; try again later")
            return
        await self._serve_opening_request(transport, scope, receive, send)

    async def _make_room(self) -> str | None:
        """Room for one more session of the current caller: past its share, its least
        recently used idle session ends (never another caller's); ``None``, or why not."""
        identity = current_identity()
        held = self._held.get(identity.key) if identity is not None else None
        cap = self.max_sessions_per_identity
        if held is not None and cap is not None and len(held) >= cap:
            idle = next((s for s in held if not self._server_instances[s]._requests_in_flight), None)
            if idle is None:
                return "Too many open sessions for this caller, all busy; end one (DELETE) or try again later"
            log.info("session evicted: its caller opened one more than its share", session_id=idle, share=cap)
            await self._end(idle)
        if self.max_sessions is not None and len(self._server_instances) >= self.max_sessions:
            return "Too many open sessions; try again later"
        return None

    async def revoke(self, identity_keys: Iterable[str]) -> int:
        """End, on every process, each session held here of the callers named (keys that were
        removed); returns how many. Each process revokes what it holds when it reloads; the
        store's announcement reaches those that hold a copy and reload later, or not at all."""
        ended = [s for key in identity_keys for s in self._held.get(key, ())]
        for session_id in ended:
            await self._end(session_id)
        return len(ended)

    async def _end(self, session_id: str) -> None:
        """End a session for good: the record goes, and every process that holds a copy hears
        of it (:meth:`SessionStore.delete`), this one first."""
        if self.store is not None:
            with trio.CancelScope(shield=True):
                await self.store.delete(session_id)
        if (transport := self._server_instances.get(session_id)) is not None:
            await self._discard_session(session_id, transport)

    async def protocol_version(self, session_id: str) -> str | None:
        """The revision session ``session_id`` negotiated, from this process's copy or the
        store's record; ``None`` when neither knows it (or the store cannot tell now)."""
        if (connection := self.connections.get(session_id)) is not None:
            return connection.protocol_version
        if self.store is None:
            return None
        try:
            record = await self.store.load(session_id)
        except StoreUnavailable:
            return None
        return record.protocol_version if record is not None else None

    @contextlib.contextmanager
    def serving(self, session_id: str | None, scope: Any) -> Iterator[Connection | None]:
        """The connection of an initialized session this process holds and the caller owns,
        kept busy while the block runs, for a request answered without the SDK's transport
        (:mod:`mcphost.protocol.direct`); ``None`` when the request must go the SDK's way (a session
        held elsewhere or not at all, another caller's, ending, or not yet initialized)."""
        transport = self._server_instances.get(session_id) if session_id else None
        connection = self.connections.get(session_id) if session_id else None
        idle = transport.idle_scope if transport is not None else None
        requestor = _requestor(scope)
        if (
            transport is None
            or connection is None
            or transport.is_terminated
            or (self.store is not None and (self.store.ended_unseen() or session_id in self._unverified))
            or not connection.initialize_accepted
            or (idle is not None and idle.cancel_called)
            or requestor != self._session_owners.get(session_id)  # type: ignore[arg-type]
        ):
            yield None
            return
        assert session_id is not None
        self._touch(session_id)
        # As the transport does for each request it serves: the session's idle countdown
        # stops while any request is in flight and restarts when the last one ends.
        transport._requests_in_flight += 1
        if idle is not None:
            idle.deadline = math.inf
        try:
            yield connection
        finally:
            transport._requests_in_flight -= 1
            if idle is not None and not transport._requests_in_flight and transport._idle_timeout is not None:
                idle.deadline = trio.current_time() + transport._idle_timeout

    async def close_streams(self) -> None:
        """End every session's streams for shutdown; the sessions stay in the store, so their
        clients reconnect to the next process as if nothing happened."""
        self._closing = True
        for session_id, transport in list(self._server_instances.items()):
            await self._discard_session(session_id, transport)

    async def _take_ended(self) -> None:
        """Drop the copies of sessions another process deleted (their streams close)."""
        assert self.store is not None
        async with self._taking_ended:
            if not self.store.ended_unseen():
                return  # a concurrent request took them first
            ended = await self.store.ended()
        if ended is None:
            self._unverified.update(self._server_instances)
            return
        for session_id in ended:
            if (transport := self._server_instances.get(session_id)) is not None:
                log.info("session deleted elsewhere", session_id=session_id)
                await self._discard_session(session_id, transport)

    async def _verify(self, session_id: str) -> None:
        """Drop this process's copy of a session whose record is gone from the store."""
        assert self.store is not None
        record = await self.store.load(session_id)  # may raise StoreUnavailable: 503, still unverified
        self._unverified.discard(session_id)
        if record is None and (transport := self._server_instances.get(session_id)) is not None:
            await self._discard_session(session_id, transport)

    def _deleting(self, session_id: str, send: Any) -> Any:
        """``send`` for a DELETE: once the SDK accepts it, the record goes (and every process
        hears of it) before the client sees the answer, so its next request anywhere gets 404."""

        async def send_after_deleting(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300 and self.store is not None:
                with trio.CancelScope(shield=True):
                    await self.store.delete(session_id)
            await send(message)

        return send_after_deleting

    async def _keep_store(self) -> None:
        """Expire idle records (the store's job alone: a session idle here may be busy on
        another process), and touch sessions whose requests or streams outlast a touch interval."""
        assert self.store is not None
        while True:
            if self.session_idle_timeout is not None:
                expired = await self.store.expire(time.time() - record_lifetime(self.session_idle_timeout))
                if expired:
                    log.info("expired idle sessions from the store", count=expired)
            for session_id, transport in list(self._server_instances.items()):
                if transport._requests_in_flight:
                    self._touch(session_id)
            await trio.sleep(self._touch_interval)

    def _touch(self, session_id: str) -> None:
        if (holder := self._holder.get(session_id)) is not None:
            self._held[holder].move_to_end(session_id)
        # Throttled: a busy session costs the store one write per quarter of the idle timeout.
        now = time.time()
        if self.store is not None and now - self._touched.get(session_id, 0.0) > self._touch_interval:
            self._touched[session_id] = now
            assert self._task_group is not None
            self._task_group.start_soon(self.store.touch, session_id, now)

    @property
    def _touch_interval(self) -> float:
        return (self.session_idle_timeout or 1800.0) / 4

    async def _rebuild(self, session_id: str, scope: Any) -> str | None:
        """Bring a session this process does not hold back to life, if it is ours and alive;
        ``None``, or why it cannot be taken in now (no room)."""
        assert self.store is not None
        if not self.ids.verify(session_id):
            return None  # forged or foreign: the SDK answers 404
        record = await self.store.load(session_id)
        if record is None:
            return None  # deleted or expired: 404
        requestor = _requestor(scope)
        if record.owner != requestor:
            return None  # another credential's session: 404, as if it did not exist
        async with self._session_creation_lock:
            if session_id in self._server_instances:
                return None  # a concurrent request rebuilt it first
            if (refusal := await self._make_room()) is not None:
                return refusal
            transport = self._new_transport(session_id)
            if requestor is not None:
                self._session_owners[session_id] = requestor
            # Served before it is listed: a concurrent request for this session waits on the
            # lock or finds it taking messages, never half-built.
            await self._start_session(transport, record)
            if transport.is_terminated:
                return None  # it ended while starting (its discard already ran): 404
            self._server_instances[session_id] = transport
            self._hold(session_id)
        self._touch(session_id)
        log.info("session rebuilt", session_id=session_id, protocol_version=record.protocol_version)
        return None

    def _hold(self, session_id: str) -> None:
        """Count a session against the current caller's share."""
        if (identity := current_identity()) is not None:
            self._holder[session_id] = identity.key
            self._held.setdefault(identity.key, OrderedDict())[session_id] = None

    def _new_transport(self, session_id: str) -> StreamableHTTPServerTransport:
        identity = current_identity()
        return StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=self.json_response,
            event_store=eventstore.for_session(self.event_store, session_id, identity.key if identity else None),
            security_settings=self.security_settings,
            retry_interval=self.retry_interval,
            idle_timeout=self.session_idle_timeout,
        )

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport:
        # The SDK's admission, with a signed id instead of a bare uuid4 (the room was made
        # by _make_room).
        session_id = self.ids.new()
        transport = self._new_transport(session_id)
        if requestor is not None:
            self._session_owners[session_id] = requestor
        self._server_instances[session_id] = transport
        self._hold(session_id)
        return transport

    async def _serve_opening_request(
        self, http_transport: StreamableHTTPServerTransport, scope: Any, receive: Any, send: Any
    ) -> None:
        # As the SDK's, but the session's server task is ours (it records the session once
        # initialized), and a failed opening request discards the session.
        session_id = http_transport.mcp_session_id
        assert session_id is not None
        established = False
        try:
            await self._start_session(http_transport, None)
            status: list[int] = []

            async def watch(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                await send(message)

            await http_transport.handle_request(scope, receive, watch)
            established = bool(status) and status[0] < 400
        finally:
            if not established:
                await self._discard_session(session_id, http_transport)

    async def _start_session(self, transport: StreamableHTTPServerTransport, record: SessionRecord | None) -> None:
        """Start a session's server task and wait until it takes messages.

        The task is started by the manager's own task (:meth:`_start_sessions`), not by the
        request that opens the session: a task started with ``start()`` from a request keeps,
        through its task status, the request's task and context for as long as the session
        lives, which cost every idle session some 2.7 KiB.
        """
        assert self._starts is not None
        taking = trio.Event()
        self._starts.send_nowait((transport, record, taking))
        await taking.wait()

    async def _start_sessions(self, starts: trio.MemoryReceiveChannel[_SessionStart]) -> None:
        assert self._task_group is not None
        async for transport, record, taking in starts:
            self._task_group.start_soon(self._serve_session, transport, record, taking)

    async def _serve_session(
        self, transport: StreamableHTTPServerTransport, record: SessionRecord | None, taking: trio.Event
    ) -> None:
        """One session's server task: a new session (``record`` None) or a rebuilt one; sets
        ``taking`` once its transport takes messages (or once it has failed to)."""
        session_id = transport.mcp_session_id
        assert session_id is not None
        # The event is let go of once set: this frame lives as long as the session.
        pending: trio.Event | None = taking
        del taking
        try:
            async with transport.connect() as (read_stream, write_stream):
                dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                    read_stream, write_stream, inline_methods=frozenset({"initialize"})
                )
                connection = Connection.for_loop(dispatcher, session_id=session_id)
                if record is not None:
                    # Born initialized: the handshake happened in another process.
                    connection.client_params = InitializeRequestParams.model_validate(record.client_params)
                    connection.protocol_version = record.protocol_version
                    connection.initialized.set()
                    if self.on_rebuilt is not None:
                        try:
                            await self.on_rebuilt(connection, record)
                        except Exception:
                            log.exception("session not fully restored", session_id=session_id)
                self.connections[session_id] = connection
                assert pending is not None
                pending.set()
                pending = None
                idle_scope = transport.idle_scope or anyio.CancelScope()
                try:
                    with idle_scope:
                        await serve_connection(
                            self.app,
                            dispatcher,
                            connection=connection,
                            lifespan_state=self._lifespan_state,
                            init_options=self.init_options,
                        )
                    if idle_scope.cancelled_caught:
                        log.info("session idle timeout", session_id=session_id)
                except Exception:
                    log.exception("session crashed", session_id=session_id)
                finally:
                    self.connections.pop(session_id, None)
                    await self._discard_session(session_id, transport)
        finally:
            if pending is not None:
                pending.set()

    async def _record_on_initialize(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: write a new session's record before its ``initialize`` response
        leaves, so the client's next request may land on any process and find it."""
        result = await call_next(ctx)
        session_id = connection_of(ctx).session_id if ctx.method == "initialize" else None
        if session_id is not None and isinstance(result, dict) and self.store is not None:
            record = SessionRecord(
                id=session_id,
                protocol_version=str(result.get("protocolVersion")),
                client_params=dict(ctx.params or {}),
                owner=self._session_owners.get(session_id),
                seen=time.time(),
            )
            # Shielded as a pair: a session ended while its record was being written must
            # not be brought back to life by the write landing last.
            with trio.CancelScope(shield=True):
                await self.store.save(record)
                if session_id not in self._server_instances and not self._closing:
                    await self.store.delete(session_id)
        return result

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        # Only this process's copy: the record goes with a DELETE (_deleting) or expires in
        # the store; an idle copy here says nothing of the session's use elsewhere.
        await super()._discard_session(session_id, transport)
        self._touched.pop(session_id, None)
        self._unverified.discard(session_id)
        if (holder := self._holder.pop(session_id, None)) is not None:
            held = self._held[holder]
            del held[session_id]
            if not held:
                del self._held[holder]


def _requestor(scope: Any) -> AuthorizationContext | None:
    """The principal a request's session must belong to (the SDK compares it)."""
    user = scope.get("user")
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


async def _refuse(send: Any, reason: str, retry_after: int = 5) -> None:
    """503 with -32004 and ``Retry-After``: no room for the session now, or no store to find it in."""
    if (record := current_request.get()) is not None:
        record.rpc_error = UNAVAILABLE
    body = wire.error_body(UNAVAILABLE, reason)
    await send_json(send, 503, body, [(b"retry-after", str(retry_after).encode())])
