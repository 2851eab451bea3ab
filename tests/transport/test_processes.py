"""The libp2p transport between separate OS processes (the echo peer in echo_peer.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from raftd.core.types import MessageType
from raftd.transport.libp2p import Libp2pTransportConfig

from .helpers import Node, app, libp2p_node, wait_until

pytestmark = pytest.mark.slow

ECHO = Path(__file__).with_name("echo_peer.py")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Peer:
    proc: Any  # trio.Process
    id: str
    addrs: list[str]


async def _read_line(stream: Any) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError(f"peer exited before announcing itself: {buf!r}")
        buf += chunk
    return buf


@asynccontextmanager
async def echo_peer(data_dir: Path, port: int = 0) -> AsyncIterator[Peer]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(ECHO), str(data_dir), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        with trio.fail_after(20):  # importing libp2p alone takes ~1 s
            info = json.loads(await _read_line(proc.stdout))
        yield Peer(proc, info["id"], info["addrs"])
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await proc.wait()


def _responses(a: Node, peer_id: str) -> list[int]:
    return [m.index for m in a.rec.messages if m.frm == peer_id and m.type == MessageType.APP_RESP]


async def test_two_processes_exchange_in_order(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with echo_peer(tmp_path / "p") as peer, libp2p_node(tmp_path, "a") as a:
            a.transport.add_peer_addrs(peer.id, peer.addrs)
            n = 20000
            window = 1000  # unanswered requests, like Raft's inflight limit: the echo
            # answers a whole frame at once, so an unbounded burst would overflow its queue
            for i in range(n):
                if i - len(a.rec.messages) >= window:
                    await a.rec.wait_for(lambda i=i: i - len(a.rec.messages) < window // 2)  # type: ignore[misc]
                a.transport.send(peer.id, app(a, peer.id, i, b"d" * 64))
            await a.rec.wait_for(lambda: len(a.rec.messages) >= n)
            assert _responses(a, peer.id) == list(range(n))
            assert a.transport.stats.dropped_queue_full == 0


async def test_killed_process_restarted_on_same_port_is_reconnected(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with libp2p_node(tmp_path, "a") as a:
            async with echo_peer(tmp_path / "p") as peer:
                pid, addrs = peer.id, peer.addrs
                port = int(addrs[0].rsplit("/", 1)[1])
                a.transport.add_peer_addrs(pid, addrs)
                a.transport.send(pid, app(a, pid, 1))
                await a.rec.wait_for(lambda: _responses(a, pid) == [1])
                peer.proc.send_signal(signal.SIGKILL)
                await peer.proc.wait()

            # Down: a keeps sending and reports the peer unreachable.
            def probe_down() -> bool:
                if pid in a.rec.unreachable:
                    return True
                if not a.transport.pending(pid):
                    a.transport.send(pid, app(a, pid, 2))
                return False

            await wait_until(probe_down)

            async with echo_peer(tmp_path / "p", port) as again:
                assert again.id == pid  # same identity from the data dir

                def probe_up() -> bool:
                    if 3 in _responses(a, pid):
                        return True
                    if not a.transport.pending(pid):
                        a.transport.send(pid, app(a, pid, 3))
                    return False

                await wait_until(probe_up)


async def test_frozen_process_is_reported_and_recovers(tmp_path: Path) -> None:
    """SIGSTOP the peer: nothing errors by itself (pitfall 8), so the bounded writes and
    dials must notice; after SIGCONT traffic resumes."""
    cfg = Libp2pTransportConfig(write_timeout=3.0, dial_timeout=2.0)
    with trio.fail_after(90):
        async with libp2p_node(tmp_path, "a", config=cfg) as a, echo_peer(tmp_path / "p") as peer:
            a.transport.add_peer_addrs(peer.id, peer.addrs)
            a.transport.send(peer.id, app(a, peer.id, 0))
            await a.rec.wait_for(lambda: _responses(a, peer.id) == [0])
            peer.proc.send_signal(signal.SIGSTOP)
            try:
                blob = b"b" * 65536
                t0 = trio.current_time()

                # Keep writing until the socket buffers and the Yamux window are full
                # and the bounded write gives up.
                def probe_frozen() -> bool:
                    if peer.id in a.rec.unreachable:
                        return True
                    if a.transport.pending(peer.id) < 8:
                        a.transport.send(peer.id, app(a, peer.id, 1, blob))
                    return False

                await wait_until(probe_frozen)
                assert trio.current_time() - t0 < 15  # write_timeout plus buffer filling
            finally:
                peer.proc.send_signal(signal.SIGCONT)

            def probe_back() -> bool:
                if 2 in _responses(a, peer.id):
                    return True
                if not a.transport.pending(peer.id):
                    a.transport.send(peer.id, app(a, peer.id, 2))
                return False

            await wait_until(probe_back)
