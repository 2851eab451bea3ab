"""One Yamux frame written to the socket from the calling task, without a coroutine
chain or a cancel scope, when nothing stands in its way.

Through py-libp2p 0.8.1 (even with :mod:`raftd.transport.yamuxsend` and
:mod:`raftd.transport.tcpread`) a frame sent on a stream passes six coroutine layers
(``NetStream``, Yamux stream and connection, the secure session, Noise, the length
prefix, TCP), and a bounded, shielded write wraps them in a cancel scope. At one write
in flight that is about a fifth of a daemon's Python function calls per write, although
in the usual case nothing in it waits: the locks are free, the send window holds the
frame and the socket takes it whole.

:meth:`DirectWriter.write_nowait` does that usual case synchronously, with the same
effects in the same order as the library's path: the same checks of the stream's state
and window, the window taken, one Yamux DATA frame, encrypted by the session's own Noise
state and length-prefixed, written to the socket with the connection's and the socket's
write locks held. When any condition does not hold it does nothing and says so (the
caller uses the library's write, which waits, raises or reports as the library does).

Once the frame is encrypted it is committed: the Noise nonce is used, and a connection
that does not get the whole frame is garbage. If the socket takes only part of it, the
rest is returned with both locks still held, and :meth:`DirectWriter.finish` must send
it (the caller bounds that wait and shields it from outside cancellation, then aborts
the connection on a timeout, exactly as for a stuck write on the library's path).

The object resolves the layers once per stream; :func:`direct_writer` returns None for
any stack it does not know (a private-network wrapper, another muxer or security
transport), and those keep the library's path. Upstream, this fast path belongs in the
library's write methods themselves.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Final

import trio
from libp2p.network.stream.net_stream import StreamState
from libp2p.security.noise.io import (
    MAX_PLAINTEXT_LENGTH,
    SIZE_NOISE_MESSAGE_LEN,
)
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from raftd.netio.sockio import SocketIO
from raftd.transport.directread import noise_over_tcp
from raftd.transport.tcpread import io_of

__all__ = ["DirectWriter", "direct_writer", "finish_within", "write_within"]

_HEADER = struct.Struct(_yamux.YAMUX_HEADER_FORMAT)
#: Payload bytes of one DATA frame that also fit one Noise message.
_MAX_DATA: Final = min(_yamux.MAX_MESSAGE_SIZE, MAX_PLAINTEXT_LENGTH) - _yamux.HEADER_SIZE
_WRITABLE: Final = (StreamState.OPEN, StreamState.CLOSE_READ)
_yamux_log = logging.getLogger(_yamux.__name__)


class DirectWriter:
    """The synchronous write path of one libp2p stream (see the module docstring).
    Used by the stream's one writer task only."""

    __slots__ = ("_conn", "_io", "_noise", "_stream", "_tcp", "_ys")

    def __init__(self, stream: Any, ys: Any, conn: Any, noise: Any, tcp: Any, io: SocketIO) -> None:
        self._stream = stream
        self._ys = ys
        self._conn = conn
        self._noise = noise
        self._tcp = tcp
        self._io = io

    def write_nowait(self, data: bytes) -> bool | memoryview:
        """Write ``data`` as one frame now if nothing would wait.

        False: nothing was done (a lock is held, the window is short, the stream is not
        open for writing, the frame is too large, or Yamux debug logging is on); write
        with the library's method. True: the whole frame is in the socket. A memoryview:
        the frame is committed and this tail of it is still to be written, with both
        write locks held: call :meth:`finish` with it. Raises
        ``trio.BrokenResourceError`` / ``trio.ClosedResourceError`` if the socket failed
        (the locks are released; the connection is unusable)."""
        ys = self._ys
        n = len(data)
        if (
            n == 0
            or n > _MAX_DATA
            or n > ys.send_window
            or ys.send_closed
            or ys.closed
            or self._stream._state not in _WRITABLE
            or self._stream._state_lock.locked()
            or ys.rw_lock._writer_lock.value != 1
            or ys.window_lock.locked()
            or _yamux_log.isEnabledFor(logging.DEBUG)
        ):
            return False
        conn_lock = self._conn._write_lock
        tcp_lock = self._tcp.write_lock
        if conn_lock.locked() or tcp_lock.locked():
            return False
        # A lock nobody holds has nobody waiting for it (trio hands a released lock or
        # semaphore to the next waiter at once), so both are taken here without fail.
        conn_lock.acquire_nowait()
        tcp_lock.acquire_nowait()
        try:
            ys.send_window -= n
            enc = self._noise.noise_state.encrypt(
                _HEADER.pack(0, _yamux.TYPE_DATA, 0, ys.stream_id, n) + data
            )
            packet = len(enc).to_bytes(SIZE_NOISE_MESSAGE_LEN, "big") + enc
            sent = self._io.send_nowait(packet)
        except BaseException:
            tcp_lock.release()
            conn_lock.release()
            raise
        if sent == len(packet):
            tcp_lock.release()
            conn_lock.release()
            return True
        return memoryview(packet)[sent:]

    async def finish(self, rest: memoryview) -> None:
        """Send the tail :meth:`write_nowait` returned, then release the locks (also when
        this is cancelled or fails, after which the connection must be dropped)."""
        try:
            await self._io.send_all(rest)
        finally:
            self._tcp.write_lock.release()
            self._conn._write_lock.release()


def direct_writer(stream: Any) -> DirectWriter | None:
    """A :class:`DirectWriter` for ``stream`` (a libp2p ``NetStream``) if it runs over
    Yamux over Noise over a plain TCP socket, else None."""
    try:
        ys = stream.muxed_stream
        conn = ys.conn
        session = conn.secured_conn
        stream._state_lock.locked  # noqa: B018 - present, or the stack is unknown
    except AttributeError:
        return None
    found = noise_over_tcp(session) if isinstance(ys, YamuxStream) else None
    if found is None:
        return None
    noise, tcp = found
    return DirectWriter(stream, ys, conn, noise, tcp, io_of(tcp))


async def write_within(
    stream: Any, writer: DirectWriter | None, data: bytes, seconds: float
) -> bool:
    """Write ``data`` on ``stream`` (a libp2p stream; ``writer`` its
    :class:`DirectWriter`, if it has one) within ``seconds``, shielded from outside
    cancellation: a write cut short would leave part of a frame, or a used Noise nonce,
    on a connection other streams share. A write that need not wait is done at once,
    without a cancel scope. False if the time ran out: the connection may then hold
    part of a frame and must be dropped. The write's own errors propagate."""
    if writer is not None:
        rest = writer.write_nowait(data)
        if rest is True:
            return True
        if isinstance(rest, memoryview):
            return await finish_within(writer, rest, seconds)
    with trio.move_on_after(seconds) as scope:
        scope.shield = True
        await stream.write(data)
        return True
    return False


async def finish_within(writer: DirectWriter, rest: memoryview, seconds: float) -> bool:
    """:meth:`DirectWriter.finish` within ``seconds``, shielded from outside cancellation
    (see :func:`write_within`); False if the time ran out (drop the connection). The
    locks are released either way; the write's own errors propagate."""
    with trio.move_on_after(seconds) as scope:
        scope.shield = True
        await writer.finish(rest)
        return True
    return False
