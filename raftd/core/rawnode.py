"""RawNode: the Raft state machine behind a Ready/advance interface.

The runtime's loop, and its ordering duties (the contract of :class:`Ready`):

1. ``rd = node.ready()`` when ``node.has_ready()``.
2. **Persist** ``rd.snapshot`` (if any), then ``rd.entries`` (appended, replacing any
   conflicting suffix) and ``rd.hard_state`` (if any), atomically and durably
   (fsync when ``rd.must_sync``). ``rd.early_messages`` may be sent before or while
   persisting: they are a leader's appends, heartbeats, snapshots and TimeoutNow, which
   promise nothing about its own disk (Raft thesis §10.2.1); the leader counts itself
   in the commit quorum only once :meth:`RawNode.advance` reports its entries durable.
   Every message of ``rd.messages`` MUST wait until the persist is done: a vote or an
   append acknowledgement promises durable state (Raft §5, Figure 2, "respond after
   updating stable storage").
3. **Send** ``rd.messages``. Delivery may fail or reorder; Raft retransmits.
   While the persist runs, the runtime may keep feeding inputs (``step``, ``tick``,
   proposals) and send what :meth:`RawNode.take_early_messages` returns: a leader keeps
   its heartbeats and appends flowing behind a slow disk. Everything else waits for the
   next Ready.
4. **Apply** ``rd.committed_entries`` in order, exactly once, and call
   :meth:`RawNode.apply_conf_change` for each CONF_CHANGE entry as it is applied.
   Serve ``rd.read_states`` once the applied index reaches their index.
5. ``node.advance(rd)``. Do not call ``ready()`` again before ``advance()``.

Nothing here blocks or performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftd.core.progress import Progress, ProgressState
from raftd.core.raft import Config, ProposalDroppedError, Raft
from raftd.core.types import (
    EARLY_MESSAGES,
    LOCAL_MESSAGES,
    NONE,
    RESPONSE_MESSAGES,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Snapshot,
    SoftState,
    StateType,
)

__all__ = ["PeerProgress", "ProposalDroppedError", "RawNode", "Ready", "Status"]


@dataclass(slots=True)
class Ready:
    """One batch of work for the runtime. See the module docstring for the ordering duty:
    persist (``early_messages`` may go meanwhile), then send ``messages``, then apply,
    then ``advance()``."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    early_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class PeerProgress:
    """A leader's view of one member (see :class:`raftd.core.progress.Progress`)."""

    match: int
    next: int
    state: str  # "PROBE", "REPLICATE" or "SNAPSHOT"
    recent_active: bool
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of a node's state for observation (status output, tests)."""

    id: NodeId
    term: int
    vote: NodeId
    commit: int
    applied: int
    lead: NodeId
    state: StateType
    is_learner: bool
    last_index: int
    conf_state: ConfState
    progress: dict[NodeId, PeerProgress]  # leader only; empty otherwise


