"""Who is calling and what they may do: API keys, OAuth access tokens, identities and their
scopes, and rate limits.

It may import plugins and everything below it; it knows nothing of MCP handlers or HTTP.
"""
