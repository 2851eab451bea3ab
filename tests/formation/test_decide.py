"""The formation decisions (raftd.formation.decide): pure functions of a node's view.

Each rule of DESIGN.md has a test here; hypothesis checks the properties every node
relies on when views differ: the cluster order is total (two clusters never dissolve into
each other), nodes with the same view pick the same founder, and membership plans never
drop a live voter or exceed the cap without a dead voter to replace.
"""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.core.types import ConfChangeType
from raftd.formation.decide import (
    ClusterSummary,
    FreshView,
    MembershipView,
    PeerHealth,
    can_remove_voter,
    cluster_vanished,
    conflict_with,
    decide_fresh,
    dissolve_target,
    plan_membership,
    summarize_clusters,
    transfer_target,
)
from raftd.formation.wire import FRESH, JOINING, MEMBER, NodeInfo


def fresh(**kw: object) -> FreshView:
    base: dict[str, object] = {
        "self_id": "b",
        "elapsed": 10.0,
        "window": 1.5,
        "solo_window": 5.0,
        "expect": 0,
        "candidates": frozenset({"b"}),
    }
    base.update(kw)
    return FreshView(**base)  # type: ignore[arg-type]


def cluster(cid: str, founded: int, writes: bool = False, leader: str = "x") -> ClusterSummary:
    return ClusterSummary(id=cid, founded_ms=founded, writes=writes, leader=leader, seen=(leader,))


# -- founding ---------------------------------------------------------------------------


def test_waits_for_the_bootstrap_window() -> None:
    d = decide_fresh(fresh(elapsed=1.0, candidates=frozenset({"a", "b"})))
    assert d.kind == "wait" and "window" in d.reason


def test_lowest_peer_id_founds_the_others_wait_for_it() -> None:
    seen = frozenset({"a", "b", "c"})
    assert decide_fresh(fresh(self_id="a", candidates=seen)).kind == "bootstrap"
    d = decide_fresh(fresh(self_id="b", candidates=seen))
    assert d.kind == "wait" and d.founder == "a"


def test_no_bootstrap_while_founders_keep_appearing() -> None:
    """No new founder for a third of the window (0.5 s of 1.5 s) before anyone founds."""
    d = decide_fresh(fresh(self_id="a", candidates=frozenset({"a", "b"}), quiet=0.2))
    assert d.kind == "wait" and "appearing" in d.reason
    assert math.isclose(d.recheck, 0.3)
    assert decide_fresh(fresh(self_id="a", candidates=frozenset({"a", "b"}), quiet=0.5)).kind == (
        "bootstrap"
    )


def test_a_wait_says_when_time_alone_may_end_it() -> None:
    """The control loop sleeps until a window ends rather than polling for it."""
    two = frozenset({"a", "b"})
    assert math.isclose(decide_fresh(fresh(elapsed=1.0, candidates=two)).recheck, 0.5)
    assert math.isclose(decide_fresh(fresh(elapsed=2.0)).recheck, 3.0)  # solo window
    d = decide_fresh(fresh(self_id="a", candidates=two, unheard=1, patience=15.0))
    assert math.isclose(d.recheck, 5.0)
    # Waiting for someone else (a founder, a leader) ends with news, not with time.
    assert decide_fresh(fresh(self_id="b", candidates=two)).recheck == math.inf


def test_a_node_alone_waits_for_the_solo_window_then_founds() -> None:
    assert decide_fresh(fresh(elapsed=2.0)).kind == "wait"
    assert decide_fresh(fresh(elapsed=5.0)).kind == "bootstrap"


def test_discovered_peers_not_heard_from_hold_founding_back_for_a_while() -> None:
    """An overloaded host finds addresses long before the exchanges complete: neither
    the lowest id seen so far nor a node that looks alone founds while discovered peers
    are still unheard, until the patience runs out (they may never answer)."""
    for view in (fresh(self_id="a", candidates=frozenset("ab")), fresh(elapsed=6.0)):
        d = decide_fresh(replace(view, unheard=3, patience=15.0))
        assert d.kind == "wait" and "3 discovered peers" in d.reason
        assert decide_fresh(replace(view, unheard=3, patience=15.0, elapsed=15.0)).kind == (
            "bootstrap"
        )
        assert decide_fresh(replace(view, unheard=0, patience=15.0)).kind == "bootstrap"


