"""Reads and writes on a socket with one system call each in the usual case.

trio's ``SocketStream.receive_some`` first tries a ``recv`` that, on a connection whose
messages arrive one by one, fails with ``EAGAIN`` (an exception in Python), then waits
for readability and tries again; its ``send_all`` ends with an extra trip through the
scheduler. On the request path of a busy daemon, and in a client that waits for each
answer, that is a measurable share of a small request's cost. :class:`SocketIO` reads
and writes the socket's file descriptor itself:

- :meth:`SocketIO.receive_some` waits for readability first when the previous read
  emptied the socket (it returned less than asked), so the doomed ``recv`` is skipped;
- :meth:`SocketIO.send_all` writes at once and waits only when the socket is full;
  :meth:`SocketIO.send_all_within` bounds a send by a timeout whose cancel scope is set
  up only when the socket is full;
- a reader that always finds data still passes a cancellation point every
  :data:`CHECKPOINT_EVERY` reads, so it can neither starve other tasks nor miss a
  cancellation.

Contract: the same bytes and errors as the stream's own methods (a peer reset or a
broken pipe is ``trio.BrokenResourceError``, a socket closed here is
``trio.ClosedResourceError``, ``b""`` is the end of the stream). Streams that are not a
plain ``trio.SocketStream`` (TLS) use the stream's own methods. One reader and one
writer at a time, as with any trio stream.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["CHECKPOINT_EVERY", "SocketIO"]

#: Reads in a row that found data at once, before one cancellation point.
CHECKPOINT_EVERY = 16


class SocketIO:
    """Fast paths for ``stream`` (see the module doc)."""

    __slots__ = ("_drained", "_fd", "_streak", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._drained = False  # the last read took everything there was
        self._streak = 0

    def _open_fd(self) -> int:
        """The descriptor, checked to still be ours: once the stream is closed its number
        may already belong to another socket."""
        fd = self._fd
        if fd >= 0 and self.stream.socket.fileno() != fd:  # type: ignore[attr-defined]
            raise trio.ClosedResourceError("socket was closed")
        return fd

    def _error(self, exc: OSError) -> Exception:
        if exc.errno == errno.EBADF:
            return trio.ClosedResourceError("socket was closed")
        return trio.BrokenResourceError(f"socket error: {exc}")

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes (at least one), or ``b""`` at the end of the stream."""
        if self._fd < 0:
            return await self.stream.receive_some(max_bytes)
        if self._drained:
            self._streak = 0
            await trio.lowlevel.wait_readable(self._open_fd())
        while True:
            try:
                data = os.read(self._open_fd(), max_bytes)
            except BlockingIOError:
                self._streak = 0
                await trio.lowlevel.wait_readable(self._fd)
                continue
            except OSError as exc:
                raise self._error(exc) from exc
            self._drained = 0 < len(data) < max_bytes
            self._streak += 1
            if self._streak >= CHECKPOINT_EVERY:
                self._streak = 0
                await trio.lowlevel.checkpoint()
            return data

    def send_nowait(self, data: bytes) -> int:
        """Write what fits in the socket now; the number of bytes written (0 when it is
        full, and always 0 for a stream without a descriptor of its own, such as TLS:
        send those with :meth:`send_all`). Never waits and is no checkpoint."""
        if self._fd < 0:
            return 0
        try:
            return os.write(self._open_fd(), data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._error(exc) from exc

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data``, waiting for room in the socket when it is full."""
        if self._fd < 0:
            await self.stream.send_all(data)
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._open_fd(), view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)
                continue
            except OSError as exc:
                raise self._error(exc) from exc
            view = view[n:]

    async def send_all_within(self, data: bytes, seconds: float) -> bool:
        """:meth:`send_all` within ``seconds``; False if the time ran out (part of
        ``data`` may have been written). What fits in the socket is written at once, and
        only the rest pays for a cancel scope."""
        sent = self.send_nowait(data)
        if sent == len(data):
            return True
        with trio.move_on_after(seconds):
            await self.send_all(data[sent:])
            return True
        return False
