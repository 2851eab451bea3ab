"""Formation with several daemons in one trio process on 127.0.0.1 (no root needed):
discovery through ``--bootstrap`` entries and peer exchange only.

The multi-host behaviour (mDNS, partitions, restarts of real processes) is tested in
network namespaces (test_netns_*.py); these check the same machinery quickly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from raftd.app.config import DaemonConfig
from raftd.app.daemon import Daemon
from raftd.formation.cluster import CLUSTER_KEY, has_user_writes
from raftd.formation.service import Formation
from raftd.kv import commands
from raftd.testing.launch import free_port
from raftd.transport.host import load_or_create_identity, peer_id_of

NS = "/raft/t"
T = TypeVar("T")


@asynccontextmanager
async def daemons(tmp: Path, n: int, **cfg: object) -> AsyncIterator[list[Daemon]]:
    ports = [free_port() for _ in range(n)]
    dirs = [tmp / f"d{i}" for i in range(n)]
    ids = [peer_id_of(load_or_create_identity(d)) for d in dirs]
    seed = f"/ip4/127.0.0.1/tcp/{ports[0]}/p2p/{ids[0]}"
    out: list[Daemon] = []
    async with trio.open_nursery() as nursery:
        for i in range(n):
            c = DaemonConfig(
                data_dir=dirs[i],
                namespaces=[NS],
                listen=[f"/ip4/127.0.0.1/tcp/{ports[i]}"],
                bootstrap=[seed] if i else [],
                **{"discovery": ["pex"], **cfg},  # type: ignore[arg-type]
            )
            c.validate()
            d = Daemon(c)
            await nursery.start(d.run)
            out.append(d)
        try:
            yield out
        finally:
            for d in out:
                d.stop()


def formation(d: Daemon) -> Formation:
    assert isinstance(d.formation, Formation)
    return d.formation


def one_cluster(ds: list[Daemon], cap: int = 5) -> str | None:
    ids = {d.peer_id for d in ds}
    clusters, leaders = set(), set()
    for d in ds:
        st = formation(d).namespace_status(NS)
        members = {m["id"] for m in st["members"]}
        voters = [m for m in st["members"] if m["voter"]]
        if members != ids or len(voters) != min(len(ids), cap) or not st["leader"]:
            return None
        clusters.add(st["cluster_id"])
        leaders.add(st["leader"])
    if len(clusters) == 1 and len(leaders) == 1 and "" not in clusters:
        return str(clusters.pop())
    return None


async def wait(fn: Callable[[], T | None], what: str) -> T:
    """Poll ``fn`` until truthy (the caller bounds the wait with trio.fail_after)."""
    while True:
        v = fn()
        if v:
            return v
        await trio.sleep(0.05)


async def test_daemons_form_one_cluster_through_bootstrap_entries(tmp_path: Path) -> None:
    async with daemons(tmp_path, 3) as ds:
        with trio.fail_after(40):
            cid = await wait(lambda: one_cluster(ds), "one cluster")
        leader = next(d for d in ds if d.groups[NS].is_leader)
        g = leader.groups[NS]
        # The cluster record is the first entry: replicated, and not a user write.
        kv = g.sm.get(CLUSTER_KEY)
        assert kv is not None and cid in kv.value.decode()
        assert not has_user_writes(g.sm)
        await g.propose(commands.put(b"k", b"v"))
        assert has_user_writes(g.sm)
        for d in ds:
            assert formation(d).namespace_status(NS)["conflict"] is None
            stats = formation(d).metrics()[NS]
            assert stats["conflict"] == 0
        assert sum(formation(d).metrics()[NS]["bootstraps"] for d in ds) == 1
        # The status file mirrors the in-process status (it is rewritten at most ten
        # times a second, so it may still show the state from before the formation).
        status = ds[0].cfg.data_dir / "status.json"
        with trio.fail_after(10):
            await wait(lambda: str(cid) in status.read_text(), "the status file")


async def test_voter_cap_makes_the_rest_learners(tmp_path: Path) -> None:
    async with daemons(tmp_path, 4, voter_cap=3) as ds:
        with trio.fail_after(40):
            await wait(lambda: one_cluster(ds, cap=3), "one cluster, 3 voters")


async def test_graceful_leave_hands_over_leadership(tmp_path: Path) -> None:
    async with daemons(tmp_path, 3) as ds:
        with trio.fail_after(40):
            await wait(lambda: one_cluster(ds), "one cluster")
            leader = next(d for d in ds if d.groups[NS].is_leader)
            nf = formation(leader).namespaces[NS]
            assert await nf.leave(20)
            rest = [d for d in ds if d is not leader]

            def left() -> bool:
                for d in rest:
                    g = d.groups[NS]
                    if leader.peer_id in g.conf.voters + g.conf.learners or not g.leader:
                        return False
                return True

            await wait(left, "the old leader removed, a new leader elected")
            assert not leader.groups[NS].is_leader


async def test_expect_founds_as_soon_as_n_founders_are_seen(tmp_path: Path) -> None:
    async with daemons(tmp_path, 3, expect=3) as ds:
        with trio.fail_after(40):
            await wait(lambda: one_cluster(ds), "one cluster")
        decisions = [formation(d).namespace_status(NS)["decision"] for d in ds]
        assert not any("window" in x for x in decisions), decisions


async def test_dht_finds_peers_beyond_the_entry_point(tmp_path: Path) -> None:
    """Only the DHT (and one bootstrap entry, node 0): nodes 1 and 2 learn of each
    other from provider records, not from peer exchange (which is off)."""
    async with daemons(tmp_path, 3, discovery=["dht"]) as ds:
        with trio.fail_after(60):
            await wait(lambda: one_cluster(ds), "one cluster")

            def found_by_dht() -> bool:
                rec = formation(ds[1]).hub.tables[NS].get(ds[2].peer_id)
                return rec is not None and "dht" in rec.sources

            await wait(found_by_dht, "node 1 found node 2 in the DHT")
            assert all("pex" not in r.sources for r in formation(ds[1]).hub.tables[NS].records())
