"""Session ids that any process holding the server secret can verify without a lookup
(``<random>.<HMAC>``), and the secret itself, kept in the state directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import structlog

from mcphost.state.sessions import private_directory

log = structlog.get_logger("mcphost.sessions")


class SessionIds:
    """Issues session ids signed with the server secret, and verifies them."""

    def __init__(self, secret: bytes):
        self._secret = secret

    def new(self) -> str:
        """A fresh id: 16 random bytes and their truncated HMAC-SHA256, base64url, dot-joined."""
        token = secrets.token_urlsafe(16)
        return f"{token}.{self._sign(token)}"

    def verify(self, session_id: str) -> bool:
        """Whether ``session_id`` was issued with this secret (constant-time)."""
        token, _, signature = session_id.partition(".")
        return bool(token) and hmac.compare_digest(signature, self._sign(token))

    def _sign(self, token: str) -> str:
        digest = hmac.new(self._secret, token.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_secret(path: Path) -> bytes:
    """The server secret in ``path``, created (32 random bytes, mode 0600) when missing.

    Replicas that share sessions must share this file's content.
    """
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        private_directory(path.parent)
        secret = secrets.token_hex(32).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(secret)
        log.info("created a session secret", path=str(path))
    if len(secret) < 16:
        raise ValueError(f"the session secret in {path} is shorter than 16 bytes")
    return secret
