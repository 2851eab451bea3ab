"""The event-loop watchdog notices a blocked loop, and only that."""

from __future__ import annotations

import logging
import time

import pytest
import trio

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
