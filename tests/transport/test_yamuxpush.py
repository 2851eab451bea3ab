"""Inbound raft streams read by push (raftd.transport.yamuxpush) over real libp2p hosts:
frames arrive whole and in order whether the connection's read loop pushed them or the
library buffered them, receive-window credit keeps flowing past many windows, and the
idle timeout still closes a silent stream."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
import trio
from libp2p.stream_muxer.yamux import yamux as y

from raftd.transport import yamuxpush, yamuxrecv
from raftd.transport.host import quiet_libp2p_logging
from raftd.transport.libp2p import Libp2pTransportConfig

from .helpers import app, introduce, libp2p_node, send_paced, wait_until

quiet_libp2p_logging()


async def test_frames_arrive_in_order_pushed_or_buffered_across_many_windows(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            assert b.transport.push_reads
            introduce(a, b)
            before = dict(yamuxrecv.counts)
            drained0 = yamuxpush.counts["drained"]
            # Mostly small messages (whole in one Noise message: pushed), and every 500th
            # one of 150 KB (more than a Noise message: its body is read by the library
            # and buffered, then drained in order). About 10 MB in all: many 256 KiB
            # receive windows, so the credit must keep flowing.
            n = 20_000
            msgs = [
                app(a, b, i, (b"L" * 150_000) if i % 500 == 0 else (b"x" * 200)) for i in range(n)
            ]
            await send_paced(a, b.id, msgs, high_water=256)
            await b.rec.wait_for(lambda: len(b.rec.messages) >= n)
            assert [m.index for m in b.rec.messages] == list(range(n))
            assert b.rec.messages[500] == msgs[500]
            assert b.rec.messages[501] == msgs[501]
            pushed = yamuxrecv.counts["pushed"] - before["pushed"]
            drained = yamuxpush.counts["drained"] - drained0
            print(f"{pushed} bodies pushed, {drained} drained from the library's buffer")
            assert pushed > 0 and drained > 0  # both ways were taken
            assert not b.rec.unreachable and b.transport.stats.frames_rejected == 0


async def test_a_silent_pushed_stream_is_closed_at_the_idle_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="raftd.transport")
    quiet_sender = Libp2pTransportConfig(keepalive_interval=50.0, idle_timeout=100.0)
    impatient = Libp2pTransportConfig(idle_timeout=0.5, keepalive_interval=0.1)
    with trio.fail_after(30):
        async with (
            libp2p_node(tmp_path, "a", config=quiet_sender) as a,
            libp2p_node(tmp_path, "b", config=impatient) as b,
        ):
            introduce(a, b)
            a.transport.send(b.id, app(a, b, 1))
            await b.rec.wait_for(lambda: len(b.rec.messages) == 1)
            t0 = trio.current_time()
            await wait_until(lambda: "idle for" in caplog.text and a.id in caplog.text)
            assert trio.current_time() - t0 >= 0.4
            # a finds its stream reset (the batch it was writing is lost, as Raft
            # allows) and reconnects: a later message arrives.
            sent = [1]

            def delivered() -> bool:
                if len(b.rec.messages) > 1:
                    return True
                if a.transport.pending(b.id) == 0:
                    sent.append(sent[-1] + 1)
                    a.transport.send(b.id, app(a, b, sent[-1]))
                return False

            await wait_until(delivered)
            assert b.rec.messages[-1].index in sent[1:]


async def test_credit_flows_when_every_body_is_pushed(tmp_path: Path) -> None:
    # One 8 KB message at a time (each its own frame, whole in one Noise message): every
    # body is pushed and nothing wakes the reader's task but the credit falling due.
    # 300 of them are about ten 256 KiB receive windows.
    with trio.fail_after(60):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            introduce(a, b)
            drained0 = yamuxpush.counts["drained"]
            for i in range(300):
                a.transport.send(b.id, app(a, b, i, b"p" * 8000))
                await b.rec.wait_for(lambda i=i: len(b.rec.messages) > i)  # type: ignore[misc]
            assert [m.index for m in b.rec.messages] == list(range(300))
            assert yamuxpush.counts["drained"] == drained0  # all of it by push


async def test_big_frames_split_across_yamux_frames_keep_their_order(tmp_path: Path) -> None:
    # 600 KB messages: each is a frame of its own, sent as several Yamux DATA frames, of
    # which the library reads the large bodies (buffered) and the fast path may take a
    # small last one: it must not overtake what is still buffered.
    with trio.fail_after(60):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            introduce(a, b)
            msgs = [
                app(a, b, i, bytes([65 + i % 26]) * (600_000 if i % 2 else 3000)) for i in range(60)
            ]
            await send_paced(a, b.id, msgs, high_water=8)
            await b.rec.wait_for(lambda: len(b.rec.messages) >= len(msgs))
            assert b.rec.messages == msgs
            assert b.transport.stats.frames_rejected == 0


class _Conn:
    """A secure session's buffer, as the fast path reads it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.low_watermark = 0
        self.high_watermark = len(data)

    def _drain(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        self.low_watermark += n
        return out


class _Stream:
    recv_window = 1 << 18
    send_window = 0
    closed = False


class _Mux:
    def __init__(self, sid: int, stream: _Stream) -> None:
        self.event_shutting_down = trio.Event()
        self.streams = {sid: stream}
        self.stream_buffers = {sid: bytearray()}
        self.stream_events = {sid: trio.Event()}


def test_a_body_is_pushed_only_while_nothing_is_buffered_before_it() -> None:
    sid = 3
    stream = _Stream()
    mux = _Mux(sid, stream)
    got: list[bytes] = []
    setattr(stream, yamuxrecv.SINK_ATTR, got.append)

    def data_frame(body: bytes) -> tuple[bytes, _Conn]:
        header = struct.pack(y.YAMUX_HEADER_FORMAT, 0, y.TYPE_DATA, 0, sid, len(body))
        return header, _Conn(body)

    header, conn = data_frame(b"first")
    assert yamuxrecv._take(mux, conn, header)
    assert got == [b"first"] and not mux.stream_buffers[sid]  # pushed, nothing buffered
    assert not mux.stream_events[sid].is_set()  # and nobody woken
    # The library buffered a body (it had to read it itself): the next one must queue
    # behind it rather than overtake it.
    mux.stream_buffers[sid].extend(b"second")
    header, conn = data_frame(b"third")
    assert yamuxrecv._take(mux, conn, header)
    assert got == [b"first"] and mux.stream_buffers[sid] == b"secondthird"
    assert mux.stream_events[sid].is_set()
    assert stream.recv_window == (1 << 18) - len(b"first") - len(b"third")
