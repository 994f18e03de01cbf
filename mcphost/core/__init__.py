"""The vocabulary every layer shares: the configuration models and the error codes.

It imports nothing else of mcphost.
"""