class RawNode:
    """Thread-unsafe, I/O-free Raft node. One owner task drives it."""

    def __init__(self, config: Config) -> None:
        self.raft = Raft(config)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._in_ready = False

    # -- inputs ------------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (pre-vote first if enabled)."""
        self.raft.step(Message(MessageType.HUP, frm=self.raft.id))

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry. Leader only: raises ProposalDroppedError
        otherwise. Returns the entry's index (it is committed once applied)."""
        return self.raft.propose([data], [EntryType.NORMAL])

    def propose_batch(self, datas: list[bytes]) -> int:
        """Append many entries at once; returns the last index."""
        return self.raft.propose(datas, [EntryType.NORMAL] * len(datas))

    def propose_anywhere(self, datas: list[bytes]) -> None:
        """Propose normal entries from any role (etcd's ``Node.Propose``): a leader
        appends them; a follower or learner forwards them to the leader it knows, in a
        PROP message of its next Ready. Raises ProposalDroppedError when there is no
        leader to take them. A forwarded proposal may be lost or refused on the way (a
        leader change, a leadership transfer): the caller recognizes its entries when
        they are applied (by content) and proposes again until it does."""
        r = self.raft
        if r.state == StateType.LEADER:
            r.propose(datas, [EntryType.NORMAL] * len(datas))
            return
        r.step(
            Message(
                MessageType.PROP,
                frm=r.id,
                entries=tuple(Entry(term=0, index=0, data=d) for d in datas),
            )
        )

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a single-server membership change (one at a time; thesis §4.2)."""
        return self.raft.propose([cc.encode()], [EntryType.CONF_CHANGE])

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change; returns the new membership."""
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Feed a message received from a peer. Local message types are refused, and
        responses from peers outside the configuration are ignored."""
        if m.type in LOCAL_MESSAGES:
            raise ValueError(f"cannot step a local message type {m.type.name} from the network")
        if m.type in RESPONSE_MESSAGES and m.frm not in self.raft.prs:
            return
        if m.type == MessageType.PROP and (m.frm not in self.raft.prs or m.frm == self.raft.id):
            return  # only members propose through the leader
        self.raft.step(m)

    def transfer_leader(self, target: NodeId) -> None:
        """Ask the leader to hand leadership to ``target`` (thesis §3.10)."""
        self.raft.step(
            Message(MessageType.TRANSFER_LEADER, frm=self.raft.id, context=target.encode())
        )

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read point; the answer arrives as a ReadState with the
        same ``ctx`` in a later Ready. ``ctx`` must be unique across the cluster."""
        self.raft.step(Message(MessageType.READ_INDEX, frm=NONE, context=ctx))

    def report_unreachable(self, node: NodeId) -> None:
        """The transport failed to deliver to ``node``."""
        self.raft.step(Message(MessageType.UNREACHABLE, frm=node))

    def report_leader_unreachable(self) -> None:
        """The transport lost its connection to the current leader (see
        :meth:`raftd.core.raft.Raft.leader_unreachable`): campaign sooner."""
        self.raft.leader_unreachable()

    def report_snapshot(self, node: NodeId, ok: bool) -> None:
        """The result of sending a snapshot to ``node``."""
        self.raft.step(Message(MessageType.SNAP_STATUS, frm=node, reject=not ok))

    def ticks_are_quiet(self, n: int) -> bool:
        """Whether the next ``n`` ticks would only advance timers (see
        :meth:`Raft.ticks_are_quiet`): a runtime may then count them later, all at once,
        provided it steps nothing else first."""
        return self.raft.ticks_are_quiet(n)

    def quiet_ticks(self, limit: int) -> int:
        """The largest ``n <= limit`` for which :meth:`ticks_are_quiet` holds (0 if the
        next tick is not quiet)."""
        return self.raft.quiet_ticks(limit)

    def commit_lingers(self) -> bool:
        """Whether a leader holds back a commit-only append (``Config.commit_linger``):
        the runtime should call :meth:`flush_commit` if no proposal comes soon."""
        return self.raft.commit_lingers()

    def flush_commit(self) -> None:
        """Send the commit-only appends held back by ``Config.commit_linger``."""
        self.raft.flush_commit()

    def can_defer(self, m: Message) -> bool:
        """Whether stepping ``m`` may wait for this node's next input or tick without
        delaying anything. True only for a leader, in its term, and for two routine
        answers from a follower that is replicating, has been sent every entry and is not
        throttled:

        - a heartbeat's answer without a ReadIndex context, from a caught-up follower:
          stepping it only marks the follower recently active, which the leader reads at
          a tick (its quorum check);
        - an append's answer (not a rejection) for entries already committed, from a
          follower that no leadership transfer waits for: stepping it also moves the
          follower's match and frees its flow-control slots, which matter only when the
          leader next sends it entries (for a new proposal) or checks its quorum.

        A runtime may queue such a message without waking, provided it steps queued
        messages before the inputs and ticks that follow them."""
        r = self.raft
        if r.state != StateType.LEADER or m.term != r.term:
            return False
        t = m.type
        if t == MessageType.HEARTBEAT_RESP:
            if m.context:
                return False
        elif (
            t != MessageType.APP_RESP
            or m.reject
            or m.index > r.log.committed
            or m.frm == r.lead_transferee
        ):
            return False
        pr = r.prs.get(m.frm)
        if pr is None or pr.state != ProgressState.REPLICATE or pr.inflights.full():
            return False
        last = r.log.last_index()
        if t == MessageType.HEARTBEAT_RESP:
            return pr.match >= last
        return pr.next > last

    def timeout_due(self) -> bool:
        """Whether the next tick ends an election timeout: a follower or candidate would
        campaign, a leader would check that a quorum was heard from. A runtime that was
        held up should first read the messages queued meanwhile (a heartbeat waiting in
        the socket is not silence)."""
        r = self.raft
        if r.state == StateType.LEADER:
            return r.check_quorum and r.election_elapsed + 1 >= r.election_timeout
        return r.promotable() and r.election_elapsed + 1 >= r.randomized_election_timeout

    # -- outputs -----------------------------------------------------------------------------
    def has_ready(self) -> bool:
        # Called several times per event-loop round: compares fields rather than
        # building the SoftState and HardState that ready() reports.
        r = self.raft
        ps = self._prev_soft
        if r.lead != ps.leader or r.state != ps.state:
            return True
        log = r.log
        ph = self._prev_hard
        if (r.term != ph.term or r.vote != ph.vote or log.committed != ph.commit) and (
            r.term != 0 or r.vote != NONE or log.committed != 0
        ):
            return True
        if log.unstable.snapshot is not None:
            return True
        if r.msgs or log.unstable.entries or r.read_states:
            return True
        if r._pending_bcast is not None:
            return True
        return log.committed > log.applied and log.has_next_committed_entries()

    def ready(self) -> Ready:
        """The current batch of work. Must be followed by :meth:`advance`."""
        if self._in_ready:
            raise RuntimeError("ready() called twice without advance()")
        r = self.raft
        rd = Ready(
            entries=r.log.unstable_entries(),
            committed_entries=r.log.next_committed_entries(),
            messages=r.read_messages(),
        )
        ss = r.soft_state()
        if ss != self._prev_soft:
            rd.soft_state = ss
        hs = r.hard_state()
        if hs != self._prev_hard:
            rd.hard_state = hs
        if r.log.unstable.snapshot is not None:
            rd.snapshot = r.log.unstable.snapshot
        if r.read_states:
            rd.read_states, r.read_states = r.read_states, []
        votes_change = rd.hard_state is not None and (
            rd.hard_state.term != self._prev_hard.term or rd.hard_state.vote != self._prev_hard.vote
        )
        rd.must_sync = bool(rd.entries) or votes_change
        if r.state == StateType.LEADER and not votes_change and rd.messages:
            early = [m for m in rd.messages if m.type in EARLY_MESSAGES]
            if early:
                rd.early_messages = early
                rd.messages = [m for m in rd.messages if m.type not in EARLY_MESSAGES]
        self._in_ready = True
        return rd

    def take_early_messages(self) -> list[Message]:
        """Between :meth:`ready` and :meth:`advance`: the messages produced since
        ``ready()`` that may leave before the outstanding persist lands (appends,
        heartbeats, snapshots, TimeoutNow, ReadIndex answers; see ``EARLY_MESSAGES``).
        Empty unless this node is a leader whose term and vote are already durable (a
        node that just won an election persists its term first). Other messages stay
        queued for the next Ready."""
        r = self.raft
        if r.state != StateType.LEADER:
            return []
        if r.term != self._prev_hard.term or r.vote != self._prev_hard.vote:
            return []
        r.flush_broadcast()
        if not r.msgs:
            return []
        early = [m for m in r.msgs if m.type in EARLY_MESSAGES]
        if early:
            r.msgs = [m for m in r.msgs if m.type not in EARLY_MESSAGES]
        return early

    def most_caught_up_voter(self) -> NodeId | None:
        """The voter other than this node with the highest match index, preferring those
        heard from recently, ties broken by id (leader only; None otherwise or if there is
        none). The target of a leadership hand-over."""
        r = self.raft
        if r.state != StateType.LEADER:
            return None
        best: tuple[bool, int, NodeId] | None = None
        for pid in sorted(r.prs):
            pr = r.prs[pid]
            if pid == r.id or pr.is_learner:
                continue
            key = (pr.recent_active, pr.match, pid)
            if best is None or key[:2] > best[:2]:
                best = key
        return best[2] if best else None

    def advance(self, rd: Ready) -> None:
        """Report that ``rd`` was persisted, sent and applied."""
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        log = self.raft.log
        if rd.entries:
            e = rd.entries[-1]
            log.stable_to(e.index, e.term)
            self.raft.persisted_to(log.stable_last_index())
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.metadata.index)
            if rd.snapshot.metadata.index > log.applied:
                log.applied_to(rd.snapshot.metadata.index)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        self._in_ready = False

    # -- observation -------------------------------------------------------------------------
    def status(self) -> Status:
        r = self.raft
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            lead=r.lead,
            state=r.state,
            is_learner=r.is_learner,
            last_index=r.log.last_index(),
            conf_state=r.conf_state(),
            progress=self.progress_view(),
        )

    def progress_view(self) -> dict[NodeId, PeerProgress]:
        """Each member's progress as this leader sees it (empty unless leader)."""
        r = self.raft
        if r.state != StateType.LEADER:
            return {}
        return {
            pid: PeerProgress(p.match, p.next, p.state.name, p.recent_active, p.is_learner)
            for pid, p in r.prs.items()
        }

    @property
    def lead(self) -> NodeId:
        """The leader this node knows (NONE if none)."""
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def state(self) -> StateType:
        return self.raft.state

    @property
    def campaigns(self) -> int:
        """Elections this node started since it was created (a pre-vote or a vote
        round, for any cause: an election timeout, a lost leader, a transfer)."""
        return self.raft.campaigns

    @property
    def committed(self) -> int:
        return self.raft.log.committed

    def conf_state(self) -> ConfState:
        """The membership this node currently uses."""
        return self.raft.conf_state()

    def progress(self, node: NodeId) -> Progress | None:
        return self.raft.prs.get(node)
