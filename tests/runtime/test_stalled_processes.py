"""A daemon whose own process stalls does not blame its peers for it: real processes.

Three real ``raftd run`` daemons (LevelDB, libp2p over TCP, the ``regional`` preset:
100 ms ticks, heartbeat 200 ms, election timeout 1.5-3 s). One is frozen with SIGSTOP,
the others keep running, then it gets SIGCONT:

- a **follower** frozen for three election timeouts resumes without starting an election
  (``raftd_campaigns_total`` unchanged), and the leader and term stay the same everywhere;
- the **leader** frozen for 0.6 of an election timeout resumes still leading, in the
  same term (its check-quorum counts its followers' queued answers).

What is judged is what an operator sees: each daemon's ``/metrics`` and ``raftd status``.
The freeze itself is the fault, so its length is a deadline; every other wait is on a
condition. The simulator proves the same for the policy in isolation:
``scripts/sim --scenario stall`` (tests/core/test_sim_stall.py).

The follower case fails on a daemon whose ticker counts every tick of the freeze and
steps them all at once. On that daemon the leader case still passes: with less than an
election timeout frozen, the leader's check-quorum is lost only when the freeze starts
right after its previous check (the answers since are all still queued), which a real
freeze hits by chance only; the simulator's leader scenario starts there on purpose.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftd.app.presets import PRESETS
from raftd.testing.cluster import LocalCluster, Node, free_port, wait_until

pytestmark = pytest.mark.slow

PRESET = "regional"
ELECTION_S = PRESETS[PRESET].election_s
NS = "/raft/default"


def metrics(port: int) -> dict[str, float]:
    """This daemon's samples for the namespace (and unlabelled ones), by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("namespace", NS) == NS and set(s.labels) <= {"namespace"}:
                out[s.name] = float(s.value)
            elif s.name == "raftd_transport_messages_total" and s.labels.get("direction"):
                out[f"{s.name}:{s.labels['direction']}"] = float(s.value)
    return out


def proc_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (``T``: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, dict[str, int]]]:
    c = LocalCluster(3, base_dir=tmp_path / "c", preset=PRESET)
    ports: dict[str, int] = {}
    for n in c.nodes:
        ports[n.peer_id] = free_port()
        n.extra_args = ["--metrics", f"127.0.0.1:{ports[n.peer_id]}"]
    try:
        c.start(timeout=60)
        yield c, ports
    except BaseException:
        for n in c.nodes:
            print(n.log_tail(60))
        raise
    finally:
        c.close()


def freeze(node: Node, seconds: float, watch: LocalCluster) -> list[tuple[str, int]]:
    """SIGSTOP ``node`` for ``seconds`` (the fault: a deadline, not a condition), then
    SIGCONT. Meanwhile the other daemons' (leader, term) views are sampled; returned."""
    assert node.pid is not None
    seen: list[tuple[str, int]] = []
    node.stop_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: proc_state(node.pid or 0) == "T", 5, what=f"{node.name} stopped")
        deadline = time.monotonic() + seconds
        others = [n for n in watch.nodes if n is not node]
        while time.monotonic() < deadline:
            for n in others:
                try:
                    st = n.status(timeout=0.5)
                except Exception:
                    continue
                seen.append((st.leader, st.term))
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    finally:
        node.stop_signal(signal.SIGCONT)
    wait_until(lambda: proc_state(node.pid or 0) != "T", 5, what=f"{node.name} resumed")
    return seen


def settle_after(c: LocalCluster, victim: Node, port: int, key: str) -> None:
    """Wait until ``victim`` applied a write made after its resume and then received at
    least an election timeout's worth of heartbeats (it ran, read and ticked for that
    long: a campaign of its own making would have started by then)."""
    with c.leader().client() as cl:
        rev = cl.put(key, "after").revision
    wait_until(lambda: victim.status(timeout=1.0).revision >= rev, 20, what="victim applied")
    heartbeats = PRESETS[PRESET].election_ticks / PRESETS[PRESET].heartbeat_ticks
    received0 = metrics(port)["raftd_transport_messages_total:received"]
    wait_until(
        lambda: (
            metrics(port)["raftd_transport_messages_total:received"] >= received0 + heartbeats + 1
        ),
        20,
        what="an election timeout of messages after the resume",
    )


def test_a_follower_frozen_for_three_election_timeouts_does_not_campaign(
    cluster: tuple[LocalCluster, dict[str, int]],
) -> None:
    c, ports = cluster
    leader = c.wait_leader()
    term = leader.status().term
    victim = c.followers()[0]
    port = ports[victim.peer_id]
    with leader.client() as cl:
        rev = cl.put("before", "x").revision
    wait_until(lambda: victim.status(timeout=1.0).revision >= rev, 20, what="victim caught up")
    m0 = metrics(port)
    t0 = time.monotonic()
    seen = freeze(victim, 3 * ELECTION_S, c)
    frozen = time.monotonic() - t0
    settle_after(c, victim, port, "after-follower")
    m1 = metrics(port)
    print(
        f"follower frozen {frozen:.2f}s ({frozen / ELECTION_S:.1f} election timeouts); "
        f"campaigns {m0['raftd_campaigns_total']:.0f} -> {m1['raftd_campaigns_total']:.0f}; "
        f"term {term}; samples during the freeze {len(seen)}"
    )
    assert seen and set(seen) == {(leader.peer_id, term)}, "the others kept their leader"
    assert m1["raftd_campaigns_total"] == m0["raftd_campaigns_total"], "the follower campaigned"
    after = c.statuses()
    assert {(s.leader, s.term) for s in after.values()} == {(leader.peer_id, term)}, after
    assert m1["raftd_leader_changes_total"] == m0["raftd_leader_changes_total"]


def test_a_leader_frozen_for_less_than_an_election_timeout_keeps_leading(
    cluster: tuple[LocalCluster, dict[str, int]],
) -> None:
    c, ports = cluster
    leader = c.wait_leader()
    term = leader.status().term
    port = ports[leader.peer_id]
    with leader.client() as cl:
        rev = cl.put("before", "x").revision
    c.wait_applied(rev)
    m0 = metrics(port)
    campaigns0 = {n.name: metrics(ports[n.peer_id])["raftd_campaigns_total"] for n in c.nodes}
    t0 = time.monotonic()
    seen = freeze(leader, 0.6 * ELECTION_S, c)
    frozen = time.monotonic() - t0
    settle_after(c, leader, port, "after-leader")
    m1 = metrics(port)
    st = leader.status()
    print(
        f"leader frozen {frozen:.2f}s ({frozen / ELECTION_S:.2f} election timeouts); "
        f"role {st.role}, term {term} -> {st.term}; "
        f"leader changes {m0['raftd_leader_changes_total']:.0f} -> "
        f"{m1['raftd_leader_changes_total']:.0f}"
    )
    assert seen and {t for _, t in seen} == {term}, "nobody moved to a new term meanwhile"
    assert (st.role, st.term) == ("leader", term)
    assert m1["raftd_leader_changes_total"] == m0["raftd_leader_changes_total"], "it stepped down"
    after = c.statuses()
    assert {(s.leader, s.term) for s in after.values()} == {(leader.peer_id, term)}, after
    campaigns1 = {n.name: metrics(ports[n.peer_id])["raftd_campaigns_total"] for n in c.nodes}
    assert campaigns1 == campaigns0, "an election was started"
