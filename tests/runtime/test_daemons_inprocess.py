"""Several daemons in one trio process: real libp2p hosts on 127.0.0.1, real LevelDB.

The real-process versions of these scenarios (kill -9, restarts) live in tests/e2e; these
run faster and show the group runtime's behaviour directly.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from raftd.app.config import DaemonConfig
from raftd.app.daemon import Daemon
from raftd.app.presets import PRESETS, Preset
from raftd.core import Message
from raftd.kv import commands
from raftd.runtime.group import Group, LeadershipLost, NotLeader
from raftd.transport.host import load_or_create_identity, peer_id_of

if TYPE_CHECKING:
    from trio_typing import TaskStatus

NS = "/raft/test"
PRESETS["tiny"] = replace(
    PRESETS["local"], name="tiny", snapshot_entries=300, compaction_trailing=50
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drop_all(pid: str, m: Message) -> bool:
    return False


def _drop_to(peer: str) -> Callable[[str, Message], bool]:
    return lambda pid, m: pid != peer


@dataclass
class Node:
    dir: Path
    port: int
    peer_id: str
    daemon: Daemon | None = None
    scope: trio.CancelScope | None = None

    def group(self, ns: str = NS) -> Group:
        assert self.daemon is not None
        return self.daemon.groups[ns]


class Cluster:
    def __init__(self, base: Path, n: int, namespaces: list[str], preset: str) -> None:
        self.nodes: list[Node] = []
        self.namespaces = namespaces
        self.preset = preset
        for i in range(n):
            d = base / f"n{i}"
            d.mkdir()
            self.nodes.append(Node(d, free_port(), peer_id_of(load_or_create_identity(d))))
        self.peers = [f"/ip4/127.0.0.1/tcp/{nd.port}/p2p/{nd.peer_id}" for nd in self.nodes]

    async def start(self, nursery: trio.Nursery, node: Node) -> None:
        cfg = DaemonConfig(
            data_dir=node.dir,
            namespaces=self.namespaces,
            listen=[f"/ip4/127.0.0.1/tcp/{node.port}"],
            peers=self.peers,
            discovery=[],
            preset=self.preset,
        )
        node.daemon = Daemon(cfg)

        async def runner(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                node.scope = scope
                assert node.daemon is not None
                await node.daemon.run(task_status=task_status)

        await nursery.start(runner)

    def isolate(self, node: Node) -> None:
        """Cut every Raft message to and from ``node`` (both directions, all groups)."""
        for n in self.live():
            assert n.daemon is not None
            for t in n.daemon.transports.values():
                t.set_filter(_drop_all if n is node else _drop_to(node.peer_id))

    def heal(self) -> None:
        for n in self.live():
            assert n.daemon is not None
            for t in n.daemon.transports.values():
                t.set_filter(None)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.daemon is not None]

    async def leader(self, ns: str = NS, exclude: Node | None = None) -> Node:
        """The current leader (other than ``exclude``), waiting for one if needed."""
        with trio.fail_after(10):
            while True:
                for n in self.live():
                    if n is not exclude and n.group(ns).is_leader:
                        return n
                async with trio.open_nursery() as waiters:
                    # Wake on any node's next role or leader change.
                    for n in self.live():

                        async def wake(g: Group) -> None:
                            await g.wait_state_change()
                            waiters.cancel_scope.cancel()

                        waiters.start_soon(wake, n.group(ns))


@asynccontextmanager
async def cluster(
    tmp_path: Path, n: int = 3, namespaces: list[str] | None = None, preset: str = "local"
) -> AsyncIterator[tuple[Cluster, trio.Nursery]]:
    c = Cluster(tmp_path, n, namespaces or [NS], preset)
    async with trio.open_nursery() as nursery:
        for node in c.nodes:
            await c.start(nursery, node)
        yield c, nursery
        nursery.cancel_scope.cancel()


async def put(g: Group, key: bytes, value: bytes) -> int:
    r = await g.propose(commands.put(key, value))
    assert r.result is not None
    return int(r.result.revision)


async def wait_applied_everywhere(c: Cluster, index: int, ns: str = NS) -> None:
    for n in c.live():
        await n.group(ns).wait_applied(index)


async def test_three_nodes_replicate_and_fail_over(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(30):
            ld = await c.leader()
            g = ld.group()
            for i in range(50):
                await put(g, b"k%d" % i, b"v%d" % i)
            await wait_applied_everywhere(c, g.applied_index())
            for n in c.nodes:
                kv = n.group().sm.get(b"k49")
                assert kv is not None and kv.value == b"v49"
            # Isolate the leader: it steps down (check-quorum), the others elect a new one
            # and writes resume.
            c.isolate(ld)
            new = await c.leader(exclude=ld)
            for i in range(50, 60):
                while True:
                    try:
                        await put(new.group(), b"k%d" % i, b"v%d" % i)
                        break
                    except (NotLeader, LeadershipLost):
                        new = await c.leader(exclude=ld)
            while g.is_leader:
                await g.wait_state_change()
            # Healed, the old leader rejoins as a follower and catches up.
            c.heal()
            await g.wait_applied(new.group().applied_index())
            kv = g.sm.get(b"k59")
            assert kv is not None and kv.value == b"v59"


async def test_lagging_follower_catches_up_by_snapshot(tmp_path: Path) -> None:
    async with cluster(tmp_path, preset="tiny") as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            lagger = next(n for n in c.nodes if n is not ld)
            c.isolate(lagger)
            g = ld.group()
            async with trio.open_nursery() as writers:
                for w in range(8):

                    async def writer(w: int = w) -> None:
                        for i in range(125):
                            await put(g, b"w%d-%d" % (w, i), b"x" * 50)

                    writers.start_soon(writer)
            assert g.stats.snapshots_taken >= 1
            assert g.storage.first_index() > 2  # the log was compacted past the lagger
            c.heal()
            lg = lagger.group()
            await lg.wait_applied(g.applied_index())
            assert lg.stats.snapshots_installed >= 1
            kv = lg.sm.get(b"w7-124")
            assert kv is not None and kv.value == b"x" * 50
            assert len(lg.sm.range(b"w", b"x").kvs) == 1000


async def test_namespaces_are_isolated(tmp_path: Path) -> None:
    async with cluster(tmp_path, namespaces=["/raft/a", "/raft/b"]) as (c, _):
        with trio.fail_after(30):
            la = await c.leader("/raft/a")
            lb = await c.leader("/raft/b")
            await put(la.group("/raft/a"), b"only-a", b"1")
            await put(lb.group("/raft/b"), b"only-b", b"2")
            for n in c.nodes:
                ga, gb = n.group("/raft/a"), n.group("/raft/b")
                await ga.wait_applied(la.group("/raft/a").applied_index())
                await gb.wait_applied(lb.group("/raft/b").applied_index())
                assert ga.sm.get(b"only-a") is not None and ga.sm.get(b"only-b") is None
                assert gb.sm.get(b"only-b") is not None and gb.sm.get(b"only-a") is None


async def test_follower_read_barrier_sees_leader_writes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(30):
            ld = await c.leader()
            f = next(n for n in c.nodes if n is not ld)
            await put(ld.group(), b"rk", b"rv")
            # Immediately after the ack, a linearizable read on a follower must see it.
            await f.group().read_barrier()
            kv = f.group().sm.get(b"rk")
            assert kv is not None and kv.value == b"rv"
            with pytest.raises(NotLeader):
                await f.group().propose(commands.put(b"x", b"y"))


__all__ = ["Preset"]
