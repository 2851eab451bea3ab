"""A snapshot's image is written beside the Raft loop, not in it: while every member's
image is held up, the cluster keeps committing; once written, each member records its
image at the index where it began and compacts the log behind it.

In-process daemons (real libp2p, real LevelDB), the ``tiny`` preset (a snapshot every 300
entries, 50 kept behind it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import trio

from raftd.kv import commands
from raftd.runtime.group import Group
from raftd.testing.inproc import Cluster, cluster


async def put(g: Group, key: bytes, value: bytes) -> None:
    r = await g.propose(commands.put(key, value))
    assert r.result is not None


def set_fault_hooks(c: Cluster, make: Callable[[str], Callable[[str], None]]) -> None:
    """Give each member's database the fault hook ``make(member id)``."""
    for node in c.nodes:
        assert node.daemon is not None and node.daemon.db is not None
        node.daemon.db.fault_hook = make(str(node.group().id))


async def test_the_cluster_commits_while_every_snapshot_image_is_held_up(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    held: set[str] = set()
    lock = threading.Lock()

    def hold_images(name: str) -> Callable[[str], None]:
        def hook(point: str) -> None:
            if point == "snapfile:chunk" and not release.is_set():
                with lock:
                    held.add(name)
                # A worker thread; bounded, so a failing test cannot hang the run.
                release.wait(timeout=60)

        return hook

    async with cluster(tmp_path, preset="tiny") as (c, _):
        try:
            with trio.fail_after(90):
                ld = await c.leader()
                g = ld.group()
                set_fault_hooks(c, hold_images)
                i = 0
                # Until every member has begun its snapshot and is stuck writing it.
                while len(held) < 3:
                    await put(g, b"k%04d" % i, b"v" * 50)
                    i += 1
                began = {str(n.group().id): n.group()._snapshot_job for n in c.nodes}
                assert all(job is not None for job in began.values())
                at = {k: job.meta.index for k, job in began.items() if job is not None}
                before = {
                    str(n.group().id): (
                        n.group().storage.snapshot_metadata(),
                        n.group().storage.first_index(),
                    )
                    for n in c.nodes
                }
                # 400 more writes commit and apply everywhere meanwhile.
                for j in range(i, i + 400):
                    await put(g, b"k%04d" % j, b"v" * 50)
                for n in c.nodes:
                    await n.group().wait_applied(g.applied_index())
                for n in c.nodes:
                    grp = n.group()
                    assert grp.stats.snapshots_taken == 0
                    # Nothing recorded nor compacted yet.
                    snap, first = before[str(grp.id)]
                    assert grp.storage.snapshot_metadata() == snap and snap.index < 10
                    assert grp.storage.first_index() == first
                    assert grp._snapshot_job is began[str(grp.id)]
                release.set()
                for n in c.nodes:
                    grp = n.group()
                    snapper = grp._snapshotter
                    assert snapper is not None
                    while grp.stats.snapshots_taken < 1 or snapper.compaction_pending():
                        # Each write is a round of every member's loop (the deadline
                        # above bounds the wait).
                        await put(g, b"more", b"x")
                    # Recorded at the index where it began (a later one may follow).
                    store = grp.storage.snapshot_store
                    assert at[str(grp.id)] in [index for _, index in store.files()]
                    meta = grp.storage.snapshot_metadata()
                    assert meta.index >= at[str(grp.id)]
                    assert grp.storage.first_index() == meta.index - 50 + 1
                    assert grp.stats.snapshot_failures == 0
                kv = g.sm.get(b"k%04d" % (i + 399))
                assert kv is not None and kv.value == b"v" * 50
        finally:
            release.set()


async def test_a_snapshot_file_that_cannot_be_written_leaves_the_group_serving(
    tmp_path: Path,
) -> None:
    """A full disk under a snapshot file: the failure is counted and logged, nothing is
    recorded, and the group keeps committing and applying from its log."""
    failed: set[str] = set()

    def fail_images(name: str) -> Callable[[str], None]:
        def hook(point: str) -> None:
            if point == "snapfile:chunk":
                failed.add(name)
                raise OSError(28, "No space left on device (injected)")

        return hook

    async with cluster(tmp_path, preset="tiny") as (c, _):
        with trio.fail_after(90):
            ld = await c.leader()
            g = ld.group()
            set_fault_hooks(c, fail_images)
            i = 0
            while any(n.group().stats.snapshot_failures < 1 for n in c.nodes):
                await put(g, b"k%04d" % i, b"v" * 50)
                i += 1
            assert len(failed) == 3
            for j in range(i, i + 100):
                await put(g, b"k%04d" % j, b"v" * 50)
            for n in c.nodes:
                grp = n.group()
                await grp.wait_applied(g.applied_index())
                assert grp.failed is None and grp.storage.failed is None
                assert grp.stats.snapshot_failures == 1  # not retried before an interval
                assert grp.stats.snapshots_taken == 0
                assert grp.storage.first_index() <= 2  # the log keeps every entry
                kv = grp.sm.get(b"k%04d" % (i + 99))
                assert kv is not None and kv.value == b"v" * 50
