"""One test per claim of the Raft paper (Ongaro & Ousterhout, 2014), sections 5.1-5.4,
6, 7 and 8, and of the thesis (Ongaro, 2014) §3.10, §4.2, §6.4 and §9.6.

Each test's docstring quotes or paraphrases the claim and names its section.
"""

from __future__ import annotations

import random

import pytest

from raftd.core import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    StateType,
)
from raftd.core.raft import Raft
from raftd.core.storage import MemoryStorage
from raftd.testing.network import Network, bootstrap_storage

MT = MessageType


def new_raft(
    nid: str = "a",
    peers: tuple[str, ...] = ("a", "b", "c"),
    *,
    storage: MemoryStorage | None = None,
    election: int = 10,
    heartbeat: int = 1,
    pre_vote: bool = False,
    check_quorum: bool = False,
    seed: int = 7,
) -> Raft:
    st = storage if storage is not None else bootstrap_storage(peers)
    return Raft(
        Config(
            id=nid,
            storage=st,
            rng=random.Random(seed),
            election_tick=election,
            heartbeat_tick=heartbeat,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            applied=st.snapshot().metadata.index,
        )
    )


def storage_with(
    entries: list[tuple[int, int]], peers: tuple[str, ...] = ("a", "b", "c")
) -> MemoryStorage:
    """Bootstrapped storage plus entries given as (index, term)."""
    st = bootstrap_storage(peers)
    st.append([Entry(term=t, index=i, data=b"x%d" % i) for i, t in entries])
    return st


def take(r: Raft) -> list[Message]:
    return r.read_messages()


def persist(r: Raft) -> None:
    """What the runtime does after a Ready's persist: the whole log is durable now."""
    li = r.log.last_index()
    st = r.log.storage
    assert isinstance(st, MemoryStorage)
    st.append(r.log.unstable_entries())
    r.log.stable_to(li, r.log.last_term())
    r.persisted_to(li)


def caught_up_leader(size: int) -> Raft:
    """Leader "a" of ``size`` voters, every follower acknowledging its whole log."""
    peers = tuple("abcde"[:size])
    r = new_raft(peers=peers)
    make_leader(r)
    li = r.log.last_index()
    for p in peers[1:]:
        r.step(Message(MT.APP_RESP, frm=p, to="a", term=r.term, index=li))
    take(r)
    return r


def make_leader(r: Raft) -> None:
    r.become_candidate()
    r.become_leader()
    persist(r)
    take(r)


# -- §5.1 Raft basics ---------------------------------------------------------------------


@pytest.mark.parametrize("state", ["follower", "candidate", "leader"])
def test_5_1_update_term_from_message(state: str) -> None:
    """§5.1: "If a server's current term is smaller than the other's, it updates its
    current term to the larger value. If a candidate or leader discovers that its term is
    out of date, it immediately reverts to follower state." """
    r = new_raft()
    if state == "candidate":
        r.become_candidate()
    elif state == "leader":
        make_leader(r)
    r.step(Message(MT.APP, frm="b", to="a", term=9))
    assert r.term == 9
    assert r.state == StateType.FOLLOWER
    assert r.lead == "b"


def test_5_1_reject_stale_term_message() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request." """
    r = new_raft()
    r.become_follower(5, NONE)
    r.step(Message(MT.APP, frm="b", to="a", term=3, index=1, log_term=1))
    assert r.term == 5
    assert r.lead == NONE  # the stale leader was not accepted


def test_5_1_start_as_follower() -> None:
    """§5.2: "When servers start up, they begin as followers." """
    r = new_raft()
    assert r.state == StateType.FOLLOWER


# -- §5.2 Leader election -----------------------------------------------------------------


def test_5_2_leader_bcast_beat() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." """
    r = new_raft(heartbeat=2)
    make_leader(r)
    for _ in range(2):
        r.tick()
    msgs = sorted(take(r), key=lambda m: m.to)
    assert [(m.type, m.to) for m in msgs] == [(MT.HEARTBEAT, "b"), (MT.HEARTBEAT, "c")]
    assert all(not m.entries for m in msgs)


