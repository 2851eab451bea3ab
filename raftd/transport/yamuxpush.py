"""An inbound Yamux stream consumed by push: the connection's read loop hands each DATA
frame's body straight to the stream's consumer, instead of buffering it and waking a
task that reads it.

Reading a Raft frame the library's way costs a scheduler round between the connection's
read loop (which appends the body to the stream's buffer and sets its event) and the
stream's reader task (which wakes, takes the bytes under the connection's
``streams_lock`` and hands them on). On an idle daemon a round costs about as much CPU as
the rest of a heartbeat's handling; under load it is one more hand-over per frame.

:class:`PushReader` registers a *sink* on the stream. The fast path of
:mod:`raftd.transport.yamuxrecv`, which already handles whole DATA frames without an
``await``, calls the sink with the body (after charging the stream's receive window, as
for a buffered body) when the stream's buffer is empty; otherwise it buffers as before,
so the bytes reach the consumer in arrival order either way. The sink feeds a
:class:`~raftd.wire.framing.FrameDecoder` and hands every completed frame to a
synchronous callback.

The reader's own task still owns the stream's lifetime and does what cannot be done
inside the connection's loop: it drains what the library buffered (a body that had not
fully arrived, read by the library), sends the receive-window credit once it is due
(the sink wakes it then: every half window, by :mod:`raftd.transport.yamuxwin`'s rule),
sees the end of the stream (FIN, RST, a closed connection), enforces the idle timeout,
and raises what the sink caught (a malformed frame, a refused envelope), which the
caller handles as it would a failed read.

Like the other Yamux patches, this relies on py-libp2p 0.8.1's ``Yamux`` internals
(``stream_buffers``, ``stream_events``, the receive-window fields); upstream, it is a
push-mode API on ``YamuxStream``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import trio
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from raftd.transport import yamuxrecv, yamuxwin
from raftd.transport.yamuxrecv import SINK_ATTR
from raftd.wire.framing import FrameDecoder, FrameError

__all__ = ["PushReader", "counts", "supported"]

#: Bodies drained from the library's buffer, since start (the bodies pushed are counted
#: by yamuxrecv).
counts = {"drained": 0}


def supported(net_stream: Any) -> bool:
    """Whether ``net_stream`` (a libp2p ``NetStream``) can be read by push: a Yamux
    stream whose connection's read loop has the fast path installed."""
    ms = getattr(net_stream, "muxed_stream", None)
    return isinstance(ms, YamuxStream) and yamuxrecv.installed()


class PushReader:
    """Consumes one inbound Yamux stream by push (see the module docstring).

    ``decoder`` may already hold the start of a frame (the stream was read the usual way
    until now); ``on_frame`` is called with each completed frame, in order, from the
    connection's read loop or from :meth:`run`'s task, and must not block. An exception
    it raises ends the stream: :meth:`run` raises it."""

    def __init__(
        self, net_stream: Any, decoder: FrameDecoder, on_frame: Callable[[bytes], None]
    ) -> None:
        ms: YamuxStream = net_stream.muxed_stream
        self._ms = ms
        self._mux: Any = ms.conn
        self._sid: int = ms.stream_id
        self._decoder = decoder
        self._on_frame = on_frame
        self.error: Exception | None = None
        #: Whether any bytes arrived since :meth:`run` last looked (the idle timer).
        self.active = False

    def push(self, data: bytes | bytearray) -> None:
        """The sink, called by the connection's read loop with a DATA frame's body (and
        by :meth:`run` with what the library buffered): decode ``data`` and hand on the
        frames it completes."""
        if self.error is not None:
            return  # the stream is being reset: the rest is discarded
        self.active = True
        try:
            for frame in self._decoder.feed(data):
                self._on_frame(frame)
        except Exception as exc:  # never into the connection's read loop
            self.error = exc
            self._wake()
            return
        ms = self._ms
        if ms.target_recv_window - ms.recv_window >= yamuxwin.grow_threshold(ms):
            self._wake()  # credit is due: the reader's task sends it

    def _wake(self) -> None:
        ev = self._mux.stream_events.get(self._sid)
        if ev is not None:
            ev.set()

    async def run(self, idle_timeout: float) -> Literal["eof", "idle"]:
        """Consume the stream until it ends (``"eof"``: FIN, RST or a closed connection)
        or stays silent for ``idle_timeout`` seconds (``"idle"``). Raises what the sink
        caught, or :class:`FrameError` when the stream ends inside a frame."""
        ms, mux, sid = self._ms, self._mux, self._sid
        setattr(ms, SINK_ATTR, self.push)
        try:
            while True:
                events = mux.stream_events
                if sid not in events:
                    return self._ended()
                # A fresh event before looking: whatever happens after this line sets it.
                ev = events[sid] = trio.Event()
                buf = mux.stream_buffers.get(sid)
                if buf:
                    # Taken and fed without an await in between: arrival order holds.
                    data = bytes(buf)
                    buf.clear()
                    counts["drained"] += 1
                    self.push(data)
                if self.error is not None:
                    raise self.error
                if buf is None or ms.reset_received or ms.recv_closed:
                    return self._ended()
                # Sends credit only once it is due (yamuxwin's rule).
                await ms._auto_tune_and_send_window_update(bytes_read=0)
                self.active = False
                with trio.move_on_after(idle_timeout) as waited:
                    await ev.wait()
                if waited.cancelled_caught and not self.active and not ev.is_set():
                    return "idle"
        finally:
            if getattr(ms, SINK_ATTR, None) == self.push:
                setattr(ms, SINK_ATTR, None)

    def _ended(self) -> Literal["eof"]:
        if not self._decoder.at_boundary:
            raise FrameError(
                f"stream ended inside a frame ({self._decoder.buffered} bytes buffered)"
            )
        return "eof"
