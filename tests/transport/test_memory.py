"""The in-memory transport (runtime tests' twin of the libp2p one), in virtual time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from raftd.core.types import Message, MessageType, SnapshotMetadata
from raftd.transport.base import Transport
from raftd.transport.memory import MemoryNetwork, MemoryTransport

from .helpers import Recorder


def msg(frm: str, to: str, index: int, type: MessageType = MessageType.APP) -> Message:
    return Message(type, to=to, frm=frm, term=1, index=index)


def node(net: MemoryNetwork, name: str, **kw: object) -> tuple[MemoryTransport, Recorder]:
    rec = Recorder()
    t = net.transport(
        name,
        on_message=rec.on_message,
        on_unreachable=rec.on_unreachable,
        on_snapshot=rec.on_snapshot,
        **kw,  # type: ignore[arg-type]
    )
    return t, rec


@asynccontextmanager
async def running(*transports: MemoryTransport) -> AsyncIterator[None]:
    """Run ``transports`` for the duration of the block."""
    async with trio.open_nursery() as n:
        for t in transports:
            await n.start(t.run)
        yield
        n.cancel_scope.cancel()


def test_satisfies_the_contract() -> None:
    t: Transport = MemoryNetwork().transport("a")
    assert t.local_id == "a"


async def test_delivery_in_order_and_validation(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    a, _ = node(net, "a")
    b, rb = node(net, "b")
    async with running(a, b):
        for i in range(100):
            a.send("b", msg("a", "b", i))
        a.send("b", msg("c", "b", 100))  # spoofed frm: refused by the receiver
        a.send("b", msg("a", "b", 101, MessageType.HUP))  # local type: never sent
        a.send("a", msg("a", "a", 102))  # self: never sent
        await rb.wait_for(lambda: len(rb.messages) == 100)
        await trio.sleep(1)
        assert [m.index for m in rb.messages] == list(range(100))
        assert b.stats.refused == 1
        assert a.stats.dropped_invalid == 2


async def test_queue_bound_drops(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    a, _ = node(net, "a", queue_size=5)
    b, rb = node(net, "b")
    async with running(a, b):
        for i in range(20):
            a.send("b", msg("a", "b", i))
        assert a.stats.dropped_queue_full == 15
        assert a.pending("b") == 5
        await rb.wait_for(lambda: len(rb.messages) == 5)


async def test_cut_and_down_peers_are_unreachable(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    a, ra = node(net, "a")
    b, rb = node(net, "b")
    async with running(a, b):
        net.cut("a", "b")
        a.send("b", msg("a", "b", 1))
        await ra.wait_for(lambda: ra.unreachable == ["b"])
        net.heal()
        # The sender backs off before retrying; keep sending like a leader would.
        while not rb.messages:
            a.send("b", msg("a", "b", 2))
            await trio.sleep(0.05)
        a.send("nobody", msg("a", "nobody", 3))
        await ra.wait_for(lambda: "nobody" in ra.unreachable)


async def test_fault_delay_keeps_order(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    a, _ = node(net, "a")
    b, rb = node(net, "b")
    async with running(a, b):
        a.set_fault(delay_s=0.5)
        t0 = trio.current_time()
        for i in range(10):
            a.send("b", msg("a", "b", i))
        await rb.wait_for(lambda: len(rb.messages) == 10)
        assert trio.current_time() - t0 >= 0.5
        assert [m.index for m in rb.messages] == list(range(10))
        a.set_fault(drop_rate=1.0, seed=1)
        a.send("b", msg("a", "b", 99))
        assert a.stats.dropped_fault == 1


async def test_snapshot(tmp_path: Path) -> None:
    net = MemoryNetwork()
    a, _ = node(net, "a")
    b, rb = node(net, "b", snapshot_dir=str(tmp_path))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(4):
            yield bytes([i]) * 1000

    with trio.fail_after(10):
        async with running(a, b):
            meta = SnapshotMetadata(index=3, term=2)
            assert await a.send_snapshot("b", meta, chunks())
            [got] = rb.snapshots
            expect = b"".join(bytes([i]) * 1000 for i in range(4))
            assert got.sha256 == hashlib.sha256(expect).hexdigest()
            assert got.message.type == MessageType.SNAP and got.message.frm == "a"
            assert await trio.to_thread.run_sync(os.listdir, tmp_path) == []
            assert not await a.send_snapshot("zz", meta, chunks())
            assert (a.stats.snapshots_sent, a.stats.snapshots_failed) == (1, 1)