@pytest.mark.parametrize("state", ["follower", "candidate"])
def test_5_2_start_election_on_timeout(state: str) -> None:
    """§5.2: "If a follower receives no communication over a period of time called the
    election timeout, then it ... begins an election ... it increments its current term
    and transitions to candidate state. It then votes for itself and issues RequestVote
    RPCs in parallel to each of the other servers." A candidate whose election times out
    starts a new one the same way."""
    r = new_raft()
    if state == "candidate":
        r.become_candidate()
    term0 = r.term
    for _ in range(2 * 10):
        r.tick()
    assert r.term == term0 + 1
    assert r.state == StateType.CANDIDATE
    assert r.vote == "a"
    msgs = sorted(take(r), key=lambda m: m.to)
    assert [(m.type, m.to, m.term) for m in msgs] == [
        (MT.VOTE, "b", term0 + 1),
        (MT.VOTE, "c", term0 + 1),
    ]


@pytest.mark.parametrize(
    ("size", "votes", "expected"),
    [
        (1, {}, StateType.LEADER),
        (3, {"b": True, "c": True}, StateType.LEADER),
        (3, {"b": True}, StateType.LEADER),
        (5, {"b": True, "c": True}, StateType.LEADER),
        (5, {"b": True}, StateType.CANDIDATE),
        (3, {"b": False, "c": False}, StateType.FOLLOWER),
        (5, {"b": False, "c": False, "d": False}, StateType.FOLLOWER),
        (3, {}, StateType.CANDIDATE),
    ],
)
def test_5_2_leader_election_in_one_round(
    size: int, votes: dict[str, bool], expected: StateType
) -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." It loses when a majority rejects, and
    otherwise stays candidate."""
    peers = tuple("abcde"[:size])
    r = new_raft(peers=peers)
    term0 = r.term
    r.step(Message(MT.HUP, frm="a"))
    for v, granted in votes.items():
        r.step(Message(MT.VOTE_RESP, frm=v, to="a", term=r.term, reject=not granted))
    assert r.state == expected
    assert r.term == term0 + 1


@pytest.mark.parametrize(
    ("vote", "nvote", "wreject"),
    [
        (NONE, "b", False),
        (NONE, "c", False),
        ("b", "b", False),
        ("c", "c", False),
        ("b", "c", True),
        ("c", "b", True),
    ],
)
def test_5_2_follower_vote(vote: str, nvote: str, wreject: bool) -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." """
    st = bootstrap_storage(("a", "b", "c"))
    st.set_hard_state(HardState(term=1, vote=vote, commit=1))
    r = new_raft(storage=st)
    r.step(Message(MT.VOTE, frm=nvote, to="a", term=1, index=1, log_term=1))
    msgs = take(r)
    assert [(m.to, m.reject) for m in msgs] == [(nvote, wreject)]


def test_5_2_candidate_fallback() -> None:
    """§5.2: "If the leader's term ... is at least as large as the candidate's current
    term, then the candidate recognizes the leader as legitimate and returns to follower
    state." """
    for term_delta in (0, 1):
        r = new_raft()
        r.step(Message(MT.HUP, frm="a"))
        assert r.state == StateType.CANDIDATE
        t = r.term + term_delta
        r.step(Message(MT.APP, frm="b", to="a", term=t, index=1, log_term=1))
        assert r.soft_state().state == StateType.FOLLOWER
        assert r.term == t


def test_5_2_election_timeout_randomized() -> None:
    """§5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed
    interval (e.g., 150-300ms)." Here [election, 2*election) ticks, covering the range."""
    seen: set[int] = set()
    for seed in range(200):
        r = new_raft(seed=seed)
        ticks = 0
        while r.state == StateType.FOLLOWER:
            r.tick()
            ticks += 1
        seen.add(ticks)
    assert min(seen) >= 10
    assert max(seen) < 20
    assert len(seen) >= 8  # actually spread out


def test_5_2_randomized_timeouts_make_split_votes_rare() -> None:
    """§5.2: randomized timeouts ensure "split votes are rare": with 5 nodes started
    together, the first election succeeds in most runs."""
    first_round_wins = 0
    for seed in range(50):
        net = Network(["a", "b", "c", "d", "e"], seed=seed)
        for _ in range(40):
            net.tick_all()
            if net.leader() is not None:
                break
        ld = net.leader()
        assert ld is not None
        if net.node(ld).raft.term == 1:
            first_round_wins += 1
    assert first_round_wins >= 35


# -- §5.3 Log replication -----------------------------------------------------------------


