"""Yamux frames read under py-libp2p without the library's per-frame overhead, for the
two kinds that make up nearly all traffic.

py-libp2p 0.8.1's ``Yamux.handle_incoming`` formats four or five debug lines for every
frame whatever the log level (one builds a dict of type names and a list of flag
names), and reads every DATA body under its own ``trio.fail_after`` (a
``contextmanager`` and a cancel scope with a deadline). On an idle leader those are a
large share of what a heartbeat's answer costs to receive.

:func:`install` puts a fast path in front of the library's loop, at the one place it
reads a frame header. A header is taken by the fast path when the frame is

- a DATA frame without flags for a stream the connection knows, whose whole body is
  already decrypted in the secure session's buffer (the usual case: a Raft frame fits
  one Noise message), or
- a WINDOW_UPDATE without flags for a known stream,

It does what the library's loop does for that frame (append the body to the stream's
buffer and charge its receive window, clamping and warning on overrun, wake its reader;
or credit the send window; finalize a stream that was already closed), with no
``await`` in between, and reads the next header. A stream read by push
(:mod:`raftd.transport.yamuxpush`) gets the body handed to its sink instead of buffered,
while its buffer is empty.

The library takes the connection's ``streams_lock`` and the stream's ``window_lock``
around those updates. The fast path does not need them: outside this same read loop,
the library never holds either lock across an ``await`` (``Yamux.close`` aside, which
holds ``streams_lock`` while it sends GO_AWAY and then shuts everything down), so
whenever this code runs, a holder is a task that has not yet started its critical
section, and code without an ``await`` cannot interleave with it. Checking the locks
instead would be worse than useless: trio hands a released lock to the next waiter
before that waiter runs, so a lock with a queue looks held at every frame, and sending
each frame to the library to wait in that queue keeps the queue alive, and almost no
frame would take the fast path. Every other frame (SYN, ACK, FIN, RST,
PING, GO_AWAY, a body not yet in the buffer, an unknown stream) is handed to the
library's loop unchanged, and the library reads and handles it as before. The body of a
frame that must still arrive is read bounded by the library's timeout, as before.

On a Noise-over-TCP connection, headers and such bodies are read from the secure session
by :class:`~raftd.transport.directread.NoiseReader`, which decrypts whole Noise messages
from the TCP buffer into the session's buffer in one layer; other stacks read through
the library's ``read_exactly``.

Like :mod:`raftd.transport.yamuxsend`, this patches the library's classes once, at
host creation; upstream, it belongs in ``Yamux.handle_incoming`` itself.
"""

from __future__ import annotations

import logging
import struct
import weakref
from typing import Any

import trio
from libp2p.io.utils import read_exactly as _library_read_exactly
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import Yamux

from raftd.transport.directread import NoiseReader, noise_reader

__all__ = ["SINK_ATTR", "counts", "install", "installed"]

_HEADER = struct.Struct(_yamux.YAMUX_HEADER_FORMAT)
_HEADER_SIZE = _yamux.HEADER_SIZE
_DATA = _yamux.TYPE_DATA
_WINDOW_UPDATE = _yamux.TYPE_WINDOW_UPDATE
_MAX_BODY = _yamux.MAX_WINDOW_SIZE
_yamux_log = logging.getLogger(_yamux.__name__)

_ORIGINAL_HANDLE_INCOMING = Yamux.handle_incoming
_ORIGINAL_READ_DATA_BODY = Yamux._read_data_body
#: Frame headers taken by the fast path and handed to the library, since start.
counts = {"taken": 0, "passed": 0, "pushed": 0}
#: The attribute of a stream that holds its push sink (see raftd.transport.yamuxpush).
SINK_ATTR = "_raftd_sink"
#: Which connection (secure session) feeds which muxer's loop, and the session's direct
#: reader (raftd.transport.directread), if its stack has one.
_MUXERS: weakref.WeakKeyDictionary[Any, tuple[weakref.ref[Any], NoiseReader | None]] = (
    weakref.WeakKeyDictionary()
)


def _take(mux: Any, conn: Any, header: bytes) -> bool:
    """Handle the frame of ``header`` here if it is of the fast kinds (module doc); False
    leaves it, body unread, to the library."""
    _version, typ, flags, sid, length = _HEADER.unpack(header)
    if flags or mux.event_shutting_down.is_set():
        return False
    stream = mux.streams.get(sid)
    if stream is None:
        return False
    if typ == _DATA:
        buf = mux.stream_buffers.get(sid)
        event = mux.stream_events.get(sid)
        if (
            buf is None
            or event is None
            or not 0 < length <= _MAX_BODY
            or conn.high_watermark - conn.low_watermark < length
        ):
            return False
        body = conn._drain(length)
        stream.recv_window -= len(body)
        if stream.recv_window < 0:
            _yamux_log.warning(
                "Stream %d: peer exceeded receive window by %d bytes", sid, -stream.recv_window
            )
            stream.recv_window = 0
        sink = getattr(stream, SINK_ATTR, None)
        if sink is not None and not buf:
            # Pushed to a PushReader (raftd.transport.yamuxpush): no buffer, no wake-up.
            counts["pushed"] += 1
            sink(body)
            if stream.closed:
                event.set()  # the reader sees the end (the bookkeeping goes below)
        else:
            buf.extend(body)
            event.set()
    elif typ == _WINDOW_UPDATE:
        stream.send_window += length
    else:
        return False
    if stream.closed:
        mux._finalize_stream_locked(stream, fully_closed=True)
    return True


async def _read_exactly(reader: Any, n: int, *args: Any, **kwargs: Any) -> bytes:
    """``read_exactly`` as the Yamux loop sees it: for a frame header on a connection
    with a registered muxer, the fast frames are handled here and the first other
    header is returned."""
    entry = _MUXERS.get(reader) if n == _HEADER_SIZE else None
    mux = entry[0]() if entry is not None else None
    if entry is None or mux is None:
        return await _library_read_exactly(reader, n, *args, **kwargs)
    direct = entry[1]
    while True:
        if direct is not None:
            header = await direct.read_exactly(reader, n)
        else:
            header = await _library_read_exactly(reader, n, *args, **kwargs)
        if len(header) != _HEADER_SIZE or not _take(mux, reader, header):
            counts["passed"] += 1
            return header
        counts["taken"] += 1


async def _handle_incoming(self: Any) -> None:
    conn = self.secured_conn
    if isinstance(conn, SecureSession):
        _MUXERS[conn] = (weakref.ref(self), noise_reader(conn))
    await _ORIGINAL_HANDLE_INCOMING(self)


async def _read_data_body(self: Any, length: int) -> bytes:
    # The library's body read, bounded as the library bounds it. Not through the
    # patched read_exactly: a body that happens to be a header's size is never taken
    # for a header.
    conn = self.secured_conn
    entry = _MUXERS.get(conn)
    direct = entry[1] if entry is not None else None
    with trio.fail_after(_yamux._yamux_data_read_timeout()):
        if direct is not None:
            return await direct.read_exactly(conn, length)
        return await _library_read_exactly(conn, length)


def install() -> None:
    """Put the fast path in front of every ``Yamux`` connection's read loop. Idempotent."""
    _yamux.read_exactly = _read_exactly  # type: ignore[attr-defined]
    Yamux.handle_incoming = _handle_incoming  # type: ignore[method-assign]
    Yamux._read_data_body = _read_data_body  # type: ignore[method-assign]


def installed() -> bool:
    """Whether the fast path is in place."""
    return Yamux.handle_incoming is _handle_incoming
