"""One long-lived writer thread per database: the event loop hands it blocking writes.

Why not ``trio.to_thread.run_sync`` per write: on the hot path (one log write per Raft
Ready, thousands a second) its per-call costs add up: a thread-cache hand-off, a thread
rename (``prctl``) per job, a context copy. Here a job is one queue put, and its
completion one ``run_sync_soon`` that reschedules the waiting task. Writes run in the
order they were submitted, one at a time.

The event loop never waits on the disk: while a write (and its fsync) runs in the
thread, heartbeats, votes and reads keep flowing.

Lifetime: started at the first :meth:`WriterThread.run`, stopped by :meth:`close`, which
lets queued writes finish first. The thread is a daemon thread, so a wedged disk cannot
keep the process alive after the event loop has gone.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

__all__ = ["WriterThread"]

T = TypeVar("T")

_Job = tuple[
    Callable[[Any], Any], Any, trio.lowlevel.TrioToken, Callable[["outcome.Outcome[Any]"], None]
]


class WriterThread:
    """See the module docstring. Thread-safe; :meth:`run` must be called from trio."""

    def __init__(self, name: str = "raftd-writer") -> None:
        self.name = name
        self._q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[[Any], T], arg: Any) -> T:
        """Run ``fn(arg)`` in the writer thread and return its result (or raise its
        exception). Not cancellable: a write cannot be taken back once queued, so the
        caller waits for it to land (cancellation is seen at its next checkpoint)."""
        task = trio.lowlevel.current_task()
        self.submit(fn, arg, functools.partial(trio.lowlevel.reschedule, task))
        result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return result

    def submit(
        self, fn: Callable[[Any], Any], arg: Any, on_done: Callable[[outcome.Outcome[Any]], None]
    ) -> None:
        """Queue ``fn(arg)`` and return at once; ``on_done(outcome)`` runs later on the
        calling trio loop's thread (from ``run_sync_soon``: it must not block). Lets the
        caller keep working while the write and its fsync run."""
        with self._lock:
            if self._closed:
                raise RuntimeError("writer thread closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()
        self._q.put((fn, arg, trio.lowlevel.current_trio_token(), on_done))

    def _main(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            fn, arg, token, on_done = job
            result = outcome.capture(fn, arg)
            # If the loop that asked is gone, nobody is waiting.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(on_done, result)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread once the queued writes are done (bounded by ``timeout``)."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._q.put(None)
            thread.join(timeout)
