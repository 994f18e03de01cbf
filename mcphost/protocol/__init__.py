"""MCP itself: the handlers over the registry, the wire checks, the direct answers,
subscriptions and tracing of MCP messages.

It may import auth and everything below it; it knows nothing of HTTP servers or ASGI apps.
"""