def test_5_3_leader_start_replication() -> None:
    """§5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry."
    The RPC carries the index and term of the entry preceding the new ones."""
    r = new_raft()
    make_leader(r)
    li = r.log.last_index()
    for pid in ("b", "c"):
        r.step(Message(MT.APP_RESP, frm=pid, to="a", term=r.term, index=li))
    take(r)
    r.propose([b"some data"], [EntryType.NORMAL])
    assert r.log.last_index() == li + 1
    msgs = sorted(take(r), key=lambda m: m.to)
    assert [m.to for m in msgs] == ["b", "c"]
    for m in msgs:
        assert m.type == MT.APP
        assert (m.index, m.log_term) == (li, r.term)
        assert [e.data for e in m.entries] == [b"some data"]
        assert m.entries[0].index == li + 1


def test_5_3_leader_commit_entry() -> None:
    """§5.3: "When the entry has been safely replicated, the leader applies the entry to
    its state machine ... The leader keeps track of the highest index it knows to be
    committed, and it includes that index in future AppendEntries RPCs." """
    net = Network(["a", "b", "c"])
    net.campaign("a")
    idx = net.propose("a", b"cmd")
    assert net.node("a").raft.log.committed == idx
    assert net.peers["a"].applied == [b"cmd"]
    # The followers learned the commit index from the next append.
    for pid in ("b", "c"):
        assert net.node(pid).raft.log.committed == idx
        assert net.peers[pid].applied == [b"cmd"]


@pytest.mark.parametrize(
    ("size", "acks", "committed"),
    [
        (1, set(), True),
        (3, set(), False),
        (3, {"b"}, True),
        (3, {"b", "c"}, True),
        (5, set(), False),
        (5, {"b"}, False),
        (5, {"b", "c"}, True),
        (5, {"b", "c", "d", "e"}, True),
    ],
)
def test_5_3_leader_acknowledge_commit(size: int, acks: set[str], committed: bool) -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers." """
    r = caught_up_leader(size)
    idx = r.propose([b"x"], [EntryType.NORMAL])
    persist(r)
    for p in acks:
        r.step(Message(MT.APP_RESP, frm=p, to="a", term=r.term, index=idx))
    assert (r.log.committed == idx) is committed


@pytest.mark.parametrize(("size", "acks"), [(1, set()), (3, {"b"}), (5, {"b", "c"})])
def test_10_2_1_leader_counts_itself_only_once_durable(size: int, acks: set[str]) -> None:
    """Thesis §10.2.1: the leader may send its entries while it writes them to its own
    disk, but it counts itself in the commit quorum only once they are durable. With
    one follower short of a majority without the leader, nothing commits until the
    runtime reports the leader's persist."""
    r = caught_up_leader(size)
    idx = r.propose([b"x"], [EntryType.NORMAL])
    for p in acks:
        r.step(Message(MT.APP_RESP, frm=p, to="a", term=r.term, index=idx))
    assert r.log.committed < idx, "committed before the leader's own entry was durable"
    persist(r)
    assert r.log.committed == idx
    # The followers learn the new commit index from the next append.
    if size > 1:
        assert any(m.type == MT.APP and m.commit == idx for m in take(r))


def test_5_3_leader_commit_preceding_entries() -> None:
    """§5.3: committing an entry "also commits all preceding entries in the leader's log,
    including entries created by previous leaders." """
    st = storage_with([(2, 2), (3, 2)])
    r = new_raft(storage=st)
    r.become_follower(2, NONE)
    make_leader(r)
    noop = r.log.last_index()
    for p in ("b", "c"):
        r.step(Message(MT.APP_RESP, frm=p, to="a", term=r.term, index=noop))
    assert r.log.committed == noop
    committed = r.log.slice(2, noop + 1)
    assert [e.index for e in committed] == [2, 3, noop]


def test_5_3_follower_commit_entry() -> None:
    """§5.3: "Once a follower learns that a log entry is committed, it applies the entry
    to its local state machine." """
    r = new_raft()
    r.become_follower(1, "b")
    ents = (Entry(1, 2, data=b"x"), Entry(1, 3, data=b"y"))
    r.step(Message(MT.APP, frm="b", to="a", term=1, index=1, log_term=1, entries=ents, commit=2))
    assert r.log.committed == 2
    assert [e.data for e in r.log.next_committed_entries()] == [b"x"]


