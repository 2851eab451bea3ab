"""Writes through a follower reach the leader in Raft PROP messages (etcd's way) and are
answered from the follower's own apply; lost proposals are proposed again; a leader that
takes no PROP (an older version in a rolling upgrade) gets the writes by command.

In-process daemons: real libp2p hosts and LevelDB in one trio process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from raftd.client import open_client
from raftd.core import raft as core_raft
from raftd.core.types import Message, MessageType
from raftd.testing.inproc import NS, cluster


@contextmanager
def leaders_drop_peer_proposals(count: int | None) -> Iterator[list[int]]:
    """Every leader in this process drops the first ``count`` PROP messages from peers
    (all of them with ``None``, as a leader of the previous version does)."""
    original = core_raft.Raft._step_leader
    dropped = [0]

    def step_leader(self: core_raft.Raft, m: Message) -> None:
        peers_prop = m.type == MessageType.PROP and m.frm != self.id
        if peers_prop and (count is None or dropped[0] < count):
            dropped[0] += 1
            return
        original(self, m)

    core_raft.Raft._step_leader = step_leader  # type: ignore[method-assign]
    try:
        yield dropped
    finally:
        core_raft.Raft._step_leader = original  # type: ignore[method-assign]


async def test_follower_write_is_proposed_by_raft_and_answered_after_local_apply(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            leader = await c.leader()
            follower = c.other(leader)
            assert follower.daemon is not None
            sock = follower.socket
            assert follower.daemon.api is not None
            calls_before = follower.daemon.api.forwarders[NS].stats["calls"]
            async with open_client(sock, namespace=NS) as cl:
                for i in range(20):
                    r = await cl.put(f"k{i}", f"v{i}")
                    # Answered from the follower's own apply: a stale read there sees it.
                    kv = await cl.get(f"k{i}", stale=True)
                    assert kv is not None and kv.value == f"v{i}".encode()
                    assert kv.mod_revision == r.revision
            g = follower.group()
            assert g.stats.proposals_forwarded >= 20
            # No write went over the command stream.
            assert follower.daemon.api.forwarders[NS].stats["calls"] == calls_before
            assert leader.group().sm.get(b"k19") is not None


async def test_lost_proposals_are_proposed_again_and_applied_once(tmp_path: Path) -> None:
    with leaders_drop_peer_proposals(2) as dropped:
        async with cluster(tmp_path) as (c, _):
            with trio.fail_after(60):
                leader = await c.leader()
                follower = c.other(leader)
                assert follower.daemon is not None
                sock = follower.socket
                async with open_client(sock, namespace=NS) as cl:
                    r1 = await cl.put("once", "1")
                    r2 = await cl.put("twice", "2")
                assert dropped[0] == 2
                assert follower.group().stats.proposals_resent >= 2
                # Re-proposed by the group, not sent by command.
                assert follower.daemon.api is not None
                assert follower.daemon.api.forwarders[NS].stats["calls"] == 0
                # Each write applied once: one revision each, no more.
                assert r2.revision == r1.revision + 1
                kv = leader.group().sm.get(b"once")
                assert kv is not None and kv.version == 1


@pytest.mark.parametrize("writes", [3])
async def test_leader_without_prop_support_gets_writes_by_command(
    tmp_path: Path, writes: int
) -> None:
    with leaders_drop_peer_proposals(None):
        async with cluster(tmp_path) as (c, _):
            with trio.fail_after(60):
                leader = await c.leader()
                follower = c.other(leader)
                assert follower.daemon is not None
                api = follower.daemon.api
                assert api is not None
                sock = follower.socket
                async with open_client(sock, namespace=NS) as cl:
                    t0 = trio.current_time()
                    await cl.put("k0", "v")
                    first = trio.current_time() - t0
                    t1 = trio.current_time()
                    for i in range(1, writes):
                        await cl.put(f"k{i}", "v")
                    rest = trio.current_time() - t1
                    for i in range(writes):
                        kv = await cl.get(f"k{i}", stale=True)
                        assert kv is not None and kv.version == 1
                assert api.forwarders[NS].stats["calls"] >= writes
                print(f"first write {first:.2f}s (fallback), next {writes - 1}: {rest:.2f}s")
