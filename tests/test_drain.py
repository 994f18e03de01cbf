"""The drain's own bookkeeping, on a clock the test moves: when it waits, and when it cancels.

The deployment tests (``test_deploy``, ``test_systemd_acceptance``) restart real daemons under
load; this one pins the order of events they hit only now and then.
"""

from __future__ import annotations

import contextlib

import trio
import trio.testing

from mcphost.ops.drain import Drain


async def test_a_request_coming_in_after_the_last_ended_is_waited_for_not_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The last request in flight ends, and before the drain's task runs another one comes in
    on a connection still open (its answer will close it): the drain waits for that one too,
    and cancels nothing while its deadline has not passed."""
    drain = Drain()
    outcome: list[str] = []

    async def answer(request: contextlib.AbstractContextManager[None]) -> None:
        with drain.call() as scope:
            await trio.sleep(1.0)
        request.__exit__(None, None, None)
        outcome.append("cancelled" if scope.cancelled_caught else "answered")

    first, second = drain.request(), drain.request()
    first.__enter__()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain.drain, 5.0)
        await trio.testing.wait_all_tasks_blocked()
        # No checkpoint between the two: the drain's task is woken, but has not run yet.
        first.__exit__(None, None, None)
        second.__enter__()
        nursery.start_soon(answer, second)
    assert outcome == ["answered"]
    assert trio.current_time() < 5.0


async def test_a_call_still_running_at_the_deadline_is_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    """What the drain is for: past its deadline, a call still running is cancelled (and
    answered with an error by the protocol layer), and the drain returns once it has ended."""
    drain = Drain()
    outcome: list[str] = []

    async def call() -> None:
        with drain.request(), drain.call() as scope:
            await trio.sleep(60)
        outcome.append("cancelled" if scope.cancelled_caught else "answered")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        await drain.drain(5.0)
    assert outcome == ["cancelled"]
    assert 5.0 <= trio.current_time() < 6.0
