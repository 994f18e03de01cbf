"""Path confinement: every path a tool touches is resolved and checked against the roots.

The rule is simple and applied everywhere: resolve the path with ``os.path.realpath``
(following every symlink, collapsing every ``..``), then require the result to lie inside
one of the realpath'd roots. A symlink is therefore judged by where it points, never by
where it sits.

Residual risk (time of check to time of use): someone who can write inside a root could
swap a checked directory for a symlink between the check and the ``open``. Two things
narrow that window: files and directories are opened with ``O_NOFOLLOW`` (so a symlink
swapped in as the last component fails to open), and on Linux the opened descriptor's real
path is read back from ``/proc/self/fd`` and checked against the roots again, so what is
read is always inside them. Without ``/proc`` only the pre-open check remains, and a swap
of an intermediate directory could then win the race.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from mcphost import ToolError

BINARY_SNIFF_BYTES = 8192
"""How much of a file's start is checked for a NUL byte to tell binary from text."""

_SHOWN_MAX = 200

_FILE_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    # A FIFO (or one swapped in after the check) would otherwise block the open forever.
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_DIR_FLAGS = _FILE_FLAGS | getattr(os, "O_DIRECTORY", 0)


def shown(path: str) -> str:
    """The user's path as it goes into a message: quoted, escaped and shortened.

    Messages quote what the caller sent, never what a symlink resolved to, so a refusal
    does not reveal where a link outside the roots points.
    """
    text = repr(path)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 4] + "...'"


class Refused(ToolError):
    """A path resolved outside every root; a ToolError so the caller sees the message."""


def refusal(path: str, why: str = "") -> Refused:
    """The error for a path that resolves outside every root."""
    return Refused(f"{shown(path)} is outside the allowed roots{why}")


def os_failure(error: OSError, path: str) -> ToolError:
    """An OS error as a short message about the caller's path (no traceback, no resolved path)."""
    return ToolError(f"cannot access {shown(path)}: {error.strerror or type(error).__name__}")


class Roots:
    """The configured roots, realpath'd once per call so a root that appears (or whose
    symlink changes) after start-up is picked up without a reload."""

    def __init__(self, configured: Sequence[Path]) -> None:
        self.configured = [Path(p) for p in configured]
        self.real = [Path(os.path.realpath(p)) for p in self.configured]

    def root_of(self, real: Path) -> int | None:
        """The index of the first root containing the resolved path ``real``, if any."""
        # is_relative_to compares whole components, so /x/root-evil is not inside /x/root.
        for index, root in enumerate(self.real):
            if real == root or real.is_relative_to(root):
                return index
        return None

    def contains(self, real: Path) -> bool:
        """Whether the resolved path ``real`` lies inside one of the roots."""
        return self.root_of(real) is not None

    def resolve(self, path: str) -> Path:
        """Resolve ``path`` (absolute, or relative to the first root) and require it inside a root.

        Raises ToolError for a path outside every root, a NUL byte, no configured roots, or
        a root that does not exist on this host.
        """
        if not self.configured:
            raise ToolError("no roots are configured: set plugins.files.settings.roots")
        if "\x00" in path:
            raise refusal(path, " (it contains a NUL byte)")
        # os.path.join drops the root when path is absolute, which is what we want.
        real = Path(os.path.realpath(os.path.join(self.configured[0], path)))
        index = self.root_of(real)
        if index is None:
            raise refusal(path)
        if not os.path.isdir(self.real[index]):
            raise ToolError(f"root {str(self.configured[index])!r} does not exist on this host")
        return real

    def _verify_open(self, fd: int, path: str) -> None:
        """Check what the descriptor really refers to (Linux), closing the race with the open."""
        try:
            actual = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc here: the pre-open resolution is all we have
            return
        if not self.contains(Path(actual.removesuffix(" (deleted)"))):
            raise refusal(path)

    @contextlib.contextmanager
    def open_file(self, real: Path, path: str) -> Iterator[tuple[int, os.stat_result]]:
        """Open the resolved regular file ``real`` read-only; yields ``(fd, fstat)``.

        ``path`` is the caller's spelling, used in messages.
        """
        try:
            fd = os.open(real, _FILE_FLAGS)
        except OSError as error:
            raise os_failure(error, path) from None
        try:
            self._verify_open(fd, path)
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise ToolError(f"{shown(path)} is a directory, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"{shown(path)} is not a regular file")
            yield fd, info
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def open_dir(self, real: Path, path: str) -> Iterator[int]:
        """Open the resolved directory ``real``; yields a descriptor for ``os.scandir``."""
        try:
            fd = os.open(real, _DIR_FLAGS)
        except OSError as error:
            raise os_failure(error, path) from None
        try:
            self._verify_open(fd, path)
            yield fd
        finally:
            os.close(fd)


def pread_upto(fd: int, size: int, offset: int) -> bytes:
    """Read up to ``size`` bytes at ``offset``, looping over short reads; shorter only at EOF."""
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def is_binary(fd: int) -> bool:
    """Whether the open file has a NUL byte in its first ``BINARY_SNIFF_BYTES`` bytes."""
    return b"\x00" in pread_upto(fd, BINARY_SNIFF_BYTES, 0)
