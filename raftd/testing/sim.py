"""A deterministic, seeded simulator for the pure Raft core.

N RawNodes (plus spare nodes that can join) run over in-memory storage, a virtual clock
(ticks) and a bag of in-flight messages. One seeded ``random.Random`` picks every action
from the fault menu (the ``Next`` relation of raft.tla, and more):

- tick a node; process a node's Ready (persist, then send, then apply, then advance),
  or leave its fsync outstanding for a while (a slow disk): the node keeps stepping
  messages, ticks and proposals meanwhile and sends what ``take_early_messages`` gives;
- deliver ANY in-flight message (so order is arbitrary), drop one, duplicate one;
- partition and heal, isolate the leader;
- stall a node (its process stopped: a starved CPU, SIGSTOP): for a while it is neither
  ticked nor handed messages nor lets its Ready run, while the others go on; the ticks it
  misses are counted and the messages sent to it wait in the bag. When the stall ends it
  reads every message waiting for it and resumes through
  :func:`raftd.core.wakeup.step_wakeup`, the daemon's own policy (messages first, then at
  most two of the missed ticks). The scenario that checks the policy's point (the node
  does not blame others for its own stall) is :mod:`raftd.testing.sim_stall`;
- crash a node (everything not yet persisted is lost) and restart it from what its
  storage holds: hard state, log and snapshot;
- propose, add or remove a voter, add or promote a learner, transfer leadership,
  take a snapshot and compact, start a linearizable read.

After every step the invariants are checked (:class:`Violation` names the broken one):
at most one leader per term; log matching; leader completeness; state machine safety (a
hash chain over applied entries must agree at every index on every node); linearizable
reads see every write acknowledged before they started; term and vote never go backwards,
including across restarts; no committed entry is lost. After the fault phase everything
heals and a leader must commit a new proposal within a bounded number of rounds
(liveness).

Nothing here reads the clock or the global RNG: the same seed replays the same run.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from raftd.core import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
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
from raftd.core.storage import MemoryStorage


class Violation(AssertionError):
    """An invariant was broken. ``invariant`` names it; the message says how."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@dataclass(slots=True)
class SimConfig:
    seed: int
    nodes: int = 3
    steps: int = 1000
    spare: int = 2
    election_tick: int = 10
    heartbeat_tick: int = 1
    # 0: derive from the seed (so a seed sweep covers many flow-control settings).
    max_inflight: int = 0
    max_size_per_msg: int = 0
    liveness_rounds: int = 400


@dataclass(slots=True)
class NodeState:
    """What the simulated application holds for one node."""

    id: NodeId
    storage: MemoryStorage
    raw: RawNode | None = None
    # Volatile state machine: applied index, a hash chain over applied entries, and the
    # ids of applied proposals. Rebuilt from the snapshot and the log on restart.
    applied: int = 0
    chain: int = 0
    props: list[bytes] = field(default_factory=list)
    conf: ConfState = field(default_factory=ConfState)
    # Last persisted hard state (term, vote), to check monotonicity across restarts.
    persisted_term: int = 0
    persisted_vote: NodeId = NONE
    started: bool = False
    reads: dict[bytes, tuple[int, frozenset[bytes]]] = field(default_factory=dict)
    ready_reads: list[tuple[bytes, int]] = field(default_factory=list)
    # A Ready whose persist is still running (a slow disk), finished by a later a_ready.
    outstanding: Ready | None = None
    # A stalled node: steps left until it resumes (0: running), and the ticks it missed.
    stall_left: int = 0
    missed_ticks: int = 0


def _encode_snapshot(chain: int, props: list[bytes]) -> bytes:
    return str(chain).encode() + b"|" + b",".join(props)


def _decode_snapshot(data: bytes) -> tuple[int, list[bytes]]:
    if not data:
        return 0, []
    head, _, rest = data.partition(b"|")
    return int(head), (rest.split(b",") if rest else [])


