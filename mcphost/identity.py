"""Who is calling, and which tools they may see and call.

An :class:`Identity` is made by :mod:`mcphost.auth` from the request's credentials (an API
key, or an OAuth access token) and rides on the request's record (:mod:`mcphost.log`), so the
protocol handlers, the request log line and ``ctx.identity`` all read the same one. A request
without one (a loopback daemon with no authentication configured, or stdio) may use every tool.

This module is import-light on purpose: the protocol path and plugins' contexts import it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import mcp_types as types

from mcphost.log import current_request

if TYPE_CHECKING:
    from mcphost.ratelimit import Rate
    from mcphost.registry import Registry


class ToolScope:
    """The tools an identity may use: glob patterns over public tool names (``sysinfo_*``).

    Answers are memoised per tool name and the filtered ``tools/list`` result per registry
    snapshot, so after the first request both are a dictionary lookup. Scopes are shared
    between identities with the same patterns (see :func:`tool_scope`).
    """

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(sorted(set(patterns)))
        self.everything = "*" in self.patterns
        self._match = re.compile("|".join(fnmatch.translate(p) for p in self.patterns) or r"(?!)").match
        self._allowed: dict[str, bool] = {}
        self._listed: tuple[Registry, types.ListToolsResult] | None = None

    def allows(self, name: str) -> bool:
        """Whether the tool named ``name`` is within this scope."""
        if self.everything:
            return True
        allowed = self._allowed.get(name)
        if allowed is None:
            # Only names of served tools reach here (callers look the tool up first), so
            # the memo is bounded by the catalogue.
            allowed = self._allowed[name] = self._match(name) is not None
        return allowed

    def listed(self, registry: Registry) -> types.ListToolsResult:
        """``tools/list`` for this scope: the registry's pre-built result, filtered once per snapshot."""
        if self.everything:
            return registry.tools_result
        cached = self._listed
        if cached is None or cached[0] is not registry:
            result = types.ListToolsResult(tools=[t.wire for t in registry.tools.values() if self.allows(t.name)])
            cached = self._listed = (registry, result)
        return cached[1]


@lru_cache(maxsize=1024)
def tool_scope(patterns: frozenset[str]) -> ToolScope:
    """The shared :class:`ToolScope` of a set of patterns (OAuth tokens with the same scopes share one)."""
    return ToolScope(patterns)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller."""

    name: str
    """The API key's name, or the access token's subject; never a secret. Logged with every request."""
    kind: Literal["key", "oauth"]
    tools: ToolScope
    rate: Rate | None = None
    """This caller's own request budget, overriding ``[rate_limits] identity``."""
    user: Any = field(default=None, compare=False)
    """The SDK's ``AuthenticatedUser``, set as ``scope["user"]`` so a 2025-11-25 session stays
    bound to the credential that opened it."""
    key: str = field(init=False)
    """The rate limiter's key for this caller (names are unique per kind, not across kinds)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}:{self.name}")


def current_identity() -> Identity | None:
    """The identity of the request being served, or ``None`` when no authentication applies."""
    record = current_request.get()
    return None if record is None else record.identity


def may_use(tool: str) -> bool:
    """Whether the current caller may see and call the tool named ``tool``."""
    identity = current_identity()
    return identity is None or identity.tools.allows(tool)


def visible_tools(registry: Registry) -> types.ListToolsResult:
    """``tools/list`` as the current caller sees it."""
    identity = current_identity()
    return registry.tools_result if identity is None else identity.tools.listed(registry)
