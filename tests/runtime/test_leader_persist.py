"""The leader sends its appends while it persists them (Raft thesis §10.2.1), and counts
itself in the commit quorum only once its own write is durable.

In-process daemons (real libp2p, real LevelDB): the leader's log write is held in its
writer thread, then fails, as if the leader died before its fsync."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import trio

from raftd.client import open_client
from raftd.testing.inproc import NS, Node, cluster


async def test_entries_sent_before_the_leaders_persist_survive_its_failure(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            follower = next(n for n in c.nodes if n is not ld)
            others = [n for n in c.nodes if n is not ld]
            assert ld.daemon is not None and ld.daemon.db is not None
            assert follower.daemon is not None
            sock = str(follower.daemon.cfg.socket_path)
            async with open_client(sock, namespace=NS, timeout=30) as cl:
                for i in range(10):
                    await cl.put(f"before{i}", "v")

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

                    def holds_it(n: Node) -> bool:
                        st = n.group().storage
                        return st.last_index() >= index and st.term(index) == term

                    # The leader's own write is held, yet both followers have its entry
                    # (this index, the leader's term) on their disks: the appends went out
                    # while the leader was persisting.
                    for n in others:
                        while not holds_it(n):  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    # Not committed anywhere while the leader's entry is not durable: it
                    # does not count itself, and without it there is no majority yet.
                    assert lg.node.raft.log.committed < index
                    assert not answers
                    release.set()  # the leader's write fails: it stops acknowledging
                # A new leader commits the entry the followers hold; the write is
                # answered, and applied once.
                assert len(answers) == 1
                new = await c.leader(exclude=ld)
                kv = new.group().sm.get(b"sent-early")
                assert kv is not None and kv.version == 1
                for i in range(10):
                    assert new.group().sm.get(b"before%d" % i) is not None
                assert ld.group().failed is not None
