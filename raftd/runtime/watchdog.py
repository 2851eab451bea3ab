"""Event-loop stall watchdog.

Every task of a daemon shares one trio loop: a synchronous call that runs for seconds
(a slow import, a large JSON dump, a blocked C call) stalls Raft ticks, heartbeats and
API deadlines together, and the symptom seen from outside is a request answered late or
an election nobody asked for. The watchdog makes such stalls visible: it sleeps
``interval_s`` and measures how late it woke up. A lateness above ``warn_s`` is logged
once per stall (with its length) and counted; the longest is kept for ``/metrics``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

__all__ = ["LoopWatchdog"]

log = logging.getLogger("raftd.watchdog")


@dataclass
class LoopWatchdog:
    """Run with ``nursery.start_soon(w.run)``; read ``stalls`` and ``longest_s``."""

    interval_s: float = 0.25
    warn_s: float = 1.0
    stalls: int = 0
    longest_s: float = 0.0

    def observe(self, late_s: float) -> None:
        """Record one wake-up that came ``late_s`` seconds after it was due."""
        self.longest_s = max(self.longest_s, late_s)
        if late_s >= self.warn_s:
            self.stalls += 1
            log.warning(
                "event loop stalled for %.1fs (timers, heartbeats and API deadlines "
                "were late by as much); is the host overloaded?",
                late_s,
            )

    async def run(self) -> None:
        while True:
            due = trio.current_time() + self.interval_s
            await trio.sleep_until(due)
            self.observe(trio.current_time() - due)
