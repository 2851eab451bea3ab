"""Quorum-loss recovery: 5 nodes, 3 lost for good, a survivor forced into a new cluster
keeps every acknowledged write and takes writes again."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from raftd.app.config import DaemonConfig
from raftd.app.daemon import Daemon
from raftd.app.recover import RecoverError, force_new_cluster
from raftd.kv import commands
from raftd.testing.inproc import NS, cluster
from raftd.testing.launch import free_port


async def test_force_new_cluster_keeps_acknowledged_writes(tmp_path: Path) -> None:
    acked: list[bytes] = []
    async with cluster(tmp_path, n=5) as (c, _):
        with trio.fail_after(30):
            ld = await c.leader()
            for i in range(200):
                key = b"k%03d" % i
                await ld.group().propose(commands.put(key, b"v"))
                acked.append(key)
            survivor = c.other(ld)
            await survivor.group().wait_applied(ld.group().applied_index())
    # All five are down; three (the leader among them) never come back.
    reports = force_new_cluster(survivor.dir)
    assert [r.namespace for r in reports] == [NS]
    assert len(reports[0].removed_members) == 4
    cfg = DaemonConfig(
        data_dir=survivor.dir,
        namespaces=[NS],
        listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"],
        discovery=[],
    )
    d = Daemon(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        g = d.groups[NS]
        with trio.fail_after(10):
            while not g.is_leader:
                await g.wait_state_change()
            for key in acked:
                assert g.sm.get(key) is not None, key
            r = await g.propose(commands.put(b"after-recovery", b"ok"))
            assert r.result is not None
            assert [m["id"] for m in g.status()["members"]] == [d.peer_id]
        nursery.cancel_scope.cancel()


def test_recover_refuses_a_non_data_dir(tmp_path: Path) -> None:
    with pytest.raises(RecoverError, match=r"identity\.key"):
        force_new_cluster(tmp_path)
