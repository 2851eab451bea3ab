"""A commit index sent to a caught-up follower is not answered.

When a leader's commit index moves, it sends each follower an append; for a follower
that is replicating and has been sent every entry, that append has no entries, and its
answer could only repeat what the answers to the earlier appends say. Such an append is
marked ``commit_only``: the follower applies the new commit index and answers only a
rejection. An answer that was lost is asked for again after the next heartbeat, with an
append that is answered. Every other append is answered as in etcd-io/raft, so flow
control, probing and the leader's view of each log are unchanged.
"""

from __future__ import annotations

from raftd.core import Message, MessageType, RawNode, StateType
from raftd.testing.network import Network

MT = MessageType


def _leader_net(*, commit_linger: bool = False) -> Network:
    net = Network(["a", "b", "c"], commit_linger=commit_linger)
    net.campaign("a")
    assert net.state("a") == StateType.LEADER
    return net


def _commit(net: Network, data: bytes) -> tuple[int, list[Message]]:
    """Propose ``data`` on "a", deliver its appends, step the answers; return the
    entry's index and what "a" sends once it has committed it."""
    a = net.node("a")
    index = a.propose(data)
    acks = net.step_each(net.process("a"))
    assert {(m.frm, m.type, m.reject) for m in acks} == {
        ("b", MT.APP_RESP, False),
        ("c", MT.APP_RESP, False),
    }
    for m in acks:
        a.step(m)
    after = net.process("a")
    assert a.raft.log.committed == index
    return index, after


def test_the_commit_to_caught_up_followers_is_applied_and_not_answered() -> None:
    net = _leader_net()
    index, after = _commit(net, b"x")
    apps = [m for m in after if m.type == MT.APP]
    assert {m.to for m in apps} == {"b", "c"}
    assert all(m.commit_only and not m.entries and m.commit == index for m in apps)
    answers = net.step_each(apps)
    assert answers == []  # nothing to tell the leader
    for f in ("b", "c"):
        assert net.peers[f].applied[-1:] == [b"x"]
        assert net.peers[f].node.raft.log.committed == index


def test_a_lost_acknowledgement_is_asked_for_again_after_a_heartbeat() -> None:
    net = _leader_net()
    a = net.node("a")
    index = a.propose(b"x")
    out = net.process("a")
    # Both followers get the entry; b's acknowledgement is lost.
    acks = net.step_each(out)
    for m in acks:
        if m.frm != "b":
            a.step(m)
    commit = [m for m in net.process("a") if m.type == MT.APP]
    assert a.raft.log.committed == index
    assert all(m.commit_only for m in commit)
    assert net.step_each(commit) == []
    assert a.raft.prs["b"].match < index  # the leader does not know b holds it
    # The next heartbeat's answer makes the leader send b an answered append.
    a.tick()
    beats = [m for m in net.process("a") if m.type == MT.HEARTBEAT]
    assert beats
    for m in net.step_each(beats):
        a.step(m)
    again = [m for m in net.process("a") if m.to == "b" and m.type == MT.APP]
    assert again and not again[0].commit_only
    answers = net.step_each(again)
    assert [(m.type, m.reject, m.index) for m in answers] == [(MT.APP_RESP, False, index)]
    a.step(answers[0])
    assert a.raft.prs["b"].match == index


def test_a_follower_whose_entries_are_in_flight_answers_those_appends() -> None:
    net = _leader_net()
    a = net.node("a")
    first = a.propose(b"x")
    out = net.process("a")
    to_c = [m for m in out if m.to == "c"]
    to_b = [m for m in out if m.to == "b"]  # still on its way
    for m in net.step_each(to_c):
        a.step(m)
    commit = [m for m in net.process("a") if m.type == MT.APP]
    assert a.raft.log.committed == first
    assert {m.to for m in commit} == {"b", "c"}
    assert all(m.commit_only and not m.entries for m in commit)
    # b answers the append with its entry, not the commit index behind it.
    answers = net.step_each(to_b + [m for m in commit if m.to == "b"])
    assert [(m.type, m.reject, m.index) for m in answers] == [(MT.APP_RESP, False, first)]
    assert net.peers["b"].applied[-1:] == [b"x"]
    a.step(answers[0])
    assert a.raft.prs["b"].match == first


def test_a_rejected_commit_only_append_is_answered() -> None:
    net = _leader_net()
    b = net.node("b")
    last = b.raft.log.last_index()
    term = b.raft.term
    # An append for entries b does not hold (as after a lost message): b must say so.
    b.step(
        Message(
            MT.APP,
            frm="a",
            to="b",
            term=term,
            index=last + 5,
            log_term=term,
            commit=last + 5,
            commit_only=True,
        )
    )
    answers = net.process("b")
    assert [(m.type, m.reject, m.index) for m in answers] == [(MT.APP_RESP, True, last + 5)]


