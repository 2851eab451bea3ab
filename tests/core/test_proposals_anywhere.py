"""Proposals from any node (etcd's MsgProp): a follower or learner forwards them to the
leader in a PROP message; the leader appends members' proposals only, and drops them
silently while it transfers leadership; with no leader the proposer is told at once."""

from __future__ import annotations

import pytest

from raftd.core import Entry, Message, MessageType, ProposalDroppedError
from raftd.testing.network import Network


def test_follower_and_learner_proposals_reach_the_leader_and_commit() -> None:
    net = Network(["a", "b", "c"], learners=["d"])
    net.campaign("a")
    for nid, data in (("b", b"from-follower"), ("d", b"from-learner")):
        net.node(nid).propose_anywhere([data])
        net.send()
    for nid in ("a", "b", "c", "d"):
        assert net.peers[nid].applied[-2:] == [b"from-follower", b"from-learner"], nid
    props = [m for m in net.delivered if m.type == MessageType.PROP]
    assert {(m.frm, m.to) for m in props} == {("b", "a"), ("d", "a")}


def test_leader_proposes_directly() -> None:
    net = Network(["a", "b", "c"])
    net.campaign("a")
    net.node("a").propose_anywhere([b"x", b"y"])
    net.send()
    assert net.peers["c"].applied[-2:] == [b"x", b"y"]
    assert not [m for m in net.delivered if m.type == MessageType.PROP]


def test_no_leader_refuses_at_once() -> None:
    net = Network(["a", "b", "c"])
    with pytest.raises(ProposalDroppedError):
        net.node("b").propose_anywhere([b"x"])


def test_leader_ignores_non_members_and_proposals_during_a_transfer() -> None:
    net = Network(["a", "b", "c"])
    net.campaign("a")
    leader = net.node("a")
    last = leader.raft.log.last_index()
    outsider = Message(
        MessageType.PROP, to="a", frm="z", entries=(Entry(term=0, index=0, data=b"evil"),)
    )
    net.send(outsider)
    assert leader.raft.log.last_index() == last
    net.isolate("c")  # c cannot catch up, so the transfer to it stays pending
    leader.transfer_leader("c")
    net.send()
    assert leader.raft.lead_transferee == "c"
    member = Message(
        MessageType.PROP, to="a", frm="b", entries=(Entry(term=0, index=0, data=b"late"),)
    )
    net.send(member)  # refused silently: the proposer proposes again later
    assert leader.raft.log.last_index() == last
