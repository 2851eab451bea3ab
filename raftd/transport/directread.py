"""Noise messages read and decrypted for a Yamux connection's read loop in one layer,
instead of five.

py-libp2p 0.8.1's Yamux loop reads each frame header with ``read_exactly`` on the secure
session; when the session's buffer is empty, that goes through the session, the Noise
reader (which formats three debug lines whatever the level), the length-prefix reader
and two more ``read_exactly`` calls on the TCP stream: about sixty Python calls and a
dozen coroutine frames per message, although the message usually sits whole in the TCP
read buffer of :mod:`raftd.transport.tcpread` already.

:class:`NoiseReader` does the same work directly on the same state: it takes a whole
Noise packet (its 2-byte length, then the body) from the TCP stream's read buffer,
receiving from the socket only when the packet is not all there, decrypts it with the
session's own Noise state, and appends the plaintext to the session's buffer, where the
library's reads find it. The byte stream every reader sees is unchanged (same bytes, same
order), because all of them share the two buffers: the library's own reads (a frame body
that had not fully arrived, read by the Yamux loop's slow path) consume the same TCP
buffer and session buffer, in order. So are the errors: the end of the stream is an
``IncompleteReadError`` (clean when it falls between two packets), a reset is a
``ConnectionClosedError``, a message that fails authentication is Noise's own error; the
Yamux loop handles them as before.

:func:`noise_reader` returns None for any stack it does not know (a private-network
wrapper, another security transport), and those keep the library's path. Like the other
patches of this package it relies on py-libp2p 0.8.1's internals (the session's
``buf``/watermarks, the Noise reader's ``noise_state``); upstream, this belongs in
``SecureSession.read`` itself.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.security.noise.io import SIZE_NOISE_MESSAGE_LEN, NoiseTransportReadWriter
from libp2p.security.secure_session import SecureSession

from raftd.transport import tcpread

__all__ = ["NoiseReader", "counts", "noise_over_tcp", "noise_reader"]

#: Noise messages taken whole from the TCP buffer, and socket receives made, since start.
counts = {"messages": 0, "receives": 0}


class NoiseReader:
    """Fills one secure session's buffer from its TCP stream (see the module docstring).
    Used by the session's one reader, the Yamux loop."""

    __slots__ = ("_noise", "_tcp")

    def __init__(self, noise: Any, tcp: Any) -> None:
        self._noise = noise
        self._tcp = tcp

    async def read_exactly(self, session: Any, n: int) -> bytes:
        """Exactly ``n`` bytes of the session's plaintext, as ``read_exactly(session, n)``
        returns them."""
        while session.high_watermark - session.low_watermark < n:
            if not self._decrypt_next(session):
                await self._receive(session)
        data: bytes = session._drain(n)
        return data

    def _decrypt_next(self, session: Any) -> bool:
        """Move one whole Noise message from the TCP buffer into the session's buffer;
        False if the TCP buffer holds no whole message."""
        buf = tcpread.buffered(self._tcp)
        if buf is None or len(buf) < SIZE_NOISE_MESSAGE_LEN:
            return False
        end = SIZE_NOISE_MESSAGE_LEN + ((buf[0] << 8) | buf[1])
        if len(buf) < end:
            return False
        packet = bytes(buf[SIZE_NOISE_MESSAGE_LEN:end])
        del buf[:end]
        plain: bytes = self._noise.noise_state.decrypt(packet)
        counts["messages"] += 1
        if not plain:
            raise ConnectionClosedError("Connection closed")  # the library's reading
        # What is left of the last message (a frame split across two) goes first.
        rest: bytes = session._drain(None)
        session._fill(rest + plain if rest else plain)
        return True

    async def _receive(self, session: Any) -> None:
        """Add what the socket has to the TCP buffer; at the end of the stream, raise
        what the library's read would."""
        counts["receives"] += 1
        if await tcpread.fill(self._tcp):
            return
        buf = tcpread.buffered(self._tcp)
        pending = len(buf or b"") + session.high_watermark - session.low_watermark
        raise IncompleteReadError(
            "Connection closed during read operation: expected a Noise message but "
            f"received {pending} bytes",
            expected_bytes=SIZE_NOISE_MESSAGE_LEN,
            received_bytes=pending,
        )


def noise_over_tcp(session: Any) -> tuple[Any, Any] | None:
    """``(noise, tcp)``: the Noise transport reader-writer and the ``TrioTCPStream`` under
    ``session`` (a secure session) when it is Noise over a plain TCP socket, else None."""
    try:
        noise = session.conn
        packet = noise.read_writer
        tcp = packet.read_write_closer.stream
    except AttributeError:
        return None
    if not (
        isinstance(session, SecureSession)
        and isinstance(noise, NoiseTransportReadWriter)
        and packet.size_len_bytes == SIZE_NOISE_MESSAGE_LEN
        and type(tcp) is TrioTCPStream
        and isinstance(tcp.stream, trio.SocketStream)
    ):
        return None
    return noise, tcp


def noise_reader(session: Any) -> NoiseReader | None:
    """A :class:`NoiseReader` for ``session`` if it is Noise over a plain TCP socket read
    through :mod:`raftd.transport.tcpread`, else None."""
    found = noise_over_tcp(session) if tcpread.installed() else None
    if found is None:
        return None
    noise, tcp = found
    return NoiseReader(noise, tcp)