def test_a_commit_only_flag_on_an_append_with_entries_is_ignored() -> None:
    net = _leader_net()
    a = net.node("a")
    index = a.propose(b"y")
    out = [m for m in net.process("a") if m.to == "b" and m.type == MT.APP]
    assert out and out[0].entries and not out[0].commit_only
    flagged = Message(
        MT.APP,
        frm=out[0].frm,
        to="b",
        term=out[0].term,
        index=out[0].index,
        log_term=out[0].log_term,
        entries=out[0].entries,
        commit=out[0].commit,
        commit_only=True,
    )
    answers = net.step_each([flagged])
    assert [(m.type, m.reject, m.index) for m in answers] == [(MT.APP_RESP, False, index)]


def test_the_cluster_keeps_committing_without_the_answers() -> None:
    net = _leader_net()
    for i in range(20):
        net.propose("a", b"v%d" % i)
    for nid in ("a", "b", "c"):
        assert net.peers[nid].applied[-20:] == [b"v%d" % i for i in range(20)]
    flagged = [m for m in net.delivered if m.type == MT.APP and m.commit_only]
    assert flagged  # the path above was taken
    prs = net.node("a").raft.prs
    last = net.node("a").raft.log.last_index()
    assert prs["b"].match == last and prs["c"].match == last


# -- commit_linger: the commit-only append waits for the next proposal -------------------


def _lingering_after_one_write() -> tuple[Network, RawNode, int]:
    """A lingering leader "a" that committed one write ("x") and holds back its commit
    index from both followers; returns the network, "a" and the write's index."""
    net = _leader_net(commit_linger=True)
    index, after = _commit(net, b"x")
    assert [m for m in after if m.type == MT.APP] == []  # held back
    a = net.node("a")
    assert a.commit_lingers()
    return net, a, index


def test_a_lingering_leader_sends_the_commit_index_with_the_next_appends() -> None:
    net, a, first = _lingering_after_one_write()
    assert net.peers["b"].applied[-1:] != [b"x"]
    second = a.propose(b"y")
    apps = [m for m in net.process("a") if m.type == MT.APP]
    assert {m.to for m in apps} == {"b", "c"}
    assert all(m.entries and m.entries[-1].index == second for m in apps)
    assert all(m.commit == first for m in apps)
    assert not a.commit_lingers()
    net.step_each(apps)
    for f in ("b", "c"):
        assert net.peers[f].applied[-1:] == [b"x"]


def test_flush_commit_sends_the_held_back_commit_index() -> None:
    net, a, first = _lingering_after_one_write()
    a.flush_commit()
    assert not a.commit_lingers()
    apps = [m for m in net.process("a") if m.type == MT.APP]
    assert {m.to for m in apps} == {"b", "c"}
    assert all(m.commit_only and not m.entries and m.commit == first for m in apps)
    assert net.step_each(apps) == []
    for f in ("b", "c"):
        assert net.peers[f].applied[-1:] == [b"x"]


def test_a_follower_whose_forwarded_proposal_is_committed_is_told_at_once() -> None:
    net = _leader_net(commit_linger=True)
    a = net.node("a")
    b = net.node("b")
    b.propose_anywhere([b"from-b"])
    props = [m for m in net.process("b") if m.type == MT.PROP]
    assert props
    a.step(props[0])
    index = a.raft.log.last_index()
    for m in net.step_each(net.process("a")):
        a.step(m)
    after = net.process("a")
    assert a.raft.log.committed == index
    # b waits to answer its client: its commit index goes now; c's is held back.
    assert [(m.to, m.commit) for m in after if m.type == MT.APP] == [("b", index)]
    assert a.commit_lingers()
    net.step_each(after)
    assert net.peers["b"].applied[-1:] == [b"from-b"]
    assert net.peers["c"].applied[-1:] != [b"from-b"]
    # b's proposal is forgotten once b was told: the next commit lingers for b too.
    _, after2 = _commit(net, b"z")
    assert [m for m in after2 if m.type == MT.APP] == []


def test_a_heartbeat_that_carries_the_commit_index_ends_the_linger() -> None:
    net, a, first = _lingering_after_one_write()
    a.tick()
    beats = [m for m in net.process("a") if m.type == MT.HEARTBEAT]
    assert {m.to for m in beats} == {"b", "c"}
    assert all(m.commit == first for m in beats)
    assert not a.commit_lingers()


def test_a_forwarder_is_told_when_the_commit_index_covers_part_of_its_batch() -> None:
    net = _leader_net(commit_linger=True)
    a = net.node("a")
    net.node("b").propose_anywhere([b"b1", b"b2"])
    props = [m for m in net.process("b") if m.type == MT.PROP]
    a.step(props[0])
    last = a.raft.log.last_index()
    first = last - 1
    net.process("a")  # the appends stay undelivered; c's answer is made up below
    term = a.raft.term
    a.step(Message(MT.APP_RESP, frm="c", to="a", term=term, index=first))
    to_b = [m for m in net.process("a") if m.to == "b" and m.type == MT.APP]
    assert a.raft.log.committed == first
    # b's first proposal is committed (its client waits): b is told now, not later.
    assert [(m.commit, m.commit_only) for m in to_b] == [(first, True)]
    a.step(Message(MT.APP_RESP, frm="c", to="a", term=term, index=last))
    to_b = [m for m in net.process("a") if m.to == "b" and m.type == MT.APP]
    assert [m.commit for m in to_b] == [last]
