"""A failed write (disk full) on the leader: it stops acknowledging, the others elect a new
leader and keep taking writes, the daemon keeps running, and nothing acknowledged is
lost."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio

from raftd.kv import commands
from raftd.runtime.group import GroupError
from raftd.testing.inproc import cluster


async def test_disk_full_on_leader_stops_its_acks_not_the_cluster(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(30):
            ld = await c.leader()
            g = ld.group()
            acked = []
            for i in range(20):
                await g.propose(commands.put(b"before%d" % i, b"v"))
                acked.append(b"before%d" % i)
            assert ld.daemon is not None and ld.daemon.db is not None

            def disk_full(point: str) -> None:
                if point.startswith("write:"):
                    raise OSError(errno.ENOSPC, "No space left on device")

            ld.daemon.db.fault_hook = disk_full
            with pytest.raises(GroupError):
                await g.propose(commands.put(b"lost", b"never acknowledged"))
            assert g.failed is not None
            assert "No space left" in str(g.failed)
            new = await c.leader(exclude=ld)
            for i in range(20):
                await new.group().propose(commands.put(b"after%d" % i, b"v"))
                acked.append(b"after%d" % i)
            # The daemon itself still runs (its other tasks, e.g. the API, are alive).
            assert ld.daemon.groups and ld.scope is not None and not ld.scope.cancel_called
            for key in acked:
                assert new.group().sm.get(key) is not None
