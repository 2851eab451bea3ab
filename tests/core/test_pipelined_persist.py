"""Raft keeps moving while a Ready is being persisted (between ``ready()`` and
``advance()``): the runtime steps inputs and sends what ``take_early_messages`` returns.

A leader whose own write is outstanding counts its followers' acknowledgements (they
are a majority without it), sends the new commit index, and answers nothing that
promises its own disk; a node that is not a leader with a durable term sends nothing
early."""

from __future__ import annotations

from raftd.core import Message, MessageType, RawNode, StateType
from raftd.core.types import EARLY_MESSAGES
from raftd.testing.network import Network


def _leader_net() -> tuple[Network, RawNode]:
    net = Network(["a", "b", "c"])
    net.campaign("a")
    assert net.state("a") == StateType.LEADER
    return net, net.node("a")


def test_a_leader_commits_with_its_followers_while_its_own_write_is_outstanding() -> None:
    net, a = _leader_net()
    index = a.propose(b"x")
    rd = a.ready()
    assert [e.index for e in rd.entries] == [index]
    assert {m.to for m in rd.early_messages if m.type == MessageType.APP} == {"b", "c"}
    # The followers persist and acknowledge; the leader's write is still outstanding.
    acks = net.step_each(rd.early_messages)
    assert {(m.frm, m.type) for m in acks} >= {
        ("b", MessageType.APP_RESP),
        ("c", MessageType.APP_RESP),
    }
    for m in acks:
        a.step(m)
    assert a.raft.log.committed == index  # b and c are a majority of three
    assert a.raft.prs["a"].match < index  # the leader does not count itself yet
    early = a.take_early_messages()
    assert early and all(m.type in EARLY_MESSAGES for m in early)
    assert {m.to for m in early} == {"b", "c"}
    assert all(m.commit >= index for m in early if m.type == MessageType.APP)
    net.step_each(early)
    assert net.peers["b"].applied[-1:] == [b"x"]  # followers apply it already
    # The leader's write lands: it counts itself and applies.
    net.peers["a"].storage.append(rd.entries)
    if rd.hard_state is not None:
        net.peers["a"].storage.set_hard_state(rd.hard_state)
    a.advance(rd)
    assert a.raft.prs["a"].match == index
    rd2 = a.ready()
    assert [e.data for e in rd2.committed_entries][-1:] == [b"x"]


def test_without_a_majority_of_followers_nothing_commits_before_the_leaders_write() -> None:
    net = Network(["a", "b", "c", "d", "e"])
    net.campaign("a")
    a = net.node("a")
    index = a.propose(b"x")
    rd = a.ready()
    to_b = [m for m in rd.early_messages if m.to in ("b", "c")]
    for m in net.step_each(to_b):
        a.step(m)
    # b and c hold it: with the leader that would be 3 of 5, without it only 2.
    assert a.raft.prs["b"].match == index and a.raft.prs["c"].match == index
    assert a.raft.log.committed < index
    assert not [m for m in a.take_early_messages() if m.commit >= index]


def test_only_messages_that_promise_nothing_about_the_disk_leave_early() -> None:
    _, a = _leader_net()
    a.propose(b"x")
    rd = a.ready()
    # A candidate with a newer term asks for a vote while the leader's write runs: the
    # leader steps down, and its vote (a durable promise) waits for the next Ready.
    a.step(
        Message(MessageType.VOTE, frm="b", to="a", term=a.raft.term + 1, index=100, log_term=100)
    )
    assert a.raft.state == StateType.FOLLOWER
    assert a.take_early_messages() == []
    a.advance(rd)
    rd2 = a.ready()
    assert any(m.type == MessageType.VOTE_RESP for m in rd2.messages)


def test_a_new_leader_sends_nothing_early_before_its_term_is_durable() -> None:
    net = Network(["a", "b", "c"])
    a = net.node("a")
    a.campaign()
    rd = a.ready()  # persists the new term and the vote for itself
    assert rd.hard_state is not None and rd.hard_state.vote == "a"
    for m in net.step_each(rd.messages):
        a.step(m)
    assert a.raft.state == StateType.LEADER
    # Elected, but the term and vote of this election are not on its disk yet.
    assert a.take_early_messages() == []
    net.peers["a"].storage.set_hard_state(rd.hard_state)
    a.advance(rd)
    net.send()
    assert a.take_early_messages() == []  # the Ready loop sent everything


def test_the_hand_over_target_is_the_most_caught_up_live_voter() -> None:
    net = Network(["a", "b", "c", "d"], learners=["e"])
    net.campaign("a")
    a = net.node("a")
    net.isolate("d")
    net.cut_link("a", "c")
    net.propose("a", b"y")
    # b holds everything, c lags (cut off), d was never heard from, e is a learner.
    assert a.most_caught_up_voter() == "b"
    assert net.node("b").most_caught_up_voter() is None  # only a leader knows


