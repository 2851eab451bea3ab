"""The libp2p transport between real hosts on 127.0.0.1, in one trio process."""

from __future__ import annotations

import hashlib
import logging
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from raftd.core.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from raftd.security.envelope import NULL_HEADER
from raftd.transport.base import protocol_id
from raftd.transport.host import quiet_libp2p_logging
from raftd.transport.libp2p import FrameReader, Libp2pTransportConfig
from raftd.wire.framing import encode_frame, encode_varint
from raftd.wire.pb import raft_pb2 as pb
from raftd.wire.raft import encode_batch, message_to_pb

from .helpers import NS, Node, Recorder, app, introduce, libp2p_node, send_paced, wait_until

quiet_libp2p_logging()

RAFT = TProtocol(protocol_id(NS, "raft"))
SNAP = TProtocol(protocol_id(NS, "snap"))


def test_protocol_ids() -> None:
    assert protocol_id("/raft/cron", "raft") == "/raftd/1/raft/cron/raft"
    assert protocol_id("/raft/cron", "snap") == "/raftd/1/raft/cron/snap"
    assert protocol_id("/x", "cmd") == "/raftd/1/x/cmd"
    for bad in ("raft/cron", "/raft cron", "/", "", "/a//b"):
        with pytest.raises(ValueError):
            protocol_id(bad, "raft")
    with pytest.raises(ValueError):
        protocol_id("/a", "bulk")  # type: ignore[arg-type]


async def open_raw(src: Node, dst: Node, proto: TProtocol) -> Any:
    """A raw stream from src's host to dst, bypassing src's transport (to misbehave)."""
    pid = ID.from_base58(dst.id)
    src.host.get_peerstore().add_addrs(pid, [Multiaddr(a) for a in dst.addrs], 0)
    return await src.host.new_stream(pid, [proto])


def random_peer_id() -> str:
    return str(ID.from_pubkey(create_new_key_pair().public_key))


async def test_two_hosts_exchange_batches_in_order(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            introduce(a, b)
            n = 20000
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_paced, a, b.id, [app(a, b, i, b"x" * 50) for i in range(n)])
                nursery.start_soon(send_paced, b, a.id, [app(b, a, i) for i in range(n)])
            await b.rec.wait_for(lambda: len(b.rec.messages) >= n)
            await a.rec.wait_for(lambda: len(a.rec.messages) >= n)
            assert [m.index for m in b.rec.messages] == list(range(n))
            assert [m.index for m in a.rec.messages] == list(range(n))
            assert b.rec.messages[7] == app(a, b, 7, b"x" * 50)
            assert a.transport.stats.sent == n
            assert a.transport.stats.dropped_queue_full == 0
            assert not a.rec.unreachable and not b.rec.unreachable


