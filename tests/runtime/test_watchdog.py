"""The event-loop watchdog notices a blocked loop, and only that; while other tasks
report that they run (a group's ticker and loop), its own timer does not wake, and a
stall still is seen, once."""

from __future__ import annotations

import logging
import time

import pytest
import trio
import trio.testing

from raftd.runtime.watchdog import LoopWatchdog


def test_observe_counts_only_stalls_over_the_threshold(caplog: pytest.LogCaptureFixture) -> None:
    w = LoopWatchdog(warn_s=1.0)
    with caplog.at_level(logging.WARNING, logger="raftd.watchdog"):
        w.observe(0.01)
        w.observe(0.99)
        assert w.stalls == 0 and not caplog.records
        w.observe(2.5)
    assert w.stalls == 1 and w.longest_s == 2.5
    assert "stalled for 2.5s" in caplog.text


async def test_a_blocking_call_is_reported() -> None:
    w = LoopWatchdog(interval_s=0.05, warn_s=0.3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run)
        await trio.sleep(0.1)
        time.sleep(0.5)  # noqa: ASYNC251 - blocks the loop, as a synchronous call would
        with trio.fail_after(5):
            while w.stalls == 0:  # noqa: ASYNC110 - polling the counter is the point
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert w.longest_s >= 0.3


def test_reports_keep_the_watchdogs_own_timer_asleep() -> None:
    """Virtual time: a task reporting every 50 ms (a ticker, then a loop) for 10 s."""

    async def main() -> None:
        w = LoopWatchdog(interval_s=0.25, warn_s=1.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(100):
                await trio.sleep(0.05)
                w.timer_fired(0.0)
            for _ in range(100):
                await trio.sleep(0.05)
                w.loop_ran(trio.current_time())
            assert w.wakeups == 0
            await trio.sleep(1.0)  # nobody reports: the watchdog's own timer runs again
            assert 3 <= w.wakeups <= 4  # every 0.25 s, from the last push
            nursery.cancel_scope.cancel()
        assert w.stalls == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_stall_between_reports_is_seen_once() -> None:
    """A task reports as it runs; the loop blocks; the watchdog's timer and a ticker's
    both wake late from the same stall: one stall counted."""
    w = LoopWatchdog(interval_s=0.05, warn_s=0.3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run)

        async def ticker() -> None:
            while True:
                due = trio.current_time() + 0.02
                await trio.sleep_until(due)
                w.timer_fired(trio.current_time() - due)
                w.loop_ran(trio.current_time())

        nursery.start_soon(ticker)
        await trio.sleep(0.1)
        time.sleep(0.5)  # noqa: ASYNC251 - blocks the loop, as a synchronous call would
        with trio.fail_after(5):
            while w.stalls == 0:  # noqa: ASYNC110 - polling the counter is the point
                await trio.sleep(0.01)
        await trio.sleep(0.2)  # every timer that was late has woken by now
        nursery.cancel_scope.cancel()
    assert w.stalls == 1
    assert w.longest_s >= 0.4


def test_loop_ran_after_the_timer_fired_leaves_its_lateness() -> None:
    """A report that comes in the round the watchdog's timer fired in (after a stall)
    does not move that deadline: the stall is measured."""

    async def main() -> None:
        w = LoopWatchdog(interval_s=0.25, warn_s=1.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await trio.testing.wait_all_tasks_blocked()
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            clock.jump(3.0)  # time passes with no task run: a stall
            w.loop_ran(trio.current_time())  # runs before the watchdog's task
            await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert w.stalls == 1 and w.longest_s >= 2.7

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
