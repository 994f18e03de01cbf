"""``python -m docgen [DIR]``: write the man pages into DIR (default ``packaging/man``),
where ``packaging/install.sh`` installs them from."""

from __future__ import annotations

import sys
from pathlib import Path

from docgen.man import pages
from docgen.sources import ROOT

MAN_DIR = ROOT / "packaging" / "man"
"""Where the man pages are kept in the checkout."""


def main(argv: list[str]) -> None:
    """Write every man page; say which changed."""
    directory = Path(argv[0]) if argv else MAN_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        path = directory / name
        changed = not path.exists() or path.read_text() != text
        path.write_text(text)
        print(f"{path}: {'written' if changed else 'unchanged'}")


if __name__ == "__main__":
    main(sys.argv[1:])
