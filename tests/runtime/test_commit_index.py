"""The commit index is not written on its own, and a restarted node still opens with a
commit index that covers everything it applied.

A Ready whose hard state only moves the commit index needs no durability: a restarted
node learns the commit index again from its leader, and every entry its state machine
applied was committed. So the runtime writes a commit index only along with a term, a
vote or entries, and the core's view of the stored hard state raises the commit index
to the applied one (within the log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from raftd.client import open_client
from raftd.core.types import Entry, HardState
from raftd.runtime.group import MetaOnlyStorage
from raftd.storage.leveldb import LevelDB
from raftd.testing.inproc import NS, cluster


def test_the_cores_view_raises_the_stored_commit_to_the_applied_index(tmp_path: Path) -> None:
    db = LevelDB(tmp_path)
    try:
        st = db.group(NS)
        fresh = MetaOnlyStorage(st, applied=5)
        assert fresh.initial_state()[0] == HardState()  # nothing stored: left empty
        entries = [Entry(index=i, term=2, data=b"x") for i in range(1, 11)]
        st.save(HardState(term=2, vote="a", commit=3), entries, None)
        assert MetaOnlyStorage(st, applied=7).initial_state()[0] == HardState(2, "a", 7)
        # Never past the log, never below what is stored.
        assert MetaOnlyStorage(st, applied=20).initial_state()[0].commit == 10
        assert MetaOnlyStorage(st, applied=2).initial_state()[0].commit == 3
        assert st.initial_state()[0].commit == 3  # the storage itself is unchanged
    finally:
        db.close()


async def test_commit_only_readies_write_nothing_and_a_restart_keeps_the_applied_index(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as (c, nursery):
        with trio.fail_after(60):
            ld = await c.leader()
            follower = c.other(ld)
            fg = follower.group()
            saves: list[tuple[HardState | None, int, bool]] = []
            original = fg.storage._prepare_save

            def record(hs: HardState | None, entries: Any, snap: Any, *, sync: bool) -> Any:
                if snap is None:
                    saves.append((hs, len(entries), sync))
                return original(hs, entries, snap, sync=sync)

            setattr(fg.storage, "_prepare_save", record)  # noqa: B010 - patching a method
            async with open_client(ld.socket, namespace=NS, timeout=30) as cl:
                for i in range(20):
                    last = await cl.put(f"k{i}", f"v{i}")
            while fg.applied_index() < ld.group().applied_index():  # noqa: ASYNC110
                await trio.sleep(0.01)
            # Every write the follower made carried entries or a term/vote change.
            assert saves, "the follower persisted nothing"
            assert all(n > 0 or sync for _, n, sync in saves), saves
            applied = fg.applied_index()
            stored = fg.storage.initial_state()[0].commit

            # Restart the follower: it opens with everything it applied counted as
            # committed (the stored commit index may trail), and serves the data.
            assert follower.daemon is not None and follower.daemon.db is not None
            db = follower.daemon.db
            follower.daemon.stop()
            while not db.closed:  # noqa: ASYNC110 - set when the daemon's run ends
                await trio.sleep(0.01)
            await c.start(nursery, follower)
            node = follower.group().node
            assert node is not None
            assert node.raft.log.committed >= applied >= stored
            assert node.raft.log.applied == applied
            async with open_client(follower.socket, namespace=NS, timeout=30) as cl:
                got = await cl.get("k19")  # linearizable
                assert got is not None and got.value == b"v19"
                assert got.mod_revision == last.revision
        nursery.cancel_scope.cancel()
