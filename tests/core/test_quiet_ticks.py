"""Raft.ticks_are_quiet(n): true exactly when none of the next n ticks does anything but
advance the timers (no message, no change of state, term or leader, no timer reset), so
a runtime may count such ticks later, together; Raft.quiet_ticks(limit): the longest
such n, capped at the limit. Checked against what ticking actually does, for followers,
candidates, learners and leaders (with and without check-quorum), from many starting
points."""

from __future__ import annotations

import random

import pytest

from raftd.core import ConfChange, ConfChangeType, Message, MessageType
from raftd.core.raft import Raft

from .test_paper import make_leader, new_raft, take

MT = MessageType
HORIZON = 30


def _effects(r: Raft, ticks: int) -> list[bool]:
    """For each of the next ``ticks`` ticks: whether it did more than count."""
    out = []
    for _ in range(ticks):
        before = (r.state, r.term, r.lead, r.election_elapsed, r.heartbeat_elapsed)
        r.tick()
        msgs = take(r)
        after = (r.state, r.term, r.lead, r.election_elapsed, r.heartbeat_elapsed)
        counted = (
            before[:3] == after[:3]
            and after[3] == before[3] + 1
            and (r.state.name != "LEADER" or after[4] == before[4] + 1)
        )
        out.append(bool(msgs) or not counted)
    return out


def _check(r: Raft) -> None:
    predicted = [r.ticks_are_quiet(n) for n in range(1, HORIZON + 1)]
    counted = {limit: r.quiet_ticks(limit) for limit in (1, 5, HORIZON)}
    effects = _effects(r, HORIZON)
    for n in range(1, HORIZON + 1):
        assert predicted[n - 1] == (not any(effects[:n])), (n, predicted, effects)
    for limit, q in counted.items():  # the longest quiet run, capped at the limit
        quiet = next((i for i, e in enumerate(effects) if e), HORIZON)
        assert q == min(limit, quiet), (limit, q, effects)


@pytest.mark.parametrize("seed", range(20))
def test_follower_and_candidate(seed: int) -> None:
    rng = random.Random(seed)
    print("seed", seed)
    r = new_raft(election=10, seed=seed)
    for _ in range(rng.randrange(0, 25)):  # somewhere in an election timeout, or past it
        r.tick()
        take(r)
    if rng.random() < 0.5:  # a heartbeat from a leader resets the timer
        r.step(Message(MT.HEARTBEAT, frm="b", to="a", term=r.term + 1))
        take(r)
    _check(r)


@pytest.mark.parametrize("check_quorum", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_leader(seed: int, check_quorum: bool) -> None:
    rng = random.Random(seed)
    print("seed", seed)
    r = new_raft(election=10, heartbeat=2, check_quorum=check_quorum, seed=seed)
    make_leader(r)
    for _ in range(rng.randrange(0, 15)):
        r.tick()
        take(r)
        for p in ("b", "c"):  # followers answer, so check-quorum keeps the leader
            r.step(Message(MT.HEARTBEAT_RESP, frm=p, to="a", term=r.term))
        take(r)
    _check(r)


def test_learner_never_campaigns() -> None:
    r = new_raft(peers=("a", "b", "c"))
    r.apply_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "a"))
    assert not r.promotable()
    assert all(r.ticks_are_quiet(n) for n in range(1, 100))
    assert r.quiet_ticks(64) == 64
    assert not any(_effects(r, 100))