def test_a_node_that_cannot_discover_never_founds_alone() -> None:
    assert decide_fresh(fresh(elapsed=1e9, solo_window=math.inf)).kind == "wait"


def test_expect_waits_for_n_founders_and_skips_the_window() -> None:
    d = decide_fresh(fresh(self_id="a", expect=3, elapsed=0.1, candidates=frozenset({"a", "b"})))
    assert d.kind == "wait" and "3 founders" in d.reason
    d = decide_fresh(
        fresh(self_id="a", expect=3, elapsed=0.1, quiet=0.0, candidates=frozenset("abc"))
    )
    assert d.kind == "bootstrap"
    # --expect 1: found alone at once (after no window at all).
    assert decide_fresh(fresh(self_id="a", expect=1, elapsed=0.0)).kind == "bootstrap"


def test_an_existing_cluster_is_joined_never_a_second_founded() -> None:
    c = cluster("c1", 100)
    d = decide_fresh(fresh(self_id="a", candidates=frozenset({"a"}), clusters=(c,)))
    assert d.kind == "join" and d.cluster == c
    # Even within the window, and even if we are the lowest id.
    d = decide_fresh(fresh(self_id="a", elapsed=0.0, clusters=(c,)))
    assert d.kind == "join"


def test_the_best_cluster_is_joined_and_a_leaderless_best_is_waited_for() -> None:
    old, young = cluster("c1", 100), cluster("c2", 200)
    assert decide_fresh(fresh(clusters=(young, old))).cluster == old
    written = cluster("c3", 300, writes=True)
    assert decide_fresh(fresh(clusters=(old, written))).cluster == written
    electing = cluster("c1", 100, leader="")
    d = decide_fresh(fresh(clusters=(electing, young)))
    assert d.kind == "wait" and "electing" in d.reason


def test_a_cluster_being_founded_is_waited_for() -> None:
    assert decide_fresh(fresh(self_id="a", forming=True)).kind == "wait"


@given(
    st.sets(st.text("abcdef", min_size=1, max_size=3), min_size=1, max_size=8),
    st.data(),
)
def test_same_view_same_founder(ids: set[str], data: st.DataObject) -> None:
    """Every node of a group sharing one view founds nothing but via the same founder."""
    cands = frozenset(ids)
    founders = set()
    for me in sorted(ids):
        d = decide_fresh(fresh(self_id=me, candidates=cands))
        if d.kind == "bootstrap":
            founders.add(me)
        else:
            founders.add(d.founder)
    assert founders == {min(ids)}


# -- clusters ---------------------------------------------------------------------------


def info(pid: str, **kw: object) -> NodeInfo:
    return NodeInfo(id=pid, ns="/raft/x", **kw)  # type: ignore[arg-type]


def test_summaries_take_the_highest_term_and_any_writes() -> None:
    infos = [
        info("a", state=MEMBER, cluster="c", founded_ms=5, leader="a", term=3, voters=("a", "b")),
        info("b", state=MEMBER, cluster="c", founded_ms=5, leader="b", term=4, voters=("a", "b")),
        info("d", state=MEMBER, cluster="c", founded_ms=5, writes=True, term=2),
        info("e", state=FRESH),
        info("f", state=JOINING, cluster="c"),
        info("g", state=MEMBER, cluster=""),
    ]
    (s,) = summarize_clusters(infos).values()
    assert s.id == "c" and s.leader == "b" and s.term == 4 and s.writes
    assert s.seen == ("a", "b", "d") and s.voters == ("a", "b") and s.founded_ms == 5


