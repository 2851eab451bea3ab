"""An idle, caught-up follower answers a heartbeat only when the leader needs it.

A leader with check-quorum on marks a heartbeat ``commit_only`` (quiet) when the
follower has answered something since the last quorum check, is replicating and holds
every entry, and no read waits on the heartbeat: the answer could tell it nothing. The
quorum check clears what the leader has heard, so each follower is asked again at least
once per election timeout, and at every heartbeat after that until its answer arrives.
Reads, a follower that lacks entries, and a leader without check-quorum get every
answer, as in etcd-io/raft.
"""

from __future__ import annotations

from raftd.core import Message, MessageType, StateType
from raftd.testing.network import Network

MT = MessageType
ELECTION = 10


def _net(*, check_quorum: bool = True, commit_linger: bool = False) -> Network:
    net = Network(
        ["a", "b", "c"],
        election_tick=ELECTION,
        check_quorum=check_quorum,
        pre_vote=True,
        commit_linger=commit_linger,
    )
    net.campaign("a")
    assert net.state("a") == StateType.LEADER
    return net


def _beats(net: Network) -> list[Message]:
    """Tick the leader "a" once; the heartbeats it sends, undelivered."""
    net.node("a").tick()
    return [m for m in net.process("a") if m.type == MT.HEARTBEAT]


def _answers(msgs: list[Message]) -> list[Message]:
    return [m for m in msgs if m.type == MT.HEARTBEAT_RESP]


def test_an_idle_follower_answers_about_one_heartbeat_per_election_timeout() -> None:
    net = _net()
    start = len(net.delivered)
    windows = 6
    net.tick_all(windows * ELECTION)
    assert net.state("a") == StateType.LEADER  # every quorum check passed
    assert all(net.state(f) == StateType.FOLLOWER for f in ("b", "c"))
    seen = net.delivered[start:]
    beats = [m for m in seen if m.type == MT.HEARTBEAT]
    for f in ("b", "c"):
        to_f = [m for m in beats if m.to == f]
        asked = [m for m in to_f if not m.commit_only]
        answered = [m for m in seen if m.type == MT.HEARTBEAT_RESP and m.frm == f]
        assert len(to_f) == windows * ELECTION
        # One answer per quorum check (and the first, before any check).
        assert len(asked) == len(answered)
        assert 1 <= len(answered) <= windows + 1, (f, len(answered))


def test_the_first_heartbeat_after_a_quorum_check_asks_each_follower() -> None:
    net = _net()
    a = net.node("a")
    checks = 0
    for _ in range(3 * ELECTION):
        beats = _beats(net)
        assert {m.to for m in beats} == {"b", "c"}
        if a.raft.election_elapsed == 0:  # this tick ran a quorum check first
            checks += 1
            assert not any(m.commit_only for m in beats)
        else:  # both answered the tick before
            assert all(m.commit_only for m in beats)
        for m in net.step_each(beats):
            a.step(m)
        net.process("a")
    assert checks == 3
    assert a.raft.state == StateType.LEADER


def test_a_lost_answer_is_asked_for_at_every_heartbeat_until_it_arrives() -> None:
    net = _net()
    a = net.node("a")
    # Reach a quorum check, so that the leader has heard from nobody.
    for _ in range(ELECTION):
        a.tick()
        net.process("a")
    assert not a.raft.prs["b"].recent_active
    for k in range(3):
        beats = _beats(net)
        # c is asked until its first answer arrives, b until one of its own does.
        assert {(m.to, m.commit_only) for m in beats} == {("b", False), ("c", k > 0)}
        # b's answers are lost; c's arrive.
        for m in _answers(net.step_each(beats)):
            if m.frm == "c":
                a.step(m)
    beats = _beats(net)
    assert {(m.to, m.commit_only) for m in beats} == {("b", False), ("c", True)}
    for m in _answers(net.step_each(beats)):
        assert m.frm == "b"
        a.step(m)
    assert a.raft.prs["b"].recent_active
    assert all(m.commit_only for m in _beats(net))


def test_a_read_is_confirmed_by_answered_heartbeats() -> None:
    net = _net()
    net.tick_all(3)  # both followers answered since the start: heartbeats are quiet
    assert all(m.commit_only for m in _beats(net))
    net.send()
    a = net.node("a")
    a.read_index(b"ctx-1")
    beats = [m for m in net.process("a") if m.type == MT.HEARTBEAT]
    assert beats and all(m.context == b"ctx-1" and not m.commit_only for m in beats)
    answers = _answers(net.step_each(beats))
    assert {m.frm for m in answers} == {"b", "c"}
    for m in answers:
        a.step(m)
    net.process("a")
    assert [rs.context for rs in net.peers["a"].read_states] == [b"ctx-1"]


def test_a_follower_that_lacks_entries_answers_every_heartbeat() -> None:
    net = _net()
    net.tick_all(3)
    a = net.node("a")
    a.propose(b"x")
    out = net.process("a")
    # c gets the entry and answers; b's append is lost.
    for m in net.step_each([m for m in out if m.to == "c"]):
        a.step(m)
    net.process("a")
    assert a.raft.prs["b"].match < a.raft.log.last_index()
    beats = _beats(net)
    assert {(m.to, m.commit_only) for m in beats} == {("b", False), ("c", True)}
    answers = _answers(net.step_each(beats))
    assert [m.frm for m in answers] == ["b"]
    a.step(answers[0])
    # Its answer makes the leader probe b and send it what it lacks.
    resend = [m for m in net.process("a") if m.to == "b" and m.type == MT.APP]
    assert resend
    net.send(*resend)
    last = a.raft.log.last_index()
    assert net.node("b").raft.log.last_index() == last
    assert a.raft.prs["b"].match == last


def test_without_check_quorum_every_heartbeat_is_answered() -> None:
    net = _net(check_quorum=False)
    start = len(net.delivered)
    net.tick_all(3 * ELECTION)
    seen = net.delivered[start:]
    beats = [m for m in seen if m.type == MT.HEARTBEAT]
    assert beats and not any(m.commit_only for m in beats)
    assert len(_answers(seen)) == len(beats)


def test_a_quiet_heartbeat_still_carries_the_commit_index() -> None:
    net = _net(commit_linger=True)
    net.tick_all(3)
    a = net.node("a")
    index = a.propose(b"x")
    for m in net.step_each(net.process("a")):
        a.step(m)
    assert [m for m in net.process("a") if m.type == MT.APP] == []  # held back
    assert a.raft.log.committed == index
    beats = _beats(net)
    assert beats and all(m.commit_only and m.commit == index for m in beats)
    assert _answers(net.step_each(beats)) == []
    for f in ("b", "c"):
        assert net.peers[f].applied[-1:] == [b"x"]


def test_a_leader_cut_off_from_its_followers_still_steps_down() -> None:
    net = _net()
    net.tick_all(3 * ELECTION)  # quiet heartbeats by now
    net.cut_link("a", "b")
    net.cut_link("a", "c")
    for _ in range(2 * ELECTION):
        net.tick("a")
    assert net.state("a") == StateType.FOLLOWER