@pytest.mark.parametrize(
    ("index", "log_term", "reject"),
    [(1, 1, False), (2, 2, False), (3, 3, False), (3, 2, True), (4, 3, True), (3, 1, True)],
)
def test_5_3_follower_check_append(index: int, log_term: int, reject: bool) -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and
    term, then it refuses the new entries" (the consistency check)."""
    st = storage_with([(2, 2), (3, 3)])
    st.set_hard_state(HardState(term=3, commit=1))
    r = new_raft(storage=st)
    r.step(Message(MT.APP, frm="b", to="a", term=3, index=index, log_term=log_term))
    (m,) = take(r)
    assert m.type == MT.APP_RESP
    assert m.reject is reject
    if reject:
        assert m.reject_hint <= min(index, r.log.last_index())


@pytest.mark.parametrize(
    ("index", "log_term", "new", "want"),
    [
        # append after the last entry
        (3, 3, [(4, 3)], [(2, 2), (3, 3), (4, 3)]),
        # conflict at 3: delete it and all that follow, then append
        (2, 2, [(3, 4), (4, 4)], [(2, 2), (3, 4), (4, 4)]),
        # entries already present are kept
        (1, 1, [(2, 2)], [(2, 2), (3, 3)]),
        # conflict at 2
        (1, 1, [(2, 4)], [(2, 4)]),
    ],
)
def test_5_3_follower_append_entries(
    index: int, log_term: int, new: list[tuple[int, int]], want: list[tuple[int, int]]
) -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it; append any new entries not
    already in the log." """
    st = storage_with([(2, 2), (3, 3)])
    r = new_raft(storage=st)
    r.become_follower(4, "b")
    ents = tuple(Entry(term=t, index=i) for i, t in new)
    r.step(Message(MT.APP, frm="b", to="a", term=4, index=index, log_term=log_term, entries=ents))
    got = [(e.index, e.term) for e in r.log.slice(2, r.log.last_index() + 1)]
    assert got == want


FIGURE_7_LEADER = [(i, t) for i, t in enumerate([1, 1, 1, 4, 4, 5, 5, 6, 6, 6], start=2)]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_5_3_leader_sync_follower_log(case: str) -> None:
    """§5.3, Figure 7: whatever the follower's log (missing, extra or conflicting
    entries), "the leader handles inconsistencies by forcing the followers' logs to
    duplicate its own"."""
    peers = ("lead", "f", "x")
    lst = storage_with(FIGURE_7_LEADER, peers)
    lst.set_hard_state(HardState(term=8, commit=1))
    fst = storage_with([(i, t) for i, t in enumerate(FIGURE_7_FOLLOWERS[case], start=2)], peers)
    fst.set_hard_state(HardState(term=7, commit=1))
    net = Network(list(peers))
    net.add("lead", lst)
    net.add("f", fst)
    # "x" votes for the leader; the follower under test must be brought in line.
    net.node("x").raft.become_follower(8, NONE)
    net.campaign("lead")
    assert net.state("lead") == StateType.LEADER
    net.propose("lead", b"new")
    lead_log = net.node("lead").raft.log
    f_log = net.node("f").raft.log
    assert f_log.last_index() == lead_log.last_index()
    for i in range(2, lead_log.last_index() + 1):
        assert f_log.term(i) == lead_log.term(i)


def test_5_3_fast_backtrack_skips_conflicting_terms() -> None:
    """§5.3 (the optimization at its end): "the follower can include the term of the
    conflicting entry and the first index it stores for that term. With this information,
    the leader can decrement nextIndex to bypass all of the conflicting entries in that
    term; one AppendEntries RPC will be required for each term with conflicting entries,
    rather than one RPC per entry." """
    peers = ("lead", "f", "x")
    leader_log = [(i, 1 if i < 5 else 4) for i in range(2, 60)]
    follower_log = [(i, 1 if i < 5 else (2 if i < 30 else 3)) for i in range(2, 90)]
    lst = storage_with(leader_log, peers)
    lst.set_hard_state(HardState(term=5, commit=1))
    fst = storage_with(follower_log, peers)
    fst.set_hard_state(HardState(term=5, commit=1))
    net = Network(list(peers))
    net.add("lead", lst)
    net.add("f", fst)
    net.cut_link("lead", "f")
    net.campaign("lead")
    net.heal()
    net.delivered.clear()
    net.tick("lead")  # heartbeat -> response -> probing starts
    rejects = [m for m in net.delivered if m.type == MT.APP_RESP and m.reject and m.frm == "f"]
    # Without the optimization this would take ~85 round trips.
    assert 1 <= len(rejects) <= 3
    assert net.node("f").raft.log.last_index() == net.node("lead").raft.log.last_index()


