"""The Raft state machine (Raft §5, §6; thesis §4.2, §6.4), pure and deterministic.

``Raft`` reacts to ``step(message)`` and ``tick()`` and accumulates outgoing messages in
``msgs``. It performs no I/O: the :class:`raftd.core.rawnode.RawNode` wrapper turns its
state into ``Ready`` batches for a runtime to persist, send and apply.

Role behaviour is a swapped step function (``_step_leader``, ``_step_candidate``,
``_step_follower``), as in etcd-io/raft. Time is counted in ticks; randomness comes only
from ``Config.rng``.
"""

from __future__ import annotations

import collections
import contextlib
import random
from dataclasses import dataclass, replace
from typing import Any

from raftd.core import quorum
from raftd.core.log import RaftLog
from raftd.core.progress import Progress, ProgressState
from raftd.core.readonly import ReadOnly
from raftd.core.storage import (
    CompactedError,
    SnapshotTemporarilyUnavailableError,
    Storage,
    UnavailableError,
)
from raftd.core.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    SoftState,
    StateType,
)

MT = MessageType
CAMPAIGN_TRANSFER = b"raftd:campaign-transfer"


TRANSFER_IN_PROGRESS = "leadership transfer in progress"
"""The message of the ProposalDroppedError raised while a leadership transfer runs."""

_CONF_IN_PROGRESS = "a membership change is already in progress"
_CONF_NEW_LEADER = "the new leader has not yet committed an entry of its term"

TRANSIENT_REFUSALS = frozenset(
    {
        TRANSFER_IN_PROGRESS,
        f"membership change refused: {_CONF_IN_PROGRESS}",
        f"membership change refused: {_CONF_NEW_LEADER}",
    }
)
"""Messages of ProposalDroppedErrors that say nothing about the proposal itself: the same
proposal may succeed moments later, so callers may retry it."""


class ProposalDroppedError(Exception):
    """The proposal was not appended: this node is not the leader, a leadership transfer
    is in progress, or a membership change is refused. The message says which."""


class ConfigError(ValueError):
    """The core's configuration is invalid; the message names the field."""


@dataclass(slots=True)
class Config:
    """Parameters of one Raft node. Ticks are abstract time units chosen by the runtime.

    ``rng`` is the only source of randomness (election timeouts): seed it for
    reproducibility.
    """

    id: NodeId
    storage: Storage
    rng: random.Random
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    #: A leader holds back an append that would only move a follower's commit index
    #: (see :meth:`Raft.flush_commit`), unless the new commit index covers a proposal
    #: that follower forwarded (it is waiting to answer a client).
    commit_linger: bool = False
    max_committed_size_per_ready: int | None = None
    check_quorum: bool = True
    pre_vote: bool = True

    def validate(self) -> None:
        if not self.id:
            raise ConfigError("id: must not be empty")
        if self.heartbeat_tick <= 0:
            raise ConfigError("heartbeat_tick: must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election_tick: must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs: must be greater than 0")


