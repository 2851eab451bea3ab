"""Several daemons in one trio process: real libp2p hosts on 127.0.0.1, real LevelDB.

The real-process versions of these scenarios (kill -9, restarts) live in tests/e2e; these
run faster and show the group runtime's behaviour directly.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio

from raftd.kv import commands
from raftd.runtime.group import Group, LeadershipLost, NotLeader
from raftd.testing.inproc import NS, Cluster, cluster
from raftd.wire.pb import kv_pb2 as kpb


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
            lagger = c.other(ld)
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
            # The installed snapshot is the lagger's last one, for its snapshot policy.
            assert lg._snapshotter is not None and lg._snapshotter.snapshot_bytes > 0
            kv = lg.sm.get(b"w7-124")
            assert kv is not None and kv.value == b"x" * 50
            assert len(lg.sm.range(b"w", b"x").kvs) == 1000
            # The install ran on a worker thread; the node's timers still answer. As
            # leader, it expires a lease when its TTL runs out.
            grant = kpb.Command(lease_grant=kpb.LeaseGrantRequest(ttl=1))
            r = await g.propose(commands.encode(grant))
            assert r.result is not None
            lease_id = int(r.result.lease_grant.id)
            await lg.wait_applied(r.index)
            while not lg.is_leader:
                with contextlib.suppress(NotLeader, LeadershipLost):
                    g.transfer_leader(lagger.peer_id)
                with trio.move_on_after(1.0):
                    await lg.wait_state_change()
            while lg.sm.lease(lease_id) is not None:
                await lg.wait_applied(lg.applied_index() + 1)


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
            f = c.other(ld)
            await put(ld.group(), b"rk", b"rv")
            # Immediately after the ack, a linearizable read on a follower must see it.
            await f.group().read_barrier()
            kv = f.group().sm.get(b"rk")
            assert kv is not None and kv.value == b"rv"
            with pytest.raises(NotLeader):
                await f.group().propose(commands.put(b"x", b"y"))
