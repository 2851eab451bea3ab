"""The ops endpoints of real daemons: three in-process ``Daemon`` objects (real libp2p on
127.0.0.1, real LevelDB, the API socket) with ``metrics`` on a free port each, scraped
over TCP and parsed with prometheus_client's parser."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from raftd.client import open_client
from raftd.kv import commands
from raftd.runtime.group import LeadershipLost, NotLeader
from raftd.testing.inproc import Cluster, Node

from .helpers import get, poll_until, raw_request, sample, scrape

NS = "/raft/ops"


def ops_port(node: Node) -> int:
    assert node.daemon is not None
    ops = node.daemon.ops
    assert ops is not None
    return ops.port


async def readyz(node: Node) -> tuple[int, dict[str, Any]]:
    r = await get(ops_port(node), "/readyz")
    assert r.headers["content-type"] == "application/json"
    return r.status, json.loads(r.body)


@asynccontextmanager
async def cluster(tmp_path: Path, n: int = 3) -> AsyncIterator[tuple[Cluster, trio.Nursery]]:
    """``n`` daemons with their ops endpoints on free ports, not started: start each with
    ``c.start(nursery, node)``."""
    c = Cluster(tmp_path, n, [NS], "local", overrides=lambda i: {"metrics": "127.0.0.1:0"})
    async with trio.open_nursery() as nursery:
        yield c, nursery
        nursery.cancel_scope.cancel()


def unique_leader(c: Cluster) -> Node | None:
    """The leader if exactly one live node says it leads, else None."""
    leaders = [n for n in c.live() if n.group(NS).is_leader]
    return leaders[0] if len(leaders) == 1 else None


async def ready(node: Node) -> bool:
    return (await readyz(node))[0] == 200


async def not_ready(node: Node) -> bool:
    return (await readyz(node))[0] == 503


async def test_metrics_and_readiness_follow_the_cluster(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, nursery):
        with trio.fail_after(60):
            n0, n1, n2 = c.nodes
            # One of three voters alone: alive, never ready (no leader without a quorum).
            await c.start(nursery, n0)
            assert (await get(ops_port(n0), "/healthz")).status == 200
            status, body = await readyz(n0)
            assert status == 503 and body["ready"] is False
            assert body["namespaces"][NS]["reason"] == "no leader known", body
            m = await scrape(ops_port(n0))
            assert sample(m, "raftd_has_leader", namespace=NS) == 0
            assert sample(m, "raftd_ready", namespace=NS) == 0
            assert sample(m, "raftd_role", namespace=NS, role="leader") == 0
            assert sample(m, "raftd_members", namespace=NS, kind="voter") == 3

            await c.start(nursery, n1)
            await c.start(nursery, n2)
            for n in c.nodes:
                with trio.fail_after(20):
                    await poll_until(functools.partial(ready, n))
            _, body = await readyz(n0)
            assert body == {
                "ready": True,
                "reason": "ok",
                "max_lag": 1000,
                "namespaces": {NS: body["namespaces"][NS]},
            }
            assert body["namespaces"][NS]["leader"] in {n.peer_id for n in c.nodes}

            # Exactly one leader, and every node says who it is.
            ld = await _leader(c)
            roles = [await scrape(ops_port(n)) for n in c.nodes]
            assert [sample(r, "raftd_role", namespace=NS, role="leader") for r in roles].count(
                1
            ) == 1
            before = await scrape(ops_port(ld))
            for i in range(20):
                await _put(c, b"k%d" % i)
            after = await scrape(ops_port(ld))
            for name in ("raftd_commit_index", "raftd_applied_index"):
                assert sample(after, name, namespace=NS) >= sample(before, name, namespace=NS) + 20
            ok = sample(after, "raftd_proposals_total", namespace=NS, result="ok")
            assert ok >= sample(before, "raftd_proposals_total", namespace=NS, result="ok") + 20
            for h in ("raftd_apply_duration_seconds", "raftd_fsync_duration_seconds"):
                assert sample(after, f"{h}_count", namespace=NS) > sample(
                    before, f"{h}_count", namespace=NS
                )
                assert sample(after, f"{h}_bucket", namespace=NS, le="+Inf") == sample(
                    after, f"{h}_count", namespace=NS
                )
            assert sample(after, "raftd_transport_messages_total", namespace=NS, direction="sent")
            assert sample(after, "process_resident_memory_bytes") > 0
            assert sample(after, "raftd_info", peer_id=ld.peer_id, version="0.1.0") == 1

            # A follower sees the commit index grow too.
            f = c.other(ld)
            await f.group(NS).wait_applied(ld.group(NS).applied_index())
            fm = await scrape(ops_port(f))
            assert (
                sample(fm, "raftd_commit_index", namespace=NS)
                >= sample(before, "raftd_commit_index", namespace=NS) + 20
            )
            assert sample(fm, "raftd_role", namespace=NS, role="follower") == 1

            # A write through a follower's API socket is forwarded to the leader (when the
            # daemon runs its API server, as it normally does).
            assert f.daemon is not None
            if getattr(f.daemon, "api", None) is not None:
                async with open_client(f.socket, namespace=NS) as client:
                    await client.put(b"via-follower", b"1")
                fm = await scrape(ops_port(f))
                assert sample(fm, "raftd_forwarded_requests_total", namespace=NS) >= 1

            # Isolated, the follower loses its leader: not ready; healed, ready again.
            c.isolate(f)
            with trio.fail_after(15):
                await poll_until(lambda: not_ready(f))
            _, body = await readyz(f)
            assert body["namespaces"][NS]["reason"] == "no leader known"
            fm = await scrape(ops_port(f))
            assert sample(fm, "raftd_has_leader", namespace=NS) == 0
            assert sample(fm, "raftd_transport_dropped_total", namespace=NS, reason="fault") > 0
            assert await ready(ld) or await _leader(c)  # the majority side keeps serving
            c.heal()
            with trio.fail_after(20):
                await poll_until(lambda: ready(f))

            # Garbage on the ops port: 400, and the listener keeps serving.
            assert (await raw_request(ops_port(f), b"\x16\x03\x01garbage\r\n\r\n")).status == 400
            assert (await raw_request(ops_port(f), b"NOT HTTP AT ALL\r\n\r\n")).status == 400
            assert (await get(ops_port(f), "/nope")).status == 404
            assert (await get(ops_port(f), "/readyz?max_lag=-1")).status == 400
            assert (await get(ops_port(f), "/metrics")).status == 200
            om = await raw_request(
                ops_port(f),
                b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
            )
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.body.endswith(b"# EOF\n")


async def test_readyz_lag_bound(tmp_path: Path) -> None:
    """A node whose applied index trails the commit index by more than the bound is not
    ready; the bound is per probe (``?max_lag=``) or per server."""
    async with cluster(tmp_path, n=1) as (c, nursery):
        with trio.fail_after(30):
            (n0,) = c.nodes
            await c.start(nursery, n0)
            with trio.fail_after(15):
                await poll_until(lambda: ready(n0))
            await _put(c, b"a")
            g = n0.group(NS)
            assert g.node is not None
            commit = g.status()["commit"]
            assert (await get(ops_port(n0), "/readyz?max_lag=0")).status == 200
            # Pretend the state machine is behind: applied = commit - 5.
            real = g.sm.applied_index
            g.sm.applied_index = lambda: commit - 5  # type: ignore[method-assign]
            try:
                r = await get(ops_port(n0), "/readyz?max_lag=4")
                assert r.status == 503
                assert "lags commit index" in json.loads(r.body)["reason"]
                assert (await get(ops_port(n0), "/readyz?max_lag=5")).status == 200
                assert (await get(ops_port(n0), "/readyz")).status == 200  # default 1000
            finally:
                g.sm.applied_index = real  # type: ignore[method-assign]
            # While shutting down, never ready (checked before the daemon gets to run on:
            # its shutdown closes the listener).
            assert n0.daemon is not None
            ops = n0.daemon.ops
            assert ops is not None
            assert ops.readiness().ready
            n0.daemon.stop()
            now = ops.readiness()
            assert not now.ready and now.reason == "shutting down"


async def test_leader_measures_peer_rtt(tmp_path: Path) -> None:
    """The leader's /metrics has a positive, sane RTT for each follower (timed from its
    heartbeats); followers expose none; a leader that hands leadership over drops its
    series and the new leader measures its own."""
    async with cluster(tmp_path) as (c, nursery):
        with trio.fail_after(90):
            for n in c.nodes:
                await c.start(nursery, n)
            ld = await _leader(c)
            followers = [n for n in c.nodes if n is not ld]

            def has_rtt(m: dict[str, Any], peers: list[Node]) -> bool:
                series = m.get("raftd_peer_rtt_seconds", {})
                return all(
                    frozenset({("namespace", NS), ("peer", p.peer_id)}) in series for p in peers
                )

            async def measured(node: Node, peers: list[Node]) -> bool:
                return has_rtt(await scrape(ops_port(node)), peers)

            with trio.fail_after(20):
                await poll_until(functools.partial(measured, ld, followers))
            m = await scrape(ops_port(ld))
            for f in followers:
                rtt = sample(m, "raftd_peer_rtt_seconds", namespace=NS, peer=f.peer_id)
                assert 0 < rtt < 5, (f.peer_id, rtt)
            assert set(ld.group(NS).peer_rtt) == {f.peer_id for f in followers}
            assert all(0 < v < 5 for v in ld.group(NS).peer_rtt.values())
            for f in followers:
                assert not f.group(NS).peer_rtt
                assert "raftd_peer_rtt_seconds" not in await scrape(ops_port(f))

            # Hand leadership to a follower: the old leader's numbers go, the new one's come.
            new = followers[0]
            ld.group(NS).transfer_leader(new.peer_id)
            with trio.fail_after(20):
                while not new.group(NS).is_leader or ld.group(NS).is_leader:
                    await (
                        new.group(NS) if not new.group(NS).is_leader else ld.group(NS)
                    ).wait_state_change()
            assert not ld.group(NS).peer_rtt
            assert "raftd_peer_rtt_seconds" not in await scrape(ops_port(ld))
            others = [n for n in c.nodes if n is not new]
            with trio.fail_after(20):
                await poll_until(functools.partial(measured, new, others))
            assert all(0 < v < 5 for v in new.group(NS).peer_rtt.values())


async def _leader(c: Cluster) -> Node:
    with trio.fail_after(15):
        while (ld := unique_leader(c)) is None:
            await c.wait_state_change(NS)
        return ld


async def _put(c: Cluster, key: bytes) -> None:
    while True:
        ld = await _leader(c)
        try:
            await ld.group(NS).propose(commands.put(key, b"v"))
            return
        except (NotLeader, LeadershipLost):
            await ld.group(NS).wait_state_change()
