"""Buffered reads and direct writes under py-libp2p's Noise and Yamux.

py-libp2p 0.8.1 reads each Noise message with two or three ``recv`` calls on the TCP
socket (its 2-byte length, then the body, and Yamux's 12-byte header inside it), each
one a syscall and often a scheduler round. :func:`install` replaces
``libp2p.io.trio.TrioTCPStream.read`` with a version that receives up to 64 KiB at a
time and serves later reads from that buffer: a batch of frames that arrived together
costs one ``recv``, and a read that emptied the socket waits for the next bytes before
it calls ``recv`` again (:class:`~raftd.netio.sockio.SocketIO`). The byte stream
every layer above sees is unchanged (same bytes, same order; a read returns at most
``n`` bytes and at least one, or ``b""`` at the end), and so are the errors. It applies
to every TCP connection of the process. Writes go to the socket at once
(``SocketIO.send_all``), after the stream's write lock taken without a checkpoint when it
is free; errors are the library's (a reset peer is ``ConnectionClosedError``, a stream
closed here ends the write silently).

This is a patch of the library's class, done once at host creation, in place of
changing the installed package: upstream, it belongs in ``TrioTCPStream`` itself.

Each stream also remembers when bytes last arrived (:func:`last_received`): a peer that
is slow to answer one request but still sends on the connection is alive, and its
connection is worth keeping (see ``LibP2PTransport._open_stream``).
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream

from raftd.netio.sockio import SocketIO
from raftd.transport.fastlock import take

__all__ = ["CHUNK", "buffered", "fill", "install", "installed", "io_of", "last_received"]

#: Bytes asked of the socket per receive.
CHUNK = 64 * 1024


def io_of(stream: Any) -> SocketIO:
    """The :class:`SocketIO` of a ``TrioTCPStream`` (one per stream, made on first use)."""
    io: SocketIO | None = getattr(stream, "_raftd_io", None)
    if io is None:
        io = stream._raftd_io = SocketIO(stream.stream)
    return io


async def _buffered_read(self: Any, n: int | None = None) -> bytes:
    lock = self.read_lock
    await take(lock)
    try:
        return await _read_locked(self, n)
    finally:
        lock.release()


async def _read_locked(self: Any, n: int | None) -> bytes:
    if n is not None and n == 0:
        return b""
    buf: bytearray | None = getattr(self, "_raftd_rbuf", None)
    if buf:
        if n is None or n >= len(buf):
            out = bytes(buf)
            buf.clear()
            return out
        out = bytes(buf[:n])
        del buf[:n]
        return out
    data = await _receive(self, max(n or 0, CHUNK))
    if n is None or len(data) <= n:
        return data
    _keep(self, buf, data[n:])
    return data[:n]


async def _receive(stream: Any, max_bytes: int) -> bytes:
    """One receive from the socket, with the caller holding the read lock: the library's
    errors (a reset peer is ``ConnectionClosedError``; ``b""`` is the end of the stream,
    also when it was closed here), and the time bytes arrived noted."""
    try:
        data: bytes = await io_of(stream).receive_some(max_bytes)
    except trio.BrokenResourceError as error:
        raise ConnectionClosedError(
            f"TCP connection reset by remote peer: {error}", transport="tcp"
        ) from error
    except trio.ClosedResourceError:
        return b""  # closed locally: end of stream, as the library does
    if data:
        stream._raftd_rx_at = trio.current_time()
    return data


def buffered(stream: Any) -> bytearray | None:
    """The bytes received on ``stream`` (a ``TrioTCPStream``) and not read yet, which its
    next reads return first (None until a receive left some)."""
    buf: bytearray | None = getattr(stream, "_raftd_rbuf", None)
    return buf


async def fill(stream: Any) -> bool:
    """Receive what the socket of ``stream`` has (at least one byte, waiting for it)
    onto the end of :func:`buffered`, under the stream's read lock; False at the end of
    the stream. Errors as the stream's reads."""
    lock = stream.read_lock
    await take(lock)
    try:
        data = await _receive(stream, CHUNK)
    finally:
        lock.release()
    if not data:
        return False
    _keep(stream, buffered(stream), data)
    return True


def _keep(stream: Any, buf: bytearray | None, data: bytes) -> None:
    """Append ``data`` to ``stream``'s buffer of received, unread bytes (``buf``, the
    buffer as :func:`buffered` returned it)."""
    if buf is None:
        stream._raftd_rbuf = bytearray(data)
    else:
        buf.extend(data)


async def _write(self: Any, data: bytes) -> None:
    lock = self.write_lock
    await take(lock)
    try:
        await io_of(self).send_all(data)
    except trio.BrokenResourceError as error:
        raise ConnectionClosedError(
            f"TCP connection reset by remote peer: {error}", transport="tcp"
        ) from error
    except trio.ClosedResourceError:
        return  # closed locally: as the library does
    finally:
        lock.release()


def last_received(stream: Any) -> float | None:
    """``trio.current_time()`` when ``stream`` (a ``TrioTCPStream``) last received bytes;
    None if never, or if the stream is not read through :func:`install`'s buffer."""
    at = getattr(stream, "_raftd_rx_at", None)
    return at if isinstance(at, float) else None


def install() -> None:
    """Make every ``TrioTCPStream`` read through a buffer and write its socket directly.
    Idempotent."""
    TrioTCPStream.read = _buffered_read  # type: ignore[method-assign]
    TrioTCPStream.write = _write  # type: ignore[method-assign]


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return TrioTCPStream.read is _buffered_read