# -- §5.4 Safety --------------------------------------------------------------------------


def test_5_4_vote_request_carries_last_log() -> None:
    """§5.4.1: "The RequestVote RPC ... includes information about the candidate's log"
    (last log index and term)."""
    st = storage_with([(2, 1), (3, 2)])
    r = new_raft(storage=st)
    r.become_follower(2, NONE)
    r.step(Message(MT.HUP, frm="a"))
    for m in take(r):
        assert m.type == MT.VOTE
        assert (m.index, m.log_term) == (3, 2)


@pytest.mark.parametrize(
    ("log", "index", "log_term", "reject"),
    [
        # same last term: the longer-or-equal log wins
        ([(2, 1), (3, 1)], 3, 1, False),
        ([(2, 1), (3, 1)], 4, 1, False),
        ([(2, 1), (3, 1), (4, 1)], 3, 1, True),
        # the later last term wins
        ([(2, 1), (3, 1)], 2, 2, False),
        ([(2, 1), (3, 2)], 9, 1, True),
        ([(2, 2)], 3, 1, True),
    ],
)
def test_5_4_1_voter_grants_only_up_to_date(
    log: list[tuple[int, int]], index: int, log_term: int, reject: bool
) -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of
    the candidate": later last term wins; with equal last terms, the longer log."""
    r = new_raft(storage=storage_with(log))
    r.step(Message(MT.VOTE, frm="b", to="a", term=3, index=index, log_term=log_term))
    (m,) = take(r)
    assert m.type == MT.VOTE_RESP
    assert m.reject is reject


def test_5_4_2_leader_only_commits_log_from_current_term() -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas.
    Only log entries from the leader's current term are committed by counting replicas."
    """
    st = storage_with([(2, 1), (3, 2)])
    st.set_hard_state(HardState(term=2, commit=1))
    r = new_raft(storage=st)
    r.become_follower(2, NONE)
    make_leader(r)  # term 3, appends its no-op at index 4
    # A majority acknowledges index 3 (term 2): that must NOT commit it...
    r.step(Message(MT.APP_RESP, frm="b", to="a", term=r.term, index=3))
    assert r.log.committed == 1
    # ...but once the current-term entry is replicated, everything before it commits.
    r.step(Message(MT.APP_RESP, frm="b", to="a", term=r.term, index=4))
    assert r.log.committed == 4


def test_5_4_2_figure_8() -> None:
    """§5.4.2, Figure 8: an entry from an old term that reaches a majority can still be
    overwritten by a later leader; Raft prevents harm by never committing it by counting
    replicas, only together with an entry of the leader's current term."""
    net = Network(["s1", "s2", "s3", "s4", "s5"])
    net.campaign("s1")
    t1 = net.node("s1").raft.term
    # (a) s1 replicates a new entry only to s2.
    for p in ("s3", "s4", "s5"):
        net.cut_link("s1", p)
    net.propose("s1", b"old-term")
    idx = net.node("s1").raft.log.last_index()
    assert net.node("s2").raft.log.term_or_zero(idx) == t1
    # (b) s5 is elected by s3, s4, s5 and appends a different entry at the same index.
    net.heal()
    net.isolate("s1")
    net.isolate("s2")
    net.cut_link("s5", "s1")
    net.ignore(MT.APP)  # s5's entries (its no-op included) stay on s5 only
    net.campaign("s5")
    assert net.state("s5") == StateType.LEADER
    net.node("s5").propose(b"s5-entry")
    net.send()
    # (c) s1 is elected again (votes of s2, s3) and its old-term entry reaches s3, so a
    # majority (s1, s2, s3) holds it; s1's own-term no-op does not get through yet.
    net.heal()
    for p in ("s4", "s5"):
        net.isolate(p)
    net.restart("s1")  # s1 crashed meanwhile; it comes back as a follower
    net.ignore(MT.APP)  # hold s1's appends back so we can deliver the old entry alone
    for _ in range(3):  # s3 already voted in s5's term: it takes a later term
        if net.state("s1") != StateType.LEADER:
            net.campaign("s1")
    assert net.state("s1") == StateType.LEADER
    s1 = net.node("s1").raft
    old = s1.log.slice(idx, idx + 1)
    assert old[0].term == t1
    net.ignored.clear()
    net.send(
        Message(
            MT.APP,
            frm="s1",
            to="s3",
            term=s1.term,
            index=idx - 1,
            log_term=s1.log.term(idx - 1),
            entries=tuple(old),
            commit=s1.log.committed,
        )
    )
    assert net.node("s3").raft.log.term_or_zero(idx) == t1
    assert net.node("s2").raft.log.term_or_zero(idx) == t1
    # s1, s2 and s3 hold the old-term entry (s3 acknowledged it above)...
    assert s1.prs["s3"].match >= idx
    s1.step(Message(MT.APP_RESP, frm="s2", to="s1", term=s1.term, index=idx))
    assert s1.log.committed < idx  # a majority has it, yet it is not committed
    # (d) s5 can still be elected (its last term is newer than t1) and overwrites it.
    net.isolate("s1")
    for p in ("s2", "s3", "s4", "s5"):
        for q in ("s2", "s3", "s4", "s5"):
            if p != q:
                net.cut.discard((p, q))
    net.cut.discard(("s5", "s1"))
    net.restart("s5")
    for _ in range(3):
        if net.state("s5") != StateType.LEADER:
            net.campaign("s5")
    assert net.state("s5") == StateType.LEADER
    net.propose("s5", b"new")
    for p in ("s2", "s3", "s4"):
        assert b"old-term" not in net.peers[p].applied
        assert net.node(p).raft.log.term(idx) != t1


