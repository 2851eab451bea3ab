"""The leader sends its appends while it persists them (Raft thesis §10.2.1), and counts
itself in the commit quorum only once its own write is durable.

While its write is outstanding, Raft keeps moving: the leader steps its followers'
acknowledgements, so two healthy followers commit without it, and a leader whose write
is stuck hands leadership over.

In-process daemons (real libp2p, real LevelDB): the leader's log write is held in its
writer thread (a disk that does not answer), then fails or is let go."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import trio

from raftd.client import open_client
from raftd.core import StateType
from raftd.testing.inproc import NS, cluster


async def test_entries_sent_before_the_leaders_persist_survive_its_failure(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            follower, other = (n for n in c.nodes if n is not ld)
            assert ld.daemon is not None and ld.daemon.db is not None
            sock = follower.socket
            async with open_client(sock, namespace=NS, timeout=30) as cl:
                for i in range(10):
                    await cl.put(f"before{i}", "v")
                # Leader and one follower: without the leader's own durable copy there
                # is no majority.
                c.isolate(other)

                held = threading.Event()
                release = threading.Event()

                def hold(point: str) -> None:
                    if point == "write:save":
                        held.set()
                        release.wait(30)
                        raise OSError(errno.EIO, "injected: the leader died before its fsync")

                ld.daemon.db.fault_hook = hold
                answers: list[int] = []

                async def write() -> None:
                    answers.append((await cl.put("sent-early", "x")).revision)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write)
                    while not held.is_set():  # noqa: ASYNC110 - set by the writer thread
                        await trio.sleep(0.01)
                    lg = ld.group()
                    assert lg.node is not None
                    index = lg.node.raft.log.last_index()
                    term = lg.node.raft.term
                    st = follower.group().storage
                    # The leader's own write is held, yet the follower has its entry (this
                    # index, the leader's term) on its disk: the append went out while
                    # the leader was persisting.
                    while not (st.last_index() >= index and st.term(index) == term):  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    # ... and the leader has counted the follower's acknowledgement while
                    # its own write was outstanding,
                    pr = lg.node.raft.prs[follower.peer_id]
                    while pr.match < index:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    # ... yet nothing is committed: it does not count itself before its
                    # entry is durable, and one follower alone is no majority.
                    assert lg.node.raft.log.committed < index
                    assert not answers
                    release.set()  # the leader's write fails: it stops acknowledging
                    c.heal()
                # A new leader commits the entry the followers hold; the write is
                # answered, and applied once.
                assert len(answers) == 1
                new = await c.leader(exclude=ld)
                kv = new.group().sm.get(b"sent-early")
                assert kv is not None and kv.version == 1
                for i in range(10):
                    assert new.group().sm.get(b"before%d" % i) is not None
                assert ld.group().failed is not None


async def test_a_stuck_leader_disk_does_not_stall_the_cluster(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            follower = c.other(ld)
            assert ld.daemon is not None and ld.daemon.db is not None
            sock = follower.socket
            async with open_client(sock, namespace=NS, timeout=30) as cl:
                for i in range(10):
                    await cl.put(f"before{i}", "v")

                stuck = threading.Event()
                release = threading.Event()

                def hang(point: str) -> None:
                    if point == "write:save" and not release.is_set():
                        stuck.set()
                        release.wait(30)

                ld.daemon.db.fault_hook = hang
                acked: list[str] = []
                async with trio.open_nursery() as nursery:

                    async def writer() -> None:
                        i = 0
                        while True:
                            await cl.put(f"k{i}", "v")
                            acked.append(f"k{i}")
                            i += 1

                    nursery.start_soon(writer)
                    while not stuck.is_set():  # noqa: ASYNC110 - set by the writer thread
                        await trio.sleep(0.01)
                    n0 = len(acked)
                    # The leader's disk does not answer; the two followers keep
                    # committing (writes are answered) and one of them takes over.
                    while len(acked) < n0 + 20:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    new = await c.leader(exclude=ld)
                    # (Its own Ready loop still waits on the disk; its core knows.)
                    lnode = ld.group().node
                    assert lnode is not None
                    while lnode.raft.state == StateType.LEADER:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    assert ld.group().stats.stuck_persist_handovers >= 1
                    assert stuck.is_set() and not release.is_set()
                    release.set()
                    nursery.cancel_scope.cancel()
                # Nothing acknowledged is lost, and the old leader catches up.
                await cl.put("after", "v")
                for n in c.nodes:
                    g = n.group()
                    while g.sm.get(b"after") is None:
                        await g.wait_applied(g.applied_index() + 1)
                    for k in acked:
                        assert g.sm.get(k.encode()) is not None, (n.peer_id, k)
                assert new.group().failed is None and ld.group().failed is None
