"""Other processes' command lines with the secrets they may carry masked.

Command lines are readable by every user (``/proc/<pid>/cmdline``), and programs are
started with passwords in them anyway (``--db-password=…``, ``PGPASSWORD=… psql``,
``redis://:pass@host``). What ``top_processes`` returns goes to an MCP client, and from
there into a model's context, so by default each of these is replaced by ``[redacted]``:

- the value of an environment-style ``NAME=value`` argument (``env FOO=… cmd``, ``make
  TOKEN=…``), whatever the name;
- the value of an option whose name suggests a secret (``password``, ``passwd``, ``pwd``,
  ``secret``, ``token``, ``key``, ``auth``, ``credential``, ``cookie``), given as
  ``--name=value`` or as the argument after ``--name``;
- the password of a URL (``scheme://user:password@host``), anywhere in an argument.

This errs towards masking (``--keyboard-layout=us`` is masked too); the plugin's
``full_command_lines`` setting turns it off.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[redacted]"

_ENVIRONMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.+)$", re.DOTALL)
_SECRET_OPTION = re.compile(r"pass|pwd|secret|token|key|auth|credential|cookie", re.IGNORECASE)
_OPTION = re.compile(r"^(--?[A-Za-z0-9][A-Za-z0-9_.-]*)(=.*)?$", re.DOTALL)


def redacted(argv: Iterable[str]) -> list[str]:
    """``argv`` with every secret-looking value replaced by ``[redacted]``."""
    out: list[str] = []
    mask_next = False
    for argument in argv:
        if mask_next and not argument.startswith("-"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        if (option := _OPTION.match(argument)) is not None:
            name, value = option[1], option[2]
            if _SECRET_OPTION.search(name):
                if value is None:
                    mask_next = True  # --password hunter2
                else:
                    argument = f"{name}={MASK}"
        elif (pair := _ENVIRONMENT.match(argument)) is not None:
            argument = f"{pair[1]}={MASK}"
        out.append(_without_url_passwords(argument))
    return out


def _without_url_passwords(argument: str) -> str:
    # By hand, not by regex: any local user writes command lines, and a regex that
    # backtracks over a 128 KiB argument would hold the daemon.
    if "://" not in argument or "@" not in argument:
        return argument
    parts = argument.split("://")
    for index in range(1, len(parts)):
        authority = re.split(r"[/\s]", parts[index], maxsplit=1)[0]
        userinfo, at, host = authority.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.partition(":")[0]
            parts[index] = f"{user}:{MASK}@{host}" + parts[index][len(authority) :]
    return "://".join(parts)
