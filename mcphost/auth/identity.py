"""Who is calling, and which tools, prompts and resources they may see and use.

An :class:`Identity` is made by :mod:`mcphost.auth.authenticator` from the request's credentials (an API
key, or an OAuth access token) and rides on the request's record (:mod:`mcphost.ops.log`), so the
protocol handlers, the request log line and ``ctx.identity`` all read the same one. A request
without one (a loopback daemon with no authentication configured, or stdio) may use everything.

This module is import-light on purpose: the protocol path imports it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, cast

from mcphost.ops.log import current_caller

if TYPE_CHECKING:
    from mcphost.core.rate import Rate
    from mcphost.plugins.registry import Listing, Registry


class Scope:
    """What an identity may use: glob patterns (``sysinfo_*``) over the public names of tools
    and prompts, and over resource URIs and URI templates (``jobs://*``). ``*`` is everything.

    Answers about what the catalogue holds are memoised per name, and the filtered listings
    per registry snapshot, so after the first request both are a dictionary lookup. Scopes
    are shared between identities with the same patterns (see :func:`scope_of`).
    """

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(sorted(set(patterns)))
        self.everything = "*" in self.patterns
        self._match = re.compile("|".join(fnmatch.translate(p) for p in self.patterns) or r"(?!)").match
        self._allowed: dict[str, bool] = {}
        self._listed: tuple[Registry, Listing] | None = None

    def allows(self, name: str) -> bool:
        """Whether the tool or prompt named ``name``, or the resource or template with this
        URI, as the catalogue holds it, is within this scope."""
        if self.everything:
            return True
        allowed = self._allowed.get(name)
        if allowed is None:
            # Only names the catalogue holds reach here (callers look them up first), so
            # the memo is bounded by the catalogue.
            allowed = self._allowed[name] = self._match(name) is not None
        return allowed

    def allows_uri(self, uri: str, template: str | None = None) -> bool:
        """Whether a resource URI a caller names is within this scope: it matches a pattern,
        or it is one of a URI ``template`` that does."""
        if self.everything or (template is not None and self.allows(template)):
            return True
        return self._match(uri) is not None  # not memoised: any URI a template matches may come

    def listed(self, registry: Registry) -> Listing:
        """The registry's listings as this scope sees them, filtered once per snapshot."""
        if self.everything:
            return registry.listing
        cached = self._listed
        if cached is None or cached[0] is not registry:
            cached = self._listed = (registry, registry.listing.filtered(self.allows))
        return cached[1]


@lru_cache(maxsize=1024)
def scope_of(patterns: frozenset[str]) -> Scope:
    """The shared :class:`Scope` of a set of patterns (OAuth tokens with the same scopes share one)."""
    return Scope(patterns)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller."""

    name: str
    """The API key's name, or the access token's subject; never a secret. Logged with every request."""
    kind: Literal["key", "oauth"]
    scope: Scope
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
    # Authentication is what sets a request's caller, always to an Identity.
    return cast("Identity | None", current_caller())


def may_use(name: str) -> bool:
    """Whether the current caller may see and use the tool or prompt named ``name`` (or the
    resource or template with this catalogue URI)."""
    identity = current_identity()
    return identity is None or identity.scope.allows(name)


def may_read(uri: str, template: str | None = None) -> bool:
    """Whether the current caller may read (or subscribe to) the resource at ``uri``, which
    ``template`` (a URI template) matched, if it was not a resource of its own."""
    identity = current_identity()
    return identity is None or identity.scope.allows_uri(uri, template)


def visible(registry: Registry) -> Listing:
    """The catalogue's listings as the current caller sees them."""
    identity = current_identity()
    return registry.listing if identity is None else identity.scope.listed(registry)