def test_5_4_3_state_machine_safety_after_leader_change() -> None:
    """§5.4.3: "if a server has applied a log entry at a given index to its state machine,
    no other server will ever apply a different log entry for the same index." """
    net = Network(["a", "b", "c"])
    net.campaign("a")
    net.propose("a", b"one")
    net.isolate("a")
    net.campaign("b")
    net.propose("b", b"two")
    net.heal()
    net.tick_all(3)
    seqs = [net.peers[p].applied for p in ("a", "b", "c")]
    assert seqs[0] == seqs[1] == seqs[2] == [b"one", b"two"]


# -- §6 Cluster membership changes (thesis §4.2: single-server changes) ------------------


def _leader_net(ids: list[str]) -> Network:
    net = Network(ids)
    net.campaign(ids[0])
    return net


def test_6_new_servers_join_as_non_voting_members() -> None:
    """§6: "new servers join the cluster as non-voting members (the leader replicates log
    entries to them, but they are not considered for majorities)". Thesis §4.2.1."""
    net = _leader_net(["a", "b", "c"])
    net.add("d")
    net.node("a").propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "d"))
    net.send()
    assert net.node("a").raft.learners() == ["d"]
    net.propose("a", b"hello")
    assert net.peers["d"].applied == [b"hello"]  # it replicates...
    # ...but does not count: with b and c down, nothing commits even though d acks.
    net.isolate("b")
    net.isolate("c")
    c0 = net.node("a").raft.log.committed
    net.propose("a", b"stuck")
    assert net.node("a").raft.log.committed == c0
    assert not net.node("d").raft.promotable()


def test_6_removed_leader_steps_down() -> None:
    """§6: a leader that is not part of the new configuration steps down. Here (thesis
    §4.2.2 and as etcd does) the leader refuses to remove itself: leadership is
    transferred first, then the old leader is removed."""
    net = _leader_net(["a", "b", "c"])
    with pytest.raises(ProposalDroppedError, match="transfer leadership first"):
        net.node("a").propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, "a"))
    net.node("a").transfer_leader("b")
    net.send()
    assert net.state("b") == StateType.LEADER
    net.node("b").propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, "a"))
    net.send()
    net.tick_all(2)
    assert net.node("b").raft.voters() == ["b", "c"]
    assert net.state("a") != StateType.LEADER


def test_6_removed_servers_do_not_disrupt() -> None:
    """§6: "servers disregard RequestVote RPCs when they believe a current leader
    exists", so a removed server that times out cannot depose the leader. (With
    check-quorum; thesis §4.2.3.)"""
    net = Network(["a", "b", "c"], check_quorum=True)
    net.campaign("a")
    term = net.node("a").raft.term
    net.node("a").propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, "c"))
    net.send()
    net.tick_all(1)
    assert net.node("a").raft.voters() == ["a", "b"]
    # c never learns its removal (cut from the leader) and campaigns at a higher term.
    net.cut_link("a", "c")
    rc = net.node("c").raft
    rc.become_candidate()
    rc.become_candidate()
    for v in ("a", "b"):
        net.node(v).step(Message(MT.VOTE, frm="c", to=v, term=rc.term, index=99, log_term=99))
    net.send()
    assert net.state("a") == StateType.LEADER
    assert net.node("a").raft.term == term


