"""Sends batched by hold()/flush() (Libp2pTransport), over real libp2p hosts: a parked
sender's messages are written from the caller's task, in one frame, before flush()
returns; whatever cannot be written at once (a lock held, more than a frame's worth, a
socket that takes part of the frame, a failed write) is left to the sender, and every
message still arrives once, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from raftd.netio.sockio import SocketIO
from raftd.transport.directwrite import DirectWriter
from raftd.transport.libp2p import Libp2pTransportConfig

from .helpers import Node, app, introduce, libp2p_node, wait_until


def _indexes(b: Node, a: Node) -> list[int]:
    return [m.index for m in b.rec.from_peer(a.id)]


@asynccontextmanager
async def _pair(
    tmp_path: Path, config: Libp2pTransportConfig | None = None
) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes a and b, once a's sender to b has written message 0 and is parked with an
    open stream; the whole test is bounded."""
    with trio.fail_after(30):
        async with (
            libp2p_node(tmp_path, "a", config=config) as a,
            libp2p_node(tmp_path, "b") as b,
        ):
            introduce(a, b)
            a.transport.send(b.id, app(a, b, 0))
            await b.rec.wait_for(lambda: _indexes(b, a) == [0])
            peer = a.transport._peers[b.id]
            await wait_until(lambda: peer.idle is not None)
            yield a, b


async def test_flush_writes_a_parked_senders_batch_at_once(tmp_path: Path) -> None:
    async with _pair(tmp_path) as (a, b):
        frames = a.transport.stats.frames_sent
        a.transport.hold()
        for i in range(1, 6):
            a.transport.send(b.id, app(a, b, i, b"x" * 50))
        assert a.transport.pending(b.id) == 5  # held for flush, sender not woken
        a.transport.flush()
        # Written before flush returned, as one frame, with no checkpoint between.
        assert a.transport.pending(b.id) == 0
        assert a.transport.stats.frames_sent == frames + 1
        await b.rec.wait_for(lambda: len(_indexes(b, a)) == 6)
        assert _indexes(b, a) == list(range(6))


async def test_without_hold_the_sender_writes(tmp_path: Path) -> None:
    async with _pair(tmp_path) as (a, b):
        frames = a.transport.stats.frames_sent
        a.transport.send(b.id, app(a, b, 1))
        a.transport.flush()  # nothing was held: nothing to do here
        assert a.transport.pending(b.id) == 1
        assert a.transport.stats.frames_sent == frames
        await b.rec.wait_for(lambda: _indexes(b, a) == [0, 1])


async def test_a_held_lock_hands_the_frame_to_the_sender_in_order(tmp_path: Path) -> None:
    async with _pair(tmp_path) as (a, b):
        peer = a.transport._peers[b.id]
        assert peer.idle is not None
        conn_lock = peer.idle.writer._conn._write_lock
        await conn_lock.acquire()
        try:
            a.transport.hold()
            a.transport.send(b.id, app(a, b, 1))
            a.transport.flush()
            assert peer.handoff is not None  # sealed, then left to the sender
            a.transport.hold()
            a.transport.send(b.id, app(a, b, 2))  # the sender is awake: not held
            a.transport.flush()
            await trio.testing.wait_all_tasks_blocked()  # the sender waits for the lock
            assert _indexes(b, a) == [0]
        finally:
            conn_lock.release()
        await b.rec.wait_for(lambda: len(_indexes(b, a)) == 3)
        assert _indexes(b, a) == [0, 1, 2]


async def test_more_than_a_frame_wakes_the_sender_for_the_rest(tmp_path: Path) -> None:
    cfg = Libp2pTransportConfig(max_batch_bytes=2000)
    async with _pair(tmp_path, cfg) as (a, b):
        frames = a.transport.stats.frames_sent
        a.transport.hold()
        for i in range(1, 41):
            a.transport.send(b.id, app(a, b, i, b"y" * 200))
        a.transport.flush()
        assert a.transport.stats.frames_sent == frames + 1
        assert a.transport.pending(b.id) > 0
        await b.rec.wait_for(lambda: len(_indexes(b, a)) == 41)
        assert _indexes(b, a) == list(range(41))


async def test_a_frame_the_socket_took_in_part_is_finished_by_the_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SocketIO.send_nowait
    halves: list[int] = []

    def half(self: SocketIO, data: bytes) -> int:
        if not halves and len(data) > 1000:
            halves.append(len(data))
            return real(self, data[: len(data) // 2])
        return real(self, data)

    async with _pair(tmp_path) as (a, b):
        peer = a.transport._peers[b.id]
        monkeypatch.setattr(SocketIO, "send_nowait", half)
        a.transport.hold()
        a.transport.send(b.id, app(a, b, 1, b"z" * 3000))
        a.transport.flush()
        assert halves
        assert peer.handoff is not None
        assert isinstance(peer.handoff.data, memoryview)
        await b.rec.wait_for(lambda: len(_indexes(b, a)) == 2)
        a.transport.send(b.id, app(a, b, 2))
        await b.rec.wait_for(lambda: len(_indexes(b, a)) == 3)
        assert _indexes(b, a) == [0, 1, 2]


@pytest.mark.parametrize("failing", ["write", "seal"])
async def test_a_failed_write_or_seal_resets_the_stream_and_reconnects(
    failing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, data: bytes) -> bool:
        raise trio.BrokenResourceError("socket error: broken pipe")

    def refuse(self: Any, plaintext: bytes) -> bytes:
        raise ValueError("plaintext exceeds the limit")

    async with _pair(tmp_path) as (a, b):
        peer = a.transport._peers[b.id]
        assert peer.idle is not None
        if failing == "write":
            monkeypatch.setattr(DirectWriter, "write_nowait", broken)
        else:
            monkeypatch.setattr(type(peer.idle.sealer), "seal", refuse)
        dropped = a.transport.stats.dropped_unreachable
        a.transport.hold()
        a.transport.send(b.id, app(a, b, 1))
        a.transport.flush()  # never raises into the Raft loop
        await a.rec.wait_for(lambda: b.id in a.rec.unreachable)
        assert a.transport.stats.dropped_unreachable == dropped + 1
        monkeypatch.undo()

        def resend() -> bool:
            if 2 not in _indexes(b, a):
                a.transport.send(b.id, app(a, b, 2))
            return 2 in _indexes(b, a)

        await wait_until(resend, interval=0.05)
        assert 1 not in _indexes(b, a)  # dropped with the stream, as Raft expects
