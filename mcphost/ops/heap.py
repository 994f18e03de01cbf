"""Python's cyclic garbage collector, set for a long-running server.

Two facts about the daemon drive this. Start-up leaves some 100,000 objects that live as
long as the process (the SDK's and pydantic's models, Trio, the plugins): the ~250
collections Python would run while they are made find next to nothing (a fifth of a cold
start, measured), and every later full collection would traverse them all again, to find
nothing. And each request allocates a few hundred container objects that reference counting
frees on its own; at the default young-generation threshold (700 allocations) they still
set off a young collection every few requests, and with Trio's object graph each one costs
about a millisecond of the event loop. Measured under 50-client load, collections took
7-10 % of the loop's time; with the settings here, well under 1 %.

The daemon settles once, a second after start-up, never after a reload: a full collection
traverses every object not frozen, and each open session owns a few hundred, so it held the
loop for most of a second with 3,000 sessions open. A plugin version a reload replaced is
freed by reference counting as far as it can be; what it leaves in cycles goes with
Python's own full collections if it was loaded after start-up, and stays frozen if it was
loaded before: at most one version of each plugin, however often it is reloaded.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Net container allocations between young collections (Python's default is 700)."""


def pause() -> None:
    """Stop collecting until :func:`settle`: call first thing, before the daemon's imports."""
    gc.disable()


def settle(*, collect: bool = False) -> int:
    """Move every object alive now to the permanent generation, which no collection visits,
    raise the young threshold and collect again (after :func:`pause`). Call when start-up
    or a reload is done.

    With ``collect`` (a second after start-up), what the previous call froze is thawed and
    collected first: what start-up left is garbage now, in cycles only a full collection frees.
    Returns how many unreachable objects that collection found.
    """
    found = 0
    if collect:
        gc.unfreeze()
        found = gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    gc.enable()
    return found
