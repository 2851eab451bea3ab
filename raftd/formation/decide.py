"""Formation decisions as pure functions of a node's view: no I/O, no clock, no
randomness, so they are unit-tested exhaustively and every node with the same view
decides the same way. See ``DESIGN.md`` for the rules and their trade-offs.

- :func:`summarize_clusters`: what the announcements say about each cluster.
- :func:`decide_fresh`: a node with no state joins the best cluster it sees, or (no
  cluster seen) once the bootstrap window has passed and no new fresh node appeared for
  a third of a window, the lowest peer id among the fresh nodes it sees founds one; alone, only
  after the longer solo window (or ``--expect 1``).
- :func:`dissolve_target` / :func:`conflict_with`: duplicate clusters. Order by
  (holds user writes first, founded earlier, cluster id); a cluster without user writes
  dissolves into a better one; two clusters with writes are a reported conflict.
- :func:`plan_membership`: the leader's next single membership change (voter cap,
  dead-voter replacement, learner garbage collection).
- :func:`transfer_target`: hand leadership to a voter that reaches more members.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from raftd.core.types import ConfChangeType
from raftd.formation.wire import FRESH, MEMBER, NodeInfo

__all__ = [
    "Change",
    "ClusterSummary",
    "Decision",
    "FreshView",
    "MembershipView",
    "PeerHealth",
    "can_remove_voter",
    "cluster_vanished",
    "conflict_with",
    "decide_fresh",
    "dissolve_target",
    "majority",
    "plan_membership",
    "summarize_clusters",
    "transfer_target",
]


def majority(n: int) -> int:
    return n // 2 + 1


# -- clusters --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    """One cluster of the namespace, as its members announce it."""

    id: str
    founded_ms: int
    writes: bool
    leader: str = ""
    term: int = 0
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    seen: tuple[str, ...] = ()  # nodes announcing membership of it

    def rank(self) -> tuple[int, int, str]:
        """Smaller is better: holds user writes, then founded earlier, then id."""
        return (0 if self.writes else 1, self.founded_ms, self.id)

    def members(self) -> tuple[str, ...]:
        return self.voters + self.learners


def summarize_clusters(infos: Iterable[NodeInfo]) -> dict[str, ClusterSummary]:
    """Group member announcements by cluster id. Leader, term and membership come from
    the announcement with the highest term (a leader's own at equal term); ``writes``
    is true if any member says so (writes never disappear)."""
    best: dict[str, NodeInfo] = {}
    writes: dict[str, bool] = {}
    founded: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    for info in infos:
        if info.state != MEMBER or not info.cluster:
            continue
        cid = info.cluster
        seen.setdefault(cid, set()).add(info.id)
        writes[cid] = writes.get(cid, False) or info.writes
        if info.founded_ms and (cid not in founded or info.founded_ms < founded[cid]):
            founded[cid] = info.founded_ms
        cur = best.get(cid)
        key = (info.term, bool(info.leader), info.leader == info.id, info.id)
        if cur is None or key > (cur.term, bool(cur.leader), cur.leader == cur.id, cur.id):
            best[cid] = info
    out: dict[str, ClusterSummary] = {}
    for cid, info in best.items():
        out[cid] = ClusterSummary(
            id=cid,
            founded_ms=founded.get(cid, 0),
            writes=writes[cid],
            leader=info.leader,
            term=info.term,
            voters=info.voters,
            learners=info.learners,
            seen=tuple(sorted(seen[cid])),
        )
    return out


def best_cluster(clusters: Iterable[ClusterSummary]) -> ClusterSummary | None:
    return min(clusters, key=ClusterSummary.rank, default=None)


def dissolve_target(own: ClusterSummary, others: Iterable[ClusterSummary]) -> ClusterSummary | None:
    """The cluster ``own`` must dissolve into, or None. Only a cluster without user
    writes dissolves, and only into a strictly better one (so two clusters never
    dissolve into each other: the order is total and both sides compute it alike)."""
    if own.writes:
        return None
    best = best_cluster(c for c in others if c.id != own.id)
    return best if best is not None and best.rank() < own.rank() else None


def conflict_with(own: ClusterSummary, others: Iterable[ClusterSummary]) -> ClusterSummary | None:
    """Another cluster that, like ``own``, holds user writes: never merged; reported."""
    if not own.writes:
        return None
    return best_cluster(c for c in others if c.id != own.id and c.writes)


def cluster_vanished(own: str, leader: str, infos: Iterable[NodeInfo]) -> bool:
    """Whether this member's cluster ``own`` is gone from around it, judged from the
    recent announcements ``infos`` and the Raft leader it knows (``leader``, "" if none):
    nobody announces ``own`` with a leader, and either no leader is known or the known
    leader now announces another cluster (it dissolved before the change that added us
    reached us; a node outside the membership never campaigns, so it would otherwise
    keep that leader forever). A known leader we have no recent word from counts as
    present."""
    infos = list(infos)
    if leader:
        said = next((i for i in infos if i.id == leader), None)
        if said is None or said.cluster == own:
            return False
    return not any(i.cluster == own and i.state == MEMBER and i.leader for i in infos)


# -- fresh nodes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FreshView:
    """What a node without state sees. ``candidates`` are the fresh nodes it heard from
    recently, itself included; ``forming``: some node has state but no cluster id yet
    (a founder between bootstrapping and storing its record)."""

    self_id: str
    elapsed: float
    window: float
    solo_window: float
    expect: int
    candidates: frozenset[str]
    clusters: tuple[ClusterSummary, ...] = ()
    forming: bool = False
    quiet: float = math.inf  # seconds since the candidate set last changed
    #: Peers discovery found (addresses) that have not told us who they are yet and are
    #: not written off (a few failed exchanges in a row). Any of them may be a fresh
    #: node with a lower id, or a member of a cluster.
    unheard: int = 0
    #: How long unheard peers may hold a founding back (they may never answer).
    patience: float = math.inf


@dataclass(frozen=True, slots=True)
class Decision:
    """``recheck``: seconds after which the passing of time alone may change a "wait"
    (a window ends); new information may change it any time."""

    kind: Literal["join", "bootstrap", "wait"]
    reason: str
    cluster: ClusterSummary | None = None
    founder: str = ""
    recheck: float = math.inf


def decide_fresh(v: FreshView) -> Decision:
    """See the module docstring and DESIGN.md ("Founding")."""
    best = best_cluster(v.clusters)
    if best is not None:
        if not best.leader:
            # Joining a worse cluster meanwhile would only make it dissolve later.
            return Decision("wait", f"cluster {best.id} is electing a leader", cluster=best)
        return Decision("join", f"cluster {best.id} exists", cluster=best)
    if v.forming:
        return Decision("wait", "a cluster is being founded")
    cands = v.candidates | {v.self_id}
    founder = min(cands)
    if v.expect > 0:
        if len(cands) < v.expect:
            return Decision("wait", f"waiting for {v.expect} founders (have {len(cands)})")
    else:
        if v.elapsed < v.window:
            return Decision("wait", "bootstrap window", recheck=v.window - v.elapsed)
        if v.quiet < v.window / 3:
            # Nodes are still appearing (a slow or staggered start): the lowest id may
            # not have shown up yet.
            return Decision(
                "wait",
                f"founders still appearing ({len(cands)} so far)",
                recheck=v.window / 3 - v.quiet,
            )
        if v.unheard and v.elapsed < v.patience:
            # On an overloaded host (or a large fleet starting at once) discovery finds
            # addresses long before the exchanges with them complete. Founding now would
            # give one cluster per impatient node, each to be merged later, at a much
            # higher cost than this wait.
            return Decision(
                "wait",
                f"{v.unheard} discovered peers not heard from yet",
                recheck=v.patience - v.elapsed,
            )
        if len(cands) == 1 and v.elapsed < v.solo_window:
            return Decision("wait", "alone: solo window", recheck=v.solo_window - v.elapsed)
    if founder == v.self_id:
        return Decision("bootstrap", f"lowest of {len(cands)} founders", founder=founder)
    return Decision("wait", f"founder is {founder}", founder=founder)


# -- membership (leader) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerHealth:
    """The leader's view of one member: ``match`` index; ``alive`` answered recently;
    ``dead`` silent longer than the dead-voter timeout; ``gone`` silent long enough to
    drop a learner."""

    match: int = 0
    alive: bool = True
    dead: bool = False
    gone: bool = False


@dataclass(frozen=True, slots=True)
class MembershipView:
    leader: str
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    commit: int
    health: Mapping[str, PeerHealth] = field(default_factory=dict)
    cap: int = 5
    lag: int = 16
    #: Seconds the most caught-up learner has been ready (for the first promotion).
    ready_for: float = 0.0
    #: How long a lone founder waits for a second ready learner before promoting one.
    pair_wait: float = 1.0

    def h(self, peer: str) -> PeerHealth:
        if peer == self.leader:
            return PeerHealth(match=self.commit)
        return self.health.get(peer, PeerHealth(alive=False))


@dataclass(frozen=True, slots=True)
class Change:
    type: ConfChangeType
    node: str
    reason: str


def caught_up(v: MembershipView, peer: str) -> bool:
    """Alive and replicating: it acknowledged entries (``match > 0``: a member added a
    moment ago has acknowledged nothing yet) and trails the commit index by at most
    ``lag`` entries."""
    h = v.h(peer)
    return h.alive and h.match > 0 and h.match >= v.commit - v.lag


def plan_membership(v: MembershipView) -> Change | None:
    """The next single change, or None. Rules (DESIGN.md, "Membership"):

    1. Voters not declared dead ("present") target ``min(cap, present voters + live
       learners)``.
    2. A dead voter is demoted to learner once the present voters reach the target
       without it (a replacement was promoted first, or there is no one to promote
       and it only weakens the quorum).
    3. Below the target, promote the most caught-up healthy learner.
    4. Remove learners silent for the learner GC timeout.

    Every change commits under the current configuration, so with this leader in
    place a quorum of it is alive; promoting a live node or demoting a dead one never
    leaves fewer live voters than a majority of the new voters.
    """
    voters = sorted(v.voters)
    learners = sorted(v.learners)
    dead_voters = [p for p in voters if v.h(p).dead]
    # Voters not (yet) declared dead count as present: a voter that is merely slow must
    # not get a replacement, or the voter count would exceed the cap once it is back.
    present = [p for p in voters if not v.h(p).dead]
    live_learners = [p for p in learners if v.h(p).alive]
    target = min(v.cap, len(present) + len(live_learners))
    if dead_voters and len(present) >= target and len(voters) > 1:
        return Change(ConfChangeType.ADD_LEARNER, dead_voters[0], "voter unreachable: demoted")
    if len(present) < target:
        ready = sorted((p for p in learners if caught_up(v, p)), key=lambda p: (-v.h(p).match, p))
        # A lone founder going to two voters needs both to stay responsive: promote
        # when a second learner is ready too (so 1 -> 2 -> 3 back to back), or after
        # ``pair_wait`` if there is only one.
        lone = len(voters) == 1 and len(live_learners) >= 2
        if ready and (not lone or len(ready) >= 2 or v.ready_for >= v.pair_wait):
            return Change(ConfChangeType.ADD_VOTER, ready[0], "promoted (caught up)")
    gone = [p for p in learners if v.h(p).gone]
    if gone:
        return Change(ConfChangeType.REMOVE_NODE, gone[0], "learner unreachable for long")
    return None


def can_remove_voter(v: MembershipView, peer: str) -> bool:
    """Whether removing voter ``peer`` can commit without it: the other live voters
    must form a majority of the current voters."""
    others = [p for p in v.voters if p != peer and v.h(p).alive]
    return len(v.voters) > 1 and len(others) >= majority(len(v.voters))


def transfer_target(
    v: MembershipView,
    connected: Mapping[str, Sequence[str]],
    leader_connected: Sequence[str],
) -> str | None:
    """A voter to hand leadership to because it reaches members the leader cannot (the
    A-B-C line with A leading and C out of A's reach), or None.

    Only members that are silent AND to which the leader has no connection at all count
    as out of reach: a member that is merely slow (still connected) is no reason to move
    leadership. ``connected[p]``: the peers ``p`` announces live connections to. The
    target must be a caught-up voter reaching strictly more members than the leader."""
    members = set(v.voters) | set(v.learners)
    mine = set(leader_connected)
    unreachable = {m for m in members if m != v.leader and not v.h(m).alive and m not in mine}
    if not unreachable:
        return None
    reach_leader = len(members) - len(unreachable)
    best: tuple[int, str] | None = None
    for p in sorted(v.voters):
        if p == v.leader or not caught_up(v, p):
            continue
        reach = len(members & ({p} | set(connected.get(p, ()))))
        if reach > reach_leader and (best is None or reach > best[0]):
            best = (reach, p)
    return best[1] if best else None


def fresh_candidates(self_id: str, infos: Iterable[NodeInfo]) -> frozenset[str]:
    """Fresh nodes (incl. ``self_id``) among recent announcements."""
    return frozenset({self_id} | {i.id for i in infos if i.state == FRESH})