async def test_three_hosts_full_mesh(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with (
            libp2p_node(tmp_path, "a") as a,
            libp2p_node(tmp_path, "b") as b,
            libp2p_node(tmp_path, "c") as c,
        ):
            nodes = [a, b, c]
            introduce(*nodes)
            n = 1000
            # Interleave sends so all six directions are busy at once.
            for i in range(n):
                for src in nodes:
                    for dst in nodes:
                        if src is not dst:
                            src.transport.send(dst.id, app(src, dst, i))
                if i % 100 == 0:
                    await trio.lowlevel.checkpoint()
            for dst in nodes:
                await dst.rec.wait_for(lambda dst=dst: len(dst.rec.messages) >= 2 * n)  # type: ignore[misc]
                for src in nodes:
                    if src is not dst:
                        assert [m.index for m in dst.rec.from_peer(src.id)] == list(range(n))


async def test_bounded_queue_drops_and_counts(tmp_path: Path) -> None:
    cfg = Libp2pTransportConfig(queue_size=10)
    with trio.fail_after(20):
        async with libp2p_node(tmp_path, "a", config=cfg) as a, libp2p_node(tmp_path, "b") as b:
            introduce(a, b)
            # send() is synchronous: the sender task cannot run in between, so 10 fit.
            for i in range(100):
                a.transport.send(b.id, app(a, b, i))
            assert a.transport.pending(b.id) == 10
            assert a.transport.stats.dropped_queue_full == 90
            assert a.transport.stats.dropped_by_peer == {b.id: 90}
            await b.rec.wait_for(lambda: len(b.rec.messages) >= 10)
            assert [m.index for m in b.rec.messages] == list(range(10))
            # Drained: room again.
            a.transport.send(b.id, app(a, b, 100))
            await b.rec.wait_for(lambda: len(b.rec.messages) >= 11)


async def test_slow_peer_does_not_block_others(tmp_path: Path) -> None:
    """A peer that never answers dials (a silent TCP listener) must not delay others."""
    cfg = Libp2pTransportConfig(dial_timeout=5.0)
    with trio.fail_after(20):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with libp2p_node(tmp_path, "a", config=cfg) as a, libp2p_node(tmp_path, "b") as b:
            introduce(a, b)
            frozen = random_peer_id()
            a.transport.add_peer_addrs(frozen, [f"/ip4/127.0.0.1/tcp/{port}"])
            for i in range(100):
                a.transport.send(frozen, app(a, frozen, i))
                a.transport.send(b.id, app(a, b, i))
            t0 = trio.current_time()
            await b.rec.wait_for(lambda: len(b.rec.messages) >= 100)
            assert trio.current_time() - t0 < 2.0  # not stuck behind the 5 s dial
        for lst in listeners:
            await lst.aclose()


async def test_unreachable_peer_is_reported(tmp_path: Path) -> None:
    cfg = Libp2pTransportConfig(dial_timeout=1.0)
    with trio.fail_after(20):
        # A port with nothing listening: the dial fails at once.
        probe = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        dead_port = probe.socket.getsockname()[1]
        await probe.aclose()
        # A silent listener: the TCP connect succeeds, the handshake never completes.
        silent = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        silent_port = silent.socket.getsockname()[1]
        dead = random_peer_id()
        mute = random_peer_id()
        async with libp2p_node(tmp_path, "a", config=cfg) as a:
            a.transport.add_peer_addrs(dead, [f"/ip4/127.0.0.1/tcp/{dead_port}"])
            a.transport.add_peer_addrs(mute, [f"/ip4/127.0.0.1/tcp/{silent_port}"])
            a.transport.send(dead, app(a, dead, 1))
            a.transport.send(mute, app(a, mute, 1))
            await a.rec.wait_for(lambda: dead in a.rec.unreachable)
            t0 = trio.current_time()
            await a.rec.wait_for(lambda: mute in a.rec.unreachable)
            assert trio.current_time() - t0 < 3.0  # bounded by dial_timeout
            assert a.transport.stats.dropped_unreachable >= 2
            # Keeps retrying (with backoff) while messages keep coming.
            before = a.rec.unreachable.count(dead)
            a.transport.send(dead, app(a, dead, 2))
            await a.rec.wait_for(lambda: a.rec.unreachable.count(dead) > before)
        await silent.aclose()


async def test_oversized_frame_resets_stream_and_host_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    small = Libp2pTransportConfig(max_frame_size=64 * 1024)
    caplog.set_level(logging.WARNING, logger="raftd.transport")
    with trio.fail_after(30):
        async with (
            libp2p_node(tmp_path, "a") as a,
            libp2p_node(tmp_path, "b", config=small) as b,
            libp2p_node(tmp_path, "c") as c,
        ):
            introduce(a, b, c)
            # a's own limit is the default 16 MiB, so it sends a 100 KiB frame to b.
            a.transport.send(b.id, app(a, b, 1, b"z" * 100_000))
            await wait_until(lambda: b.transport.stats.frames_rejected >= 1)
            assert any(
                a.id in r.getMessage() and "limit 65536" in r.getMessage() for r in caplog.records
            ), [r.getMessage() for r in caplog.records]
            # b still serves c ...
            c.transport.send(b.id, app(c, b, 2))
            await b.rec.wait_for(lambda: any(m.frm == c.id for m in b.rec.messages))
            # ... and a, once it reconnected (its stream was reset under it).
            await wait_until(lambda: _send_until_delivered(a, b))
            assert all(m.frm != a.id or m.index != 1 for m in b.rec.messages)


def _send_until_delivered(a: Node, b: Node) -> bool:
    if any(m.frm == a.id for m in b.rec.messages):
        return True
    if a.transport.pending(b.id) == 0:
        a.transport.send(b.id, app(a, b, 3))
    return False


async def test_huge_length_prefix_is_refused_without_buffering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="raftd.transport")
    with trio.fail_after(20):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            stream = await open_raw(a, b, RAFT)
            await stream.write(encode_varint(1 << 40))
            await wait_until(lambda: b.transport.stats.frames_rejected == 1)
            assert any(
                str(1 << 40) in r.getMessage() and a.id in r.getMessage() for r in caplog.records
            )
            # The stream is reset: reads fail rather than hang.
            with pytest.raises(StreamError):
                await stream.read(1)


