"""The plugin runtime: discovery and loading, the registry, what plugins hand the host, the
hook contract, call limits, the fence every plugin call runs in, and the tool's context.

It may import state, ops and core; it knows nothing of callers' credentials, MCP or HTTP.
"""
