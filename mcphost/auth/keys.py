"""API keys: minting, hashing, and reading them from the config, a keys file or a systemd credential.

A token is ``mcph_`` followed by 32 random bytes (``secrets.token_urlsafe``); the prefix makes
a leaked token easy to recognise (and to redact from logs). Only its SHA-256 is ever stored:
a slow password hash buys nothing for 256 bits of randomness, and a fast one keeps each
request's check to one hash and one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from mcphost.auth.identity import Identity
from mcphost.core.config import AuthConfig, ConfigError, KeyConfig, KeysFile
from mcphost.core.problems import Problem, problems_from

TOKEN_PREFIX = "mcph_"
HASH_PREFIX = "sha256:"


def new_token() -> str:
    """A fresh API token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The form a token is stored in: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def config_line(name: str, token_hash: str, tools: Iterable[str], rate_limit: str | None = None) -> str:
    """One TOML line for ``[auth.keys]`` in mcphost.toml, or ``[keys]`` in a keys file."""
    entry = f"hash = {json.dumps(token_hash)}, tools = {json.dumps(list(tools))}"
    if rate_limit:
        entry += f", rate_limit = {json.dumps(rate_limit)}"
    return f"{name} = {{ {entry} }}"


def read_keys(auth: AuthConfig, source: str, *, credential: bool = True) -> dict[str, tuple[KeyConfig, str]]:
    """Every configured key by name, with where it came from: ``[auth.keys]`` in ``source``,
    ``keys_file`` and (unless ``credential`` is false) the systemd credential. Raises
    :class:`ConfigError` on an unreadable or invalid file and on a name or token defined twice."""
    found: dict[str, tuple[KeyConfig, str]] = {}
    sources: list[tuple[str, Mapping[str, KeyConfig]]] = [(source, auth.keys)]
    if auth.keys_file is not None:
        sources.append((str(auth.keys_file), _read_file(auth.keys_file)))
    if auth.credential is not None and credential:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            problem = Problem(
                "auth.credential", "$CREDENTIALS_DIRECTORY is not set (is mcphost running under systemd?)"
            )
            raise ConfigError(source, [problem])
        path = Path(directory) / auth.credential
        sources.append((str(path), _read_file(path)))
    problems: list[Problem] = []
    hashes: dict[str, str] = {}
    for where, keys in sources:
        for name, key in keys.items():
            if name in found:
                problems.append(Problem(f"keys.{name}", f"key {name!r} in {where} is also defined in {found[name][1]}"))
            elif key.hash in hashes:
                other = hashes[key.hash]
                message = f"key {name!r} in {where} has the same token as key {other!r} in {found[other][1]}"
                problems.append(Problem(f"keys.{name}", message))
            else:
                found[name], hashes[key.hash] = (key, where), name
    if problems:
        raise ConfigError(source, problems)
    return found


def _read_file(path: Path) -> Mapping[str, KeyConfig]:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(str(path), [Problem("", f"cannot read keys: {error}")]) from None
    try:
        return KeysFile(**data).keys
    except ValidationError as error:
        raise ConfigError(str(path), problems_from(error, text)) from None


class KeyStore:
    """The configured keys' identities, found by their token in one hash and one lookup."""

    def __init__(self, keys: Iterable[tuple[str, Identity]]):
        # Selector and verifier: the dict is keyed by the first half of the digest, and the
        # whole digest is then compared in constant time. The lookup's timing depends only on
        # a hash, which a caller cannot steer towards a stored one.
        self._keys: dict[bytes, tuple[bytes, Identity]] = {}
        for token_hash, identity in keys:
            digest = bytes.fromhex(token_hash.removeprefix(HASH_PREFIX))
            self._keys[digest[:16]] = (digest, identity)

    def __len__(self) -> int:
        return len(self._keys)

    def tokens(self) -> dict[bytes, str]:
        """Each key's token digest and the identity key (``key:<name>``) it stands for:
        comparing two stores' tells which keys a reload added and removed."""
        return {digest: identity.key for digest, identity in self._keys.values()}

    def lookup(self, token: str) -> Identity | None:
        """The identity of the key whose token this is, or ``None``."""
        digest = hashlib.sha256(token.encode()).digest()
        found = self._keys.get(digest[:16])
        if found is None or not hmac.compare_digest(found[0], digest):
            return None
        return found[1]