class Simulator:
    """One seeded run. ``run()`` raises :class:`Violation` on the first broken invariant."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        if not cfg.max_inflight:
            cfg.max_inflight = self.rng.choice([1, 2, 8, 256])
        if not cfg.max_size_per_msg:
            cfg.max_size_per_msg = self.rng.choice([1, 64, 256, 4096])
        # Half the seeds hold back commit-only appends as the daemon does; drawn from a
        # stream of its own so that the other choices of a seed stay what they were.
        self.commit_linger = random.Random(f"{cfg.seed}:linger").random() < 0.5
        self.step_no = 0
        self.ids = [f"n{i}" for i in range(1, cfg.nodes + cfg.spare + 1)]
        voters = tuple(self.ids[: cfg.nodes])
        self.nodes: dict[NodeId, NodeState] = {}
        for nid in self.ids:
            st = MemoryStorage()
            if nid in voters:
                # Bootstrap: every founder starts from the same snapshot at index 1 that
                # holds the initial membership.
                st.apply_snapshot(
                    Snapshot(SnapshotMetadata(index=1, term=1, conf_state=ConfState(voters)))
                )
            self.nodes[nid] = NodeState(id=nid, storage=st)
        self.bag: list[Message] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.faults = True  # off in the liveness phase: no crash inside a Ready then
        # Global knowledge for the invariants.
        self.leaders: dict[int, NodeId] = {}
        self.chain_at: dict[int, int] = {}
        self.term_at: dict[int, int] = {}
        self.entry_at: dict[tuple[int, int], tuple[bytes, int]] = {}
        self.max_applied = 0
        self.next_prop = 0
        self.pending_props: dict[bytes, tuple[NodeId, int]] = {}
        self.acked: set[bytes] = set()
        self.read_seq = 0
        self.stats: dict[str, int] = {}
        for nid in voters:
            self._start(nid)

    # -- node lifecycle ------------------------------------------------------------------
    def _start(self, nid: NodeId) -> None:
        ns = self.nodes[nid]
        ns.started = True
        st = ns.storage
        snap = st.snapshot()
        ns.chain, ns.props = _decode_snapshot(snap.data)
        ns.applied = snap.metadata.index
        ns.conf = snap.metadata.conf_state
        ns.reads = {}
        ns.ready_reads = []
        cfg = Config(
            id=nid,
            storage=st,
            rng=random.Random(f"{self.cfg.seed}:{nid}:{self.step_no}"),
            election_tick=self.cfg.election_tick,
            heartbeat_tick=self.cfg.heartbeat_tick,
            applied=snap.metadata.index,
            max_inflight_msgs=self.cfg.max_inflight,
            max_size_per_msg=self.cfg.max_size_per_msg,
            commit_linger=self.commit_linger,
        )
        ns.raw = RawNode(cfg)
        if ns.raw.raft.term < ns.persisted_term:
            raise Violation("term-monotonic", f"{nid} restarted at term {ns.raw.raft.term}")

    def _crash(self, nid: NodeId) -> None:
        ns = self.nodes[nid]
        ns.raw = None
        ns.stall_left = ns.missed_ticks = 0
        ns.outstanding = None  # its write never landed
        ns.reads = {}
        ns.ready_reads = []

    def alive(self) -> list[NodeId]:
        return [n for n in self.ids if self.nodes[n].raw is not None]

    def running(self) -> list[NodeId]:
        """Alive and not stalled: the nodes whose process runs."""
        return [n for n in self.alive() if not self.nodes[n].stall_left]

    def _running_leader(self) -> NodeId | None:
        ld = self.leader()
        return ld if ld is not None and not self.nodes[ld].stall_left else None

    # -- stalls ----------------------------------------------------------------------------
    def stall(self, nid: NodeId, steps: int) -> None:
        """Stop ``nid``'s process for ``steps`` steps (see the module docstring)."""
        ns = self.nodes[nid]
        if ns.raw is None or steps <= 0:
            return
        ns.stall_left = steps
        ns.missed_ticks = 0
        self.stats["stalls"] = self.stats.get("stalls", 0) + 1

    def resume(self, nid: NodeId) -> int:
        """End ``nid``'s stall: it reads every message waiting for it in the bag (a
        blocked link loses them), then steps them and its missed ticks through the
        daemon's wake-up policy. Returns the ticks stepped."""
        ns = self.nodes[nid]
        raw = ns.raw
        missed = ns.missed_ticks
        ns.stall_left = ns.missed_ticks = 0
        if raw is None:
            return 0
        inbox: deque[Message] = deque()
        keep: list[Message] = []
        for m in self.bag:
            if m.to != nid:
                keep.append(m)
            elif (m.frm, m.to) in self.blocked:
                self._on_lost(m)
            else:
                inbox.append(m)
        self.bag = keep
        snaps = [m.frm for m in inbox if m.type == MessageType.SNAP]
        ticked = wakeup.step_wakeup(raw, inbox, missed)
        for frm in snaps:
            sender = self.nodes[frm].raw
            if sender is not None:
                sender.report_snapshot(nid, True)
        return ticked

    def leader(self) -> NodeId | None:
        best: tuple[int, NodeId] | None = None
        for n in self.alive():
            raw = self.nodes[n].raw
            assert raw is not None
            if raw.raft.state == StateType.LEADER and (best is None or raw.raft.term > best[0]):
                best = (raw.raft.term, n)
        return best[1] if best else None

    # -- Ready handling ------------------------------------------------------------------
    def process_ready(self, nid: NodeId) -> None:
        ns = self.nodes[nid]
        raw = ns.raw
        if raw is None:
            return
        if ns.outstanding is not None:
            rd, ns.outstanding = ns.outstanding, None
            self._finish_ready(ns, raw, rd)
            return
        if not raw.has_ready():
            return
        rd = raw.ready()
        if rd.soft_state is not None and rd.soft_state.state == StateType.LEADER:
            # Checked when the Ready is handed out: while its write is outstanding the
            # node may step down and move to a newer term.
            self._check_new_leader(ns, raw)
        # A leader's appends and heartbeats may leave before its own persist, and it may
        # crash in between: then nothing of this Ready is durable on it.
        for m in rd.early_messages:
            self.bag.append(m)
            if m.type == MessageType.SNAP:
                self.stats["snapshots"] = self.stats.get("snapshots", 0) + 1
        if self.faults and rd.early_messages and rd.entries and self.rng.random() < 0.02:
            self.stats["crash_before_persist"] = self.stats.get("crash_before_persist", 0) + 1
            self._crash(nid)
            return
        if self.faults and rd.must_sync and rd.snapshot is None and self.rng.random() < 0.1:
            # A slow disk: the write stays outstanding across the next steps.
            self.stats["slow_persists"] = self.stats.get("slow_persists", 0) + 1
            ns.outstanding = rd
            return
        self._finish_ready(ns, raw, rd)

    def _finish_ready(self, ns: NodeState, raw: RawNode, rd: Ready) -> None:
        self._persist(ns, rd)
        for m in rd.messages:
            self.bag.append(m)
            if m.type == MessageType.SNAP:
                self.stats["snapshots"] = self.stats.get("snapshots", 0) + 1
        self._apply(ns, raw, rd)
        ns.ready_reads.extend((rs.context, rs.index) for rs in rd.read_states)
        raw.advance(rd)
        self._serve_reads(ns)

    def _persist(self, ns: NodeState, rd: Ready) -> None:
        st = ns.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            meta = rd.snapshot.metadata
            ns.chain, ns.props = _decode_snapshot(rd.snapshot.data)
            ns.applied = meta.index
            ns.conf = meta.conf_state
            self._check_chain(ns.id, meta.index, meta.term, ns.chain, "snapshot")
        if rd.entries:
            for e in rd.entries:
                key = (e.index, e.term)
                known = self.entry_at.get(key)
                if known is not None and known[0] != e.data:
                    raise Violation(
                        "log-matching",
                        f"{ns.id} persisted entry {key} with data {e.data!r}, "
                        f"elsewhere {known[0]!r}",
                    )
                if known is None:
                    self.entry_at[key] = (e.data, -1)
            st.append(rd.entries)
            self._check_log_matching(ns, rd.entries[0].index, rd.entries[-1].index)
        if rd.hard_state is not None:
            hs = rd.hard_state
            if hs.term < ns.persisted_term:
                raise Violation("term-monotonic", f"{ns.id} term {ns.persisted_term} -> {hs.term}")
            if (
                hs.term == ns.persisted_term
                and ns.persisted_vote != NONE
                and hs.vote != ns.persisted_vote
            ):
                raise Violation(
                    "vote-once",
                    f"{ns.id} changed its vote in term {hs.term}: {ns.persisted_vote} -> {hs.vote}",
                )
            ns.persisted_term, ns.persisted_vote = hs.term, hs.vote
            st.set_hard_state(hs)

    def _check_log_matching(self, ns: NodeState, lo: int, hi: int) -> None:
        """Log matching (Raft §5.3): two entries with the same index and term are
        preceded by the same entries. Checked through the (index, term) of each new
        entry's predecessor, which must agree with every other log holding the entry."""
        st = ns.storage
        for i in range(max(lo, st.first_index()), hi + 1):
            t = st.term(i)
            prev = st.term(i - 1) if i - 1 >= st.first_index() - 1 else -1
            data, seen_prev = self.entry_at.setdefault((i, t), (b"", -1))
            if seen_prev == -1:
                self.entry_at[(i, t)] = (data, prev)
            elif prev != -1 and seen_prev != prev:
                raise Violation(
                    "log-matching",
                    f"{ns.id} holds entry (index {i}, term {t}) after term {prev}; "
                    f"another log has it after term {seen_prev}",
                )

    def _apply(self, ns: NodeState, raw: RawNode, rd: Ready) -> None:
        for e in rd.committed_entries:
            if e.index != ns.applied + 1:
                raise Violation("apply-order", f"{ns.id} applied {e.index} after {ns.applied}")
            ns.applied = e.index
            ns.chain = zlib.crc32(e.data + e.term.to_bytes(8, "big"), ns.chain)
            self._check_chain(ns.id, e.index, e.term, ns.chain, "apply")
            if e.type == EntryType.CONF_CHANGE:
                ns.conf = raw.apply_conf_change(ConfChange.decode(e.data))
            elif e.data:
                ns.props.append(e.data)
                owner = self.pending_props.get(e.data)
                if owner is not None and owner[0] == ns.id:
                    self.acked.add(e.data)
                    del self.pending_props[e.data]
            self.max_applied = max(self.max_applied, e.index)

    def _check_chain(self, nid: NodeId, index: int, term: int, chain: int, how: str) -> None:
        seen = self.chain_at.setdefault(index, chain)
        if seen != chain:
            raise Violation(
                "state-machine-safety",
                f"{nid} {how} index {index}: its applied history differs from another node's",
            )
        t = self.term_at.setdefault(index, term)
        if t != term:
            raise Violation(
                "state-machine-safety", f"{nid} applied index {index} at term {term}, not {t}"
            )

    def _check_new_leader(self, ns: NodeState, raw: RawNode) -> None:
        term = raw.raft.term
        other = self.leaders.setdefault(term, ns.id)
        if other != ns.id:
            raise Violation("election-safety", f"two leaders in term {term}: {other}, {ns.id}")
        # Leader completeness (Raft §5.4): it holds every entry applied anywhere.
        log = raw.raft.log
        for i in range(log.first_index(), self.max_applied + 1):
            want = self.term_at.get(i)
            if want is None:
                continue
            got = log.term_or_zero(i)
            if got != want:
                raise Violation(
                    "leader-completeness",
                    f"leader {ns.id} of term {term} has term {got} at committed index {i} "
                    f"(applied elsewhere at term {want})",
                )
        if log.last_index() < self.max_applied:
            raise Violation(
                "leader-completeness",
                f"leader {ns.id} log ends at {log.last_index()} < applied {self.max_applied}",
            )

    def _serve_reads(self, ns: NodeState) -> None:
        keep: list[tuple[bytes, int]] = []
        for ctx, index in ns.ready_reads:
            if ns.applied < index:
                keep.append((ctx, index))
                continue
            start = ns.reads.pop(ctx, None)
            if start is None:
                continue
            _, acked_before = start
            have = set(ns.props)
            missing = acked_before - have
            if missing:
                raise Violation(
                    "linearizable-read",
                    f"read {ctx!r} on {ns.id} at index {index} misses acknowledged "
                    f"write(s) {sorted(missing)[:3]}",
                )
            self.stats["reads"] = self.stats.get("reads", 0) + 1
        ns.ready_reads = keep

    # -- the fault menu ------------------------------------------------------------------
    def _deliver(self, i: int) -> None:
        if self.nodes[self.bag[i].to].stall_left:
            return  # it waits in the bag (the stalled node's socket) until the node resumes
        m = self.bag.pop(i)
        sender = self.nodes[m.frm]
        if (m.frm, m.to) in self.blocked or self.nodes[m.to].raw is None:
            self._on_lost(m)
            return
        raw = self.nodes[m.to].raw
        assert raw is not None
        raw.step(m)
        if m.type == MessageType.SNAP and sender.raw is not None:
            sender.raw.report_snapshot(m.to, True)

    def _on_lost(self, m: Message) -> None:
        sender = self.nodes[m.frm].raw
        if sender is None:
            return
        if m.type == MessageType.SNAP:
            sender.report_snapshot(m.to, False)
        elif m.type == MessageType.APP and self.rng.random() < 0.5:
            sender.report_unreachable(m.to)

    def _members(self) -> ConfState:
        ld = self.leader()
        if ld is None:
            return ConfState()
        raw = self.nodes[ld].raw
        assert raw is not None
        return raw.raft.conf_state()

    def _propose_conf(self, cc: ConfChange) -> None:
        ld = self.leader()
        if ld is None:
            return
        raw = self.nodes[ld].raw
        assert raw is not None
        if cc.node_id not in self.alive() and cc.type != ConfChangeType.REMOVE_NODE:
            self._start(cc.node_id)
        try:
            raw.propose_conf_change(cc)
            self.stats["confchanges"] = self.stats.get("confchanges", 0) + 1
        except ProposalDroppedError:
            pass

    def _action_table(self) -> list[tuple[int, Callable[[], None]]]:
        table = self._base_actions()
        if self.commit_linger:
            table.append((20, self.a_flush_commit))
        return table

    def a_flush_commit(self) -> None:
        """The runtime's linger timer fires: send the held-back commit indexes."""
        lingering = [
            raw
            for n in self.running()
            if (raw := self.nodes[n].raw) is not None and raw.commit_lingers()
        ]
        if lingering:
            self.rng.choice(lingering).flush_commit()
            self.stats["commit_flushes"] = self.stats.get("commit_flushes", 0) + 1

    def _base_actions(self) -> list[tuple[int, Callable[[], None]]]:
        return [
            (30, self.a_tick),
            (40, self.a_ready),
            (10, self.a_early),
            (60, self.a_deliver),
            (4, self.a_drop),
            (2, self.a_duplicate),
            (10, self.a_propose),
            (2, self.a_partition),
            (3, self.a_heal),
            (2, self.a_isolate_leader),
            (2, self.a_crash),
            (3, self.a_restart),
            (1, self.a_conf_change),
            (1, self.a_transfer),
            (1, self.a_compact),
            (3, self.a_read),
            (1, self.a_leader_hint),
            (1, self.a_stall),
        ]

    def a_tick(self) -> None:
        alive = self.alive()
        if alive:
            ns = self.nodes[self.rng.choice(alive)]
            if ns.stall_left:
                ns.missed_ticks += 1  # time passes; the stopped process does not see it
                return
            assert ns.raw is not None
            ns.raw.tick()

    def a_stall(self) -> None:
        running = self.running()
        if running:
            self.stall(self.rng.choice(running), self.rng.randint(5, 300))

    def a_ready(self) -> None:
        ready = [n for n in self.running() if self._has_ready(n)]
        if ready:
            nid = self.rng.choice(ready)
            if self.nodes[nid].outstanding is not None and self.rng.random() < 0.75:
                return  # the slow disk is still syncing
            self.process_ready(nid)

    def _has_ready(self, nid: NodeId) -> bool:
        ns = self.nodes[nid]
        raw = ns.raw
        return raw is not None and (ns.outstanding is not None or raw.has_ready())

    def a_early(self) -> None:
        """A node whose write is outstanding sends what may leave before it lands."""
        slow = [n for n in self.running() if self.nodes[n].outstanding is not None]
        if slow:
            raw = self.nodes[self.rng.choice(slow)].raw
            assert raw is not None
            for m in raw.take_early_messages():
                self.bag.append(m)
                if m.type == MessageType.SNAP:
                    self.stats["snapshots"] = self.stats.get("snapshots", 0) + 1
                self.stats["early_while_persisting"] = (
                    self.stats.get("early_while_persisting", 0) + 1
                )

    def a_deliver(self) -> None:
        if self.bag:
            self._deliver(self.rng.randrange(len(self.bag)))

    def a_drop(self) -> None:
        if self.bag:
            self._on_lost(self.bag.pop(self.rng.randrange(len(self.bag))))

    def a_duplicate(self) -> None:
        if self.bag:
            self.bag.append(self.bag[self.rng.randrange(len(self.bag))])

    def a_propose(self) -> None:
        ld = self._running_leader()
        if ld is None:
            return
        raw = self.nodes[ld].raw
        assert raw is not None
        for _ in range(self.rng.randint(1, 4)):
            self.next_prop += 1
            data = b"p%d" % self.next_prop
            try:
                idx = raw.propose(data)
            except ProposalDroppedError:
                return
            self.pending_props[data] = (ld, idx)

    def a_partition(self) -> None:
        ids = self.ids[:]
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1)
        a, b = ids[:cut], ids[cut:]
        for x in a:
            for y in b:
                self.blocked.add((x, y))
                self.blocked.add((y, x))

    def a_heal(self) -> None:
        self.blocked.clear()

    def a_isolate_leader(self) -> None:
        ld = self.leader()
        if ld is None:
            return
        for y in self.ids:
            if y != ld:
                self.blocked.add((ld, y))
                self.blocked.add((y, ld))

    def a_crash(self) -> None:
        alive = self.alive()
        if alive:
            self._crash(self.rng.choice(alive))

    def a_restart(self) -> None:
        dead = [n for n in self.ids if self.nodes[n].raw is None and self.nodes[n].started]
        if dead:
            self._start(self.rng.choice(dead))

    def a_conf_change(self) -> None:
        cs = self._members()
        ld = self._running_leader()
        if ld is None:
            return
        members = set(cs.members())
        outsiders = [n for n in self.ids if n not in members]
        choice = self.rng.randrange(4)
        if choice == 0 and outsiders:
            self._propose_conf(ConfChange(ConfChangeType.ADD_LEARNER, self.rng.choice(outsiders)))
        elif choice == 1 and cs.learners:
            self._propose_conf(ConfChange(ConfChangeType.ADD_VOTER, self.rng.choice(cs.learners)))
        elif choice == 2 and len(cs.voters) > 3:
            victims = [v for v in cs.voters if v != ld]
            self._propose_conf(ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(victims)))
        elif choice == 3 and outsiders and len(cs.voters) < 7:
            self._propose_conf(ConfChange(ConfChangeType.ADD_VOTER, self.rng.choice(outsiders)))

    def a_transfer(self) -> None:
        ld = self._running_leader()
        if ld is None:
            return
        raw = self.nodes[ld].raw
        assert raw is not None
        voters = [v for v in raw.raft.voters() if v != ld]
        if voters:
            raw.transfer_leader(self.rng.choice(voters))

    def a_compact(self) -> None:
        alive = self.running()
        if not alive:
            return
        ns = self.nodes[self.rng.choice(alive)]
        st = ns.storage
        # Snapshot only what is applied AND persisted in this node's log.
        idx = min(ns.applied, st.last_index())
        if idx <= st.snapshot().metadata.index:
            return
        st.create_snapshot(idx, ns.conf, _encode_snapshot(ns.chain, ns.props))
        keep = self.rng.randint(0, 3)
        st.compact(max(st.first_index(), idx - keep))
        self.stats["compactions"] = self.stats.get("compactions", 0) + 1

    def a_leader_hint(self) -> None:
        """A (possibly false) failure-detector hint that the leader is gone."""
        alive = self.running()
        if alive:
            raw = self.nodes[self.rng.choice(alive)].raw
            assert raw is not None
            raw.report_leader_unreachable()

    def a_read(self) -> None:
        alive = self.running()
        if not alive:
            return
        ns = self.nodes[self.rng.choice(alive)]
        assert ns.raw is not None
        self.read_seq += 1
        ctx = b"%s:%d" % (ns.id.encode(), self.read_seq)
        ns.reads[ctx] = (self.step_no, frozenset(self.acked))
        ns.raw.read_index(ctx)

    # -- driving -------------------------------------------------------------------------
    def step(self) -> None:
        self.step_no += 1
        table = self._action_table()
        total = sum(w for w, _ in table)
        r = self.rng.randrange(total)
        for w, fn in table:
            if r < w:
                fn()
                break
            r -= w
        for nid in self.alive():
            ns = self.nodes[nid]
            if ns.stall_left:
                ns.stall_left -= 1
                if not ns.stall_left:
                    self.resume(nid)
        self._check_committed_not_lost()

    def _check_committed_not_lost(self) -> None:
        """An applied (hence committed) entry must stay in some node's persisted state."""
        i = self.max_applied
        if i == 0:
            return
        t = self.term_at[i]
        for ns in self.nodes.values():
            st = ns.storage
            if st.snapshot().metadata.index >= i:
                return
            if st.first_index() <= i <= st.last_index() and st.term(i) == t:
                return
        raise Violation("durability", f"committed entry {i} (term {t}) is on no node")

    def round(self) -> None:
        """One synchronous round with no faults: tick everyone, deliver everything."""
        for n in self.alive():
            raw = self.nodes[n].raw
            assert raw is not None
            raw.tick()
            if raw.commit_lingers():
                raw.flush_commit()
        for _ in range(50):
            for n in self.alive():
                self.process_ready(n)
            if not self.bag:
                break
            bag, self.bag = self.bag, []
            for m in bag:
                self.bag.append(m)
                self._deliver(len(self.bag) - 1)

    def liveness(self) -> None:
        """Heal everything, restart every member; a new proposal must commit."""
        self.faults = False
        self.blocked.clear()
        for n in self.alive():
            if self.nodes[n].stall_left:
                self.resume(n)
        for n in self.ids:
            if self.nodes[n].started and self.nodes[n].raw is None:
                self._start(n)
        marker: bytes | None = None
        for _ in range(self.cfg.liveness_rounds):
            self.round()
            ld = self.leader()
            if ld is None:
                continue
            if marker is None:
                raw = self.nodes[ld].raw
                assert raw is not None
                try:
                    self.next_prop += 1
                    data = b"p%d" % self.next_prop
                    idx = raw.propose(data)
                    self.pending_props[data] = (ld, idx)
                    marker = data
                except ProposalDroppedError:
                    continue
            elif marker in self.acked:
                return
            elif marker not in self.pending_props:
                marker = None  # lost to a leader change: try again
        raise Violation(
            "liveness",
            f"no proposal committed within {self.cfg.liveness_rounds} rounds after healing",
        )

    def run(self) -> None:
        try:
            for _ in range(self.cfg.steps):
                self.step()
            self.liveness()
        except Violation:
            raise
        except Exception as exc:  # a crash of the core is a violation too
            raise Violation("exception", f"{type(exc).__name__}: {exc}") from exc


def replay_command(cfg: SimConfig) -> str:
    return f"scripts/sim --seeds 1 --start {cfg.seed} --nodes {cfg.nodes} --steps {cfg.steps}"


def run_seed(cfg: SimConfig) -> str | None:
    """Run one seed; None if clean, else a report naming seed, step and replay command."""
    sim = Simulator(cfg)
    try:
        sim.run()
    except Violation as v:
        return f"seed {cfg.seed} step {sim.step_no}: {v}\n  replay: {replay_command(cfg)}"
    return None
