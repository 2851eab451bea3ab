"""Locks that cost nothing when free, for py-libp2p's per-frame paths.

In trio, acquiring even a free ``trio.Lock`` is a checkpoint: the task goes back to the
run queue and waits for a whole scheduler round (an ``epoll_wait`` and the bookkeeping
around it, a few tens of µs here). py-libp2p 0.8.1 takes such locks several times per
frame only to check state that no other task can change meanwhile (the critical
sections hold no ``await``): ``NetStream``'s state lock on every read and write, and the
Yamux connection's ``streams_lock`` on every read and every frame received.

:func:`take` acquires a lock at once when it is free and nobody waits for it, and waits
in line otherwise: the exclusion and the FIFO order are trio's own. :class:`FastLock` is
a ``trio.Lock`` with that acquire. :func:`install` gives every new ``NetStream`` and
``Yamux`` connection a :class:`FastLock` for those two locks, and every connection's two
write locks (Yamux's and the TCP stream's) a :class:`HandoffLock`, which another task
may release.

A task that only takes free locks does not yield: each of the patched paths still
reaches a real checkpoint (a socket wait, or the one checkpoint kept per frame written,
see :mod:`raftd.transport.yamuxsend`), so no task can hold the loop. Like
:mod:`raftd.transport.tcpread`, this patches the library's classes once, at host
creation; upstream, it belongs in the library itself.
"""

from __future__ import annotations

import types
from typing import Any

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.network.stream.net_stream import NetStream
from libp2p.stream_muxer.yamux.yamux import Yamux

__all__ = ["FastLock", "HandoffLock", "install", "take", "take_all"]


async def take(lock: trio.Lock | trio.Semaphore) -> None:
    """Acquire ``lock``: at once and without a checkpoint when it is free and nobody
    waits for it, else by waiting in line as ``lock.acquire()`` does."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


async def take_all(sem: trio.Semaphore, total: int) -> None:
    """Acquire ``total`` slots of ``sem`` (all of them, to wait until whatever holds one
    is done): the free ones at once, then one wait per slot still held, then a single
    checkpoint. Acquiring them one checkpoint each costs a scheduler round per slot,
    seconds of busy loop for a semaphore of a thousand slots."""
    for _ in range(total):
        try:
            sem.acquire_nowait()
        except trio.WouldBlock:
            await sem.acquire()
    await trio.lowlevel.checkpoint()


class FastLock:
    """A ``trio.Lock`` whose uncontended acquire is not a checkpoint (see module doc).
    Subclasses may hold a ``trio.Semaphore`` of one instead."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock: trio.Lock | trio.Semaphore = trio.Lock()

    async def acquire(self) -> None:
        await take(self._lock)

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        lock = self._lock
        return lock.locked() if isinstance(lock, trio.Lock) else lock.value == 0

    def statistics(self) -> Any:
        return self._lock.statistics()

    async def __aenter__(self) -> None:
        await take(self._lock)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._lock.release()


class HandoffLock(FastLock):
    """A FIFO lock that any task may release, with :class:`FastLock`'s acquire.

    A ``trio.Lock`` belongs to the task that took it. The two write locks of a
    connection (Yamux's and the TCP stream's) are sometimes taken by one task and
    released by another: a direct write from the Raft loop that the socket took only in
    part leaves them held, with the rest of the frame, for the stream's sender task to
    finish (:mod:`raftd.transport.directwrite`). Exclusion and order are those of a
    ``trio.Semaphore`` of one."""

    __slots__ = ()

    def __init__(self) -> None:
        self._lock = trio.Semaphore(1, max_value=1)


_NETSTREAM_INIT = NetStream.__init__
_YAMUX_INIT = Yamux.__init__
_TCP_INIT = TrioTCPStream.__init__


def _netstream_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _NETSTREAM_INIT(self, *args, **kwargs)
    self._state_lock = FastLock()


def _yamux_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _YAMUX_INIT(self, *args, **kwargs)
    self.streams_lock = FastLock()
    self._write_lock = HandoffLock()


def _tcp_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _TCP_INIT(self, *args, **kwargs)
    self.write_lock = HandoffLock()


def install() -> None:
    """Give new ``NetStream`` and ``Yamux`` objects their :class:`FastLock`, and new
    ``Yamux`` connections and TCP streams a :class:`HandoffLock` to write under.
    Idempotent."""
    NetStream.__init__ = _netstream_init  # type: ignore[method-assign]
    Yamux.__init__ = _yamux_init  # type: ignore[method-assign]
    TrioTCPStream.__init__ = _tcp_init  # type: ignore[method-assign]