def test_a_cluster_without_writes_dissolves_into_an_older_one_only() -> None:
    old, young = cluster("c1", 100), cluster("c2", 200)
    assert dissolve_target(young, [old]) == old
    assert dissolve_target(old, [young]) is None
    # Ties on the founding time fall back to the id.
    assert dissolve_target(cluster("b", 100), [cluster("a", 100)]) is not None
    assert dissolve_target(cluster("a", 100), [cluster("b", 100)]) is None


def test_a_cluster_with_writes_never_dissolves() -> None:
    mine = cluster("c2", 200, writes=True)
    assert dissolve_target(mine, [cluster("c1", 100, writes=True)]) is None
    assert dissolve_target(mine, [cluster("c1", 100)]) is None
    # The other way round: the empty one dissolves into the one holding writes.
    assert dissolve_target(cluster("c1", 100), [mine]) == mine


def test_two_clusters_with_writes_are_a_conflict() -> None:
    a, b = cluster("a", 1, writes=True), cluster("b", 2, writes=True)
    assert conflict_with(a, [b]) == b and conflict_with(b, [a]) == a
    assert conflict_with(a, [cluster("c", 0)]) is None
    assert conflict_with(cluster("c", 0), [a]) is None


clusters_st = st.builds(
    ClusterSummary,
    id=st.text("0123456789abcdef", min_size=1, max_size=4),
    founded_ms=st.integers(0, 5),
    writes=st.booleans(),
    leader=st.just("x"),
)


@given(clusters_st, clusters_st)
def test_never_dissolve_into_each_other(a: ClusterSummary, b: ClusterSummary) -> None:
    if a.id == b.id:
        return
    assert not (dissolve_target(a, [b]) == b and dissolve_target(b, [a]) == a)
    # Both with writes: neither dissolves, both report the conflict.
    if a.writes and b.writes:
        assert dissolve_target(a, [b]) is None and conflict_with(a, [b]) == b


# -- membership ---------------------------------------------------------------------------

ALIVE = PeerHealth(match=10)
NEW = PeerHealth(match=0)
DEAD = PeerHealth(match=10, alive=False, dead=True)
SLOW = PeerHealth(match=10, alive=False)
GONE = PeerHealth(match=10, alive=False, dead=True, gone=True)


def view(
    voters: str, learners: str = "", health: dict[str, PeerHealth] | None = None, **kw: object
) -> MembershipView:
    h = {p: ALIVE for p in voters + learners if p != "L"}
    h.update(health or {})
    return MembershipView(
        leader="L",
        voters=tuple(voters),
        learners=tuple(learners),
        commit=10,
        health=h,
        **kw,  # type: ignore[arg-type]
    )


def test_promotes_caught_up_learners_up_to_the_cap() -> None:
    ch = plan_membership(view("Lab", "cde"))
    assert ch is not None and ch.type == ConfChangeType.ADD_VOTER and ch.node == "c"
    assert plan_membership(view("Labcd", "ef")) is None  # cap 5 reached


def test_a_learner_that_acknowledged_nothing_is_not_promoted() -> None:
    assert plan_membership(view("L", "ab", {"a": NEW, "b": NEW})) is None


def test_a_lone_founder_promotes_two_learners_back_to_back() -> None:
    # One ready learner, another still catching up: wait (1 -> 2 voters is fragile)...
    assert plan_membership(view("L", "ab", {"b": NEW})) is None
    # ... unless the first has been ready for a while, or both are ready.
    assert plan_membership(view("L", "ab", {"b": NEW}, ready_for=2.0)) is not None
    assert plan_membership(view("L", "ab")) is not None
    # A single joiner is promoted at once.
    assert plan_membership(view("L", "a")) is not None


def test_a_dead_voter_is_replaced_by_a_learner_then_demoted() -> None:
    v = view("Labcd", "e", {"d": DEAD})
    ch = plan_membership(v)
    assert ch is not None and (ch.type, ch.node) == (ConfChangeType.ADD_VOTER, "e")
    ch = plan_membership(view("Labcde", "", {"d": DEAD}))
    assert ch is not None and (ch.type, ch.node) == (ConfChangeType.ADD_LEARNER, "d")
    assert plan_membership(view("Labce", "d", {"d": DEAD})) is None


