"""Hostile plugins: each misbehaves as an attacker writing a plugin would (path plugins, never installed)."""
