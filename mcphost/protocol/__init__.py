"""MCP itself: the handlers over the registry, the wire checks, the direct answers,
subscriptions, tracing of MCP messages, and the SDK's per-revision models.

It may import auth and everything below it; it knows nothing of HTTP servers or ASGI apps.
"""
