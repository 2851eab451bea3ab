"""Life after formation, with real daemons in network namespaces:

- a late joiner after formation (a learner: the voter cap is reached), then a voter
  killed for good: the learner is promoted, the dead voter demoted;
- follower reboot and leader reboot (kill -9, restart with the same data): they rejoin
  their own cluster, never bootstrap a second one, and keep the data;
- wipe and rejoin under the same peer id: removed and re-added, then promoted;
- graceful leave: ``raftd leave`` and SIGTERM with ``--leave-on-shutdown`` (and the
  node that left rejoins when restarted);
- several namespaces on one set of daemons form independent clusters.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from functools import partial

import pytest

from harness.fleet import Fleet, FleetNode
from raftd.testing.launch import wait_until

from .conftest import MakeFleet

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def leader_of(fleet: Fleet, nodes: list[FleetNode] | None = None) -> FleetNode:
    st = (nodes or [n for n in fleet if n.alive])[0].status()
    assert st is not None and st["leader"]
    return fleet.by_id(st["leader"])


def put(node: FleetNode, key: str, value: str) -> None:
    def attempt() -> bool:
        with node.client() as c:
            c.put(key, value)
        return True

    wait_until(attempt, 30, interval=0.3, what=f"put {key} through {node.name}")


def has_value(node: FleetNode, key: str, value: bytes) -> bool:
    return value_on(node, key) == value


def value_on(node: FleetNode, key: str) -> bytes | None:
    with node.client() as c:
        kv = c.get(key, stale=True)
    return None if kv is None else kv.value


def test_late_joiner_then_a_dead_voter_is_replaced(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(6)
    first = fleet.nodes[:5]
    for n in first:
        n.start()
    cid = fleet.wait_one_cluster(first, timeout=60)
    late = fleet[5]
    late.start()
    assert fleet.wait_one_cluster(timeout=60) == cid
    st = late.status()
    assert st is not None and st["role"] == "learner" and st["formation"]["bootstraps"] == 0
    # Kill a voter (not the leader) for good: after the dead-voter timeout (10 s with
    # `local`), the learner is promoted and the dead voter demoted.
    leader = leader_of(fleet)
    victim = next(n for n in first if n is not leader)
    victim.kill()
    t0 = time.monotonic()
    live = [n for n in fleet if n is not victim]

    def replaced() -> bool:
        for n in live:
            s = n.status()
            if s is None:
                return False
            voters = {m["id"] for m in s["members"] if m["voter"]}
            if voters != {x.peer_id for x in live}:
                return False
        return True

    wait_until(replaced, 60, what="learner promoted, dead voter demoted", explain=fleet.explain)
    print(f"dead voter replaced after {time.monotonic() - t0:.1f}s")
    s = leader_of(fleet, live).status()
    assert s is not None and victim.peer_id in {m["id"] for m in s["members"] if not m["voter"]}


def test_follower_and_leader_reboot_rejoin_their_cluster(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(3)
    fleet.start_all()
    cid = fleet.wait_one_cluster(timeout=40)
    put(fleet[0], "reboot/k", "v1")
    leader = leader_of(fleet)
    follower = next(n for n in fleet if n is not leader)
    for node in (follower, leader):
        node.kill()
        node.start()
        assert fleet.wait_one_cluster(timeout=60) == cid
        st = node.status()
        assert st is not None and st["formation"]["bootstraps"] == 0
        wait_until(partial(has_value, node, "reboot/k", b"v1"), 30, what=f"{node.name} has data")


def test_wipe_and_rejoin_under_the_same_peer_id(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(3)
    fleet.start_all()
    cid = fleet.wait_one_cluster(timeout=40)
    put(fleet[0], "wipe/k", "v1")
    leader = leader_of(fleet)
    victim = next(n for n in fleet if n is not leader)
    victim.terminate()
    victim.wipe()
    victim.start()
    # A voter asking to join without state is removed, re-added as a learner, caught up
    # by snapshot and promoted again.
    assert fleet.wait_one_cluster(timeout=60) == cid
    # Counted by the leader that re-added it, which need not be the leader now.
    sts = [n.status() for n in fleet]
    assert sum(s["formation"]["readds"] for s in sts if s) >= 1, sts
    wait_until(lambda: value_on(victim, "wipe/k") == b"v1", 30, what="data back on the wiped node")


def out_of(node: FleetNode, others: list[FleetNode]) -> bool:
    """Every node of ``others`` knows a leader and does not list ``node`` as a member."""
    for n in others:
        s = n.status()
        if s is None or not s["leader"] or node.peer_id in {m["id"] for m in s["members"]}:
            return False
    return True


def test_a_node_removed_while_down_rejoins_when_restarted(make_fleet: MakeFleet) -> None:
    """Its own data still lists it as a member (it never saw its removal): the leader's
    announcement tells it otherwise, and it asks to be added back."""
    fleet = make_fleet(4)
    fleet.start_all()
    cid = fleet.wait_one_cluster(timeout=40)
    leader = leader_of(fleet)
    gone = next(n for n in fleet if n is not leader)
    gone.kill()
    cmd = ["member", "remove", gone.peer_id, "--socket", str(leader.socket), "-n", "/raft/x"]
    out = subprocess.run(
        [sys.executable, "-m", "raftd", *cmd],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rest = [n for n in fleet if n is not gone]
    wait_until(lambda: out_of(gone, rest), 30, what="removed", explain=fleet.explain)
    gone.start()
    assert fleet.wait_one_cluster(timeout=60) == cid
    st = gone.status()
    assert st is not None and st["formation"]["bootstraps"] == 0


def test_leave_command_and_leave_on_shutdown(make_fleet: MakeFleet) -> None:
    fleet = make_fleet(4, extra_args=["--leave-on-shutdown"])
    fleet.start_all()
    fleet.wait_one_cluster(timeout=40)
    # `raftd leave` on the leader: it hands leadership over, then is removed.
    leader = leader_of(fleet)
    out = subprocess.run(
        [sys.executable, "-m", "raftd", "leave", "--socket", str(leader.socket), "-n", "/raft/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rest = [n for n in fleet if n is not leader]
    wait_until(lambda: out_of(leader, rest), 30, what="leader left", explain=fleet.explain)
    # SIGTERM with --leave-on-shutdown: removed before it exits.
    quitter = rest[0]
    assert quitter.kill(signal.SIGTERM) == 0
    wait_until(
        lambda: out_of(quitter, rest[1:]), 30, what="left on shutdown", explain=fleet.explain
    )
    # Restarted with its data, it finds itself outside its cluster and asks back in
    # (the leader that left with `raftd leave` stays out: it was never restarted).
    quitter.start()
    fleet.wait_one_cluster(rest, timeout=40)


def test_namespaces_on_one_set_of_daemons_form_independent_clusters(
    make_fleet: MakeFleet,
) -> None:
    fleet = make_fleet(3, namespaces=["/raft/a", "/raft/b"])
    fleet.start_all()
    a = fleet.wait_one_cluster(timeout=40, ns="/raft/a")
    b = fleet.wait_one_cluster(timeout=40, ns="/raft/b")
    assert a != b
    put(fleet[0], "only-in-a", "1")
    with fleet[0].client("/raft/b") as c:
        assert c.get("only-in-a", stale=True) is None
