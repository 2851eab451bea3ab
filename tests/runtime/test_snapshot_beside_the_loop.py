"""Snapshots cost the Raft loop little: one the policy asks for has no image (the state
machine is flushed beside the loop, then the log is compacted behind it), and an image is
made only for a follower too far behind the log, and written beside the loop: while the
leader's image is held up, the cluster keeps committing; once written, the follower
installs it and catches up.

In-process daemons (real libp2p, real LevelDB), the ``tiny`` preset (a snapshot every 300
entries, 50 kept behind it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import trio

from raftd.kv import commands
from raftd.runtime.group import Group
from raftd.testing.inproc import Cluster, Node, cluster


async def put(g: Group, key: bytes, value: bytes) -> None:
    r = await g.propose(commands.put(key, value))
    assert r.result is not None


def set_fault_hook(node: Node, hook: Callable[[str], None]) -> None:
    assert node.daemon is not None and node.daemon.db is not None
    node.daemon.db.fault_hook = hook


def compaction_pending(g: Group) -> bool:
    s = g._snapshotter
    assert s is not None
    return s.compaction_pending()


async def leave_behind(c: Cluster) -> tuple[Node, Node, Node, int]:
    """Cut one follower off and write until the other two have each taken a snapshot and
    compacted their logs past where it stopped. Returns (leader, the follower left
    behind, the other follower, keys written)."""
    ld = await c.leader()
    behind = c.other(ld)
    peer = next(n for n in c.nodes if n is not ld and n is not behind)
    c.isolate(behind)
    g = ld.group()
    i = 0
    while (
        any(
            n.group().stats.snapshots_taken < 1 or compaction_pending(n.group()) for n in (ld, peer)
        )
        or ld.group().storage.first_index() <= behind.group().applied_index() + 1
    ):
        await put(g, b"k%04d" % i, b"v" * 50)
        i += 1
    return ld, behind, peer, i


async def test_policy_snapshots_have_no_image_and_a_lagging_follower_gets_one(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    held = threading.Event()

    def hold_images(point: str) -> None:
        if point == "snapfile:chunk" and not release.is_set():
            held.set()
            # A worker thread; bounded, so a failing test cannot hang the run.
            release.wait(timeout=60)

    async with cluster(tmp_path, preset="tiny") as (c, _):
        try:
            with trio.fail_after(90):
                ld, behind, peer, i = await leave_behind(c)
                g = ld.group()
                for n in (ld, peer):
                    grp = n.group()
                    meta = grp.storage.snapshot_metadata()
                    # Recorded without an image: no file at its index, the log compacted
                    # behind it, the state machine at or past it.
                    assert grp.storage.image_metadata() != meta
                    assert meta.index not in [ix for _, ix in grp.storage.snapshot_store.files()]
                    assert grp.storage.first_index() == meta.index - 50 + 1
                    assert grp.sm.applied_index() >= meta.index
                    assert grp.stats.snapshot_images == 0
                set_fault_hook(ld, hold_images)
                c.heal()
                # The leader begins an image for the follower (a worker thread's flag).
                while not held.is_set():  # noqa: ASYNC110
                    await trio.sleep(0.01)
                job = g._snapshot_job
                assert job is not None
                began = job.meta.index
                # 200 more writes commit and apply on the two others meanwhile.
                for j in range(i, i + 200):
                    await put(g, b"k%04d" % j, b"v" * 50)
                await peer.group().wait_applied(g.applied_index())
                assert g._snapshot_job is job and g.stats.snapshot_images == 0
                assert behind.group().stats.snapshots_installed == 0
                release.set()
                await behind.group().wait_applied(g.applied_index())
                assert g.stats.snapshot_images == 1 and g.stats.snapshot_failures == 0
                assert behind.group().stats.snapshots_installed >= 1
                assert behind.group().storage.snapshot_metadata().index >= began
                for n in c.nodes:
                    kv = n.group().sm.get(b"k%04d" % (i + 199))
                    assert kv is not None and kv.value == b"v" * 50
        finally:
            release.set()


async def test_an_image_that_cannot_be_written_leaves_the_group_serving(
    tmp_path: Path,
) -> None:
    """A full disk under the image for a lagging follower: the failure is counted and
    logged, nothing is recorded, and the group keeps committing from its log."""

    def fail_images(point: str) -> None:
        if point == "snapfile:chunk":
            raise OSError(28, "No space left on device (injected)")

    async with cluster(tmp_path, preset="tiny") as (c, _):
        with trio.fail_after(90):
            ld, _, peer, i = await leave_behind(c)
            g = ld.group()
            set_fault_hook(ld, fail_images)
            snap = g.storage.snapshot_metadata()
            c.heal()
            while g.stats.snapshot_failures < 1:  # noqa: ASYNC110 - a counter
                await trio.sleep(0.01)
            for j in range(i, i + 100):
                await put(g, b"k%04d" % j, b"v" * 50)
            await peer.group().wait_applied(g.applied_index())
            assert g.failed is None and g.storage.failed is None
            assert g.stats.snapshot_failures == 1  # not retried before an interval
            assert g.stats.snapshot_images == 0
            assert g.storage.snapshot_metadata() == snap
            # The follower still asks for an image, but none is tried before the retry
            # time: the loop has no snapshot work to spin on meanwhile.
            assert not g._snapshot_work_pending()
            kv = g.sm.get(b"k%04d" % (i + 99))
            assert kv is not None and kv.value == b"v" * 50
