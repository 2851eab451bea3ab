"""Frame writes under py-libp2p's Yamux without a scheduler round per lock.

In trio, acquiring even a free lock is a checkpoint: the task goes back to the run queue
and waits for a whole scheduler round (an ``epoll_wait`` and the bookkeeping around
it). py-libp2p 0.8.1 writes one Yamux frame through five of them: the stream's
read-write lock and window lock, the connection's write lock, the TCP stream's write
lock, and trio's ``send_all``; ``Yamux._write_frame`` then checkpoints once more and
formats a debug line for every frame whatever the log level. Measured on a 3-node
cluster at one put in flight, each frame sent cost about eight task steps, and each
step a few tens of µs of the event loop.

:func:`install` replaces two methods of the library's classes:

- ``YamuxStream.write``: when the stream is open, its locks are free and its send window
  holds the whole payload (the usual case for a Raft frame), the frame is built without
  an ``await`` (so no other task can see the window half-updated, which is what the
  locks are for) and handed to the connection; otherwise the library's own method runs;
- ``Yamux._write_frame``: the connection's write lock is taken without a checkpoint when
  it is free (in FIFO order behind any waiter otherwise), the debug line is formatted
  only when that level is on, and the one checkpoint at the end is kept, so a task that
  writes in a loop still lets the others run and still sees a cancellation.

Below them, :mod:`raftd.transport.tcpread` writes the TCP socket the same way.
The bytes on the wire and their order are unchanged, and so is what the locks exclude.
Like :mod:`raftd.transport.tcpread`, this patches the library's classes once, at host
creation; upstream, it belongs in the library itself.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import trio
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

from raftd.transport.fastlock import take

__all__ = ["install"]

_HEADER = struct.Struct(_yamux.YAMUX_HEADER_FORMAT)
_MAX_PAYLOAD = _yamux.MAX_MESSAGE_SIZE - _yamux.HEADER_SIZE
_yamux_log = logging.getLogger(_yamux.__name__)

_ORIGINAL_STREAM_WRITE = YamuxStream.write
_ORIGINAL_WRITE_FRAME = Yamux._write_frame


async def _stream_write(self: Any, data: bytes) -> None:
    n = len(data)
    if (
        0 < n <= _MAX_PAYLOAD
        and n <= self.send_window
        and not (self.send_closed or self.closed)
        and self.rw_lock._writer_lock.value == 1  # no writer, no reader
        and not self.window_lock.locked()
    ):
        self.send_window -= n
        await self.conn._write_frame(_HEADER.pack(0, _yamux.TYPE_DATA, 0, self.stream_id, n) + data)
        return
    await _ORIGINAL_STREAM_WRITE(self, data)


async def _write_frame(self: Any, data: bytes) -> None:
    if _yamux_log.isEnabledFor(logging.DEBUG):
        await _ORIGINAL_WRITE_FRAME(self, data)
        return
    lock = self._write_lock
    await take(lock)
    try:
        await self.secured_conn.write(data)
    finally:
        lock.release()
    await trio.lowlevel.checkpoint()


def install() -> None:
    """Patch the two methods (see the module docstring). Idempotent."""
    YamuxStream.write = _stream_write  # type: ignore[method-assign]
    Yamux._write_frame = _write_frame  # type: ignore[method-assign]