class Raft:
    """One node's Raft state. See the module docstring."""

    def __init__(self, c: Config) -> None:
        c.validate()
        self.id = c.id
        self.rng = c.rng
        self.log = RaftLog(c.storage, c.max_committed_size_per_ready)
        self.max_msg_size = c.max_size_per_msg
        self.max_inflight = c.max_inflight_msgs
        self.max_inflight_bytes = c.max_inflight_bytes
        self.check_quorum = c.check_quorum
        self.pre_vote = c.pre_vote
        self.heartbeat_timeout = c.heartbeat_tick
        self.election_timeout = c.election_tick

        self.term = 0
        self.vote: NodeId = NONE
        self.lead: NodeId = NONE
        self.lead_transferee: NodeId = NONE
        self.state = StateType.FOLLOWER
        self.is_learner = False
        self.prs: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.pending_conf_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        # Elections this node started (pre-vote or vote), for operators: a node that
        # campaigns while its leader is healthy is disrupting the group.
        self.campaigns = 0
        # Appends are broadcast once per Ready rather than once per proposal, so that
        # many proposals share one append message (batching). None: nothing pending.
        self._pending_bcast: bool | None = None
        self._voters: list[NodeId] | None = None
        self.commit_linger = c.commit_linger
        # Followers whose commit-only append is held back (commit_linger), and, per
        # follower, the first and last index of each batch of proposals it forwarded
        # that it has not yet been told is wholly committed.
        self._lingering: set[NodeId] = set()
        self._forwarded: dict[NodeId, collections.deque[tuple[int, int]]] = {}

        hs, cs = c.storage.initial_state()
        self._load_conf_state(cs)
        if not hs.is_empty():
            self._load_hard_state(hs)
        if c.applied > 0:
            self.log.applied_to(c.applied)
        self.become_follower(self.term, NONE)

    # -- state accessors ---------------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(leader=self.lead, state=self.state)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def voters(self) -> list[NodeId]:
        """The voters, sorted. Cached: membership changes only through the methods that
        rebuild ``prs``, and they clear the cache."""
        if self._voters is None:
            self._voters = sorted(i for i, p in self.prs.items() if not p.is_learner)
        return self._voters

    def learners(self) -> list[NodeId]:
        return sorted(i for i, p in self.prs.items() if p.is_learner)

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(self.voters()), learners=tuple(self.learners()))

    def promotable(self) -> bool:
        pr = self.prs.get(self.id)
        return pr is not None and not pr.is_learner and not self.log.has_pending_snapshot()

    def _load_hard_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise ValueError(
                f"hard state commit {hs.commit} out of range "
                f"[{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def _load_conf_state(self, cs: ConfState) -> None:
        self._voters = None
        self.prs = {}
        nxt = self.log.last_index() + 1
        for v in cs.voters:
            self.prs[v] = Progress(nxt, self.max_inflight, self.max_inflight_bytes, False)
        for lr in cs.learners:
            self.prs[lr] = Progress(nxt, self.max_inflight, self.max_inflight_bytes, True)
        pr = self.prs.get(self.id)
        self.is_learner = pr is not None and pr.is_learner

    # -- sending -----------------------------------------------------------------------------
    def send(self, m: Message) -> None:
        """Queue ``m``. Term is stamped here except on votes (set by the caller) and on
        proposals and read-index requests forwarded to the leader (term 0: local there)."""
        if m.type in (MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP):
            if m.term == 0:
                raise ValueError(f"term should be set when sending {m.type.name}")
            self.msgs.append(_stamped(m, self.id, m.term))
        elif m.type in (MT.PROP, MT.READ_INDEX):
            self.msgs.append(_stamped(m, self.id, 0))
        else:
            self.msgs.append(_stamped(m, self.id, self.term))

    def flush_broadcast(self) -> None:
        """Send the appends deferred by proposals and commit advances."""
        if self._pending_bcast is not None and self.state == StateType.LEADER:
            commit_moved = self._pending_bcast  # only a commit advance sends empty appends
            for pid in sorted(self.prs):
                if pid == self.id:
                    continue
                if commit_moved and self.commit_linger and not self._told_of_forwarded(pid):
                    # New entries carry the commit index; an append with nothing else
                    # waits for the next one (or flush_commit).
                    if not self._maybe_send_append(pid, False) and not self.prs[pid].is_paused():
                        self._lingering.add(pid)
                else:
                    self._maybe_send_append(pid, commit_moved, commit_only=commit_moved)
        self._pending_bcast = None

    def flush_commit(self) -> None:
        """Send the commit-only appends held back by ``commit_linger``. A runtime calls it
        when no new entries came soon enough to carry the commit index."""
        lingering, self._lingering = self._lingering, set()
        if self.state != StateType.LEADER:
            return
        for pid in sorted(lingering):
            if pid in self.prs:
                self._maybe_send_append(pid, True, commit_only=True)

    def commit_lingers(self) -> bool:
        """Whether a commit-only append is held back (see :meth:`flush_commit`)."""
        return bool(self._lingering)

    def _told_of_forwarded(self, pid: NodeId) -> bool:
        """Whether the commit index now covers any proposal ``pid`` forwarded: then it
        is sent at once, and the batches it wholly covers are forgotten (``pid`` learns
        of them now)."""
        fwd = self._forwarded.get(pid)
        committed = self.log.committed
        if not fwd or fwd[0][0] > committed:
            return False
        while fwd and fwd[0][1] <= committed:
            fwd.popleft()
        return True

    def _defer_bcast(self, send_if_empty: bool) -> None:
        self._pending_bcast = bool(self._pending_bcast) or send_if_empty

    def read_messages(self) -> list[Message]:
        """Take the queued messages (after flushing deferred appends)."""
        self.flush_broadcast()
        msgs, self.msgs = self.msgs, []
        return msgs

    def send_append(self, to: NodeId) -> None:
        self._maybe_send_append(to, True)

    def _maybe_send_append(
        self, to: NodeId, send_if_empty: bool, commit_only: bool = False
    ) -> bool:
        """Send an append (or a snapshot) to ``to`` if flow control allows. True if sent.
        ``commit_only``: the append is sent because the commit index moved; if it has no
        entries and ``to`` is replicating, it is marked so and not answered unless
        rejected (see :class:`~raftd.core.types.Message`)."""
        pr = self.prs.get(to)
        if pr is None or pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
            ents = self.log.entries(pr.next, self.max_msg_size)
        except (CompactedError, UnavailableError):
            return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        nbytes = sum(e.size() for e in ents)
        self.send(
            Message(
                MT.APP,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=self.log.committed,
                # Its answer would repeat what the answers to the appends before it
                # say (or, if those were lost, what the heartbeat's answer makes the
                # leader ask again with an answered append): asked for on rejection only.
                commit_only=commit_only and not ents and pr.state == ProgressState.REPLICATE,
            )
        )
        pr.update_on_entries_send(len(ents), nbytes, pr.next)
        self._lingering.discard(to)
        return True

    def _maybe_send_snapshot(self, to: NodeId, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # don't ship a snapshot to a peer that may be down
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.is_empty():
            raise RuntimeError("need a non-empty snapshot to send")
        pr.become_snapshot(snap.metadata.index)
        self.send(Message(MT.SNAP, to=to, snapshot=snap))
        return True

    def send_heartbeat(self, to: NodeId, ctx: bytes) -> None:
        # The commit sent is capped at the follower's match: it may not have the entries
        # beyond it, and must never be told to commit what it does not hold.
        pr = self.prs[to]
        commit = min(pr.match, self.log.committed)
        # Its answer is needed only for what this leader does not know yet: that the
        # follower is alive since the last quorum check (the check clears the flag, so
        # each follower is asked at least once per election timeout, and at every
        # heartbeat after that until it answers), whether it lacks entries, and a read's
        # quorum.
        quiet = (
            not ctx
            and self.check_quorum
            and pr.recent_active
            and pr.state == ProgressState.REPLICATE
            and pr.match == self.log.last_index()
        )
        self.send(Message(MT.HEARTBEAT, to=to, commit=commit, context=ctx, commit_only=quiet))
        if commit == self.log.committed:
            self._lingering.discard(to)

    def bcast_append(self) -> None:
        for pid in sorted(self.prs):
            if pid != self.id:
                self.send_append(pid)

    def bcast_heartbeat(self, ctx: bytes = b"") -> None:
        if not ctx:
            ctx = self.read_only.last_pending_context() or b""
        for pid in sorted(self.prs):
            if pid != self.id:
                self.send_heartbeat(pid, ctx)

    # -- role transitions --------------------------------------------------------------------
    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.lead_transferee = NONE
        self.votes = {}
        nxt = self.log.last_index() + 1
        for pid, old in list(self.prs.items()):
            pr = Progress(nxt, self.max_inflight, self.max_inflight_bytes, old.is_learner)
            if pid == self.id:
                # Only what is durable counts (see persisted_to).
                pr.match = self.log.stable_last_index()
            self.prs[pid] = pr
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self._pending_bcast = None
        self._lingering = set()
        self._forwarded = {}

    def become_follower(self, term: int, lead: NodeId) -> None:
        self.reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise RuntimeError("invalid transition [leader -> candidate]")
        self.reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise RuntimeError("invalid transition [leader -> pre-candidate]")
        # Pre-vote (thesis §9.6) changes neither term nor vote.
        self.votes = {}
        self.state = StateType.PRE_CANDIDATE
        self.lead = NONE

    def become_leader(self) -> None:
        if self.state == StateType.FOLLOWER:
            raise RuntimeError("invalid transition [follower -> leader]")
        self.reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        me = self.prs[self.id]
        me.become_replicate()
        me.recent_active = True
        # Conservatively forbid conf changes until everything in the log is applied: the
        # leader does not know whether uncommitted entries hold one (thesis §4.1 bug fix).
        self.pending_conf_index = self.log.last_index()
        # An empty entry of the new term lets earlier entries commit (Raft §5.4.2) and
        # enables ReadIndex (thesis §6.4).
        self.append_entries([b""], [EntryType.NORMAL])

    # -- ticking -----------------------------------------------------------------------------
    def tick(self) -> None:
        if self.state == StateType.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def ticks_are_quiet(self, n: int) -> bool:
        """Whether the next ``n`` ticks (n >= 1) would only advance this node's timers:
        no heartbeat, election, check-quorum or transfer timeout among them, so they may
        be counted later, together, as long as nothing is stepped in between."""
        return self.quiet_ticks(n) >= n

    def quiet_ticks(self, limit: int) -> int:
        """How many of the next ticks, at most ``limit``, are quiet in the sense of
        :meth:`ticks_are_quiet` (the largest such ``n``, 0 if the next tick is not)."""
        if self.state == StateType.LEADER:
            n = min(
                self.heartbeat_timeout - self.heartbeat_elapsed,
                self.election_timeout - self.election_elapsed,
            )
        elif not self.promotable():
            return limit
        else:
            n = self.randomized_election_timeout - self.election_elapsed
        return max(0, min(limit, n - 1))

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(MT.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, frm=self.id))
            # A transfer that did not finish within an election timeout is abandoned.
            if self.state == StateType.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE
        if self.state != StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, frm=self.id))

    def leader_unreachable(self) -> None:
        """A failure-detector hint: the connection to our leader broke (e.g. its process
        died). A follower forgets the leader and shortens its election timer to a random
        fraction of the timeout, so failover does not wait a full election timeout.

        Only liveness depends on this: if the leader is in fact alive, its next heartbeat
        restores it, and pre-vote keeps an early campaign from disrupting anything.
        """
        if self.state != StateType.FOLLOWER or self.lead == NONE:
            return
        self.lead = NONE
        remaining = 1 + self.rng.randrange(max(1, self.election_timeout // 2))
        self.election_elapsed = max(
            self.election_elapsed, self.randomized_election_timeout - remaining
        )

    # -- elections ---------------------------------------------------------------------------
    def _has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        try:
            ents = self.log.slice(self.log.applied + 1, self.log.committed + 1)
        except CompactedError:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def hup(self, transfer: bool) -> None:
        if self.state == StateType.LEADER or not self.promotable():
            return
        if self._has_unapplied_conf_changes():
            return  # campaigning with a stale configuration could elect wrongly
        self.campaigns += 1
        if self.pre_vote and not transfer:
            self.campaign_pre()
        else:
            self.campaign(transfer)

    def _vote_targets(self) -> list[NodeId]:
        return [v for v in self.voters() if v != self.id]

    def campaign_pre(self) -> None:
        self.become_pre_candidate()
        if self._poll(self.id, True) == quorum.VoteResult.WON:
            self.campaign(False)
            return
        for v in self._vote_targets():
            self.send(
                Message(
                    MT.PRE_VOTE,
                    to=v,
                    term=self.term + 1,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                )
            )

    def campaign(self, transfer: bool) -> None:
        self.become_candidate()
        if self._poll(self.id, True) == quorum.VoteResult.WON:
            self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in self._vote_targets():
            self.send(
                Message(
                    MT.VOTE,
                    to=v,
                    term=self.term,
                    index=self.log.last_index(),
                    log_term=self.log.last_term(),
                    context=ctx,
                )
            )

    def _poll(self, node: NodeId, granted: bool) -> quorum.VoteResult:
        self.votes.setdefault(node, granted)
        return quorum.vote_result(self.voters(), self.votes)

    # -- step --------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Process one message. Local messages have term 0."""
        if m.term == 0:
            pass
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # Thesis §4.2.3: a node that hears from a live leader ignores votes,
                    # so a removed or partitioned server cannot disrupt the cluster.
                    return
            if m.type == MT.PRE_VOTE:
                pass  # never change term on a pre-vote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # term bumps once a quorum of pre-votes is in
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader (e.g. after a partition) learns the new term from this
                # and steps down; otherwise pre-vote could leave it stuck forever.
                self.send(Message(MT.APP_RESP, to=m.frm))
            elif m.type == MT.PRE_VOTE:
                self.send(Message(MT.PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
            return

        if m.type == MT.HUP:
            self.hup(transfer=False)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.state == StateType.LEADER:
            self._step_leader(m)
        elif self.state in (StateType.CANDIDATE, StateType.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Raft §5.2, §5.4.1: grant at most one vote per term, to an up-to-date log.
            self.send(Message(resp, to=m.frm, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, to=m.frm, term=self.term, reject=True))

    # -- leader ------------------------------------------------------------------------------
    def append_entries(self, datas: list[bytes], types: list[EntryType]) -> None:
        li = self.log.last_index()
        ents = [
            Entry(term=self.term, index=li + 1 + i, type=t, data=d)
            for i, (d, t) in enumerate(zip(datas, types, strict=True))
        ]
        # The leader's own match moves when the runtime reports the entries durable
        # (persisted_to), not here: it may send them before they are on its disk.
        self.log.append(ents)

    def persisted_to(self, index: int) -> None:
        """The runtime made this node's log durable up to ``index``. A leader counts
        itself in the commit quorum only from here (Raft thesis §10.2.1: it may send its
        entries while it persists them, never count them before)."""
        if self.state != StateType.LEADER:
            return
        me = self.prs.get(self.id)
        if me is None or not me.maybe_update(index):
            return
        if self.maybe_commit():
            self._release_pending_read_index_messages()
            self._defer_bcast(True)

    def maybe_commit(self) -> bool:
        match = {pid: pr.match for pid, pr in self.prs.items()}
        mci = quorum.committed_index(self.voters(), match)
        return self.log.maybe_commit(mci, self.term)

    def committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    def quorum_active(self) -> bool:
        active = {pid: True for pid, pr in self.prs.items() if pid == self.id or pr.recent_active}
        return quorum.vote_result(self.voters(), active) == quorum.VoteResult.WON

    def _check_conf_change(self, cc: ConfChange) -> str | None:
        """Why a proposed membership change must be refused, or None if it may go."""
        if self.pending_conf_index > self.log.applied:
            return _CONF_IN_PROGRESS
        if not self.committed_entry_in_current_term():
            # Thesis §4.2 (the bug fix): a new leader first commits an entry of its term.
            return _CONF_NEW_LEADER
        voters = set(self.voters())
        if cc.node_id == self.id and cc.type != ConfChangeType.ADD_VOTER:
            return "the leader cannot remove or demote itself: transfer leadership first"
        removes = cc.type in (ConfChangeType.REMOVE_NODE, ConfChangeType.ADD_LEARNER)
        if removes and not voters - {cc.node_id}:
            return "the change would leave no voters"
        return None

    def propose(self, datas: list[bytes], types: list[EntryType]) -> int:
        """Leader only: append entries. Returns the index of the last one."""
        if self.state != StateType.LEADER:
            raise ProposalDroppedError("not the leader")
        if self.id not in self.prs:
            raise ProposalDroppedError("the leader is not a member of the configuration")
        if self.lead_transferee != NONE:
            raise ProposalDroppedError(TRANSFER_IN_PROGRESS)
        for i, t in enumerate(types):
            if t == EntryType.CONF_CHANGE:
                why = self._check_conf_change(ConfChange.decode(datas[i]))
                if why is not None:
                    raise ProposalDroppedError(f"membership change refused: {why}")
                self.pending_conf_index = self.log.last_index() + i + 1
        self.append_entries(datas, types)
        self._defer_bcast(False)
        return self.log.last_index()

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self.bcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            if not self.quorum_active():
                self.become_follower(self.term, NONE)
            for pid, other in self.prs.items():
                if pid != self.id:
                    other.recent_active = False
            return
        if t == MT.PROP:
            # A member's forwarded proposal (etcd's MsgProp). Refusals are silent: the
            # proposer re-proposes until it sees the entry applied or gives up.
            if m.frm == self.id or not m.entries:
                raise ProposalDroppedError("local proposals must use Raft.propose")
            if self.lead_transferee != NONE or any(e.type != EntryType.NORMAL for e in m.entries):
                return
            with contextlib.suppress(ProposalDroppedError):  # e.g. the leader was removed
                last = self.propose(
                    [e.data for e in m.entries], [EntryType.NORMAL] * len(m.entries)
                )
                if self.commit_linger:
                    batch = (last - len(m.entries) + 1, last)
                    self._forwarded.setdefault(m.frm, collections.deque()).append(batch)
            return
        if t == MT.READ_INDEX:
            self._leader_read_index(m)
            return

        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(m.frm)
            if m.context:
                acks = self.read_only.recv_ack(m.frm, m.context)
                if acks is None:
                    return
                won = quorum.vote_result(self.voters(), dict.fromkeys(acks, True))
                if won != quorum.VoteResult.WON:
                    return
                for rs in self.read_only.advance(m.context):
                    self._respond_read_index(rs.req, rs.index)
        elif t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for the follower's next response before probing again.
            pr.probe_sent = True
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.TRANSFER_LEADER:
            self._handle_transfer(m, pr)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Fast backtrack (Raft §5.3): skip every entry of a conflicting term.
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.log.first_index():
            # The follower caught up past our log's start, by the snapshot or otherwise.
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self._release_pending_read_index_messages()
            self._defer_bcast(True)
        elif old_paused:
            self.send_append(m.frm)
        while self._maybe_send_append(m.frm, False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=m.frm))

    def _handle_transfer(self, m: Message, pr: Progress) -> None:
        target = m.context.decode() if m.context else m.frm
        tpr = self.prs.get(target)
        if tpr is None or tpr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == target:
                return
            self.lead_transferee = NONE
        if target == self.id:
            return
        # The transfer must finish within one election timeout (thesis §3.10).
        self.election_elapsed = 0
        self.lead_transferee = target
        if tpr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=target))
        else:
            self.send_append(target)

    def _leader_read_index(self, m: Message) -> None:
        if self.voters() == [self.id]:
            self._respond_read_index(m, self.log.committed)
            return
        if not self.committed_entry_in_current_term():
            # Thesis §6.4 step 1: the leader must first commit an entry of its term.
            self.pending_read_index_messages.append(m)
            return
        self.read_only.add_request(self.log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self.bcast_heartbeat(m.context)

    def _respond_read_index(self, req: Message, index: int) -> None:
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(index=index, context=req.context))
        else:
            self.send(Message(MT.READ_INDEX_RESP, to=req.frm, index=index, context=req.context))

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self.committed_entry_in_current_term():
            return
        pending, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in pending:
            self._leader_read_index(m)

    # -- candidate ---------------------------------------------------------------------------
    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.state == StateType.PRE_CANDIDATE else MT.VOTE_RESP
        t = m.type
        if t == MT.PROP:
            if m.frm == self.id:
                raise ProposalDroppedError("no leader: an election is in progress")
            return
        if t == MT.APP:
            self.become_follower(m.term, m.frm)
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self._poll(m.frm, not m.reject)
            if res == quorum.VoteResult.WON:
                if self.state == StateType.PRE_CANDIDATE:
                    self.campaign(False)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == quorum.VoteResult.LOST:
                # A rejecting pre-vote response carries the voter's term, which may be
                # newer; otherwise stay in our term.
                self.become_follower(self.term, NONE)

    # -- follower ----------------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MT.TRANSFER_LEADER:
            if self.lead != NONE:
                self.send(_with(m, to=self.lead))
        elif t == MT.TIMEOUT_NOW:
            # Thesis §3.10: the leader asks us to campaign at once, skipping pre-vote and
            # the lease check of the other voters.
            self.hup(transfer=True)
        elif t == MT.READ_INDEX:
            if self.lead != NONE:
                self.send(_with(m, to=self.lead))
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(index=m.index, context=m.context))
        elif t == MT.PROP:
            self._forward_proposal(m)

    def _forward_proposal(self, m: Message) -> None:
        """A follower or learner hands a local proposal to the leader it knows."""
        if m.frm != self.id:
            return  # only a leader takes proposals from peers
        if self.lead == NONE:
            raise ProposalDroppedError("no leader to forward the proposal to")
        self.send(_with(m, to=self.lead))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.committed))
            return
        lastnewi = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if lastnewi is not None:
            if not (m.commit_only and not m.entries):
                self.send(Message(MT.APP_RESP, to=m.frm, index=lastnewi))
            return
        # Reject with a hint: the largest index whose term is <= the leader's term at
        # m.index, so the leader can skip a whole conflicting term (Raft §5.3).
        hint = min(m.index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.log_term)
        self.send(
            Message(
                MT.APP_RESP,
                to=m.frm,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        if not m.commit_only:
            self.send(Message(MT.HEARTBEAT_RESP, to=m.frm, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        if m.snapshot is None:
            return
        if self.restore(m):
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.last_index()))
        else:
            self.send(Message(MT.APP_RESP, to=m.frm, index=self.log.committed))

    def restore(self, m: Message) -> bool:
        """Install the snapshot in ``m`` if it is newer than our commit. Its membership
        becomes ours. (A snapshot that predates our own admission is accepted: the
        entries after it carry the change that added us.)"""
        snap = m.snapshot
        assert snap is not None
        meta = snap.metadata
        if meta.index <= self.log.committed:
            return False
        if self.state != StateType.FOLLOWER:
            self.become_follower(self.term + 1, NONE)
            return False
        if self.log.match_term(meta.index, meta.term):
            # We already hold this prefix: just fast-forward the commit index.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self._load_conf_state(meta.conf_state)
        return True

    # -- membership --------------------------------------------------------------------------
    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed single-server change (thesis §4.2). The runtime calls this
        when it applies a CONF_CHANGE entry."""
        self._voters = None
        nxt = self.log.last_index() + 1
        pr = self.prs.get(cc.node_id)
        if cc.type == ConfChangeType.ADD_VOTER or cc.type == ConfChangeType.ADD_LEARNER:
            learner = cc.type == ConfChangeType.ADD_LEARNER
            if pr is not None:
                pr.is_learner = learner
            else:
                new = Progress(nxt, self.max_inflight, self.max_inflight_bytes, learner)
                # A new member starts active so check-quorum does not count it as lost.
                new.recent_active = True
                self.prs[cc.node_id] = new
        elif cc.type == ConfChangeType.REMOVE_NODE:
            self.prs.pop(cc.node_id, None)
            self._forwarded.pop(cc.node_id, None)
            self._lingering.discard(cc.node_id)
        me = self.prs.get(self.id)
        self.is_learner = me is not None and me.is_learner
        if self.state == StateType.LEADER:
            if me is None or me.is_learner:
                # Removed or demoted (only possible via a snapshot or a bug): step down.
                self.become_follower(self.term, NONE)
            else:
                tr = self.prs.get(self.lead_transferee)
                if self.lead_transferee != NONE and (tr is None or tr.is_learner):
                    self.lead_transferee = NONE
                if self.maybe_commit():
                    self._defer_bcast(True)
                else:
                    self._defer_bcast(False)
        return self.conf_state()


def _with(m: Message, **changes: Any) -> Message:
    """A copy of ``m`` with some fields replaced (Message is frozen)."""
    return replace(m, **changes)


def _stamped(m: Message, frm: NodeId, term: int) -> Message:
    """``_with(m, frm=frm, term=term)``, spelled out: every message sent passes here, and
    ``dataclasses.replace`` inspects the class's fields on each call."""
    return Message(
        type=m.type,
        to=m.to,
        frm=frm,
        term=term,
        log_term=m.log_term,
        index=m.index,
        entries=m.entries,
        commit=m.commit,
        snapshot=m.snapshot,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
        commit_only=m.commit_only,
    )
