"""``prctl(2)``, for what a process asks of the kernel about itself: the fork server and its
workers (subreaper, not dumpable, ended with their parent), and a worker of ``[server]
workers`` (ended with its master)."""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    """``prctl(2)`` with one argument; raises :class:`OSError` if the kernel refuses."""
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
