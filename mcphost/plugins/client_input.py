"""Asking the client for input in the middle of a call: elicitation, sampling, roots.

One API serves both protocol eras. On a 2025-11-25 session the question is a request to
the client on the call's own stream, answered while the tool waits. A 2026-07-28
request has no such channel: the question is collected, the call ends with an
``InputRequiredResult`` naming it, and the client calls again with the answer. The tool
then runs again from the start and, asking the same question (under the same key),
gets the answer at once. Answers from earlier rounds ride ``requestState``, which the
SDK's ``RequestStateBoundary`` seals, so a tool may ask one question per round for as
many rounds as it needs, or several at once with ``ToolContext.gather``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from mcphost.core.errors import ToolError
from mcphost.ops.log import current_caller

ResultT = TypeVar("ResultT", bound=BaseModel)

_STATE_KEY = "mcphost.answers"
"""The key under which this module keeps answers in the (sealed) ``requestState``."""

MAX_QUESTIONS_PER_CALLER = 8
"""Questions (2025-11-25 requests to the client) one authenticated caller may leave
unanswered at once. Each holds a slot of its plugin's ``max_concurrency`` while it waits, so
without a bound one caller that never answers would take every slot from the others."""

_waiting: Counter[str | None] = Counter()
"""Questions waiting for an answer, by caller (identity key)."""

_CAPABILITIES = {
    "elicitation/create": ("elicitation", types.ClientCapabilities(elicitation=types.ElicitationCapability())),
    "sampling/createMessage": ("sampling", types.ClientCapabilities(sampling=types.SamplingCapability())),
    "roots/list": ("roots", types.ClientCapabilities(roots=types.RootsCapability())),
}


class InputRequired(BaseException):
    """This round of the call cannot finish before the client answers the questions asked.

    A ``BaseException``, like cancellation, so a tool's own ``except Exception`` does not
    swallow it; the host turns it into an ``InputRequiredResult``.
    """


class ClientInputError(ToolError):
    """The client cannot be asked (it lacks the capability, or the connection has no way
    to reach it) or refused the request; the message says which."""


@dataclass
class Exchange:
    """The questions and answers of one call (one round, on 2026-07-28)."""

    modern: bool
    """Whether questions travel as ``InputRequiredResult`` rounds (2026-07-28) rather than requests."""
    offered: dict[str, Any] = field(default_factory=dict)
    """Answers the client sent this round or carried over from earlier rounds, by key."""
    used: dict[str, Any] = field(default_factory=dict)
    """Answers the tool has consumed in this round, carried over to the next one."""
    asked: dict[str, types.InputRequest] = field(default_factory=dict)
    """Questions without an answer yet, sent back to the client in the ``InputRequiredResult``."""
    count: int = 0

    @classmethod
    def for_request(cls, ctx: ServerRequestContext[Any, Any], params: types.InputResponseRequestParams) -> Exchange:
        """The exchange of one request: answers carried in ``request_state`` plus this round's responses."""
        offered = _carried(params.request_state)
        for key, response in (params.input_responses or {}).items():
            offered[key] = response.model_dump(by_alias=True, mode="json", exclude_none=True)
        return cls(ctx.protocol_version in MODERN_PROTOCOL_VERSIONS, offered)

    def next_key(self, kind: str) -> str:
        """A key for a question asked without one: stable as long as the tool asks the same
        questions in the same order each round."""
        self.count += 1
        return f"{kind}-{self.count}"

    def result(self) -> types.InputRequiredResult:
        """What the client gets when the round ends with questions open."""
        return types.InputRequiredResult(
            input_requests=dict(self.asked), request_state=json.dumps({_STATE_KEY: self.used})
        )


def _carried(state: str | None) -> dict[str, Any]:
    # The state was sealed by the SDK's boundary, so only this module could have written
    # it; a state in another shape is a tool's own low-level state and carries nothing here.
    try:
        answers = json.loads(state)[_STATE_KEY] if state else {}
    except (ValueError, TypeError, KeyError):
        return {}
    return dict(answers) if isinstance(answers, dict) else {}


async def ask(
    ctx: ServerRequestContext[Any, Any],
    exchange: Exchange,
    key: str,
    request: types.InputRequest,
    result_type: type[ResultT],
) -> ResultT:
    """Put ``request`` to the client and return its answer.

    Raises :class:`InputRequired` (2026-07-28, not answered yet), :class:`ClientInputError`
    (2025-11-25: the client cannot or will not answer) or, on 2026-07-28 to a client that did
    not declare the capability, the protocol's ``MissingRequiredClientCapability`` error.
    """
    name, capability = _CAPABILITIES[request.method]
    if not ctx.session.check_client_capability(capability):
        if exchange.modern:
            # 2026-07-28 has an error for exactly this, and the client learns what to declare.
            data = types.MissingRequiredClientCapabilityErrorData(required_capabilities=capability)
            raise MCPError(
                code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                message=f"This request needs the client's {name} capability",
                data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
            )
        raise ClientInputError(f"the client does not support {name}")
    if exchange.modern:
        if key in exchange.offered:
            try:
                answer = result_type.model_validate(exchange.offered[key], by_name=False)
            except ValidationError:
                pass  # not an answer to this question: ask again
            else:
                exchange.used[key] = exchange.offered[key]
                return answer
        exchange.asked[key] = request
        raise InputRequired
    asker = current_caller()
    caller = asker.key if asker is not None else None
    if caller is not None and _waiting[caller] >= MAX_QUESTIONS_PER_CALLER:
        raise ClientInputError(
            f"{MAX_QUESTIONS_PER_CALLER} questions to this caller are waiting for its answers already"
        )
    _waiting[caller] += 1
    try:
        return await ctx.session.send_request(
            request, result_type, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
        )
    except NoBackChannelError:
        raise ClientInputError(f"this connection cannot carry {request.method} to the client") from None
    except MCPError as error:
        raise ClientInputError(f"the client answered {request.method} with an error: {error}") from None
    finally:
        _waiting[caller] -= 1
        if not _waiting[caller]:
            del _waiting[caller]
