"""A hand-stepped in-memory network of RawNodes for paper and unit tests.

Messages are delivered synchronously (breadth-first) by :meth:`Network.send`, after each
node's Ready is processed in the contract's order (persist, send, apply, advance).
Links can be cut, nodes isolated, and message types ignored, as in etcd-io/raft's
``network`` test helper.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from raftd.core import (
    ConfChange,
    Config,
    ConfState,
    EntryType,
    Message,
    MessageType,
    NodeId,
    RawNode,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from raftd.core.storage import MemoryStorage


def bootstrap_storage(voters: Iterable[NodeId], learners: Iterable[NodeId] = ()) -> MemoryStorage:
    """Storage holding the initial membership as a snapshot at index 1, term 1."""
    st = MemoryStorage()
    cs = ConfState(voters=tuple(voters), learners=tuple(learners))
    st.apply_snapshot(Snapshot(SnapshotMetadata(index=1, term=1, conf_state=cs)))
    return st


@dataclass
class Peer:
    node: RawNode
    storage: MemoryStorage
    applied: list[bytes] = field(default_factory=list)
    applied_index: int = 0
    read_states: list[ReadState] = field(default_factory=list)


class Network:
    """Nodes ``ids`` sharing one initial membership; every node's RNG is seeded."""

    def __init__(
        self,
        ids: list[NodeId],
        *,
        seed: int = 1,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        pre_vote: bool = False,
        check_quorum: bool = False,
        learners: list[NodeId] | None = None,
        max_size_per_msg: int = 1 << 20,
        max_inflight: int = 256,
        commit_linger: bool = False,
    ) -> None:
        self.seed = seed
        self.opts = dict(
            election_tick=election_tick,
            heartbeat_tick=heartbeat_tick,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_size_per_msg=max_size_per_msg,
            max_inflight_msgs=max_inflight,
            commit_linger=commit_linger,
        )
        self.peers: dict[NodeId, Peer] = {}
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.ignored: set[MessageType] = set()
        self.delivered: list[Message] = []
        all_learners = learners or []
        for nid in ids + all_learners:
            self.add(nid, bootstrap_storage(ids, all_learners))

    def add(self, nid: NodeId, storage: MemoryStorage | None = None) -> RawNode:
        st = storage if storage is not None else MemoryStorage()
        cfg = Config(
            id=nid,
            storage=st,
            rng=random.Random(f"{self.seed}:{nid}"),
            applied=st.snapshot().metadata.index,
            **self.opts,  # type: ignore[arg-type]
        )
        node = RawNode(cfg)
        self.peers[nid] = Peer(node=node, storage=st, applied_index=cfg.applied)
        return node

    def restart(self, nid: NodeId) -> RawNode:
        """Crash and restart ``nid`` from its storage (unpersisted state is lost)."""
        return self.add(nid, self.peers[nid].storage)

    def node(self, nid: NodeId) -> RawNode:
        return self.peers[nid].node

    def state(self, nid: NodeId) -> StateType:
        return self.node(nid).raft.state

    def leader(self) -> NodeId | None:
        leaders = [n for n, p in self.peers.items() if p.node.raft.state == StateType.LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda n: self.node(n).raft.term)

    # -- faults ------------------------------------------------------------------------------
    def cut_link(self, a: NodeId, b: NodeId) -> None:
        self.cut.add((a, b))
        self.cut.add((b, a))

    def isolate(self, nid: NodeId) -> None:
        for other in self.peers:
            if other != nid:
                self.cut_link(nid, other)

    def heal(self) -> None:
        self.cut.clear()
        self.ignored.clear()

    def ignore(self, t: MessageType) -> None:
        self.ignored.add(t)

    # -- driving -----------------------------------------------------------------------------
    def process(self, nid: NodeId) -> list[Message]:
        """Handle ``nid``'s Ready: persist, collect messages, apply, advance."""
        p = self.peers[nid]
        out: list[Message] = []
        while p.node.has_ready():
            rd = p.node.ready()
            out.extend(rd.early_messages)
            if rd.snapshot is not None:
                p.storage.apply_snapshot(rd.snapshot)
                p.applied_index = rd.snapshot.metadata.index
            p.storage.append(rd.entries)
            if rd.hard_state is not None:
                p.storage.set_hard_state(rd.hard_state)
            out.extend(rd.messages)
            for e in rd.committed_entries:
                p.applied_index = e.index
                if e.type == EntryType.CONF_CHANGE:
                    p.node.apply_conf_change(ConfChange.decode(e.data))
                elif e.data:
                    p.applied.append(e.data)
            p.read_states.extend(rd.read_states)
            p.node.advance(rd)
        return out

    def step_each(self, msgs: list[Message]) -> list[Message]:
        """Step each of ``msgs`` into its target and handle that node's Ready; return
        what the targets send in answer, undelivered (one hop at a time)."""
        out: list[Message] = []
        for m in msgs:
            self.node(m.to).step(m)
            out.extend(self.process(m.to))
        return out

    def send(self, *msgs: Message, limit: int = 100_000) -> None:
        """Step ``msgs`` into their targets and deliver everything that follows."""
        queue = list(msgs)
        for nid in list(self.peers):
            queue.extend(self.process(nid))
        n = 0
        while queue:
            n += 1
            if n > limit:
                raise RuntimeError("message storm: delivery did not quiesce")
            m = queue.pop(0)
            if m.to not in self.peers or (m.frm, m.to) in self.cut or m.type in self.ignored:
                continue
            self.delivered.append(m)
            p = self.peers[m.to]
            if m.type in (MessageType.HUP, MessageType.BEAT) or m.frm == m.to:
                p.node.raft.step(m)
            else:
                p.node.step(m)
            queue.extend(self.process(m.to))
            if m.type == MessageType.SNAP and m.frm in self.peers:
                self.peers[m.frm].node.report_snapshot(m.to, True)
                queue.extend(self.process(m.frm))

    def campaign(self, nid: NodeId) -> None:
        self.node(nid).campaign()
        self.send()

    def propose(self, nid: NodeId, data: bytes) -> int:
        idx = self.node(nid).propose(data)
        self.send()
        return idx

    def tick(self, nid: NodeId, n: int = 1) -> None:
        for _ in range(n):
            self.node(nid).tick()
        self.send()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for nid in list(self.peers):
                self.node(nid).tick()
            self.send()
