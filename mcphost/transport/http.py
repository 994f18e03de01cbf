"""The ASGI application: ``/mcp`` (the SDK's Streamable HTTP transport), ``/health``,
``/ready`` and, with OAuth, the protected resource metadata; one log line per request.

The path of a request reads top to bottom in :meth:`HttpApp.__call__`: lifespan, then
routing, then (for ``/mcp``) the request record, the Host and Origin check
(:mod:`mcphost.transport.origins`), authentication and the caller's request budget
(:meth:`HttpApp._admitted`), the body (within ``body_timeout``), the checks of
:mod:`mcphost.protocol.wire`, then the session manager. Nothing here knows about plugins.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import trio
from starlette.types import Message, Receive, Scope, Send

from mcphost.auth.authenticator import Authenticator, Denial
from mcphost.auth.ratelimit import RateLimits
from mcphost.core.errors import INVALID_REQUEST, RATE_LIMITED, UNAVAILABLE
from mcphost.ops.drain import Drain
from mcphost.ops.log import RequestRecord, current_request
from mcphost.protocol import wire
from mcphost.transport import batch
from mcphost.transport.asgi import (
    ReadyCheck,
    Replay,
    acknowledge_lifespan,
    has_body,
    read_body,
    send_complete,
    send_json,
    send_too_large,
)
from mcphost.transport.connection import HANGUP
from mcphost.transport.proxy import TrustedProxies

if TYPE_CHECKING:
    from mcphost.ops.metrics import Metrics
    from mcphost.protocol.direct import DirectAnswers
    from mcphost.protocol.tracing import Tracing
    from mcphost.transport.metrics_endpoint import MetricsEndpoint
    from mcphost.transport.origins import HostCheck
    from mcphost.transport.sessions import PersistentSessionManager

log = structlog.get_logger("mcphost.http")

T = TypeVar("T")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


_JSON = (b"content-type", b"application/json")


def answering_id(send: Send, request_id: Any) -> Send:
    """``send`` that puts ``request_id`` into a 404 or 503 JSON-RPC error answered with
    ``"id": null`` (the SDK's "Session not found" and "Too many open sessions" know no id)."""
    if request_id is None or isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return send
    held: Message | None = None

    async def send_with_id(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] in (404, 503):
            held = message  # until the body shows whether it names the id
            return
        if held is not None and message["type"] == "http.response.body":
            start, held = held, None
            body = wire.decoded(message.get("body", b""))
            if isinstance(body, dict) and "error" in body and body.get("id") is None:
                payload = json.dumps({**body, "id": request_id}, separators=(",", ":")).encode()
                headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
                start = {**start, "headers": [*headers, (b"content-length", str(len(payload)).encode())]}
                message = {**message, "body": payload}
            await send(start)
        await send(message)

    return send_with_id


class HeldAnswer:
    """The SDK's answer to a 2025-era POST that carries no request (a notification, or the
    client's response), held until the SDK is done with the message.

    The SDK answers such a POST 202 *before* it hands the message to the session. A client
    holding its 202 may end the session at once (DELETE); the hand-off then fails, and the
    SDK answers the same request a second time, with 500, which the server cannot send. Held,
    the 202 reaches the client only once the message is in the session; if the session
    ended first, the client gets the 404 of a session that is gone (the message went nowhere).
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        """Keep one part of the SDK's answer."""
        self.messages.append(message)

    async def release(self, send: Send, session_id: str | None) -> None:
        """Send the answer: the SDK's first one, or 404 when it answered twice."""
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        if len(starts) > 1:
            log.info("a message came for a session that ended meanwhile", session_id=session_id)
            await send_json(send, 404, wire.error_body(INVALID_REQUEST, "Session not found"))
            return
        for message in self.messages:
            await send(message)


def _session_id(headers: dict[bytes, bytes]) -> str | None:
    return headers[b"mcp-session-id"].decode("latin-1") if b"mcp-session-id" in headers else None


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _unless_disconnected(scope: Scope, receive: Receive, answering: Awaitable[T]) -> T | None:
    """What ``answering`` returns, or ``None`` (``answering`` cancelled) when the client
    closes the connection first: that is how a 2026-07-28 client cancels a request."""
    hangup = scope.get("state", {}).get(HANGUP)
    if hangup is not None and scope["http_version"] != "2":
        # On HTTP/1 the request is the connection's: the connection says when it closes.
        with hangup.cancelling():
            return await answering
        return None
    # HTTP/2 ends one request by resetting its stream, which only the request's receive tells.
    result: T | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        result = await answering
        nursery.cancel_scope.cancel()
    return result


class HttpApp:
    """The daemon's ASGI app."""

    def __init__(
        self,
        mcp_path: str,
        sessions: PersistentSessionManager,
        ready: ReadyCheck,
        drain: Drain,
        *,
        auth: Authenticator | None = None,
        limits: RateLimits | None = None,
        direct: DirectAnswers | None = None,
        proxies: TrustedProxies | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        public_metrics: MetricsEndpoint | None = None,
        body_timeout: float = math.inf,
        host_check: HostCheck | None = None,
    ):
        self.mcp_path = mcp_path
        self.host_check = host_check
        """The ``Host`` and ``Origin`` allowlists (DNS-rebinding protection) of ``/mcp``."""
        self.body_timeout = body_timeout
        """Seconds a request's body may take to arrive once its headers have."""
        self.proxies = proxies
        self.metrics = metrics
        self.tracing = tracing
        self.public_metrics = public_metrics
        """``/metrics`` on this listener too (``[metrics] public``)."""
        self.sessions = sessions
        self.ready = ready
        self.drain = drain
        self.max_body_bytes = sessions.max_request_body_size
        self.auth = auth
        self.direct = direct
        """Answers the commonest requests without the SDK's transport (``None``: all go the SDK's way)."""
        self.limits = limits or RateLimits()
        verifier = auth.verifier if auth else None
        # RFC 9728 metadata, at the path-suffixed location and at the bare one clients also try.
        self.well_known = dict.fromkeys(verifier.metadata_paths, verifier.metadata) if verifier else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await acknowledge_lifespan(receive, send)
            return  # websockets are not part of MCP; Hypercorn closes the connection
        if self.proxies is not None:
            # First, so everything after (the Host check, the log line) sees what the
            # client used, not the proxy's hop.
            self.proxies.apply(scope)
        if scope["path"] == self.mcp_path:
            await self._mcp(scope, receive, send)
        elif scope["path"] == "/health":
            await send_json(send, 200, {"status": "ok"})
        elif scope["path"] == "/ready":
            # Only the verdict here: plugin errors may name paths and hosts; the admin
            # listener (mcphost.transport.admin) has the detail.
            ok, report = await self.ready()
            await send_json(send, 200 if ok else 503, {"status": report["status"]})
        elif scope["path"] in self.well_known:
            headers = [_JSON, (b"access-control-allow-origin", b"*"), (b"cache-control", b"public, max-age=3600")]
            await send_complete(send, 200, headers, self.well_known[scope["path"]])
        elif scope["path"] == "/metrics" and self.public_metrics is not None:
            await self.public_metrics.metrics_page(scope, receive, send)
        elif self.auth is not None and (refusal := self.auth.not_oauth(scope["path"])) is not None:
            await send_json(send, *refusal, [(b"access-control-allow-origin", b"*")])
        else:
            await send_json(send, 404, {"error": "not found", "mcp_endpoint": self.mcp_path})

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        record = RequestRecord(given if _REQUEST_ID.match(given) else secrets.token_hex(8))
        record.session_id = headers.get(b"mcp-session-id", b"").decode("latin-1")[:64] or None
        status = 0
        unread_body = has_body(headers)

        async def receive_tracked() -> Message:
            nonlocal unread_body
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                unread_body = False
            return message

        async def send_with_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"mcp-session-id":
                        record.session_id = value.decode("latin-1")
                headers_out = [*message.get("headers", ()), (b"x-request-id", record.request_id.encode())]
                if unread_body or self.drain.draining:
                    # Answered before the body was read (a refusal): the server cannot reuse
                    # the connection, so the client must not either. Draining: this process
                    # is going, so the client's (or proxy's) next request must open a
                    # connection, which the next process or another replica takes. (In place
                    # of the SDK's "keep-alive" on event streams, not beside it.)
                    headers_out = [(k, v) for k, v in headers_out if k.lower() != b"connection"]
                    headers_out.append((b"connection", b"close"))
                message = {**message, "headers": headers_out}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Shielded, the response's last part: the SDK cancels its tasks when the client
                # disconnects, or when the session ends under an open stream (a DELETE, a
                # deletion elsewhere, shutdown), and a cancelled last send leaves Hypercorn
                # half-way: a connection to close stays open, and one to keep is no longer
                # timed as idle, so it stays open for as long as the client keeps it.
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        token = current_request.set(record)
        # The client's trace context, so the SDK's span (in another task) continues its trace.
        trace_token = self.tracing.enter(headers, record) if self.tracing is not None else None
        try:
            # The Host and Origin first: a page a DNS-rebinding attack runs gets nothing, not
            # even the verdict on a credential.
            if self.host_check is not None and await self.host_check.refused(scope, send_with_record):
                return
            if await self._admitted(scope, send_with_record, headers, record):
                await self._checked(scope, receive_tracked, send_with_record, headers, record)
        finally:
            current_request.reset(token)
            if trace_token is not None and self.tracing is not None:
                self.tracing.leave(trace_token)
            if status >= 400 and record.method is None and self.metrics is not None and scope["method"] == "POST":
                # Refused before any MCP handler saw it (which would have counted it).
                self.metrics.refused_request(headers, status, record.rpc_error)
            client = scope.get("client")
            log.info(
                "request",
                request_id=record.request_id,
                session_id=record.session_id,
                http_method=scope["method"],
                status=status,
                duration_ms=round((time.perf_counter() - record.start) * 1000, 2),
                client=client[0] if client else None,
                **record.fields(),
            )

    async def _admitted(self, scope: Scope, send: Send, headers: dict[bytes, bytes], record: RequestRecord) -> bool:
        """Authenticate the caller and count a POST against its budget; answer and return
        ``False`` when either refuses. Reads headers only: a refused body is never read."""
        identity = None
        if self.auth is not None:
            outcome = await self.auth.authenticate(headers.get(b"authorization"))
            if isinstance(outcome, Denial):
                record.rpc_error, record.auth_error = outcome.code, outcome.message
                if self.metrics is not None:
                    self.metrics.auth_failed(outcome.status, outcome.code)
                await send_json(send, outcome.status, wire.error_body(outcome.code, outcome.message), outcome.headers())
                return False
            record.identity = identity = outcome
            # The SDK binds a 2025-11-25 session to this principal: another one gets 404.
            scope["user"] = outcome.user
            # The credential stops here: nothing past this point (the SDK, plugins) sees it.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        if scope["method"] == "POST":
            decision = await self.limits.check_request(identity)
            if decision is not None and not decision.allowed:
                record.rpc_error = RATE_LIMITED
                if self.metrics is not None:
                    self.metrics.rate_limit_hit("identity")
                message = f"Rate limit exceeded: {decision.rate.text} per caller"
                body = wire.error_body(RATE_LIMITED, message, data={"retry_after": round(decision.retry_after, 3)})
                await send_json(send, 429, body, decision.headers())
                return False
        return True

    async def _checked(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], record: RequestRecord
    ) -> None:
        """Refuse what the SDK would answer wrongly (see :mod:`mcphost.protocol.wire`), then hand over to it."""
        if scope["method"] == "POST":
            with self.drain.request():
                await self._checked_post(scope, receive, send, headers, record)
        elif scope["method"] == "GET" and self.drain.draining:
            # No new event streams: a GET may be retried, on the next process or replica.
            await self._refuse_while_draining(send, record)
        else:
            if b"last-event-id" in headers and self.sessions.event_store is None:
                # Nothing to resume from, and the SDK would leave the request unanswered:
                # serve the GET as a fresh stream.
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"last-event-id"]}
            if has_body(headers):
                # Read here, within the time allowed, not by the SDK, which waits for a slow
                # body as long as it takes.
                body = await self._body(receive, send, record)
                if body is None:
                    return
                receive = Replay(body, receive)
            await self.sessions.handle_request(scope, receive, send)

    async def _body(self, receive: Receive, send: Send, record: RequestRecord) -> bytes | None:
        """The request's body; ``None`` once the answer is sent: 413 past ``max_body_bytes``,
        408 when it has not all arrived within ``body_timeout`` seconds."""
        try:
            body = await read_body(receive, self.max_body_bytes, self.body_timeout)
        except trio.TooSlowError:
            record.rpc_error = INVALID_REQUEST
            message = f"Request body not received within {self.body_timeout:g}s"
            await send_json(send, 408, wire.error_body(INVALID_REQUEST, message))
            return None
        if body is None:
            await send_too_large(send)
        return body

    async def _checked_post(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], record: RequestRecord
    ) -> None:
        body = await self._body(receive, send, record)
        if body is None:
            return
        version = headers[b"mcp-protocol-version"].decode("latin-1") if b"mcp-protocol-version" in headers else None
        if version is not None and version not in wire.SUPPORTED_VERSIONS:
            error = wire.version_error(version, body)
            record.rpc_error = error["error"]["code"]
            await send_json(send, 400, error)
            return
        if version in wire.MODERN_PROTOCOL_VERSIONS:
            # The SDK answers a malformed 2026-07-28 body itself, and rightly.
            message = wire.decoded(body)
            method = headers.get(b"mcp-method", b"").decode("latin-1")
        else:
            message, problem = wire.parse(body)
            if isinstance(message, list) and await self._takes_batches(headers, version):
                await batch.answer(self.sessions.handle_request, scope, message, send, self.sessions.json_response)
                return
            if problem is not None:
                record.rpc_error = problem["error"]["code"]
                await send_json(send, 400, problem)
                return
            method = message.get("method")
        send = answering_id(send, message.get("id") if isinstance(message, dict) else None)
        # While draining, a request on a connection already open is still answered (the
        # answer closes the connection): refused, a POST would fail, since neither a client
        # nor a proxy may resend one; no new connection reaches this process meanwhile.
        if self.direct is not None:
            taken = self.direct.takes(message)
            if taken and await self._answer_directly(scope, receive, send, headers, message, version):
                return
            if method == "notifications/cancelled" and version not in wire.MODERN_PROTOCOL_VERSIONS:
                self._cancel_direct(scope, headers, message)
        replaying = Replay(body, receive)
        request = isinstance(message, dict) and "method" in message and "id" in message
        held = HeldAnswer() if version not in wire.MODERN_PROTOCOL_VERSIONS and not request else None
        try:
            await self.sessions.handle_request(scope, replaying, send if held is None else held.send)
        finally:
            replaying.close()
        if held is not None:
            await held.release(send, _session_id(headers))

    async def _takes_batches(self, headers: dict[bytes, bytes], version: str | None) -> bool:
        """Whether the POST is on a session that negotiated 2025-03-26, which takes batches
        (its clients may send no ``MCP-Protocol-Version``: the session says)."""
        session_id = _session_id(headers)
        if session_id is None or version not in (None, batch.BATCH_VERSION):
            return False
        return version == batch.BATCH_VERSION or await self.sessions.protocol_version(session_id) == batch.BATCH_VERSION

    async def _answer_directly(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_headers: dict[bytes, bytes],
        message: dict[str, Any],
        version: str | None,
    ) -> bool:
        """Answer a request :mod:`mcphost.protocol.direct` takes, with one JSON body; ``False`` when a
        check on the way says the SDK must answer it instead (nothing has run then)."""
        assert self.direct is not None
        direct, sse = self.direct, not self.sessions.json_response
        headers: list[tuple[bytes, bytes]] = []
        if version in wire.MODERN_PROTOCOL_VERSIONS:
            call = direct.prepared(message, version)
            if call is None or not await direct.modern_route(scope, message, sse):
                return False
            if call.method == "tools/call":
                answer = await _unless_disconnected(scope, receive, direct.answer(call))
                if answer is None:
                    return True  # cancelled: the client has gone
            else:
                answer = await direct.answer(call)  # a listing is built at once: nothing to cancel
        else:
            session_id = _session_id(request_headers)
            with self.sessions.serving(session_id, scope) as connection:
                if connection is None or not await direct.legacy_route(scope, sse):
                    return False
                call = direct.prepared(message, connection.protocol_version)
                if call is None:
                    return False
                assert session_id is not None
                with direct.cancellable(session_id, call.request_id) as cancel_scope:
                    answer = await direct.answer(call)
                if cancel_scope.cancelled_caught:
                    answer = 200, direct.cancelled(call.request_id)
            headers.append((b"mcp-session-id", session_id.encode("latin-1")))
        status, payload = answer
        await send_complete(send, status, [_JSON, *headers], payload)
        return True

    def _cancel_direct(self, scope: Scope, headers: dict[bytes, bytes], message: Any) -> None:
        """Pass a 2025-11-25 ``notifications/cancelled`` to the direct answers of its session
        (the SDK, which gets it too, knows only the requests it runs itself)."""
        assert self.direct is not None
        session_id = _session_id(headers)
        with self.sessions.serving(session_id, scope) as connection:
            if connection is not None and session_id is not None:
                self.direct.cancel(session_id, message)

    @staticmethod
    async def _refuse_while_draining(send: Send, record: RequestRecord) -> None:
        record.rpc_error = UNAVAILABLE
        body = wire.error_body(UNAVAILABLE, "Server is shutting down")
        await send_json(send, 503, body, [(b"retry-after", b"5")])
