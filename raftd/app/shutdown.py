"""The shutdown bound: once a shutdown is asked for, the process is gone within a fixed
time, whatever a task, a library or the event loop itself does.

:class:`ShutdownGuard` is a plain thread, not a trio task, because the event loop may be
what is stuck (a blocking call, a wedged task that ignores cancellation). Armed when
SIGTERM or SIGINT arrives, it waits the bound; if the process is still there, it logs
what the daemon was doing (its shutdown phase and every thread's stack) and ends the
process with :data:`EXIT_SHUTDOWN_BOUND` through ``os._exit``: no further cleanup that
could hang too.

Nothing acknowledged is lost by that: an acknowledged write was fsynced on a majority
before its acknowledgement, and LevelDB recovers from an interrupted write as it does
from ``kill -9`` (see the crash test).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable

__all__ = ["EXIT_SHUTDOWN_BOUND", "ShutdownGuard", "shutdown_bound_s"]

log = logging.getLogger("raftd.shutdown")

#: Exit status of a shutdown cut short by the bound (``timeout``'s convention).
EXIT_SHUTDOWN_BOUND = 124

#: Added to the leadership hand-over's two election timeouts.
GRACE_S = 5.0

#: The guard ends the process this much before the bound: logging the stacks, the exit
#: itself and a signal handled late on a loaded host fit in it, so the process is gone
#: by the documented bound as seen by whoever sent the signal.
EXIT_MARGIN_S = 0.5


def shutdown_bound_s(election_s: float) -> float:
    """Two election timeouts for the hand-over plus :data:`GRACE_S`."""
    return 2 * election_s + GRACE_S


class ShutdownGuard:
    """See the module docstring. ``phase`` says what the daemon was doing; it is read
    from the guard's thread only to be logged."""

    def __init__(self, bound_s: float, phase: Callable[[], str]) -> None:
        self.bound_s = bound_s
        self._phase = phase
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """Start the countdown (idempotent: the first call counts)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="raftd-shutdown-guard", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        threading.Event().wait(max(0.0, self.bound_s - EXIT_MARGIN_S))
        stacks = []
        for tid, frame in sys._current_frames().items():
            if tid == threading.get_ident():
                continue
            name = next((t.name for t in threading.enumerate() if t.ident == tid), str(tid))
            stacks.append(f"thread {name}:\n" + "".join(traceback.format_stack(frame)))
        log.error(
            "shutdown did not finish within %.1f s (still: %s); exiting with status %d. "
            "Threads:\n%s",
            self.bound_s,
            self._phase(),
            EXIT_SHUTDOWN_BOUND,
            "\n".join(stacks),
        )
        for h in logging.getLogger().handlers:
            try:
                h.flush()
            except Exception:  # exiting anyway: a broken handler must not stop it
                continue
        os._exit(EXIT_SHUTDOWN_BOUND)
