"""The wake-up policy (raftd.core.wakeup) and the campaign count it is judged by.

After a stall of its own process, a node steps every queued message before any of the
ticks that elapsed, and at most MAX_TICKS_AT_ONCE of them: a follower whose heartbeats
were queued does not campaign, a leader whose followers' answers were queued passes its
check-quorum. The simulator's stall scenario (test_sim_stall.py) checks the same code in
whole clusters."""

from __future__ import annotations

import random
from collections import deque

import pytest

from raftd.core import Config, Message, MessageType, RawNode, StateType, wakeup
from raftd.testing.network import bootstrap_storage

MT = MessageType
ET = 10


def node(nid: str = "a", seed: int = 1) -> RawNode:
    st = bootstrap_storage(("a", "b", "c"))
    return RawNode(
        Config(
            id=nid,
            storage=st,
            rng=random.Random(seed),
            election_tick=ET,
            heartbeat_tick=1,
            applied=st.snapshot().metadata.index,
        )
    )


def follower_of_b(seed: int) -> RawNode:
    """Follower "a" of leader "b" (term 2), its election timer one tick from expiry."""
    n = node(seed=seed)
    n.step(Message(MT.HEARTBEAT, frm="b", to="a", term=2))
    while not n.timeout_due():
        n.tick()
    return n


def test_ticks_to_step_is_bounded() -> None:
    assert [wakeup.ticks_to_step(e) for e in (-1, 0, 1, 2, 3, 1000)] == [0, 0, 1, 2, 2, 2]


@pytest.mark.parametrize("seed", range(10))
def test_a_queued_heartbeat_is_stepped_before_the_ticks_of_a_long_stall(seed: int) -> None:
    n = follower_of_b(seed)
    inbox = deque([Message(MT.HEARTBEAT, frm="b", to="a", term=2)])
    assert wakeup.step_wakeup(n, inbox, 5 * ET) == wakeup.MAX_TICKS_AT_ONCE
    assert not inbox
    assert (n.state, n.lead, n.campaigns) == (StateType.FOLLOWER, "b", 0)
    assert n.raft.election_elapsed == wakeup.MAX_TICKS_AT_ONCE


def test_without_a_message_the_timer_still_expires() -> None:
    """The bound does not buy stability by never timing out: a silent leader is noticed."""
    n = follower_of_b(3)
    wakeup.step_wakeup(n, deque(), 1)
    assert n.state == StateType.PRE_CANDIDATE and n.campaigns == 1


def elect(n: RawNode) -> None:
    """Campaign and win with b's pre-vote and vote."""
    n.campaign()
    n.step(Message(MT.PRE_VOTE_RESP, frm="b", to=n.raft.id, term=n.term + 1))
    n.step(Message(MT.VOTE_RESP, frm="b", to=n.raft.id, term=n.term))
    assert n.state == StateType.LEADER


def test_a_leader_counts_queued_answers_before_its_check_quorum() -> None:
    n = node()
    elect(n)
    term = n.term
    for _ in range(2):
        # A stall just before the check-quorum: the answers to its heartbeats are
        # queued, and count, though the ticks of the stall come after them.
        while not n.timeout_due():
            n.tick()
        answers = deque([Message(MT.HEARTBEAT_RESP, frm=f, to="a", term=term) for f in "bc"])
        wakeup.step_wakeup(n, answers, 3)
        assert (n.state, n.term) == (StateType.LEADER, term)
    # The same check with nobody heard from since the last one: it steps down.
    while not n.timeout_due():
        n.tick()
    wakeup.step_wakeup(n, deque(), 1)
    assert n.state == StateType.FOLLOWER


class Fragile(RawNode):
    """Raises on a message whose context is ``boom``."""

    def step(self, m: Message) -> None:
        if m.context == b"boom":
            raise ValueError("boom")
        super().step(m)


def test_a_failing_message_is_reported_and_the_rest_stepped() -> None:
    st = bootstrap_storage(("a", "b", "c"))
    n = Fragile(Config(id="a", storage=st, rng=random.Random(1), applied=1))
    n.step(Message(MT.HEARTBEAT, frm="b", to="a", term=2))
    while not n.timeout_due():
        n.tick()
    bad = Message(MT.HEARTBEAT, frm="b", to="a", term=2, context=b"boom")
    failed: list[tuple[Message, Exception]] = []
    inbox = deque([bad, Message(MT.HEARTBEAT, frm="b", to="a", term=2)])
    wakeup.step_wakeup(n, inbox, 1, lambda m, e: failed.append((m, e)))
    assert [m for m, _ in failed] == [bad]
    assert n.state == StateType.FOLLOWER  # the heartbeat after it was stepped
    with pytest.raises(ValueError, match="boom"):  # without on_error, it propagates
        wakeup.step_wakeup(n, deque([bad]), 0)


def test_campaigns_count_elections_started() -> None:
    n = node()
    assert n.campaigns == 0
    n.campaign()  # pre-vote round
    assert (n.state, n.campaigns) == (StateType.PRE_CANDIDATE, 1)
    n.step(Message(MT.PRE_VOTE_RESP, frm="b", to="a", term=n.term + 1))
    assert (n.state, n.campaigns) == (StateType.CANDIDATE, 1)  # the same election
    n.step(Message(MT.VOTE_RESP, frm="b", to="a", term=n.term))
    assert (n.state, n.campaigns) == (StateType.LEADER, 1)
    f = node("b")
    f.step(Message(MT.HEARTBEAT, frm="a", to="b", term=2))
    f.step(Message(MT.TIMEOUT_NOW, frm="a", to="b", term=2))  # a transfer: no pre-vote
    assert (f.state, f.campaigns) == (StateType.CANDIDATE, 1)
    # A learner or a node outside the group never campaigns.
    outsider = node("z")
    for _ in range(3 * ET):
        outsider.tick()
    assert outsider.campaigns == 0
