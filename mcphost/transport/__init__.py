"""HTTP: the ASGI apps of the MCP endpoint and the admin listener, the Hypercorn accept loop,
reverse-proxy headers, Host and Origin checks, and the Streamable HTTP sessions.

It may import protocol and everything below it; nothing below imports it.
"""