def test_thesis_4_2_one_change_at_a_time() -> None:
    """Thesis §4.2: "the leader ... does not begin a new configuration change until the
    previous one has committed" (we wait until it is applied, as etcd does)."""
    net = _leader_net(["a", "b", "c"])
    net.isolate("b")
    net.isolate("c")  # the first change cannot commit
    net.node("a").propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "d"))
    with pytest.raises(ProposalDroppedError, match="already in progress"):
        net.node("a").propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "e"))
    net.heal()
    net.send()
    net.tick_all(1)
    net.node("a").propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "e"))


def test_thesis_4_2_promote_and_demote() -> None:
    """Thesis §4.2.1: a learner that caught up is promoted to voter; a voter can be
    demoted to learner. Both are single-server changes."""
    net = _leader_net(["a", "b", "c"])
    net.add("d")
    for cc in (
        ConfChange(ConfChangeType.ADD_LEARNER, "d"),
        ConfChange(ConfChangeType.ADD_VOTER, "d"),
        ConfChange(ConfChangeType.ADD_LEARNER, "b"),
    ):
        net.node("a").propose_conf_change(cc)
        net.send()
        net.tick_all(1)
    r = net.node("a").raft
    assert r.voters() == ["a", "c", "d"]
    assert r.learners() == ["b"]
    assert net.node("d").raft.promotable()
    assert not net.node("b").raft.promotable()


def test_thesis_4_2_new_leader_waits_before_conf_change() -> None:
    """Thesis §4.2 (bug fix): a new leader may not append a configuration entry until it
    has committed an entry of its own term."""
    net = _leader_net(["a", "b", "c"])
    net.isolate("a")
    net.ignore(MT.APP)
    net.campaign("b")
    assert net.state("b") == StateType.LEADER
    with pytest.raises(ProposalDroppedError, match="not yet committed an entry of its term"):
        net.node("b").propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "d"))
    net.heal()
    net.tick("b")
    net.node("b").propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "d"))


# -- §7 Log compaction --------------------------------------------------------------------


def test_7_install_snapshot_to_lagging_follower() -> None:
    """§7: "the leader must occasionally send snapshots to followers that lag behind ...
    when the leader has already discarded the next log entry that it needs to send". The
    follower discards its log and takes the snapshot's state and membership."""
    net = _leader_net(["a", "b", "c"])
    net.isolate("c")
    for i in range(10):
        net.propose("a", b"v%d" % i)
    p = net.peers["a"]
    applied = p.applied_index
    p.storage.create_snapshot(applied, net.node("a").raft.conf_state(), b"state")
    p.storage.compact(applied)
    net.heal()
    net.delivered.clear()
    net.tick_all(2)
    assert any(m.type == MT.SNAP and m.to == "c" for m in net.delivered)
    rc = net.node("c").raft
    assert rc.log.first_index() == applied + 1
    assert net.peers["c"].storage.snapshot().data == b"state"
    net.propose("a", b"after")
    assert net.peers["c"].applied[-1] == b"after"


def test_7_follower_ignores_stale_snapshot() -> None:
    """§7: "If the follower receives a snapshot that describes a prefix of its log ...
    entries covered by the snapshot are deleted but entries following the snapshot are
    still valid and must be retained." We keep the log and only advance the commit."""
    from raftd.core import Snapshot, SnapshotMetadata

    st = storage_with([(2, 1), (3, 1), (4, 1)])
    r = new_raft(storage=st)
    r.become_follower(1, "b")
    snap = Snapshot(SnapshotMetadata(index=3, term=1, conf_state=r.conf_state()), b"s")
    r.step(Message(MT.SNAP, frm="b", to="a", term=1, snapshot=snap))
    assert r.log.last_index() == 4
    assert r.log.committed == 3
    assert not r.log.has_pending_snapshot()


# -- §8 Client interaction and thesis §6.4 ReadIndex ------------------------------------


def test_8_leader_commits_noop_at_term_start() -> None:
    """§8: "each leader [must] commit a blank no-op entry into the log at the start of its
    term" before it knows which entries are committed."""
    r = new_raft()
    make_leader(r)
    last = r.log.slice(r.log.last_index(), r.log.last_index() + 1)[0]
    assert last.term == r.term and last.data == b""