def test_timeout_due_says_when_the_next_tick_ends_an_election_timeout() -> None:
    net, _ = _leader_net()
    b = net.node("b")
    assert not b.timeout_due()
    ticks = 0
    while not b.timeout_due():
        assert ticks < 100, "the election timeout never came"
        b.tick()
        ticks += 1
    assert b.state == StateType.FOLLOWER  # not yet
    b.tick()
    assert b.state != StateType.FOLLOWER  # this tick started the (pre-)campaign
    assert ticks + 1 >= b.raft.election_timeout
    # A leader with check-quorum: the tick that checks its quorum.
    net, a = _leader_net()
    a.raft.check_quorum = True
    for _ in range(100):
        if a.timeout_due():
            break
        a.tick()
        net.send()
    assert a.state == StateType.LEADER
    assert a.raft.election_elapsed + 1 == a.raft.election_timeout


def test_a_routine_heartbeat_answer_to_a_leader_may_wait_for_its_next_tick() -> None:
    net, a = _leader_net()
    net.propose("a", b"x")  # everyone replicating and caught up
    b = net.node("b")
    term = a.raft.term

    def answer(frm: str, context: bytes = b"") -> Message:
        return Message(MessageType.HEARTBEAT_RESP, to="a", frm=frm, term=term, context=context)

    assert a.can_defer(answer("b")) and a.can_defer(answer("c"))
    # A ReadIndex round's answer, an answer from an older term, another message type:
    assert not a.can_defer(answer("b", context=b"read-1"))
    assert not a.can_defer(Message(MessageType.HEARTBEAT_RESP, to="a", frm="b", term=term - 1))
    assert not a.can_defer(Message(MessageType.APP, to="a", frm="b", term=term))
    # A follower that lags (the answer would make the leader send it entries):
    a.raft.prs["c"].match -= 1
    assert not a.can_defer(answer("c"))
    # A follower whose inflight window is full (the answer frees a slot):
    a.raft.prs["c"].match += 1
    pr = a.raft.prs["c"]
    while not pr.inflights.full():
        pr.inflights.add(a.raft.log.last_index(), 1)
    assert not a.can_defer(answer("c"))
    # A follower receives heartbeats, it never defers anything.
    assert not b.can_defer(Message(MessageType.HEARTBEAT_RESP, to="b", frm="c", term=term))
    # Stepping a deferred answer later changes nothing but its recent-activity mark.
    a.raft.prs["b"].recent_active = False
    a.step(answer("b"))
    assert a.raft.prs["b"].recent_active and not a.has_ready()


def test_an_answer_for_entries_already_committed_may_wait_for_the_leaders_next_input() -> None:
    """The slower follower's answer to an append whose entries a quorum already holds:
    stepping it later sends nothing and commits nothing, and it still counts."""
    net, a = _leader_net()
    index = a.propose(b"x")
    rd = a.ready()
    acks = {m.frm: m for m in net.step_each(rd.early_messages) if m.type == MessageType.APP_RESP}
    net.peers["a"].storage.append(rd.entries)
    if rd.hard_state is not None:
        net.peers["a"].storage.set_hard_state(rd.hard_state)
    a.advance(rd)
    first, second = acks["b"], acks["c"]
    assert second.index == index and not second.reject
    # Before the commit, an answer may commit: never deferred.
    assert not a.can_defer(first) and not a.can_defer(second)
    a.step(first)
    assert a.raft.log.committed == index
    while a.has_ready():
        rd = a.ready()
        net.peers["a"].storage.append(rd.entries)
        a.advance(rd)
    assert a.can_defer(second)
    # Not deferred: a rejection, an answer from an older term, one beyond the commit
    # index, one from a leadership transfer's target, a throttled follower.
    term = second.term
    for other in (
        Message(MessageType.APP_RESP, to="a", frm="c", term=term, reject=True, index=index),
        Message(MessageType.APP_RESP, to="a", frm="c", term=term - 1, index=index),
        Message(MessageType.APP_RESP, to="a", frm="c", term=term, index=index + 1),
    ):
        assert not a.can_defer(other), other
    a.raft.lead_transferee = "c"
    assert not a.can_defer(second)
    a.raft.lead_transferee = ""
    pr = a.raft.prs["c"]
    while not pr.inflights.full():
        pr.inflights.add(a.raft.log.last_index(), 1)
    assert not a.can_defer(second)
    pr.inflights.free_le(a.raft.log.last_index())
    assert a.can_defer(second)
    # A follower whose next entries are still to be sent (the answer would send them):
    a.propose(b"y")
    assert not a.can_defer(second)
    rd = a.ready()
    net.peers["a"].storage.append(rd.entries)
    a.advance(rd)
    # Stepped later, it moves the match and sends nothing new.
    assert a.can_defer(second)
    before = a.raft.prs["c"].match
    a.raft.prs["c"].recent_active = False
    a.step(second)
    assert a.raft.prs["c"].match == index >= before
    assert a.raft.prs["c"].recent_active
    assert not a.has_ready()
