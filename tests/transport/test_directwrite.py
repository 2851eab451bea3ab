"""Direct frame writes under py-libp2p (raftd.transport.directwrite), over real libp2p
hosts: a direct write and the library's write interleave on one stream and arrive
whole and in order; when a lock is held, the window is short or the frame is empty,
nothing is done; a frame the socket takes only part of keeps the locks until its tail
is sent; a stack the writer does not know gets no writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from raftd.transport.directwrite import DirectWriter, direct_writer
from raftd.transport.host import load_or_create_identity, open_host

from .helpers import wait_until

PROTO = TProtocol("/raftd-test/direct/1")


class Sink:
    """What the far end read, and whether it reads at all."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.changed = trio.Event()

    async def handler(self, stream: Any) -> None:
        try:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                self.data += chunk
                self.changed.set()
        except Exception:  # end of stream ends the handler (pitfall 4)
            return

    async def wait_for(self, n: int) -> None:
        while len(self.data) < n:
            self.changed = trio.Event()
            await self.changed.wait()


@asynccontextmanager
async def stream_pair(tmp_path: Path) -> AsyncIterator[tuple[Any, Sink]]:
    sink = Sink()
    ka = load_or_create_identity(tmp_path / "a")
    kb = load_or_create_identity(tmp_path / "b")
    async with open_host(ka) as ha, open_host(kb) as hb:
        hb.set_stream_handler(PROTO, sink.handler)
        await ha.connect(info_from_p2p_addr(hb.get_addrs()[0]))
        stream = await ha.new_stream(hb.get_id(), [PROTO])
        yield stream, sink


def _writer(stream: Any) -> DirectWriter:
    w = direct_writer(stream)
    assert w is not None, "a Noise + Yamux + TCP stream gets a direct writer"
    return w


async def test_direct_and_library_writes_interleave_in_order(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with stream_pair(tmp_path) as (stream, sink):
            w = _writer(stream)
            window = stream.muxed_stream.send_window
            parts = [b"a" * 100, b"b" * 50, bytes(range(256)) * 40, b"c"]
            assert w.write_nowait(parts[0]) is True
            await stream.write(parts[1])  # the library's path, same stream
            assert w.write_nowait(parts[2]) is True
            assert w.write_nowait(parts[3]) is True
            total = sum(map(len, parts))
            await sink.wait_for(total)
            assert bytes(sink.data) == b"".join(parts)
            # The window was taken as the library takes it (credit may come back).
            assert stream.muxed_stream.send_window <= window


async def test_nothing_is_done_when_the_write_would_wait(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with stream_pair(tmp_path) as (stream, sink):
            w = _writer(stream)
            ys = stream.muxed_stream
            window = ys.send_window
            assert w.write_nowait(b"") is False
            assert w.write_nowait(b"x" * (window + 1)) is False  # short window
            lock = ys.conn._write_lock
            await lock.acquire()  # another frame is being written on the connection
            try:
                assert w.write_nowait(b"y" * 10) is False
            finally:
                lock.release()
            assert ys.send_window == window
            # A release hands the lock to a waiting writer (the muxer's own frames),
            # if there was one: it goes first.
            await wait_until(lambda: not lock.locked())
            assert w.write_nowait(b"z" * 10) is True
            await sink.wait_for(10)
            assert bytes(sink.data) == b"z" * 10


async def test_a_partly_written_frame_holds_the_locks_until_finished(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with stream_pair(tmp_path) as (stream, sink):
            w = _writer(stream)
            real = w._io

            class FullAfterSeven:  # the socket takes 7 bytes of the frame, then is full
                taken = 0

                def send_nowait(self, data: bytes) -> int:
                    self.taken = real.send_nowait(data[:7])
                    return self.taken

                async def send_all(self, data: bytes | memoryview) -> None:
                    await real.send_all(data)

            full = FullAfterSeven()
            w._io = full  # type: ignore[assignment]
            payload = bytes(range(200)) * 5
            rest = w.write_nowait(payload)
            w._io = real
            taken = full.taken
            assert isinstance(rest, memoryview) and taken == 7
            # The frame is committed: nothing else may enter the connection meanwhile.
            assert w.write_nowait(b"later") is False
            await w.finish(rest)
            await wait_until(lambda: not stream.muxed_stream.conn._write_lock.locked())
            assert w.write_nowait(b"later") is True
            await sink.wait_for(len(payload) + 5)
            assert bytes(sink.data) == payload + b"later"


def test_unknown_stacks_get_no_writer() -> None:
    class NotAStream:
        pass

    assert direct_writer(NotAStream()) is None