async def test_spoofed_frm_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="raftd.transport")
    with trio.fail_after(20):
        async with (
            libp2p_node(tmp_path, "a") as a,
            libp2p_node(tmp_path, "b") as b,
            libp2p_node(tmp_path, "c") as c,
        ):
            stream = await open_raw(a, b, RAFT)
            spoofed = encode_batch([app(c, b, 1)])  # a claims to be c
            wrong_to = encode_batch([app(a, c, 2)])  # addressed to c, sent to b
            local = encode_batch([Message(MessageType.HUP, to=b.id, frm=a.id)])
            good = encode_batch([app(a, b, 3)])
            await stream.write(encode_frame(NULL_HEADER))
            for payload in (spoofed, wrong_to, local, good):
                await stream.write(encode_frame(payload))
            await b.rec.wait_for(lambda: len(b.rec.messages) >= 1)
            assert [(m.frm, m.index) for m in b.rec.messages] == [(a.id, 3)]
            assert b.transport.stats.refused == 3
            text = " ".join(r.getMessage() for r in caplog.records)
            assert "spoofed" in text and c.id in text and a.id in text


async def test_peer_restart_is_reconnected(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with libp2p_node(tmp_path, "a") as a:
            async with libp2p_node(tmp_path, "b") as b:
                b_id, b_port = b.id, b.port
                introduce(a, b)
                a.transport.send(b_id, app(a, b_id, 1))
                await b.rec.wait_for(lambda: len(b.rec.messages) == 1)
            # b is down: a keeps sending (as a leader's heartbeats would) and notices.
            rec2 = Recorder()
            await wait_until(lambda: _keep_sending(a, b_id, 2))
            assert b_id in a.rec.unreachable
            # Same identity, same port.
            async with libp2p_node(tmp_path, "b", port=b_port, rec=rec2) as b2:
                assert b2.id == b_id
                b2.transport.add_peer_addrs(a.id, a.addrs)
                await wait_until(lambda: _keep_sending(a, b_id, 3, rec2))
                # And the reverse direction works over the new connection.
                b2.transport.send(a.id, app(b_id, a, 4))
                await a.rec.wait_for(lambda: any(m.index == 4 for m in a.rec.messages))


def _keep_sending(a: Node, to: str, index: int, rec: Recorder | None = None) -> bool:
    """Poll step: true once ``rec`` got a message with ``index`` (or, without rec, once
    ``a`` reported ``to`` unreachable); otherwise send one more."""
    if rec is None:
        if to in a.rec.unreachable:
            return True
    elif any(m.index == index for m in rec.messages):
        return True
    if a.transport.pending(to) == 0:
        a.transport.send(to, app(a, to, index))
    return False


async def test_fault_injection_drop_and_delay(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            introduce(a, b)
            a.transport.set_fault(drop_rate=0.5, seed=42)
            for i in range(1000):
                a.transport.send(b.id, app(a, b, i))
            dropped = a.transport.stats.dropped_fault
            assert 400 < dropped < 600
            await b.rec.wait_for(lambda: len(b.rec.messages) == 1000 - dropped)
            got = [m.index for m in b.rec.messages]
            assert got == sorted(got)
            # Same seed, same decisions.
            a.transport.set_fault(drop_rate=0.5, seed=42)
            b.rec.messages.clear()
            for i in range(1000):
                a.transport.send(b.id, app(a, b, i))
            await b.rec.wait_for(lambda: len(b.rec.messages) == 1000 - dropped)
            assert [m.index for m in b.rec.messages] == got
            # Delay: nothing arrives before it, all arrives in order after it.
            a.transport.set_fault(delay_s=0.3)
            b.rec.messages.clear()
            t0 = trio.current_time()
            for i in range(50):
                a.transport.send(b.id, app(a, b, i))
            await b.rec.wait_for(lambda: len(b.rec.messages) == 50)
            assert trio.current_time() - t0 >= 0.3
            assert [m.index for m in b.rec.messages] == list(range(50))
            a.transport.set_fault()
            # A filter (e.g. a test partition).
            a.transport.set_filter(lambda peer, m: m.index % 2 == 0)
            b.rec.messages.clear()
            for i in range(10):
                a.transport.send(b.id, app(a, b, i))
            await b.rec.wait_for(lambda: len(b.rec.messages) == 5)
            assert [m.index for m in b.rec.messages] == [0, 2, 4, 6, 8]


async def test_idle_stream_survives_on_keepalives(tmp_path: Path) -> None:
    cfg = Libp2pTransportConfig(idle_timeout=0.6, keepalive_interval=0.15)
    with trio.fail_after(20):
        async with (
            libp2p_node(tmp_path, "a", config=cfg) as a,
            libp2p_node(tmp_path, "b", config=cfg) as b,
        ):
            introduce(a, b)
            a.transport.send(b.id, app(a, b, 1))
            await b.rec.wait_for(lambda: len(b.rec.messages) == 1)
            # Idle for more than two idle timeouts: keepalives must keep the stream open.
            with trio.move_on_after(1.5):
                await b.rec.wait_for(lambda: False)
            a.transport.send(b.id, app(a, b, 2))
            await b.rec.wait_for(lambda: len(b.rec.messages) == 2)
            assert a.transport.stats.unreachable_reports == 0


async def test_silent_inbound_stream_times_out(tmp_path: Path) -> None:
    cfg = Libp2pTransportConfig(idle_timeout=0.5, keepalive_interval=0.1)
    with trio.fail_after(20):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b", config=cfg) as b:
            stream = await open_raw(a, b, RAFT)
            t0 = trio.current_time()
            with pytest.raises(StreamError):
                await stream.read(1)  # b resets it when idle
            assert 0.4 < trio.current_time() - t0 < 5


# --- snapshots -------------------------------------------------------------------------


def _write_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


async def test_snapshot_20mib_streams_intact_with_bounded_memory(tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    src = tmp_path / "snap.bin"
    digest = _write_file(src, size)
    spool = tmp_path / "spool"
    spool.mkdir()
    cfg = Libp2pTransportConfig(snapshot_dir=str(spool))
    meta = SnapshotMetadata(index=100, term=3, conf_state=ConfState(voters=("x", "y")))
    with trio.fail_after(60):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b", config=cfg) as b:
            introduce(a, b)
            envelope = Message(MessageType.SNAP, to=b.id, frm=a.id, term=7, commit=100)
            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                ok = await a.transport.send_snapshot(b.id, meta, src, message=envelope)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert ok
            [got] = b.rec.snapshots
            assert got.size == size and got.sha256 == digest
            assert got.peer_id == a.id and got.meta == meta
            assert got.message.term == 7 and got.message.type == MessageType.SNAP
            assert got.message.snapshot is not None and got.message.snapshot.data == b""
            # Both ends live in this process: the whole image (20 MiB) must never be held.
            assert peak - base < 8 * 1024 * 1024, f"peak {(peak - base) / 2**20:.1f} MiB"
            assert list(spool.iterdir()) == []  # temp file cleaned up
            assert a.transport.stats.snapshots_sent == 1
            assert b.transport.stats.snapshots_received == 1


async def test_snapshot_from_async_iterator_and_refusal(tmp_path: Path) -> None:
    meta = SnapshotMetadata(index=5, term=1)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(10):
            yield bytes([i]) * 100_000  # re-chunked to <= 256 KiB frames

    with trio.fail_after(30):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            introduce(a, b)
            assert await a.transport.send_snapshot(b.id, meta, chunks())
            [got] = b.rec.snapshots
            expect = b"".join(bytes([i]) * 100_000 for i in range(10))
            assert got.sha256 == hashlib.sha256(expect).hexdigest()
            # Without a message, the envelope is synthesized.
            assert got.message.frm == a.id and got.message.to == b.id and got.message.term == 1

            # A receiver whose handler fails answers "not ok".
            async def refuse(*args: object) -> None:
                raise RuntimeError("disk full")

            b.transport.on_snapshot = refuse
            assert not await a.transport.send_snapshot(b.id, meta, chunks())
            assert a.transport.stats.snapshots_failed == 1


async def test_snapshot_checksum_mismatch_is_rejected(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            stream = await open_raw(a, b, SNAP)
            snap_msg = Message(
                MessageType.SNAP, to=b.id, frm=a.id, term=1, snapshot=Snapshot(SnapshotMetadata(9))
            )
            header = pb.SnapshotFrame(header=pb.SnapshotHeader(message=message_to_pb(snap_msg)))
            frames = [
                header,
                pb.SnapshotFrame(chunk=b"hello"),
                pb.SnapshotFrame(trailer=pb.SnapshotTrailer(size=5, sha256=b"\x00" * 32)),
            ]
            await stream.write(
                encode_frame(NULL_HEADER)
                + b"".join(encode_frame(f.SerializeToString()) for f in frames)
            )
            reader = FrameReader(stream, 4096)
            assert await reader.read_frame() == NULL_HEADER
            ack = pb.SnapshotAck.FromString(await reader.read_frame() or b"")
            assert not ack.ok and "sha256" in ack.error
            assert b.rec.snapshots == []


async def test_snapshot_to_unreachable_peer_fails_fast(tmp_path: Path) -> None:
    cfg = Libp2pTransportConfig(dial_timeout=1.0)
    src = tmp_path / "s.bin"
    src.write_bytes(b"abc")
    with trio.fail_after(10):
        async with libp2p_node(tmp_path, "a", config=cfg) as a:
            ghost = random_peer_id()
            a.transport.add_peer_addrs(ghost, ["/ip4/127.0.0.1/tcp/1"])
            assert not await a.transport.send_snapshot(ghost, SnapshotMetadata(1, 1), src)


async def test_invalid_peer_ids_and_addresses(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b") as b:
            with pytest.raises(ValueError):
                a.transport.add_peer_addrs("not-a-peer-id", ["/ip4/127.0.0.1/tcp/1"])
            with pytest.raises(ValueError):
                a.transport.add_peer_addrs(b.id, ["garbage"])
            with pytest.raises(ValueError, match="names peer"):
                a.transport.add_peer_addrs(b.id, [f"/ip4/127.0.0.1/tcp/1/p2p/{a.id}"])
            a.transport.add_peer_addrs(b.id, [f"{b.addrs[0]}/p2p/{b.id}"])
            assert a.transport.peer_addrs(b.id) == b.addrs
            a.transport.send("nope", app(a, "nope", 1))  # dropped, counted, no exception
            a.transport.send(a.id, app(a, a, 1))
            a.transport.send(b.id, Message(MessageType.HUP, to=b.id, frm=a.id))
            assert a.transport.stats.dropped_invalid == 3


async def test_concurrent_snapshots_over_the_limit_are_refused(tmp_path: Path) -> None:
    cfg = Libp2pTransportConfig(max_inbound_snapshots=1)
    meta = SnapshotMetadata(index=1, term=1)
    src = tmp_path / "s.bin"
    src.write_bytes(b"s" * 1000)
    with trio.fail_after(20):
        async with libp2p_node(tmp_path, "a") as a, libp2p_node(tmp_path, "b", config=cfg) as b:
            introduce(a, b)
            entered, release = trio.Event(), trio.Event()

            async def slow(*args: object) -> None:
                entered.set()
                await release.wait()

            b.transport.on_snapshot = slow
            results: list[bool] = []
            async with trio.open_nursery() as n:

                async def first() -> None:
                    results.append(await a.transport.send_snapshot(b.id, meta, src))

                n.start_soon(first)
                await entered.wait()
                assert not await a.transport.send_snapshot(b.id, meta, src)  # busy
                release.set()
            assert results == [True]
            # The connection survived the refusal: raft traffic still flows.
            a.transport.send(b.id, app(a, b, 1))
            await b.rec.wait_for(lambda: len(b.rec.messages) == 1)


async def test_slow_negotiation_on_a_live_connection_keeps_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that is slow to accept a stream but still sends on the connection (a
    starved host) keeps its connection: dropping it would add a handshake to its load.
    Each such timeout doubles the next attempt's bound, so a peer that always needs a
    little more than the dial timeout is still reached, on the same connection."""
    cfg = Libp2pTransportConfig(dial_timeout=1.0)
    caplog.set_level(logging.DEBUG, logger="raftd.transport")
    with trio.fail_after(60):
        async with (
            libp2p_node(tmp_path, "a", config=cfg) as a,
            libp2p_node(tmp_path, "b", config=cfg) as b,
        ):
            introduce(a, b)
            # b talks to a first: one connection, b's outbound stream on it.
            b.transport.send(a.id, app(b, a, 0))
            await a.rec.wait_for(lambda: len(a.rec.from_peer(b.id)) == 1)
            network = a.host.get_network()
            pid = ID.from_base58(b.id)
            (conn,) = network.get_connections(pid)
            negotiate = b.host.multiselect.negotiate

            async def slow_negotiate(*args: Any, **kwargs: Any) -> Any:
                await trio.sleep(2.5)  # more than twice a's dial timeout
                return await negotiate(*args, **kwargs)

            b.host.multiselect.negotiate = slow_negotiate
            i = 1
            # b keeps sending meanwhile (the connection is alive); a's message is
            # resent while not pending, as Raft would.
            while not any(m.index == 1 for m in b.rec.from_peer(a.id)):
                if not a.transport.pending(b.id):
                    a.transport.send(b.id, app(a, b, 1))
                b.transport.send(a.id, app(b, a, i))
                i += 1
                await trio.sleep(0.1)
            timeouts = [m for r in caplog.records if "timed out" in (m := r.getMessage())]
            assert len(timeouts) == 2, timeouts
            assert "after 1.0s on a connection still receiving: keeping it" in timeouts[0]
            assert "after 2.0s on a connection still receiving: keeping it" in timeouts[1]
            assert not conn.is_closed
            assert list(network.get_connections(pid)) == [conn]
