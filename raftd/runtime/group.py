"""The runtime of one Raft group (one namespace): one trio task owns the RawNode.

Tasks, all in a nursery owned by :meth:`Group.run`:

- the **ticker** counts ticks at the preset's interval;
- the **Ready loop** takes every queued input (peer messages, proposals, reads, ticks,
  transport reports), steps the core, then handles each Ready in the contract's order:
  **persist** (one fsynced LevelDB batch), **send**, **apply** (one batch for the state
  machine), **advance**;
- one **snapshot sender** per peer that needs a snapshot streams the file.

While leading, the group also measures the round-trip time to each peer from its
heartbeats (:attr:`Group.peer_rtt`, see :mod:`raftd.runtime.rtt`).

Proposals resolve when their entry is applied, with the state machine's result. When this
node loses leadership, pending proposals fail at once with :class:`LeadershipLost`: their
entry may still commit under the new leader (the outcome is indeterminate), which is why
clients attach a client id and sequence number (de-duplicated by the state machine).

What "acknowledged" means: a proposal resolves only after its entry is committed (stored
and fsynced on a majority of voters, the leader included) and applied here.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

import outcome
import trio
from typing_extensions import TypeVar

from raftd.core import (
    NONE,
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    NodeId,
    ProposalDroppedError,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
    StateType,
    wakeup,
)
from raftd.core.storage import SnapshotTemporarilyUnavailableError
from raftd.kv.machine import ApplyResult, KVStateMachine
from raftd.runtime.contracts import GroupStateMachine
from raftd.runtime.presets import Preset
from raftd.runtime.rtt import RttEstimator
from raftd.runtime.starvation import CpuStarvation
from raftd.runtime.watchdog import LoopWatchdog
from raftd.storage.base import GroupStorage, RaftStorage, StorageWriteError
from raftd.storage.leveldb import LevelDBStorage
from raftd.storage.snapshots import (
    SnapshotCancelled,
    SnapshotJob,
    SnapshotPolicy,
    Snapshotter,
    finish_pending_install,
    recover,
    restore_pending_install,
)
from raftd.transport.base import Transport

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("raftd.group")


class GroupError(Exception):
    """Base class of errors a request to a group can end with."""


class NotLeader(GroupError):
    """This node is not the leader. ``leader`` is the known leader ("" if none)."""

    def __init__(self, leader: NodeId) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class LeadershipLost(GroupError):
    """Leadership was lost while the proposal was pending: it may or may not commit."""

    indeterminate = True


class ProposalRejected(GroupError):
    """The core refused the proposal (e.g. a membership change already in progress)."""


class ProposalsIgnored(GroupError):
    """The leader applied none of this node's PROP messages for a command, over several
    election timeouts in one term: it does not take them (an older version). The command
    may still apply (``indeterminate``); send it to the leader another way."""

    indeterminate = True

    def __init__(self, leader: NodeId) -> None:
        super().__init__(f"leader {leader} applied none of our proposals")
        self.leader = leader


class GroupUnavailable(GroupError):
    """The group cannot serve: storage failed, or it is stopping."""


class MetaOnlyStorage:
    """The core's view of the storage: snapshots without their data.

    The leader's core asks for the snapshot only to name it in a SNAP message; the
    runtime streams the file itself, so the data is never loaded whole into memory.

    The snapshot named is the newest one with an image whose successors the log still
    holds (a follower that installs it then catches up from the log). Snapshots are
    usually taken without an image (:meth:`Snapshotter.begin_state`): when no image
    serves, :meth:`snapshot` raises :class:`SnapshotTemporarilyUnavailableError` (the
    core retries at the follower's next answer) and sets :attr:`image_wanted`, for the
    group to make one.
    """

    def __init__(self, inner: RaftStorage, applied: int = 0) -> None:
        self.inner = inner
        self.applied = applied
        self.image_wanted = False
        # The reads the core makes several times per message go straight to the store.
        self.entries: Callable[..., list[Entry]] = inner.entries
        self.term: Callable[[int], int] = inner.term
        self.last_index: Callable[[], int] = inner.last_index
        self.first_index: Callable[[], int] = inner.first_index

    def initial_state(self) -> Any:
        """The stored hard state, with its commit index raised to the state machine's
        applied index (within the log): a commit index is written only along with a
        term, a vote or entries (see :meth:`Group._handle_ready`), so the stored one
        may trail what was already committed and applied."""
        hs, cs = self.inner.initial_state()
        commit = min(self.applied, self.inner.last_index())
        if commit > hs.commit and not hs.is_empty():
            hs = replace(hs, commit=commit)
        return hs, cs

    def snapshot(self) -> Snapshot:
        image = self.inner.image_metadata()
        if image is not None and image.index >= self.inner.first_index() - 1:
            return Snapshot(metadata=image)
        self.image_wanted = True
        raise SnapshotTemporarilyUnavailableError(
            f"{self.inner.namespace}: no snapshot image yet; one is being made"
        )


class _Waiter:
    """A one-shot result slot for a task waiting on the Ready loop, or for a callback.

    ``index_only`` (read waiters): resolve with the read index as soon as it is known,
    without waiting for this node to apply it.

    ``callback``: called with the waiter, on the group's task, once its ``result`` or
    ``error`` is set (instead of waking a task; :meth:`wait` is then not used). It must
    not block; an exception it raises is logged, never passed to the group."""

    __slots__ = ("callback", "done", "error", "event", "index_only", "result")

    def __init__(
        self,
        *,
        index_only: bool = False,
        callback: Callable[[_Waiter], None] | None = None,
    ) -> None:
        self.event: trio.Event | None = trio.Event() if callback is None else None
        self.callback = callback
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.index_only = index_only

    def set(self, result: Any) -> None:
        if not self.done:
            self.done = True
            self.result = result
            self._notify()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self._notify()

    def _notify(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        # One shot: dropping the callback once called ends the cycle a caller that keeps
        # its waiter makes (caller -> waiter -> bound method -> caller), so the pair is
        # freed by reference counting, not left to the cyclic collector (per request,
        # that was most of the daemon's garbage collection time under write load).
        callback, self.callback = self.callback, None
        assert callback is not None
        try:
            callback(self)
        except Exception:
            log.exception("a command's completion callback raised")

    async def wait(self) -> Any:
        assert self.event is not None, "a callback waiter is not awaited"
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.result


Session = tuple[bytes, int]


class CommandProposal:
    """A command with a client id and seq, proposed from any node (see
    :meth:`Group.command`). ``sent``: it was handed to a leader at least once, so it may
    be applied even if this node never sees the outcome."""

    __slots__ = ("data", "last_try", "leader_at_try", "sent", "unanswered", "waiters")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sent = False
        self.last_try = -math.inf
        self.leader_at_try: tuple[NodeId, int] = (NONE, 0)  # (leader, term)
        self.unanswered = 0  # forwarded again to the same leader, in the same term
        self.waiters: list[_Waiter] = []

    async def wait(self, waiter: _Waiter) -> ApplyResult:
        result: ApplyResult = await waiter.wait()
        return result


@dataclass(slots=True)
class GroupStats:
    proposals_ok: int = 0
    proposals_failed: int = 0
    proposals_forwarded: int = 0
    proposals_resent: int = 0
    leader_changes: int = 0
    #: Snapshots recorded by this node's policy (without an image).
    snapshots_taken: int = 0
    #: Images made for followers too far behind the log (recorded as snapshots too).
    snapshot_images: int = 0
    #: Snapshot images that could not be written (retried an interval later).
    snapshot_failures: int = 0
    snapshots_installed: int = 0
    snapshots_sent: int = 0
    #: Persists that took longer than a tick (Raft kept stepping meanwhile).
    slow_persists: int = 0
    #: Leadership hand-overs by a leader whose own persist was stuck.
    stuck_persist_handovers: int = 0
    #: Elections this node started (see :attr:`RawNode.campaigns`).
    campaigns: int = 0
    #: Ticks counted, and how often the ticker woke to count them (an idle group
    #: sleeps through the ticks that only advance its timers).
    ticks: int = 0
    ticker_wakeups: int = 0
    #: How often the Ready loop woke from waiting for input.
    loop_wakeups: int = 0
    #: Election timeouts (a leader: quorum checks) before which the loop let the
    #: transport read first (see :meth:`Group._read_before_timeout`).
    reads_before_timeout: int = 0
    apply_seconds: list[float] = field(default_factory=list)
    fsync_seconds: list[float] = field(default_factory=list)


#: The group's storage (:mod:`raftd.runtime.contracts`); the daemon's is LevelDB.
ST = TypeVar("ST", bound=GroupStorage, default=LevelDBStorage)
#: The group's state machine; the daemon's is the key-value store.
SM = TypeVar("SM", bound=GroupStateMachine, default=KVStateMachine)


class Group(Generic[ST, SM]):
    """One namespace's Raft group on this daemon. See the module docstring.

    Typed against its parts' contracts (:mod:`raftd.runtime.contracts`): the daemon runs
    it on LevelDB, the key-value state machine and libp2p; tests run whole clusters of
    it on the in-memory twins and :class:`~raftd.transport.memory.MemoryTransport`."""

    def __init__(
        self,
        *,
        namespace: str,
        node_id: NodeId,
        storage: ST,
        sm: SM,
        transport: Transport,
        preset: Preset,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        watchdog: LoopWatchdog | None = None,
    ) -> None:
        self.namespace = namespace
        self._watchdog = watchdog
        self.id = node_id
        self.storage = storage
        self.sm = sm
        self.transport = transport
        self.preset = preset
        self.rng = rng or random.Random()
        self.clock = clock
        self.stats = GroupStats()
        self._ticks_total = 0
        self._starvation = CpuStarvation()
        transport.on_message = self._on_message
        transport.on_unreachable = self._on_unreachable
        transport.on_snapshot = self._on_snapshot
        self.node: RawNode | None = None
        self._inbox: deque[Message] = deque()
        self._reports: deque[tuple[str, NodeId, bool]] = deque()
        self._proposals: list[tuple[bytes, EntryType, _Waiter]] = []
        self._commands: dict[Session, CommandProposal] = {}
        self._commands_due: list[Session] = []
        self._pending: dict[int, tuple[int, _Waiter]] = {}
        self._read_waiters: list[_Waiter] = []
        self._reads_in_flight: dict[bytes, list[_Waiter]] = {}
        self._reads_ready: list[tuple[int, list[_Waiter]]] = []
        self._transfers: list[NodeId] = []
        self._ticks = 0
        # The ticker (see _ticker): the time of the next tick boundary not counted yet;
        # how many boundaries from there on it sleeps through as quiet (0: it wakes at
        # each); quiet ticks counted but not stepped yet (stepped before anything else).
        self._next_tick = 0.0
        self._planned = 0
        self._quiet_ticks = 0
        # How late the last tick that acted was counted (see _read_before_timeout).
        self._tick_late = 0.0
        self._tick_scope: trio.CancelScope | None = None
        # The outstanding persist's event and when it was submitted: the ticker sets
        # the event once a tick has passed, which ends the persist's quiet wait.
        self._persist_landed: trio.Event | None = None
        self._persist_since = 0.0
        self._wake = trio.Event()
        self._applied_event = trio.Event()
        self._leader_event = trio.Event()
        self._state_event = trio.Event()
        self._read_seq = itertools.count(1)
        self._snapshot_senders: set[NodeId] = set()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self.failed: BaseException | None = None
        self.leader: NodeId = NONE
        self.role: StateType = StateType.FOLLOWER
        self.conf: ConfState = ConfState()
        self._snapshotter: Snapshotter | None = None
        # The snapshot whose image a worker thread is writing, and whether it is done.
        self._snapshot_job: SnapshotJob | None = None
        self._snapshot_result: outcome.Outcome[None] | None = None
        self._snapshot_began = 0.0
        # A snapshot without an image whose state machine flush is running (meta), and
        # how the flush ended (None: still running).
        self._state_snapshot: SnapshotMetadata | None = None
        self._state_result: outcome.Outcome[None] | None = None
        self._meta_storage: MetaOnlyStorage | None = None
        self._on_conf_change: list[Callable[[ConfChange, ConfState], None]] = []
        self._answer_listeners: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._on_leader_change: list[Callable[[NodeId], None]] = []
        # A heartbeat answered later than an election timeout is treated as lost: such a
        # link could not keep a leader anyway.
        self._rtt = RttEstimator(expiry=preset.election_s)

    # -- setup -------------------------------------------------------------------------------
    def is_empty(self) -> bool:
        """True if this group has never been bootstrapped nor joined (no log, no state)."""
        hs, cs = self.storage.initial_state()
        return (
            hs.is_empty()
            and not cs.voters
            and not cs.learners
            and self.storage.last_index() == 0
            and self.storage.snapshot_metadata().index == 0
        )

    def bootstrap(self, voters: Sequence[NodeId]) -> None:
        """Seed an empty group with its initial membership: a snapshot at index 1, term 1
        with an empty state machine. Every founder must use the same ``voters``."""
        if not self.is_empty():
            raise GroupError(f"{self.namespace}: already initialized; not bootstrapping")
        meta = SnapshotMetadata(index=1, term=1, conf_state=ConfState(voters=tuple(voters)))
        # The state machine is empty "as of index 1"; its image is the snapshot file.
        self.sm.apply_many([(1, b"")])
        view = self.sm.snapshot_view()
        try:
            self.storage.snapshot_store.write(meta, view.write)
        finally:
            view.close()
        self.storage.save(None, (), Snapshot(metadata=meta))
        finish_pending_install(self.storage, self.sm)
        log.info("%s: bootstrapped with voters %s", self.namespace, ", ".join(voters))

    def _open_node(self) -> RawNode:
        recover(self.storage, self.sm)
        applied = max(self.sm.applied_index(), self.storage.snapshot_metadata().index)
        meta_storage = MetaOnlyStorage(self.storage, applied)
        self._meta_storage = meta_storage
        p = self.preset
        cfg = Config(
            id=self.id,
            storage=meta_storage,
            rng=self.rng,
            election_tick=p.election_ticks,
            heartbeat_tick=p.heartbeat_ticks,
            applied=min(applied, meta_storage.initial_state()[0].commit or applied),
            max_size_per_msg=512 * 1024,
            max_inflight_msgs=256,
            max_committed_size_per_ready=4 * 1024 * 1024,
            check_quorum=True,
            pre_vote=True,
            commit_linger=True,
        )
        node = RawNode(cfg)
        self.conf = node.conf_state()
        self._snapshotter = Snapshotter(
            self.storage,
            self.sm,
            SnapshotPolicy(
                entries=p.snapshot_entries,
                interval_s=p.snapshot_interval_s,
                trailing=p.compaction_trailing,
            ),
            now=self.clock(),
        )
        return node

    # -- transport callbacks (synchronous; never block) -------------------------------------
    def _on_message(self, msg: Message) -> None:
        t = msg.type
        if t == MessageType.HEARTBEAT_RESP:
            # Timed on arrival, not when the Ready loop steps it: the RTT should not
            # include this node's own backlog.
            self._rtt.received(msg.frm, self.clock())
        # A routine answer (a caught-up follower's to a heartbeat, the slower follower's
        # to entries already committed) waits for the next tick or other input instead
        # of waking the loop: on an idle leader that is one scheduler round fewer per
        # answer, at one write in flight one per write, and a round costs ~0.2-0.4 ms of
        # CPU here. Queued messages are stepped before the inputs and ticks that follow
        # them (RawNode.can_defer).
        node = self.node
        deferred = (
            (t == MessageType.HEARTBEAT_RESP or t == MessageType.APP_RESP)
            and node is not None
            and node.can_defer(msg)
        )
        self._inbox.append(msg)
        if not deferred:
            self._wake.set()

    def _on_unreachable(self, peer: str) -> None:
        self._reports.append(("unreachable", peer, False))
        self._wake.set()

    async def _on_snapshot(
        self, peer: str, meta: SnapshotMetadata, path: Path, msg: Message
    ) -> None:
        """A verified snapshot file arrived: adopt it into the store, then let the core
        decide (it may be stale). The file must be consumed before we return."""
        try:
            await trio.to_thread.run_sync(self.storage.snapshot_store.adopt_file, meta, path)
        except OSError as exc:
            log.warning("%s: cannot adopt snapshot from %s: %s", self.namespace, peer, exc)
            return
        self._inbox.append(
            Message(
                MessageType.SNAP,
                to=msg.to,
                frm=msg.frm,
                term=msg.term,
                snapshot=Snapshot(metadata=meta),
            )
        )
        self._wake.set()

    # -- public API --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The schema of ``raftd status -o json`` for one namespace."""
        node = self.node
        st = node.status() if node is not None else None
        role = "stopped"
        if st is not None:
            role = {
                StateType.LEADER: "leader",
                StateType.CANDIDATE: "candidate",
                StateType.PRE_CANDIDATE: "candidate",
                StateType.FOLLOWER: "learner" if st.is_learner else "follower",
            }[st.state]
        cs = st.conf_state if st is not None else self.conf
        return {
            "id": self.id,
            "namespace": self.namespace,
            "role": role,
            "term": st.term if st else 0,
            "leader": st.lead if st else "",
            "commit": st.commit if st else 0,
            "applied": self.sm.applied_index(),
            "members": [{"id": v, "voter": True} for v in cs.voters]
            + [{"id": v, "voter": False} for v in cs.learners],
        }

    @property
    def running(self) -> bool:
        """True while the Raft node is open (from :meth:`run` on)."""
        return self.node is not None

    @property
    def is_leader(self) -> bool:
        return self.role == StateType.LEADER

    @property
    def peer_rtt(self) -> Mapping[NodeId, float]:
        """Smoothed round-trip time (seconds) to each peer, measured by heartbeats while
        this node leads: a live, read-only mapping peer id -> seconds. Empty on a
        follower; cleared when this node stops leading, and a peer is dropped when it
        leaves the membership. A peer appears after its first answered heartbeat."""
        return self._rtt.smoothed

    def applied_index(self) -> int:
        return self.sm.applied_index()

    async def wait_leader(self) -> NodeId:
        """Wait until some leader is known; return its id."""
        while self.leader == NONE:
            await self._leader_event.wait()
        return self.leader

    async def wait_state_change(self) -> None:
        """Wait for the next change of role or leader."""
        await self._state_event.wait()

    def state_change_event(self) -> trio.Event:
        """The event set at the next change of role or leader. Taking it is what fixes
        "next": a change after this call sets it, however late the caller waits."""
        return self._state_event

    async def wait_applied(self, index: int) -> None:
        while self.sm.applied_index() < index:
            self._check_usable()
            await self._applied_event.wait()

    def _check_usable(self) -> None:
        if self.failed is not None:
            raise GroupUnavailable(f"{self.namespace}: storage failed: {self.failed}")
        if self._stopping or self.node is None:
            raise GroupUnavailable(f"{self.namespace}: not running")

    async def propose(self, data: bytes, kind: EntryType = EntryType.NORMAL) -> ApplyResult:
        """Leader only: replicate ``data`` and return its apply result once applied here.

        Raises :class:`NotLeader` on a non-leader (so the caller can forward),
        :class:`LeadershipLost` (indeterminate) or :class:`ProposalRejected`.
        Cancel the call to give up waiting (the entry may still commit).
        """
        self._check_usable()
        if not self.is_leader:
            raise NotLeader(self.leader)
        w = _Waiter()
        self._proposals.append((data, kind, w))
        self._wake.set()
        result: ApplyResult = await w.wait()
        return result

    @contextmanager
    def command(self, data: bytes, session: Session) -> Iterator[tuple[CommandProposal, _Waiter]]:
        """Propose a state machine command that carries ``session`` = (client id, seq),
        from any node, as etcd does: a leader appends it, a follower or learner forwards
        it to the leader in a Raft PROP message. ``await proposal.wait(waiter)`` returns
        THIS node's apply result of the entry (so a read here right after sees it).

        The command is proposed again (the same bytes: the state machine deduplicates
        by session) when the leader changes and when nothing was applied within an
        election timeout, until the context exits. Leaving the context gives up waiting;
        ``proposal.sent`` then says whether it may still apply. Raises
        :class:`GroupUnavailable` from ``wait`` when the group fails or stops."""
        p, w = self.command_start(data, session)
        try:
            yield p, w
        finally:
            self.command_stop(session, p, w)

    def command_start(
        self,
        data: bytes,
        session: Session,
        callback: Callable[[_Waiter], None] | None = None,
    ) -> tuple[CommandProposal, _Waiter]:
        """:meth:`command` without a context: the caller must call :meth:`command_stop`
        with the same arguments once it stops waiting (after the result, or to give up).
        With ``callback``, the result is delivered by calling it on the group's task
        (see :class:`_Waiter`) instead of by ``await proposal.wait(waiter)``: a request
        needs no task of its own to wait for its write."""
        self._check_usable()
        p = self._commands.get(session)
        if p is None:
            p = self._commands[session] = CommandProposal(data)
            self._commands_due.append(session)
            self._wake.set()
        w = _Waiter(callback=callback)
        p.waiters.append(w)
        return p, w

    def command_stop(self, session: Session, p: CommandProposal, w: _Waiter) -> None:
        """Stop waiting on a command started with :meth:`command_start` (idempotent)."""
        if w in p.waiters:
            p.waiters.remove(w)
        if not p.waiters and self._commands.get(session) is p:
            del self._commands[session]

    async def propose_conf_change(self, cc: ConfChange) -> ConfState:
        """Leader only: one single-server membership change; returns the new membership."""
        await self.propose(cc.encode(), EntryType.CONF_CHANGE)
        return self.conf

    async def read_barrier(self) -> int:
        """Linearizable read point (ReadIndex, thesis §6.4). Returns once this node's
        state machine has applied everything committed before the call; then local reads
        are linearizable. Works on followers and learners (asks the leader)."""
        return await self._read_index(index_only=False)

    async def read_index(self) -> int:
        """The leader's commit index, confirmed by a ReadIndex round (thesis §6.4) that
        starts after the call: every entry committed before the call has an index <= the
        result. Unlike :meth:`read_barrier`, it does not wait for this node to apply that
        index, so ``result - applied_index()`` is how far this node is behind.

        Raises :class:`NotLeader` when no leader is known or the leader is lost while
        asking (retry later), :class:`GroupUnavailable` when the group cannot serve."""
        return await self._read_index(index_only=True)

    def read_barrier_start(self, callback: Callable[[_Waiter], None]) -> None:
        """:meth:`read_barrier` without a waiting task: ``callback(waiter)`` runs on the
        group's task once ``waiter.result`` (the read index, applied here) or
        ``waiter.error`` (:class:`NotLeader`, :class:`GroupUnavailable`) is set. Raises
        :class:`NotLeader` at once when no leader is known."""
        self._check_usable()
        if self.leader == NONE:
            raise NotLeader(NONE)
        self._read_waiters.append(_Waiter(callback=callback))
        self._wake.set()

    async def _read_index(self, *, index_only: bool) -> int:
        self._check_usable()
        if self.leader == NONE:
            raise NotLeader(NONE)
        w = _Waiter(index_only=index_only)
        self._read_waiters.append(w)
        self._wake.set()
        index: int = await w.wait()
        return index

    def transfer_leader(self, target: NodeId) -> None:
        self._check_usable()
        self._transfers.append(target)
        self._wake.set()

    def campaign(self) -> None:
        self._check_usable()
        self._reports.append(("campaign", NONE, True))
        self._wake.set()

    def add_conf_listener(self, fn: Callable[[ConfChange, ConfState], None]) -> None:
        self._on_conf_change.append(fn)

    def add_answer_listener(self, begin: Callable[[], None], end: Callable[[], None]) -> None:
        """Call ``begin()`` before the waiters of one Ready's applied entries and released
        reads are given their results, and ``end()`` after (also when applying raises),
        with no checkpoint in between: a listener may hold the answers those waiters
        send and write them together."""
        self._answer_listeners.append((begin, end))

    def add_leader_listener(self, fn: Callable[[NodeId], None]) -> None:
        self._on_leader_change.append(fn)

    # -- running ----------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Storage failures stop the group (it steps down by
        stopping; peers elect another leader) and are re-raised as GroupUnavailable."""
        self.node = self._open_node()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._ticker)
                task_status.started()
                try:
                    await self._loop()
                finally:
                    # An image being written is abandoned (at its next chunk), so
                    # that the group stops without waiting for the whole state.
                    if self._snapshot_job is not None:
                        self._snapshot_job.cancel()
        finally:
            self._stopping = True
            self._fail_all(GroupUnavailable(f"{self.namespace}: group stopped"))

    async def _ticker(self) -> None:
        """Counts ticks. Busy, the loop has it wake at every tick boundary. While the loop
        sleeps, the ticker sleeps through the ticks that would only advance the timers
        (between heartbeats, before an election timeout: :meth:`RawNode.ticks_are_quiet`)
        and wakes at the first one that acts (:meth:`_plan_ticks`); the quiet ones are
        then counted together and stepped before anything else (:meth:`_count_ticks`).

        Reports each wake-up's lateness to the daemon's
        :class:`~raftd.runtime.watchdog.LoopWatchdog`, which then needs no wake-ups of
        its own while a group runs."""
        interval = self.preset.tick_s
        self._next_tick = trio.current_time() + interval
        while True:
            with trio.CancelScope(deadline=self._next_tick + self._planned * interval) as sc:
                self._tick_scope = sc
                await trio.sleep_forever()
            self.stats.ticker_wakeups += 1
            now = trio.current_time()
            if self._watchdog is not None:
                self._watchdog.timer_fired(now - sc.deadline)
            self._count_ticks(now)
            self.stats.ticks = self._ticks_total
            landed = self._persist_landed
            if landed is not None and now - self._persist_since >= interval:
                landed.set()

    def _count_ticks(self, now: float) -> None:
        """Count the tick boundaries passed by ``now``, by the plan (see :meth:`_ticker`).

        The tick that acts (or, without a plan, the next one) has passed: count it and the
        planned quiet ones before it, and wake the loop. More than a tick late, the
        process was held up (a starved CPU): count one tick for the whole wait and start
        again from now, as a ticker woken at every tick would (it does not burst ticks).
        Only quiet ticks passed (an input woke the loop first): count those. Either way
        the ticker wakes at every tick boundary again until the loop plans anew."""
        if self._tick_scope is None:
            return  # the ticker has not started
        interval = self.preset.tick_s
        planned = self._planned
        due = self._next_tick + planned * interval
        if now >= due:
            self._planned = 0
            self._tick_late = now - due
            if now - due > interval:
                self._ticks_total += 1
                self._next_tick = now + interval
            else:
                self._ticks_total += planned + 1
                self._quiet_ticks += planned
                self._next_tick = due + interval
            self._ticks += 1
            self._wake.set()
        elif planned:
            passed = 0
            if now >= self._next_tick:
                passed = min(planned, int((now - self._next_tick) / interval) + 1)
            self._planned = 0
            self._next_tick += passed * interval
            self._ticks_total += passed
            self._quiet_ticks += passed
        else:
            return
        self._tick_scope.deadline = self._next_tick

    def _plan_ticks(self, node: RawNode) -> None:
        """The loop is about to sleep: let the ticker sleep through the quiet ticks."""
        if self._ticks or self._commands or self._planned or self._tick_scope is None:
            return
        q = node.quiet_ticks(self.MAX_QUIET_TICKS)
        if q:
            self._planned = q
            self._tick_scope.deadline = self._next_tick + q * self.preset.tick_s

    async def _loop(self) -> None:
        node = self.node
        assert node is not None
        while True:
            if not self._has_input() and not node.has_ready() and not self._snapshot_work_pending():
                self._plan_ticks(node)
                if node.commit_lingers():
                    # The next proposal's appends would carry the new commit index to
                    # the followers; if none comes soon, send it on its own.
                    with trio.move_on_after(self.COMMIT_LINGER_S):
                        await self._wake.wait()
                    if not self._wake.is_set():
                        node.flush_commit()
                        continue
                else:
                    await self._wake.wait()
                self.stats.loop_wakeups += 1
                now = trio.current_time()
                if self._watchdog is not None:
                    self._watchdog.loop_ran(now)
                # Before anything else: nothing was stepped since these ticks passed.
                self._count_ticks(now)
                self._step_quiet_ticks(node)
            if self._ticks and node.timeout_due() and self._read_before_timeout(node):
                # Before a timeout fires, let the transport read what is queued in the
                # sockets: after a stall, the heartbeats are there, not missing.
                self.stats.reads_before_timeout += 1
                for _ in range(self.READ_ROUNDS_BEFORE_TIMEOUT):
                    await trio.lowlevel.checkpoint()
            self._wake = trio.Event()
            self._take_inputs(node)
            while node.has_ready():
                rd = node.ready()
                try:
                    await self._handle_ready(node, rd)
                except StorageWriteError as exc:
                    self.failed = exc
                    log.error(
                        "%s: storage write failed, stopping this group (no more "
                        "acknowledgements): %s",
                        self.namespace,
                        exc,
                    )
                    self._fail_all(GroupUnavailable(f"storage failed: {exc}"))
                    raise GroupUnavailable(f"{self.namespace}: storage failed: {exc}") from exc
                node.advance(rd)
            await self._maybe_snapshot(node)
            if self._has_input() or node.has_ready() or self._snapshot_work_pending():
                # Let other tasks (API handlers, transport) run between batches. With
                # nothing queued, waiting for input (above) lets them run anyway.
                await trio.lowlevel.checkpoint()

    def _read_before_timeout(self, node: RawNode) -> bool:
        """Whether the tick about to end an election timeout should wait for the
        transport's readers first. A follower or candidate always does (it is about to
        campaign: rare, and a heartbeat read late would make the campaign needless). A
        leader's timeout is its quorum check, at every election timeout: it needs one
        answer from each of a quorum over the whole timeout, and its answers were
        stepped as they came unless the process was held up, so it reads first only
        when the tick that ends the timeout came at least half a tick late (a stall,
        a starved CPU). Each read round is one more pass of the scheduler and of this
        loop: on an idle leader of the ``local`` preset they were 6 of the loop's 16
        passes a second."""
        if node.state != StateType.LEADER:
            return True
        return self._tick_late >= self.preset.tick_s / 2

    def _has_input(self) -> bool:
        return bool(
            self._inbox
            or self._reports
            or self._proposals
            or self._read_waiters
            or self._transfers
            or self._ticks
        )

    def _step_quiet_ticks(self, node: RawNode) -> None:
        """Step the ticks counted while the loop slept (see :meth:`_ticker`)."""
        n, self._quiet_ticks = self._quiet_ticks, 0
        for _ in range(n):
            node.tick()

    def _take_inputs(self, node: RawNode) -> None:
        # Messages before ticks: a heartbeat that queued up while this loop was held up
        # resets the election timer before the ticks of that wait are counted.
        # The order and the bound are :mod:`raftd.core.wakeup`'s, shared with the
        # simulator's stalled-node fault.
        self._step_quiet_ticks(node)
        ticks, self._ticks = self._ticks, 0
        wakeup.step_wakeup(node, self._inbox, ticks, self._step_failed)
        if ticks and self._commands:
            self._resend_due_commands(node)
        while self._reports:
            kind, peer, ok = self._reports.popleft()
            if kind == "unreachable":
                node.report_unreachable(peer)
                if peer == node.lead and node.state == StateType.FOLLOWER:
                    node.report_leader_unreachable()
            elif kind == "snapshot":
                node.report_snapshot(peer, ok)
            elif kind == "campaign":
                node.campaign()
        while self._transfers:
            node.transfer_leader(self._transfers.pop(0))
        self.stats.campaigns = node.campaigns
        if self._proposals:
            self._propose_all(node)
        if self._commands_due:
            self._propose_commands(node)
        if self._read_waiters:
            # Taken first: a waiter's callback may ask for the next round at once.
            waiters, self._read_waiters = self._read_waiters, []
            if node.lead == NONE:
                for w in waiters:
                    w.fail(NotLeader(NONE))
            else:
                ctx = f"{self.id}:{next(self._read_seq)}".encode()
                self._reads_in_flight[ctx] = waiters
                node.read_index(ctx)

    def _step_failed(self, m: Message, exc: Exception) -> None:
        log.error(
            "%s: stepping %s from %s failed",
            self.namespace,
            m.type.name,
            m.frm,
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    def _propose_all(self, node: RawNode) -> None:
        props, self._proposals = self._proposals, []
        term = node.term
        # Consecutive normal entries go in one batch; conf changes one at a time.
        i = 0
        while i < len(props):
            data, kind, w = props[i]
            if kind == EntryType.CONF_CHANGE:
                try:
                    idx = node.propose_conf_change(ConfChange.decode(data))
                except ProposalDroppedError as exc:
                    w.fail(self._drop_error(node, exc))
                else:
                    self._pending[idx] = (term, w)
                i += 1
                continue
            j = i
            while j < len(props) and props[j][1] == EntryType.NORMAL:
                j += 1
            batch = props[i:j]
            try:
                last = node.propose_batch([d for d, _, _ in batch])
            except ProposalDroppedError as exc:
                err = self._drop_error(node, exc)
                for _, _, bw in batch:
                    bw.fail(err)
            else:
                first = last - len(batch) + 1
                for k, (_, _, bw) in enumerate(batch):
                    self._pending[first + k] = (term, bw)
            i = j

    def _propose_commands(self, node: RawNode) -> None:
        due, self._commands_due = self._commands_due, []
        props = [p for k in due if (p := self._commands.get(k)) is not None]
        if not props:
            return
        try:
            node.propose_anywhere([p.data for p in props])
        except ProposalDroppedError:
            # No leader now, or a transfer in progress: tried again at the next leader
            # change or timeout (the proposals stay in the table).
            return
        now = self.clock()
        lead = (node.lead, node.term)
        if lead[0] != self.id:
            self.stats.proposals_forwarded += len(props)
        for p in props:
            p.sent = True
            p.last_try = now
            p.leader_at_try = lead

    def _resend_due_commands(self, node: RawNode) -> None:
        """Once a tick: propose again what a leader change or an election timeout
        without an apply may have lost."""
        now = self.clock()
        lead = (node.lead, node.term)
        # A leader's own append is in its log until a new term: only a forwarded
        # proposal can be lost silently (dropped on the way, refused in a transfer).
        forwarded = lead[0] != self.id
        limit = self.preset.election_s
        queued = set(self._commands_due)
        ignored: list[Session] = []
        for k, p in self._commands.items():
            if k in queued:
                continue
            if p.leader_at_try != lead:
                p.unanswered = 0
            elif forwarded and now - p.last_try > limit:
                p.unanswered += 1
                if p.unanswered >= self.IGNORED_AFTER:
                    ignored.append(k)
                    continue
            else:
                continue
            if p.sent:
                self.stats.proposals_resent += 1
            self._commands_due.append(k)
        for k in ignored:
            err = ProposalsIgnored(lead[0])
            for w in tuple(self._commands.pop(k).waiters):
                w.fail(err)

    #: Scheduler rounds given to the transport's readers before an election timeout or
    #: a check-quorum is counted (socket -> Noise/Yamux -> frame reader -> inbox).
    READ_ROUNDS_BEFORE_TIMEOUT = 3

    #: Quiet ticks the ticker sleeps through at most, at once.
    MAX_QUIET_TICKS = 64

    #: How long a leader holds back an append that would only move a follower's commit
    #: index, for the next proposal's appends to carry it (one message and one answer
    #: fewer per write at low load). A follower waiting to answer a write it forwarded
    #: gets the commit index at once; others see a write applied at most this much later.
    COMMIT_LINGER_S = 0.002

    #: Election timeouts without an apply, in one leader's term, before a forwarded
    #: command fails with ProposalsIgnored.
    IGNORED_AFTER = 4

    def _drop_error(self, node: RawNode, exc: ProposalDroppedError) -> GroupError:
        if node.state != StateType.LEADER:
            return NotLeader(node.lead)
        return ProposalRejected(str(exc))

    def _send(self, msgs: list[Message]) -> None:
        now: float | None = None
        transport = self.transport
        # One batch: each peer's messages go out in one write, from this task when the
        # stream is free (no sender task to wake).
        transport.hold()
        try:
            for m in msgs:
                if m.type == MessageType.SNAP:
                    self._start_snapshot_send(m)
                    continue
                if m.type == MessageType.HEARTBEAT and not m.commit_only:
                    # Only a leader sends them; a quiet one is not answered, so it
                    # cannot be a probe.
                    if now is None:
                        now = self.clock()
                    self._rtt.sent(m.to, now)
                transport.send(m.to, m)
        finally:
            transport.flush()

    async def _handle_ready(self, node: RawNode, rd: Ready) -> None:
        # 0. A leader's appends and heartbeats go out while it persists (they promise
        # nothing about its disk): followers write in parallel with it.
        if rd.early_messages:
            self._send(rd.early_messages)
        # 1. Persist: snapshot, entries and hard state in one fsynced batch. A hard
        # state that only moves the commit index is not written: the commit index needs
        # no durability (a restarted node learns it again from its leader, and
        # everything applied was committed: MetaOnlyStorage raises the stored one to
        # the applied index), and writing it cost a database write and a scheduler
        # round per commit.
        if rd.snapshot is not None or rd.entries or (rd.hard_state is not None and rd.must_sync):
            t0 = time.perf_counter()
            if rd.must_sync and rd.snapshot is None:
                await self._persist(node, rd)
            else:
                # A Ready that only moves the commit index needs no fsync (MustSync) and
                # is written inline; a snapshot install goes to a thread of its own.
                await self.storage.save_async(
                    rd.hard_state, rd.entries, rd.snapshot, sync=rd.must_sync
                )
            self._observe(self.stats.fsync_seconds, time.perf_counter() - t0)
            if rd.snapshot is not None:
                # The restore runs on a worker thread; the listeners it notifies (watch
                # and lease timers, trio events) must be called from this one.
                self.sm.hold_notifications()
                try:
                    nbytes = await self.storage.run_writes_off_loop(
                        restore_pending_install, self.storage, self.sm
                    )
                finally:
                    self.sm.release_notifications()
                if nbytes is not None and self._snapshotter is not None:
                    self._snapshotter.installed(nbytes, self.clock())
                self.stats.snapshots_installed += 1
                self.conf = rd.snapshot.metadata.conf_state
                self._applied_event.set()
                self._applied_event = trio.Event()
        # 2. Send (only after persisting: votes and acks promise durable state).
        self._send(rd.messages)
        # 3. Apply. The state machine writes on the event loop: first let any write
        # another namespace handed to another thread (a log save, a compaction, a
        # restore) land, since the database would queue this one behind it, fsync
        # included, with the whole loop waiting.
        if rd.committed_entries:
            await self.storage.off_loop_writes_done()
        for begin, _ in self._answer_listeners:
            begin()
        try:
            if rd.committed_entries:
                t0 = time.perf_counter()
                self._apply(node, rd.committed_entries)
                self._observe(self.stats.apply_seconds, time.perf_counter() - t0)
            if rd.read_states:
                for rs in rd.read_states:
                    waiters = self._reads_in_flight.pop(rs.context, None)
                    if waiters:
                        wait_apply = []
                        for w in waiters:
                            if w.index_only:
                                w.set(rs.index)
                            else:
                                wait_apply.append(w)
                        if wait_apply:
                            self._reads_ready.append((rs.index, wait_apply))
            self._release_reads()
        finally:
            for _, end in self._answer_listeners:
                end()
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.state)

    async def _persist(self, node: RawNode, rd: Ready) -> None:
        """Write ``rd``'s entries and hard state durably without stopping Raft.

        The fsync runs in the database's writer thread. Once it has taken longer than a tick
        (seen at the next tick boundary), the loop keeps stepping inputs while it waits: a
        follower reads the heartbeats queued behind its slow disk (and so does not time out
        its leader), and a leader counts its followers' acknowledgements and sends its
        appends and heartbeats (:meth:`RawNode.take_early_messages`), so two healthy
        followers keep committing. Acknowledgements and votes still wait for their own
        persist. A leader whose persist is still outstanding after
        ``STUCK_PERSIST_FRACTION`` of an election timeout, while its own event loop keeps
        time and the process was not held off the CPU
        (:class:`~raftd.runtime.starvation.CpuStarvation`: so the disk is slow, not the
        CPU), hands leadership to the most caught-up voter (one with a slow disk of its own
        lags in acknowledgements, so it is not picked)."""
        box: list[outcome.Outcome[None]] = []
        landed = trio.Event()

        def done(result: outcome.Outcome[None]) -> None:
            box.append(result)
            landed.set()
            self._wake.set()

        self.storage.save_submit(rd.hard_state, rd.entries, done)
        since = self.clock()
        ticks0 = self._ticks_total
        stuck_at = since + self.preset.election_s * self.STUCK_PERSIST_FRACTION
        # A normal fsync: inputs wait and are batched after it, as without a writer.
        # A slow one: the ticker ends this wait at the first tick boundary at least a
        # tick after the submit (so after one to two ticks; no timer of its own).
        self._persist_landed, self._persist_since = landed, trio.current_time()
        try:
            await landed.wait()
        finally:
            self._persist_landed = None
        if box:
            box[0].unwrap()
            return
        self.stats.slow_persists += 1
        slow_since = self.clock()
        held0 = self._starvation.held_off_s()
        handed_over = False
        while not box:
            self._wake = trio.Event()
            if self._has_input():
                self._take_inputs(node)
            else:
                await self._wake.wait()
                continue
            now = self.clock()
            if not handed_over and now >= stuck_at and node.state == StateType.LEADER:
                # At most once per tick: reading the counters costs a few file reads.
                stuck_at = now + self.preset.tick_s
                disk_stuck = self._disk_to_blame(now - since, ticks0, now - slow_since, held0)
            else:
                disk_stuck = False
            if disk_stuck:
                handed_over = True
                target = node.most_caught_up_voter()
                if target is not None:
                    log.warning(
                        "%s: persist outstanding for %.2fs: handing leadership to %s",
                        self.namespace,
                        now - since,
                        target,
                    )
                    self.stats.stuck_persist_handovers += 1
                    node.transfer_leader(target)
            early = node.take_early_messages()
            if early:
                self._send(early)
        box[0].unwrap()

    def _disk_to_blame(self, waited: float, ticks0: int, window: float, held0: float) -> bool:
        """Whether a persist outstanding for ``waited`` seconds is the disk's fault, not
        the CPU's: the ticker kept time during the wait, and the process was held off the
        CPU for less than half of the last ``window`` seconds. A starved or throttled
        process keeps its leadership: handing it over would only add an election."""
        expected = waited / self.preset.tick_s
        kept_time = self._ticks_total - ticks0 >= 0.8 * expected - 1
        held = self._starvation.held_off_s() - held0
        return kept_time and held < 0.5 * window

    #: The Raft loop makes a snapshot's image in slices of about this long (at least
    #: one chunk of 64 KiB, about 1.5 ms of work) between its batches.
    SNAPSHOT_SLICE_S = 0.002

    #: The log behind a new snapshot is compacted this many entries at a time (one
    #: LevelDB batch of deletes each, ~10 ms), one step per pass of the Raft loop.
    COMPACT_STEP_ENTRIES = 5_000

    #: A leader's persist outstanding for this fraction of an election timeout hands
    #: leadership over (see :meth:`_persist`).
    STUCK_PERSIST_FRACTION = 0.25

    @staticmethod
    def _observe(samples: list[float], value: float) -> None:
        samples.append(value)
        if len(samples) > 4096:
            del samples[:2048]

    def _apply(self, node: RawNode, entries: list[Entry]) -> None:
        batch: list[tuple[int, bytes]] = []
        results: dict[int, ApplyResult] = {}

        def flush() -> None:
            if batch:
                for r in self.sm.apply_many(batch):
                    results[r.index] = r
                batch.clear()

        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                flush()
                cc = ConfChange.decode(e.data)
                cs = node.apply_conf_change(cc)
                # Persist the membership before the state machine moves past the entry:
                # after a crash in between, the entry is applied again (idempotently).
                self.storage.set_conf_state(cs)
                self.conf = cs
                if cc.node_id not in cs.voters and cc.node_id not in cs.learners:
                    self._rtt.forget(cc.node_id)
                for r in self.sm.apply_many([(e.index, b"")]):
                    results[r.index] = r
                for fn in self._on_conf_change:
                    fn(cc, cs)
            else:
                batch.append((e.index, e.data))
        flush()
        if self._snapshotter is not None:
            self._snapshotter.note_applied(sum(len(e.data) for e in entries))
        if self._commands:
            for r in results.values():
                if r.session is not None:
                    p = self._commands.pop(r.session, None)
                    if p is not None:
                        for w in tuple(p.waiters):  # a callback may leave the list
                            w.set(r)
                        self.stats.proposals_ok += 1
        for e in entries:
            pending = self._pending.pop(e.index, None)
            if pending is None:
                continue
            term, w = pending
            if term != e.term:
                w.fail(LeadershipLost("the entry was replaced by a new leader's"))
                self.stats.proposals_failed += 1
            else:
                w.set(results.get(e.index))
                self.stats.proposals_ok += 1
        self._applied_event.set()
        self._applied_event = trio.Event()

    def _release_reads(self) -> None:
        if not self._reads_ready:
            return
        applied = self.sm.applied_index()
        keep = []
        for index, waiters in self._reads_ready:
            if applied >= index:
                for w in waiters:
                    w.set(index)
            else:
                keep.append((index, waiters))
        self._reads_ready = keep

    def _on_soft_state(self, leader: NodeId, state: StateType) -> None:
        self._state_event.set()
        self._state_event = trio.Event()
        was_leader = self.role == StateType.LEADER
        self.role = state
        if leader != self.leader:
            self.leader = leader
            self.stats.leader_changes += 1
            for fn in self._on_leader_change:
                fn(leader)
        if leader != NONE:
            self._leader_event.set()
            self._leader_event = trio.Event()
        if was_leader and state != StateType.LEADER:
            # Only a leader measures RTTs; a former leader's numbers would go stale.
            self._rtt.clear()
            err = LeadershipLost("leadership lost before the entry was applied")
            pending, self._pending = self._pending, {}
            for _, w in pending.values():
                w.fail(err)
            self.stats.proposals_failed += len(pending)
        if state != StateType.LEADER or leader == NONE:
            # Reads in flight through a leader that is gone will never be answered.
            in_flight, self._reads_in_flight = self._reads_in_flight, {}
            for waiters in in_flight.values():
                for w in waiters:
                    w.fail(NotLeader(leader))

    def _fail_all(self, err: BaseException) -> None:
        """Fail every waiter with ``err``. Each container is emptied before its waiters
        are failed: a waiter's callback runs here and may stop waiting
        (:meth:`command_stop`) or start anew."""
        pending, self._pending = self._pending, {}
        for _, w in pending.values():
            w.fail(err)
        proposals, self._proposals = self._proposals, []
        for _, _, w in proposals:
            w.fail(err)
        commands, self._commands = self._commands, {}
        self._commands_due.clear()
        for p in commands.values():
            for w in tuple(p.waiters):  # a callback may leave the list
                w.fail(err)
        waiters, self._read_waiters = self._read_waiters, []
        for w in waiters:
            w.fail(err)
        in_flight, self._reads_in_flight = self._reads_in_flight, {}
        for waiters in in_flight.values():
            for w in waiters:
                w.fail(err)
        ready, self._reads_ready = self._reads_ready, []
        for _, waiters in ready:
            for w in waiters:
                w.fail(err)
        self._applied_event.set()

    # -- snapshots --------------------------------------------------------------------------
    def _start_snapshot_send(self, m: Message) -> None:
        if m.to in self._snapshot_senders or self._nursery is None or m.snapshot is None:
            self._reports.append(("snapshot", m.to, False))
            return
        self._snapshot_senders.add(m.to)
        self._nursery.start_soon(self._send_snapshot, m)

    async def _send_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        meta = m.snapshot.metadata
        ok = False
        try:
            source = self.storage.snapshot_store.source(meta.term, meta.index)
            ok = await self.transport.send_snapshot(m.to, meta, source, message=m)
            if ok:
                self.stats.snapshots_sent += 1
        except Exception as exc:
            log.warning("%s: snapshot to %s failed: %s", self.namespace, m.to, exc)
        finally:
            self._snapshot_senders.discard(m.to)
            self._reports.append(("snapshot", m.to, ok))
            self._wake.set()

    async def _maybe_snapshot(self, node: RawNode) -> None:
        """Take a snapshot when the policy says so, and an image when a follower needs
        one, without holding the Raft loop.

        A snapshot the policy asks for has no image (:meth:`Snapshotter.begin_state`):
        a worker thread makes the state machine durable (:meth:`_flush_state`), then
        this loop records it and compacts the log behind it, a step at a time.

        An image is made when the core wants to send one and none serves
        (:attr:`MetaOnlyStorage.image_wanted`): the state machine's view is frozen here;
        this loop makes the image's chunks a slice at a time (``SNAPSHOT_SLICE_S``)
        between its batches and a worker thread writes them (:meth:`_write_snapshot`);
        once written, this loop records it as the current snapshot."""
        s = self._snapshotter
        if s is None:
            return
        if s.compaction_pending():
            await s.compact_step_async(self.COMPACT_STEP_ENTRIES)
            return
        state_meta = self._state_snapshot
        if state_meta is not None:
            flushed = self._state_result
            if flushed is None:
                return  # still flushing
            self._state_snapshot = self._state_result = None
            flushed.unwrap()  # a failed flush fails the group, as a failed write does
            now = self.clock()
            if await s.finish_state_async(state_meta, now):
                self.stats.snapshots_taken += 1
                log.info(
                    "%s: snapshot at index %d (term %d), no image (state flushed in "
                    "%.3fs); compacting the log up to %d",
                    self.namespace,
                    state_meta.index,
                    state_meta.term,
                    now - self._snapshot_began,
                    s.compact_to,
                )
            return
        job = self._snapshot_job
        if job is not None:
            result = self._snapshot_result
            if result is None:
                job.feed(self.SNAPSHOT_SLICE_S)
                return  # still writing
            self._snapshot_job = self._snapshot_result = None
            if isinstance(result, outcome.Error):
                self.stats.snapshot_failures += 1
                s.failed(self.clock())
                log.error(
                    "%s: snapshot at index %d not written (retrying in %.0fs): %s",
                    self.namespace,
                    job.meta.index,
                    s.policy.interval_s,
                    result.error,
                )
                return
            written = self.clock()
            meta = await s.finish_async(job, written, compact=False)
            if self._meta_storage is not None:
                # Asked for again while it was made; if it does not serve, the core
                # asks again.
                self._meta_storage.image_wanted = False
            if meta is not None:
                self.stats.snapshot_images += 1
                log.info(
                    "%s: snapshot image at index %d (term %d): %d bytes written in %.3fs",
                    self.namespace,
                    meta.index,
                    meta.term,
                    job.nbytes,
                    written - self._snapshot_began,
                )
            return
        if self.storage.pending_install() is not None or self._nursery is None:
            return
        now = self.clock()
        ms = self._meta_storage
        wanted = ms is not None and ms.image_wanted
        # While an image is on its way to a follower, the log behind it stays: the
        # follower continues from the entries after it.
        if not wanted and (self._snapshot_senders or not s.due(now)):
            return
        # Never snapshot past what the log holds durably (the state machine can only
        # be ahead of the log right after a snapshot install, which is then the point).
        if self.sm.applied_index() > self.storage.last_index():
            return
        if ms is not None and wanted:
            if self.role != StateType.LEADER:
                ms.image_wanted = False  # wanted by this node's leadership, now over
            elif now >= s.retry_at:
                ms.image_wanted = False
                self._begin_image(s, node, now)
            return
        meta = s.begin_state(node.conf_state())
        if meta is None:
            return
        self._state_snapshot = meta
        self._snapshot_began = now
        self._nursery.start_soon(self._flush_state)

    async def _flush_state(self) -> None:
        """Make the state machine durable in a worker thread, then wake the Raft loop to
        record the snapshot without an image. Counted as a write off the loop: an apply
        waits for it (yielding) rather than queue behind it inside LevelDB."""
        try:
            await self.storage.run_writes_off_loop(self.sm.make_durable)
            result: outcome.Outcome[None] = outcome.Value(None)
        except StorageWriteError as exc:
            result = outcome.Error(exc)
        self._state_result = result
        self._wake.set()

    def _begin_image(self, s: Snapshotter, node: RawNode, now: float) -> None:
        """Start making an image of the state machine at its applied index (the current
        snapshot's, if nothing was applied since)."""
        assert self._nursery is not None
        job = s.begin(node.conf_state(), fed=True)
        if job is None:
            return
        token = trio.lowlevel.current_trio_token()

        def on_room() -> None:
            # The writer thread took a chunk from a queue this loop found full.
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(self._wake_loop)

        job.on_room = on_room
        self._snapshot_job = job
        self._snapshot_began = now
        self._nursery.start_soon(self._write_snapshot, s, job)
        job.feed(self.SNAPSHOT_SLICE_S)

    def _wake_loop(self) -> None:
        self._wake.set()

    def _snapshot_work_pending(self) -> bool:
        """A snapshot's image to make or to start, or its log to compact: work for the
        loop even without input."""
        s = self._snapshotter
        if s is not None and s.compaction_pending():
            return True
        ms = self._meta_storage
        if (
            ms is not None
            and ms.image_wanted
            and self._snapshot_job is None
            and self._state_snapshot is None
            and (s is None or s.retry_at <= self.clock())
        ):
            return True
        job = self._snapshot_job
        return job is not None and self._snapshot_result is None and job.wants_feed()

    async def _write_snapshot(self, s: Snapshotter, job: SnapshotJob) -> None:
        """Write ``job``'s image in a worker thread, then wake the Raft loop to record it."""
        try:
            await trio.to_thread.run_sync(s.write, job)
            result: outcome.Outcome[None] = outcome.Value(None)
        except (StorageWriteError, SnapshotCancelled) as exc:
            result = outcome.Error(exc)
        finally:
            # On this thread: the loop makes the chunks from the view here too.
            job.close()
        if self._snapshot_job is job:
            self._snapshot_result = result
            self._wake.set()


def default_rng(node_id: NodeId, namespace: str) -> random.Random:
    """Election-timeout randomness: distinct per node and group, not reproducible
    across runs (unlike the simulator, a real cluster wants independent timeouts)."""
    return random.Random(f"{node_id}{namespace}{os.urandom(8).hex()}")


__all__ = [
    "CommandProposal",
    "Group",
    "GroupError",
    "GroupUnavailable",
    "LeadershipLost",
    "MetaOnlyStorage",
    "NotLeader",
    "ProposalRejected",
    "ProposalsIgnored",
    "default_rng",
]
