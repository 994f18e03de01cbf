"""The cost of reading a frame of the worker wire: ``python bench/wire_decode.py``.

:func:`mcphost.plugins.worker.wire.decode` reads a frame with orjson unless it holds a long
run of digits (an integer past 64 bits, which orjson would round to a float), and then with
the standard library. This times, per frame and in one run, orjson alone, ``decode`` and the
standard library on the frames of a call (the daemon's request, the worker's answer, a
large answer) and on one that takes the slower way, and prints microseconds, what ``decode``
adds to orjson alone (the check's cost on the common path) and their ratio. CPU time of this process,
so the load of a shared machine moves it less than wall-clock time would.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from mcphost.plugins.worker.wire import decode, encode

META = {
    "call": 41,
    "request_id": "0f8e6c2a9d4b4e7f8a1c3b5d7e9f1a2b",
    "session": "kZq3JzV1c2VyIjoiYWxpY2UiLCJpYXQiOjE3NjQ5MDAwMDB9.Qm9iIGlzIHlvdXIgdW5jbGU",
    "protocol_version": "2025-11-25",
    "identity": {"subject": "alice", "key": "ci-runner", "scopes": ["tools:*"]},
    "capabilities": {"elicitation": {"form": {}}, "roots": {"listChanged": True}},
    "input_responses": {},
    "request_state": None,
    "budget": 29.99971234,
}
FRAMES = {
    "call request": {
        "jsonrpc": "2.0",
        "id": 41,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 2, "b": 3}, "_meta": {"mcphost/request": META}},
    },
    "call answer": {
        "jsonrpc": "2.0",
        "id": 41,
        "result": {
            "status": "ok",
            "result": {
                "content": [{"type": "text", "text": "5"}],
                "structuredContent": {"result": 5},
                "isError": False,
            },
        },
    },
    "64 KiB answer": {
        "jsonrpc": "2.0",
        "id": 42,
        "result": {"status": "ok", "result": {"content": [{"type": "text", "text": "log line 12345\n" * 4369}]}},
    },
    "long integer": {
        "jsonrpc": "2.0",
        "id": 43,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 2**70, "b": 3}, "_meta": {"mcphost/request": META}},
    },
}


def per_call(function: Callable[[bytes], Any], frame: bytes, seconds: float = 0.3) -> float:
    """Microseconds of CPU per call of ``function`` on ``frame``: the best of five runs."""
    rounds = 1
    while True:
        start = time.process_time()
        for _ in range(rounds):
            function(frame)
        if time.process_time() - start >= seconds / 5:
            break
        rounds *= 4
    best = min(_timed(function, frame, rounds) for _ in range(5))
    return best / rounds * 1e6


def _timed(function: Callable[[bytes], Any], frame: bytes, rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        function(frame)
    return time.process_time() - start


def main() -> None:
    """Print the table."""
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    row = "{:<14} {:>7} {:>10} {:>10} {:>9} {:>9} {:>14}"
    print(row.format("frame", "bytes", "orjson µs", "decode µs", "added µs", "json µs", "decode/orjson"))
    for name, message in FRAMES.items():
        frame = encode(message).rstrip(b"\n")
        assert decode(frame) == json.loads(frame)
        fast, ours, stdlib = (per_call(f, frame) for f in (orjson.loads, decode, json.loads))
        figures = (f"{x:.2f}" for x in (fast, ours, ours - fast, stdlib, ours / fast))
        print(row.format(name, len(frame), *figures))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