def test_a_slow_voter_is_not_replaced() -> None:
    assert plan_membership(view("Labcd", "e", {"d": SLOW})) is None


def test_a_dead_voter_without_replacement_leaves_the_quorum() -> None:
    ch = plan_membership(view("Lab", "", {"b": DEAD}))
    assert ch is not None and (ch.type, ch.node) == (ConfChangeType.ADD_LEARNER, "b")


def test_learners_silent_for_long_are_removed() -> None:
    ch = plan_membership(view("Lab", "c", {"c": GONE}))
    assert ch is not None and (ch.type, ch.node) == (ConfChangeType.REMOVE_NODE, "c")


health_st = st.sampled_from([ALIVE, NEW, DEAD, SLOW, GONE])


@settings(max_examples=300)
@given(
    st.integers(0, 6),
    st.integers(0, 6),
    st.lists(health_st, min_size=12, max_size=12),
    st.sampled_from([1, 3, 5]),
)
def test_membership_plans_are_safe(nv: int, nl: int, hs: list[PeerHealth], cap: int) -> None:
    names = "abcdefghijkl"
    voters = "L" + names[:nv]
    learners = names[nv : nv + nl]
    health = {p: hs[i] for i, p in enumerate(names[: nv + nl])}
    v = MembershipView("L", tuple(voters), tuple(learners), 10, health, cap=cap)
    ch = plan_membership(v)
    if ch is None:
        return
    h = v.h(ch.node)
    if ch.type == ConfChangeType.ADD_VOTER:
        assert ch.node in learners and h.alive and h.match > 0
        dead = sum(1 for p in voters if v.h(p).dead)
        assert len(voters) - dead < cap  # only fills up to the cap (dead ones replaced)
    elif ch.type == ConfChangeType.ADD_LEARNER:
        assert ch.node in voters and h.dead and ch.node != "L"
    else:
        assert ch.node in learners and h.gone


def test_a_wiped_voter_is_removed_only_if_the_others_keep_a_quorum() -> None:
    assert can_remove_voter(view("Lab"), "b")
    assert not can_remove_voter(view("La"), "a")
    assert not can_remove_voter(view("Lab", health={"a": DEAD}), "b")


def test_leadership_moves_to_the_voter_that_reaches_the_unreachable() -> None:
    # A-B-C: L (=A) leads, C is out of its reach, B reaches both.
    v = view("LBC", health={"C": SLOW})
    assert transfer_target(v, {"B": ["L", "C"], "C": ["B"]}, ["B"]) == "B"
    # Connected but silent (slow): no reason to move.
    assert transfer_target(v, {"B": ["L", "C"]}, ["B", "C"]) is None
    # Nobody reaches it either: stay.
    assert transfer_target(v, {"B": ["L"]}, ["B"]) is None


# -- orphaned members -------------------------------------------------------------------


def test_a_member_whose_leader_dissolved_sees_its_cluster_vanished() -> None:
    """Regression (20 daemons on 2 cores): a joiner got the old cluster's snapshot, then
    its leader dissolved into another cluster before the change adding the joiner reached
    it. Outside the membership it never campaigns, so it kept that leader for good and
    was never merged: formation never finished."""
    moved = info("L", state=MEMBER, cluster="big", leader="B")
    assert cluster_vanished("small", "L", [moved, info("B", state=MEMBER, cluster="big")])
    # The leader still announces our cluster, or we have no word from it: not vanished.
    here = info("L", state=MEMBER, cluster="small", leader="L")
    assert not cluster_vanished("small", "L", [here])
    assert not cluster_vanished("small", "L", [info("B", state=MEMBER, cluster="big")])
    # No leader known: vanished unless someone announces our cluster with a leader.
    assert cluster_vanished("small", "", [info("B", state=MEMBER, cluster="big", leader="B")])
    assert not cluster_vanished("small", "", [info("C", state=MEMBER, cluster="small", leader="D")])
