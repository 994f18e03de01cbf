"""``mcphost`` with tracemalloc on, for attributing memory: the same command line as the
``mcphost`` script (``python bench/apps/traced_mcphost.py serve --config X --port N``).

SIGUSR1 takes a snapshot; the second and every later one is compared with the first and
written as JSON to ``$BENCH_TRACEMALLOC_OUT``: the allocations that grew in between, by
file and by line, so the harness can say which code holds each session's memory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tracemalloc
from typing import Any

from mcphost.cli.main import main

SITE = "site-packages/"
_first: list[tracemalloc.Snapshot] = []


def _where(filename: str) -> str:
    # Short, stable names: the package path, without the venv's, interpreter's or checkout's prefix.
    if SITE in filename:
        return filename.split(SITE, 1)[1]
    if "/mcphost/" in filename:
        return "mcphost/" + filename.rsplit("/mcphost/", 1)[1]
    if "/lib/python3" in filename:
        return filename.split("/lib/python3", 1)[1].split("/", 1)[1]
    return filename


def _snapshot(_signum: int, _frame: Any) -> None:
    # Runs between two bytecodes of the main thread: only copies the traces and writes a file.
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if not _first:
        _first.append(snapshot)
        return
    by_file = snapshot.compare_to(_first[0], "filename")
    by_line = snapshot.compare_to(_first[0], "lineno")
    report = {
        "total_bytes": sum(d.size_diff for d in by_file),
        "files": [
            {"file": _where(d.traceback[0].filename), "bytes": d.size_diff, "blocks": d.count_diff}
            for d in by_file[:15]
        ],
        "lines": [
            {
                "file": _where(d.traceback[0].filename),
                "line": d.traceback[0].lineno,
                "bytes": d.size_diff,
                "blocks": d.count_diff,
            }
            for d in by_line[:15]
        ],
    }
    with open(os.environ["BENCH_TRACEMALLOC_OUT"], "w") as out:
        json.dump(report, out)


if __name__ == "__main__":
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, _snapshot)
    sys.argv[0] = "mcphost"
    main(sys.argv[1:])
