"""Test plugins for mcphost: one that behaves (``echo``) and several that misbehave."""
