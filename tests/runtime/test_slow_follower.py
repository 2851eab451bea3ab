"""A follower whose disk stalls for several election timeouts does not blame its leader:
it reads the heartbeats queued behind its slow write, and one long stall is not many
ticks of silence. Nobody campaigns, the leader keeps committing with the other follower.

In-process daemons (real libp2p, real LevelDB): the follower's log write is held in its
writer thread, then let go."""

from __future__ import annotations

import threading
from pathlib import Path

import trio

from raftd.client import open_client
from raftd.core import StateType
from raftd.testing.inproc import NS, cluster


async def test_a_stalled_follower_disk_causes_no_election(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            slow = c.other(ld)
            assert ld.daemon is not None and slow.daemon is not None
            assert slow.daemon.db is not None
            sock = ld.socket
            async with open_client(sock, namespace=NS, timeout=30) as cl:
                await cl.put("first", "v")
                sg = slow.group()
                node = sg.node
                assert node is not None
                term = node.raft.term
                changes = sg.stats.leader_changes

                stuck = threading.Event()
                release = threading.Event()

                def hang(point: str) -> None:
                    # Only the fsynced log writes (the writer thread) hang, as on a
                    # disk whose fsync stalls; writes without fsync go through.
                    in_writer = threading.current_thread().name.startswith("raftd-writer")
                    if point == "write:save" and in_writer and not release.is_set():
                        stuck.set()
                        release.wait(30)

                slow.daemon.db.fault_hook = hang
                await cl.put("held", "v")  # committed by the leader and the other follower
                while not stuck.is_set():
                    await cl.put("more", "v")
                # Four election timeouts of a stuck disk, writes going on meanwhile.
                election = sg.preset.election_s
                t_end = trio.current_time() + 4 * election
                n = 0
                while trio.current_time() < t_end:
                    await cl.put(f"k{n}", "v")
                    n += 1
                    assert node.raft.state == StateType.FOLLOWER
                assert sg.stats.slow_persists >= 1
                release.set()
                await cl.put("after", "v")
                while sg.sm.get(b"after") is None:
                    await sg.wait_applied(sg.applied_index() + 1)
            # No campaign anywhere: same term, same leader, the follower never left it.
            for m in c.nodes:
                mn = m.group().node
                assert mn is not None and mn.raft.term == term, m.peer_id
            assert ld.group().is_leader
            assert sg.stats.leader_changes == changes
