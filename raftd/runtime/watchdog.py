"""Event-loop stall watchdog.

Every task of a daemon shares one trio loop: a synchronous call that runs for seconds
(a slow import, a large JSON dump, a blocked C call) stalls Raft ticks, heartbeats and
API deadlines together, and the symptom seen from outside is a request answered late or
an election nobody asked for. The watchdog makes such stalls visible: it measures how
late timers wake up. A lateness above ``warn_s`` is logged once per stall (with its
length) and counted; the longest is kept for ``/metrics``.

The timers measured are the groups' tickers, which report every wake-up
(:meth:`LoopWatchdog.timer_fired`), and the watchdog's own, which sleeps ``interval_s``.
A group's loop reports each time it runs (:meth:`LoopWatchdog.loop_ran`), which proves
the loop is not stalled at that moment: every report pushes the watchdog's own wake-up
back, so while a group runs (a leader's ticker, a follower's heartbeats) the watchdog
itself does not wake (an idle daemon's wake-ups cost CPU; this one would be four a
second). A stall longer than ``interval_s`` still fires the watchdog's timer, late by
the stall less at most ``interval_s``, as a watchdog waking every interval would see
it. A stall seen by several timers at once (they all wake late together) is counted
once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import trio

__all__ = ["LoopWatchdog"]

log = logging.getLogger("raftd.watchdog")


@dataclass
class LoopWatchdog:
    """Run with ``nursery.start_soon(w.run)``; read ``stalls`` and ``longest_s``
    (``wakeups`` counts the watchdog's own timer firing)."""

    interval_s: float = 0.25
    warn_s: float = 1.0
    stalls: int = 0
    longest_s: float = 0.0
    wakeups: int = 0
    _scope: trio.CancelScope | None = field(default=None, repr=False)
    # When the last stall counted ended (trio time), so that the timers that woke late
    # from that same stall do not count it again.
    _stall_end: float = field(default=-math.inf, repr=False)
    _pushed_at: float = field(default=-math.inf, repr=False)

    def observe(self, late_s: float, now: float = math.inf) -> None:
        """Record one wake-up that came ``late_s`` seconds after it was due, at ``now``
        (trio time; without it, the stall is not matched against others and counts)."""
        self.longest_s = max(self.longest_s, late_s)
        if late_s < self.warn_s:
            return
        if now != math.inf and now - late_s < self._stall_end:
            return  # the same stall, seen by another timer
        self._stall_end = now
        self.stalls += 1
        log.warning(
            "event loop stalled for %.1fs (timers, heartbeats and API deadlines "
            "were late by as much); is the host overloaded?",
            late_s,
        )

    def timer_fired(self, late_s: float) -> None:
        """Another task's timer woke ``late_s`` seconds after its deadline (call from
        inside ``trio.run``): recorded as a wake-up of the watchdog's own, whose next one
        moves to ``interval_s`` from now."""
        now = trio.current_time()
        self.observe(late_s, now)
        self._push(now)

    def loop_ran(self, now: float) -> None:
        """A task runs at ``now`` (trio time): the loop is not stalled now, so the
        watchdog's own wake-up moves to ``interval_s`` from now. Cheap enough for every
        wake-up of a busy task (it moves the timer at most four times an interval)."""
        if now - self._pushed_at >= self.interval_s * 0.25:
            self._push(now)

    def _push(self, now: float) -> None:
        scope = self._scope
        # A scope already cancelled has fired (its deadline passed, before any task of
        # this round ran): leave it, so that the watchdog measures that lateness.
        if scope is not None and not scope.cancel_called:
            self._pushed_at = now
            scope.deadline = now + self.interval_s

    async def run(self) -> None:
        while True:
            with trio.CancelScope(deadline=trio.current_time() + self.interval_s) as sc:
                self._scope = sc
                try:
                    await trio.sleep_forever()
                finally:
                    self._scope = None
            self.wakeups += 1
            now = trio.current_time()
            self.observe(now - sc.deadline, now)