def test_thesis_6_4_read_index_on_leader() -> None:
    """Thesis §6.4: the leader records its commit index as the read index, confirms its
    leadership with a round of heartbeats, and only then serves the read."""
    net = _leader_net(["a", "b", "c"])
    a = net.node("a")
    net.isolate("b")
    net.isolate("c")
    a.read_index(b"r1")
    net.send()
    assert net.peers["a"].read_states == []  # no quorum confirmed yet
    net.heal()
    a.read_index(b"r2")
    net.send()
    got = [(rs.index, rs.context) for rs in net.peers["a"].read_states]
    # r2's heartbeat round also confirms the earlier r1.
    assert got == [(a.raft.log.committed, b"r1"), (a.raft.log.committed, b"r2")]


def test_thesis_6_4_read_index_waits_for_current_term_commit() -> None:
    """Thesis §6.4 step 1: "If the leader has not yet marked an entry from its current
    term committed, it waits until it has done so." """
    net = _leader_net(["a", "b", "c"])
    net.isolate("a")
    net.ignore(MT.APP)
    net.campaign("b")
    b = net.node("b")
    b.read_index(b"ctx")
    net.send()
    assert not b.raft.read_states
    assert b.raft.pending_read_index_messages
    net.heal()
    net.tick("b")
    assert not b.raft.pending_read_index_messages
    assert [rs.context for rs in net.peers["b"].read_states] == [b"ctx"]
    assert net.peers["b"].read_states[0].index == b.raft.log.committed


def test_thesis_6_4_read_index_on_follower() -> None:
    """Thesis §6.4.1: a follower asks the leader for the read index; once its own applied
    index reaches it, it may serve the read locally."""
    net = _leader_net(["a", "b", "c"])
    net.propose("a", b"w")
    b = net.node("b")
    b.read_index(b"from-b")
    net.send()
    (rs,) = net.peers["b"].read_states
    assert rs.context == b"from-b"
    assert rs.index == net.node("a").raft.log.committed
    assert net.peers["b"].applied_index >= rs.index


# -- thesis §3.10 leadership transfer, §9.6 pre-vote, check-quorum ----------------------


def test_thesis_3_10_leadership_transfer() -> None:
    """Thesis §3.10: the leader brings the target up to date, sends it TimeoutNow, and the
    target starts an election at once and wins."""
    net = _leader_net(["a", "b", "c"])
    net.isolate("c")
    net.propose("a", b"x")
    net.heal()
    net.node("a").transfer_leader("c")
    net.send()
    assert net.state("c") == StateType.LEADER
    assert net.state("a") == StateType.FOLLOWER


def test_thesis_3_10_proposals_refused_during_transfer() -> None:
    """Thesis §3.10: during a transfer the leader stops accepting client requests."""
    net = _leader_net(["a", "b", "c"])
    net.isolate("c")
    net.node("a").transfer_leader("c")
    net.send()
    with pytest.raises(ProposalDroppedError, match="transfer"):
        net.node("a").propose(b"x")
    # The transfer is abandoned after an election timeout.
    net.tick("a", 20)
    net.node("a").propose(b"y")


def test_thesis_9_6_pre_vote_prevents_disruption() -> None:
    """Thesis §9.6: with pre-vote, a partitioned server that rejoins does not increase
    the cluster's term or depose a healthy leader."""
    net = Network(["a", "b", "c"], pre_vote=True, check_quorum=True)
    net.campaign("a")
    term = net.node("a").raft.term
    net.isolate("c")
    net.tick("c", 100)  # c keeps timing out but its pre-votes go nowhere
    assert net.node("c").raft.term == term
    net.heal()
    net.tick_all(5)
    assert net.state("a") == StateType.LEADER
    assert net.node("a").raft.term == term


def test_thesis_6_2_check_quorum_leader_steps_down() -> None:
    """Thesis §6.2: a leader that does not hear from a majority within an election
    timeout steps down (check-quorum)."""
    net = Network(["a", "b", "c"], check_quorum=True)
    net.campaign("a")
    net.isolate("a")
    net.tick("a", 21)
    assert net.state("a") == StateType.FOLLOWER


def test_rawnode_rejects_local_messages_from_network() -> None:
    st = bootstrap_storage(("a", "b"))
    n = RawNode(Config(id="a", storage=st, rng=random.Random(1), applied=1))
    with pytest.raises(ValueError, match="local message"):
        n.step(Message(MT.HUP, frm="b", to="a"))
