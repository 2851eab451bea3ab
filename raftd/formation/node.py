"""Formation of one namespace on one daemon: :class:`NamespaceFormation`.

It owns the group's lifecycle (the daemon hands it the group unstarted) and runs, in its
own nursery:

- the **control loop**: a node without state looks for a cluster and joins it, or
  founds one (:func:`raftd.formation.decide.decide_fresh`); a node with state runs its
  group; a dissolving node stops its group, wipes it and starts over as a fresh node;
- the **tick loop**: refreshes this node's announcement, keeps the transport's address
  book in step with discovery (one best address per peer: pitfall 3), detects namespace
  conflicts and orphaned state;
- the **peer exchange loop**: talks to new peers at once, to a few random ones every
  heartbeat, and to everyone after a state change;
- the **leader loop**: while this node leads, stores the cluster record, serves join and
  leave requests, dissolves a duplicate cluster, and automates membership (voter cap,
  dead voters, learner garbage collection, leadership hand-off for reachability), one
  membership change at a time;
- the formation protocol endpoint (:class:`raftd.formation.rpc.FormEndpoint`).

Inbound Raft traffic for a node without state is held back (dropped) until a cluster
accepted it, so that a wiped voter never votes with a blank memory before the leader
removed and re-added it; traffic from a cluster that does not list this node as a voter
(an operator added it through the API) opens the gate at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from raftd.core import NONE, ConfChange, ConfChangeType, ConfState, Message, NodeId, PeerProgress
from raftd.discovery.hub import DiscoveryHub
from raftd.discovery.table import PeerTable
from raftd.formation import wire
from raftd.formation.cluster import (
    ClusterRecord,
    has_user_writes,
    new_record,
    read_record,
    record_command,
)
from raftd.formation.config import FormationConfig
from raftd.formation.decide import (
    ClusterSummary,
    FreshView,
    MembershipView,
    PeerHealth,
    can_remove_voter,
    caught_up,
    cluster_vanished,
    conflict_with,
    decide_fresh,
    dissolve_target,
    plan_membership,
    summarize_clusters,
    transfer_target,
)
from raftd.formation.rpc import FormEndpoint
from raftd.formation.wipe import fence_group, finish_pending_wipe, wipe_group
from raftd.formation.wire import (
    BUSY,
    CATCH_UP,
    DISSOLVING,
    FRESH,
    JOINING,
    MEMBER,
    NOT_LEADER,
    OK,
    REFUSED,
    WRONG_CLUSTER,
    JoinRequest,
    LeaveRequest,
    NodeInfo,
    PexEntry,
    PexMessage,
    Reply,
    WireError,
)
from raftd.runtime.group import Group, GroupError
from raftd.storage.leveldb import LevelDB
from raftd.transport.libp2p import Libp2pTransport
from raftd.wire.pb import api_pb2 as apb

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["DISSOLVE_MARKER", "FormationStats", "NamespaceFormation"]

log = logging.getLogger("raftd.formation")

#: The node id of the no-op membership change that marks "this cluster dissolves here".
#: Not a peer id (no peer id contains ':'), so removing it changes nothing.
DISSOLVE_MARKER = "raftd:dissolve"

_PEX_FANOUT = 3
_PUSH_FANOUT = 8
_PEX_ENTRIES = 64
#: Failed exchanges in a row after which a discovered peer no longer holds founding back.
_WRITE_OFF_FAILURES = 3
_FORGET_AFTER = 600.0
_TICKET_TTL = 30.0


@dataclass
class FormationStats:
    """Counters (monotonic) and gauges of one namespace's formation, for metrics."""

    bootstraps: int = 0
    joins: int = 0  # this node was accepted into a cluster
    join_requests: int = 0  # join requests this node handled as leader
    dissolves: int = 0  # this node wiped its state to join a better cluster
    dissolve_markers: int = 0  # dissolutions this node proposed as leader
    conflicts_detected: int = 0
    conflict: int = 0  # gauge: 1 while a namespace conflict is seen
    promotions: int = 0
    demotions: int = 0
    removals: int = 0
    readds: int = 0  # wiped voters removed and re-added
    transfers: int = 0  # leadership hand-offs for reachability
    pex_ok: int = 0
    pex_failed: int = 0
    gate_dropped: int = 0  # raft messages dropped while waiting to be accepted

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Ticket:
    """A join or leave request waiting for the leader loop."""

    node: str
    addrs: tuple[str, ...] = ()
    empty: bool = True
    created: float = 0.0
    reply: Reply | None = None
    done: trio.Event = field(default_factory=trio.Event)

    def resolve(self, reply: Reply) -> None:
        self.reply = reply
        self.done.set()


class _Health:
    """Leader-side liveness of members, from the core's ``recent_active`` flags (set by
    any message from the peer, cleared every election timeout by check-quorum)."""

    def __init__(self) -> None:
        self.since = -math.inf
        self.last: dict[str, float] = {}

    def reset(self, now: float) -> None:
        self.since = now
        self.last.clear()

    def observe(self, prs: Mapping[str, PeerProgress], now: float) -> None:
        for pid, pr in prs.items():
            # A member seen for the first time (just added) starts its clock now, not
            # when this node became leader.
            if pr.recent_active or pid not in self.last:
                self.last[pid] = now

    def silent(self, peer: str, now: float) -> float:
        return now - self.last.get(peer, self.since)


class NamespaceFormation:
    """Discovery-first formation of one namespace (see the module docstring)."""

    def __init__(
        self,
        *,
        namespace: str,
        group: Group,
        transport: Libp2pTransport,
        hub: DiscoveryHub,
        db: LevelDB,
        data_dir: Path,
        envelope: Any,
        config: FormationConfig,
        rng: random.Random | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.ns = namespace
        self.group = group
        self.transport = transport
        self.hub = hub
        self.db = db
        self.data_dir = data_dir
        self.cfg = config
        self.id: NodeId = group.id
        self.table: PeerTable = hub.tables[namespace]
        self._rng = rng or random.Random()
        self._on_change = on_change
        self.endpoint = FormEndpoint(
            hub.host,
            namespace,
            local_id=self.id,
            envelope=envelope,
            table=self.table,
            ranked=hub.ranked,
            handler=self._handle,
            dial_timeout=config.dial_timeout_s,
            read_timeout=config.rpc_timeout_s,
            backoff_cap=config.backoff_cap_s,
        )
        self.keyed = bool(getattr(envelope, "encrypted", False))
        self.stats = FormationStats()
        self.phase = FRESH
        self.record: ClusterRecord | None = None
        self.writes = False
        self.conflict: dict[str, Any] | None = None
        self.decision = ""
        self.running = False
        self._nursery: trio.Nursery | None = None
        self._group_scope: trio.CancelScope | None = None
        self._group_done = trio.Event()
        self._wake = trio.Event()
        self._push = trio.Event()
        self._gate_open = False
        self._accepted = False  # a cluster accepted us (join reply, or its traffic)
        #: First Raft traffic from each sender we had no node info about (the gate).
        self._gate_heard: dict[str, float] = {}
        self._joined_at = -math.inf
        self._fresh_since = 0.0
        self._next_join = -math.inf
        self._founding: ClusterRecord | None = None
        self._record_term = -1
        self._dissolve_into: str | None = None
        self._dissolve_seen: tuple[str, float] | None = None
        self._orphan_since: float | None = None
        self._leaderless: dict[str, float] = {}
        self._candidates: frozenset[str] = frozenset()
        self._candidates_changed = -math.inf
        self._removed_at_start = False
        self._joins: dict[str, _Ticket] = {}
        self._leaves: dict[str, _Ticket] = {}
        self._health = _Health()
        self._was_leader = False
        self._last_transfer = -math.inf
        self._ready_since: float | None = None
        self._info: NodeInfo = NodeInfo(id=self.id, ns=namespace)
        self._info_json: bytes = b""
        self._parsed: dict[str, tuple[dict[str, Any], NodeInfo]] = {}
        group.add_conf_listener(self._on_conf_change)
        group.add_leader_listener(lambda _leader: self._kick())

    # -- small helpers ----------------------------------------------------------------------
    def now(self) -> float:
        return trio.current_time()

    def _kick(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    async def _sleep_or_kick(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._wake.wait()

    def _push_soon(self) -> None:
        """Our announcement changed: tell everyone now, not at the next heartbeat."""
        self._push.set()
        self._kick()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- announcements ----------------------------------------------------------------------
    def _connected(self) -> tuple[str, ...]:
        try:
            conns = self.hub.host.get_network().get_connections_map()
        except Exception:
            return ()
        out = []
        for pid, cs in conns.items():
            s = str(pid)
            if s in self.table and any(not c.is_closed for c in cs):
                out.append(s)
        return tuple(sorted(out))

    def _compute_info(self) -> NodeInfo:
        g = self.group
        rec = self.record
        st = g.node.status() if (self.running and g.node is not None) else None
        state = self.phase
        cs = g.conf
        return NodeInfo(
            id=self.id,
            ns=self.ns,
            addrs=tuple(self.hub.addrs),
            state=state,
            cluster=rec.id if rec is not None and state in (MEMBER, JOINING) else "",
            founded_ms=rec.founded_ms if rec is not None else 0,
            writes=self.writes,
            leader=g.leader if self.running else "",
            term=st.term if st is not None else 0,
            voters=tuple(cs.voters),
            learners=tuple(cs.learners),
            expect=self.cfg.expect,
            connected=self._connected(),
            conflict=self.conflict["other_cluster_id"] if self.conflict else "",
            applied=g.sm.applied_index(),
        )

    @property
    def info(self) -> NodeInfo:
        return self._info

    def presence_payload(self) -> bytes | None:
        return self._info_json or None

    def on_presence(self, origin: str, data: bytes) -> None:
        """A GossipSub presence message (origin authenticated by its signature)."""
        try:
            info = NodeInfo.from_dict(json.loads(data))
        except (ValueError, WireError):
            return
        if info.id != origin or info.ns != self.ns:
            return
        if self.keyed:
            # Unsealed channel: take only the addresses, and verify by talking to it.
            if self.table.observe_addrs(origin, list(info.addrs), "pubsub"):
                self._kick()
            return
        if self.table.observe_info(origin, info.to_dict(), "pubsub"):
            self._kick()

    def settled(self) -> bool:
        """A member of a cluster with a known leader (formation's boot work is done)."""
        return self.phase == MEMBER and self.group.leader != NONE

    # -- views ------------------------------------------------------------------------------
    def _fresh_infos(self) -> list[NodeInfo]:
        """Recent announcements of other nodes (parsed; each parsed once)."""
        now = self.table.now()
        out = []
        cache = self._parsed
        for rec in self.table.records():
            if rec.info is None or rec.info_age(now) > self.cfg.stale_s:
                continue
            hit = cache.get(rec.peer_id)
            if hit is not None and hit[0] is rec.info:
                out.append(hit[1])
                continue
            try:
                info = NodeInfo.from_dict(rec.info)
            except WireError:
                continue
            cache[rec.peer_id] = (rec.info, info)
            out.append(info)
        if len(cache) > 2 * len(self.table) + 16:
            for pid in [p for p in cache if p not in self.table]:
                del cache[pid]
        return out

    def _own_summary(self) -> ClusterSummary | None:
        rec = self.record
        if rec is None or self.phase != MEMBER:
            return None
        i = self._info
        return ClusterSummary(
            id=rec.id,
            founded_ms=rec.founded_ms,
            writes=self.writes,
            leader=i.leader,
            term=i.term,
            voters=i.voters,
            learners=i.learners,
            seen=(self.id,),
        )

    def _other_clusters(self, infos: list[NodeInfo]) -> list[ClusterSummary]:
        own = self.record.id if self.record is not None else None
        return [c for c in summarize_clusters(infos).values() if c.id != own]

    def _fresh_view(self) -> FreshView:
        infos = self._fresh_infos()
        now = self.now()
        clusters = []
        for c in summarize_clusters(infos).values():
            if c.leader:
                self._leaderless.pop(c.id, None)
                clusters.append(c)
                continue
            # A cluster without a known leader is electing, or lost its quorum for
            # good: count it for a while (so nobody joins a worse one or founds a rival
            # meanwhile), then forget it.
            first = self._leaderless.setdefault(c.id, now)
            if now - first < self.cfg.orphan_s:
                clusters.append(c)
        forming = any(i.state == MEMBER and not i.cluster for i in infos)
        candidates = frozenset({self.id} | {i.id for i in infos if i.state == FRESH})
        if candidates != self._candidates:
            if not candidates <= self._candidates:
                self._candidates_changed = now  # someone new (departures do not count)
            self._candidates = candidates
        solo = self.cfg.solo_window_s
        if not ("mdns" in self.hub.kinds or "dht" in self.hub.kinds or self.hub.bootstrap):
            # No way to find anyone by ourselves (e.g. --discovery pex without
            # --bootstrap): wait to be added rather than found a cluster alone.
            solo = math.inf
        table_now = self.table.now()  # addresses are dated on the table's clock
        heard = {i.id for i in infos}
        unheard = sum(
            1
            for r in self.table.records()
            if r.addrs
            and r.peer_id not in heard
            and r.failures < _WRITE_OFF_FAILURES
            and table_now - r.addrs_at <= self.cfg.stale_s * 4
        )
        return FreshView(
            self_id=self.id,
            elapsed=now - self._fresh_since,
            window=self.cfg.window_s,
            solo_window=solo,
            expect=self.cfg.expect,
            candidates=candidates,
            clusters=tuple(clusters),
            forming=forming,
            quiet=now - self._candidates_changed,
            unheard=unheard,
            patience=3 * solo,
        )

    # -- group lifecycle ------------------------------------------------------------------
    def _has_data(self) -> bool:
        """The group holds a log or a snapshot: it belongs to a cluster's history. (A
        joiner that only recorded a leader's term has a hard state but no data.)"""
        st = self.group.storage
        return st.snapshot_metadata().index > 0 or st.last_index() > 0

    async def _start_group(self) -> None:
        if self.running:
            return
        assert self._nursery is not None
        self._group_done = trio.Event()
        await self._nursery.start(self._run_group)

    async def _run_group(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._group_scope = scope
            self.running = True
            self._gate_open = True
            try:
                await self.group.run(task_status=task_status)
            finally:
                self.running = False
                self._gate_open = False
                self._group_done.set()

    async def _stop_group(self) -> None:
        scope = self._group_scope
        if scope is not None and self.running:
            scope.cancel()
            await self._group_done.wait()

    def _gate_transport(self) -> None:
        """Hold back inbound Raft traffic while this node has no accepted state."""
        deliver = self.transport.on_message
        adopt = self.transport.on_snapshot

        def on_message(msg: Message) -> None:
            if self._gate_open:
                if deliver is not None:
                    deliver(msg)
                return
            self.stats.gate_dropped += 1
            self._maybe_open_gate(msg.frm)

        async def on_snapshot(peer: str, meta: Any, path: Path, msg: Message) -> None:
            if not self._gate_open or adopt is None:
                self._maybe_open_gate(peer)
                raise RuntimeError("not accepting snapshots yet")
            await adopt(peer, meta, path, msg)

        self.transport.on_message = on_message
        self.transport.on_snapshot = on_snapshot

    def _maybe_open_gate(self, sender: str) -> None:
        """Traffic from a leader while we wait: an operator may have added us (e.g.
        ``raftd member add-learner``). Accept unless the sender's cluster lists us as a
        voter: that is a wiped voter, which must be removed and re-added first."""
        if self.phase != FRESH or self._accepted or self.running:
            return
        rec = self.table.get(sender)
        if rec is None or rec.info is None:
            # Not knowing the sender's cluster yet is no licence at once: a wiped voter
            # restarts and hears its old leader's heartbeat before peer exchange tells
            # it that the cluster still lists it as a voter. Peer exchange brings the
            # info within a heartbeat or two (the leader keeps sending meanwhile). A
            # sender that never tells (a cluster without formation, whose operator
            # added us through the API) is accepted after ``stale_s``.
            first = self._gate_heard.setdefault(sender, self.now())
            if self.now() - first < self.cfg.stale_s:
                return
        else:
            voters = rec.info.get("voters")
            if isinstance(voters, list) and self.id in voters:
                return
        log.info("%s: raft traffic from %s: accepted into its cluster", self.ns, sender)
        self._accepted = True
        self._kick()

    # -- running ----------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        finish_pending_wipe(self.group, self.db, self.data_dir)
        self._gate_transport()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.endpoint.run)
            if self._has_data():
                await self._start_group()
                self._refresh_state()
                cs = self.group.conf
                self._removed_at_start = (
                    self.record is not None and self.id not in cs.voters + cs.learners
                )
            self._info = self._compute_info()
            nursery.start_soon(self._control_loop)
            nursery.start_soon(self._tick_loop)
            nursery.start_soon(self._pex_loop)
            nursery.start_soon(self._leader_loop)
            nursery.start_soon(self._watch_table)
            task_status.started()

    async def _watch_table(self) -> None:
        while True:
            await self.table.wait_changed()
            self._kick()

    async def _control_loop(self) -> None:
        while True:
            if not self.running and not self._has_data():
                await self._fresh_phase()
            elif not self.running:
                await self._start_group()
            outcome = await self._member_phase()
            await self._stop_group()
            if outcome == "dissolve":
                target = self._dissolve_into
                self.phase = DISSOLVING
                self._push_soon()
                wipe_group(self.group, self.db, self.data_dir)
                self.stats.dissolves += 1
                log.warning("%s: state wiped; joining cluster %s", self.ns, target)
            self._dissolve_into = None
            self._accepted = False
            self._removed_at_start = False
            self.record = None
            self.writes = False

    async def _fresh_phase(self) -> None:
        if not self.group.is_empty():
            # Only a hard state (a term heard from some leader, no log): drop it, or a
            # higher stale term would make us refuse the cluster we join next.
            wipe_group(self.group, self.db, self.data_dir)
        self.phase = FRESH
        self._fresh_since = self.now()
        self._gate_heard.clear()
        self._leaderless.clear()
        self._candidates = frozenset()
        self._candidates_changed = self.now()
        self._push_soon()
        last = ""
        asked = ""  # the cluster we last asked to join
        attempts = 0
        while True:
            if self._accepted:
                self.phase = JOINING
                self._joined_at = self.now()
                await self._start_group()  # (already running if we asked early)
                self._push_soon()
                return
            d = decide_fresh(self._fresh_view())
            if d.reason != last:
                log.info("%s: %s: %s", self.ns, d.kind, d.reason)
                last = d.reason
            self.decision = f"{d.kind}: {d.reason}"
            target = d.cluster.id if d.cluster is not None else ""
            if target != asked:
                attempts = 0
                if self.running:
                    # We were asking another cluster: drop whatever it may have sent us.
                    await self._stop_group()
                    if not self.group.is_empty():
                        wipe_group(self.group, self.db, self.data_dir)
                asked = ""
            if d.kind == "bootstrap":
                self._founding = new_record(self.id)
                self.group.bootstrap([self.id])
                self.stats.bootstraps += 1
                log.info("%s: founding cluster %s", self.ns, self._founding.id)
                self.phase = MEMBER
                await self._start_group()
                self.group.campaign()
                self._push_soon()
                return
            if d.kind == "join" and d.cluster is not None and self.now() >= self._next_join:
                # Run the (empty) group while asking, so the leader's first messages
                # after adding us are not lost, unless the cluster lists us as a voter
                # (then we are a wiped voter: it must remove us before we speak Raft).
                # It keeps running across retries to the same cluster.
                asked = d.cluster.id
                if self.id not in d.cluster.voters:
                    await self._start_group()
                if await self._join(d.cluster) or self._has_data():
                    # (State arriving without a reply: the answer was lost, not the add.)
                    self._accepted = True
                    continue
                attempts += 1
                self._next_join = self.now() + min(2.0, self.cfg.tick_s * 2**attempts)
            await self._sleep_or_kick(self.cfg.tick_s)

    async def _join(self, cluster: ClusterSummary, *, empty: bool = True) -> bool:
        """Ask ``cluster`` to take us (its leader, else members, which relay)."""
        now = self.table.now()
        order: list[str] = []
        if cluster.leader and cluster.leader != self.id:
            order.append(cluster.leader)
        rest = [p for p in cluster.seen + cluster.members() if p != self.id and p not in order]
        rest = sorted(
            set(rest),
            key=lambda p: (
                not (self.table.get(p) and self.table.get(p).reachable(now, self.cfg.stale_s)),  # type: ignore[union-attr]
                p,
            ),
        )
        order += rest
        req = JoinRequest(cluster.id, self.id, tuple(self.hub.addrs), empty=empty)
        for target in order[:4]:
            rec = self.table.get(target)
            if rec is None or rec.retry_at > now:
                continue
            # Twice the usual bound: the leader answers after the change is applied, and
            # gives up itself (answering "busy") within one bound.
            reply = await self.endpoint.call(target, req, within=2 * self.cfg.rpc_timeout_s)
            if not isinstance(reply, Reply):
                continue
            if reply.info is not None and reply.info.id == target:
                self.table.observe_info(target, reply.info.to_dict(), "direct")
            if reply.ok:
                self.stats.joins += 1
                log.info(
                    "%s: accepted into cluster %s (via %s%s)",
                    self.ns,
                    cluster.id,
                    target,
                    ", catching up as a voter" if reply.code == CATCH_UP else "",
                )
                if self.record is None:
                    self.record = ClusterRecord(cluster.id, cluster.founded_ms, "")
                return True
            log.debug("%s: join via %s: %s %s", self.ns, target, reply.code, reply.msg)
            if reply.code in (WRONG_CLUSTER, REFUSED):
                continue
        return False

    async def _member_phase(self) -> str:
        self.phase = MEMBER if self._has_data() else JOINING
        self._push_soon()
        while True:
            if self._dissolve_into is not None:
                return "dissolve"
            if not self.running:
                return "stopped"
            if not self._has_data():
                if self.now() - self._joined_at > self.cfg.join_timeout_s:
                    log.warning("%s: accepted but no state arrived: looking again", self.ns)
                    return "rejoin"
            else:
                if self.phase != MEMBER:
                    self.phase = MEMBER
                    self._push_soon()
                if self._removed_at_start:
                    await self._rejoin_own_cluster()
            await self._sleep_or_kick(self.cfg.tick_s)

    async def _rejoin_own_cluster(self) -> None:
        """Started with state, but no longer in our cluster's membership (removed while
        down): ask to be added back (our log is a prefix of the cluster's history)."""
        cs = self.group.conf
        rec = self.record
        if rec is None or self.id in cs.voters + cs.learners:
            self._removed_at_start = False
            return
        if self.now() < self._next_join:
            return
        self._next_join = self.now() + self.cfg.heartbeat_s
        own = summarize_clusters(i for i in self._fresh_infos() if i.cluster == rec.id).get(rec.id)
        if own is not None and await self._join(own, empty=False):
            log.info("%s: removed while down; added back to cluster %s", self.ns, rec.id)

    # -- tick: announcement, addresses, conflicts -------------------------------------------
    def _refresh_state(self) -> None:
        if self.running and self._has_data():
            rec = read_record(self.group.sm)
            if rec is not None:
                self.record = rec
            self.writes = has_user_writes(self.group.sm)

    async def _tick_loop(self) -> None:
        last_addr_refresh = self.now()
        while True:
            now = self.now()
            if now - last_addr_refresh > 10.0:
                last_addr_refresh = now
                self.hub.refresh_addrs()
            self._refresh_state()
            self._check_conflict()
            self._check_orphan()
            self._sync_transport()
            info = self._compute_info()
            if info != self._info:
                # Push at once only what fresh nodes act on (a cluster exists, who
                # leads it); membership details spread with the periodic exchange, or
                # every conf change would cost N * (N - 1) exchanges.
                important = (info.state, info.cluster, info.leader) != (
                    self._info.state,
                    self._info.cluster,
                    self._info.leader,
                )
                self._info = info
                self._info_json = json.dumps(info.to_dict(), separators=(",", ":")).encode()
                if important:
                    self._push_soon()
                self._changed()
            elif not self._info_json:
                self._info_json = json.dumps(info.to_dict(), separators=(",", ":")).encode()
            self.table.forget_older_than(_FORGET_AFTER)
            await trio.sleep(self.cfg.tick_s)

    def _best_addr(self, peer: str) -> str | None:
        rec = self.table.get(peer)
        if rec is None:
            return None
        if rec.good_addr:
            return rec.good_addr
        ranked = self.hub.ranked(rec.addrs)
        return ranked[0] if ranked else None

    def _sync_transport(self) -> None:
        """One best address per peer in the Raft transport (pitfall 3), for every peer
        that takes part in this namespace."""
        members = set(self.group.conf.voters) | set(self.group.conf.learners)
        for rec in self.table.records():
            if rec.info is None and rec.peer_id not in members:
                continue
            best = self._best_addr(rec.peer_id)
            if best is None:
                continue
            try:
                if self.transport.peer_addrs(rec.peer_id) != [best]:
                    self.transport.add_peer_addrs(rec.peer_id, [best])
            except ValueError as exc:
                log.debug("%s: bad address for %s: %s", self.ns, rec.peer_id, exc)

    def _check_conflict(self) -> None:
        own = self._own_summary()
        other = conflict_with(own, self._other_clusters(self._fresh_infos())) if own else None
        if other is None:
            if self.conflict is not None:
                log.warning(
                    "%s: namespace conflict with cluster %s no longer seen",
                    self.ns,
                    self.conflict["other_cluster_id"],
                )
                self.conflict = None
                self.stats.conflict = 0
                self.hub.namespace_conflicts[self.ns] = 0
            return
        assert own is not None
        if self.conflict is None or self.conflict["other_cluster_id"] != other.id:
            self.stats.conflicts_detected += 1
            log.error(
                "%s: namespace conflict: cluster %s (ours) and cluster %s (leader %s) both "
                "hold writes; not merging. See DESIGN.md, 'Namespace conflicts'.",
                self.ns,
                own.id,
                other.id,
                other.leader or "unknown",
            )
        self.conflict = {
            "cluster_id": own.id,
            "other_cluster_id": other.id,
            "other_leader": other.leader,
            "other_members": sorted(other.members()),
            "since_ms": (self.conflict or {}).get("since_ms") or time.time_ns() // 1_000_000,
        }
        self.stats.conflict = 1
        self.hub.namespace_conflicts[self.ns] = 1

    def _check_orphan(self) -> None:
        """Our cluster vanished around us (its other members dissolved while we were
        away, or died for good) and holds no writes: join the cluster that is there.
        "Vanished": nobody announces our cluster with a leader, and we have no leader,
        or the leader we last knew now announces another cluster (it dissolved before
        the change adding us reached us: a node outside the membership never campaigns,
        so it would keep that leader forever)."""
        if self.phase != MEMBER or self.record is None or self.writes or not self.running:
            self._orphan_since = None
            return
        infos = self._fresh_infos()
        own = self.record.id
        if not cluster_vanished(own, self.group.leader, infos):
            self._orphan_since = None
            return
        others = self._other_clusters(infos)
        if not others:
            self._orphan_since = None
            return
        now = self.now()
        if self._orphan_since is None:
            self._orphan_since = now
            return
        if now - self._orphan_since < self.cfg.orphan_s:
            return
        target = min(others, key=ClusterSummary.rank)
        log.warning(
            "%s: cluster %s has no leader and no other member around for %.0fs; "
            "it holds no writes: dissolving into %s",
            self.ns,
            own,
            now - self._orphan_since,
            target.id,
        )
        fence_group(self.group, f"dissolving into cluster {target.id}")
        self._dissolve_into = target.id
        self._kick()

    # -- peer exchange ------------------------------------------------------------------------
    def _pex_entries(self, exclude: str) -> tuple[PexEntry, ...]:
        if not self.hub.pex:
            return ()
        now = self.table.now()
        entries: list[tuple[float, PexEntry]] = []
        for rec in self.table.records():
            if rec.peer_id == exclude or not rec.addrs:
                continue
            info = None
            age = now - rec.addrs_at
            if rec.info is not None:
                try:
                    info = NodeInfo.from_dict(rec.info)
                    age = now - rec.info_at
                except WireError:
                    info = None
            if age > self.cfg.stale_s * 4:
                continue
            entries.append((age, PexEntry(rec.peer_id, tuple(rec.addrs), int(age * 1000), info)))
        entries.sort(key=lambda e: e[0])
        return tuple(e for _, e in entries[:_PEX_ENTRIES])

    def _absorb(self, remote: str, msg: PexMessage) -> None:
        info = msg.info
        if info.id != remote or info.ns != self.ns:
            return  # a peer speaks only for itself
        self.table.observe_info(remote, info.to_dict(), "direct")
        if not self.hub.pex:
            return
        for e in msg.peers:
            if e.id == self.id:
                continue
            age = e.age_ms / 1000
            if e.info is not None and e.info.ns == self.ns:
                self.table.observe_info(e.id, e.info.to_dict(), "pex", age=age)
            elif e.addrs:
                self.table.observe_addrs(e.id, list(e.addrs), "pex", age=age)

    async def _exchange(self, peer: str) -> None:
        msg = PexMessage(self._info, self._pex_entries(peer))
        reply = await self.endpoint.call(peer, msg, within=self.cfg.rpc_timeout_s)
        if isinstance(reply, PexMessage):
            self.stats.pex_ok += 1
            self._absorb(peer, reply)
        else:
            self.stats.pex_failed += 1

    async def _pex_loop(self) -> None:
        next_round = self.now()
        busy: set[str] = set()

        async def one(peer: str) -> None:
            try:
                await self._exchange(peer)
            finally:
                busy.discard(peer)

        async with trio.open_nursery() as nursery:
            while True:
                now = self.table.now()
                push = self._push.is_set()
                if push:
                    self._push = trio.Event()
                    if self.hub.pubsub is not None:
                        nursery.start_soon(self.hub.pubsub.publish_now, self.ns)
                eligible = [
                    r
                    for r in self.table.records()
                    if r.peer_id not in busy and r.retry_at <= now and r.addrs
                ]
                targets = {r.peer_id for r in eligible if r.direct_at == -math.inf}
                if push:
                    # A change worth telling at once: to the leader we know and a bounded
                    # random subset (the rest hear it through their own exchanges within
                    # a heartbeat or two): N nodes changing state together must not cost
                    # N * (N - 1) streams at once.
                    ids = [r.peer_id for r in eligible if r.peer_id not in targets]
                    self._rng.shuffle(ids)
                    leader = self.group.leader
                    if leader in ids:
                        ids.remove(leader)
                        ids.insert(0, leader)
                    targets.update(ids[:_PUSH_FANOUT])
                if self.now() >= next_round:
                    # A settled member needs the exchange for freshness only (addresses,
                    # other clusters): every third heartbeat. A node still forming: every one.
                    period = self.cfg.heartbeat_s * (3 if self.phase == MEMBER else 1)
                    next_round = self.now() + period * self._rng.uniform(0.8, 1.2)
                    others = [r.peer_id for r in eligible if r.peer_id not in targets]
                    self._rng.shuffle(others)
                    targets.update(others[:_PEX_FANOUT])
                for peer in sorted(targets):
                    busy.add(peer)
                    nursery.start_soon(one, peer)
                await self._sleep_or_kick(max(0.05, min(self.cfg.tick_s, next_round - self.now())))

    # -- the protocol handler ----------------------------------------------------------------
    async def _handle(self, remote: str, msg: wire.Message) -> wire.Message:
        if isinstance(msg, PexMessage):
            self._absorb(remote, msg)
            return PexMessage(self._info, self._pex_entries(remote))
        if isinstance(msg, JoinRequest):
            return await self._handle_request(remote, msg, self._joins)
        if isinstance(msg, LeaveRequest):
            return await self._handle_request(remote, msg, self._leaves)
        return Reply(wire.ERROR, "unexpected message")

    async def _handle_request(
        self, remote: str, req: JoinRequest | LeaveRequest, queue: dict[str, _Ticket]
    ) -> Reply:
        if not req.relayed and req.id != remote:
            return Reply(REFUSED, "a node may only ask for itself")
        rec = self.record
        if rec is None or not self.running or self.phase != MEMBER:
            return Reply(WRONG_CLUSTER, "no cluster here", info=self._info)
        if rec.id != req.cluster:
            return Reply(WRONG_CLUSTER, f"this is cluster {rec.id}", info=self._info)
        g = self.group
        budget = self.cfg.rpc_timeout_s * 0.8
        if g.is_leader:
            members = set(g.conf.voters) | set(g.conf.learners)
            if req.relayed and remote not in members:
                return Reply(REFUSED, "relayed by a non-member")
            if isinstance(req, LeaveRequest) and req.id == self.id:
                return Reply(REFUSED, "the leader must transfer leadership first")
            t = queue.get(req.id)
            if t is None or t.done.is_set():
                t = queue[req.id] = _Ticket(req.id, created=self.now())
            if isinstance(req, JoinRequest):
                t.addrs = req.addrs
                t.empty = req.empty
                self.table.observe_addrs(req.id, list(req.addrs), "member")
            self._kick()
            with trio.move_on_after(budget):
                await t.done.wait()
            return t.reply or Reply(BUSY, "membership change pending", leader=self.id)
        if req.relayed:
            return Reply(NOT_LEADER, "not the leader", leader=g.leader)
        leader = g.leader
        if not leader:
            return Reply(NOT_LEADER, "no leader right now")
        fwd = replace(req, relayed=True)
        reply = await self.endpoint.call(leader, fwd, within=budget)
        if isinstance(reply, Reply):
            return reply
        return Reply(NOT_LEADER, "leader unreachable from here", leader=leader)

    # -- leaving ------------------------------------------------------------------------------
    async def leave(self, within: float) -> bool:
        """Leave the cluster gracefully: hand leadership over first if we lead, then have
        the leader remove us. True once removed (or not a member). Bounded by
        ``within`` seconds."""
        with trio.move_on_after(within):
            while True:
                g = self.group
                rec = self.record
                cs = g.conf
                if not self.running or rec is None or self.id not in cs.voters + cs.learners:
                    return True
                if g.is_leader:
                    target = self._transfer_candidate()
                    if target is None:
                        log.warning("%s: last voter: cannot leave the cluster", self.ns)
                        return False
                    log.info("%s: leaving: handing leadership to %s", self.ns, target)
                    g.transfer_leader(target)
                    with trio.move_on_after(4 * g.preset.election_s):
                        while g.is_leader:
                            await g.wait_state_change()
                    continue
                leader = g.leader
                if leader:
                    reply = await self.endpoint.call(
                        leader, LeaveRequest(rec.id, self.id), within=self.cfg.rpc_timeout_s
                    )
                    if isinstance(reply, Reply) and reply.ok:
                        log.info("%s: left cluster %s", self.ns, rec.id)
                        return True
                await trio.sleep(self.cfg.tick_s)
        return False

    def _transfer_candidate(self) -> str | None:
        node = self.group.node
        return node.most_caught_up_voter() if node is not None else None

    # -- the leader loop ----------------------------------------------------------------------
    def _membership_view(self) -> MembershipView:
        g = self.group
        node = g.node
        assert node is not None
        now = self.now()
        cfg = self.cfg
        health: dict[str, PeerHealth] = {}
        for pid, pr in node.progress_view().items():
            if pid == self.id:
                continue
            silent = self._health.silent(pid, now)
            health[pid] = PeerHealth(
                match=pr.match,
                alive=silent <= cfg.alive_s,
                dead=silent >= cfg.dead_voter_s,
                gone=silent >= cfg.learner_gc_s,
            )
        view = MembershipView(
            leader=self.id,
            voters=tuple(g.conf.voters),
            learners=tuple(g.conf.learners),
            commit=node.committed,
            health=health,
            cap=cfg.voter_cap,
        )
        if any(caught_up(view, p) for p in view.learners):
            if self._ready_since is None:
                self._ready_since = now
        else:
            self._ready_since = None
        ready_for = 0.0 if self._ready_since is None else now - self._ready_since
        return replace(view, ready_for=ready_for)

    async def _leader_loop(self) -> None:
        while True:
            g = self.group
            leading = self.running and g.is_leader and g.node is not None
            if leading and not self._was_leader:
                self._health.reset(self.now())
            self._was_leader = leading
            if not leading:
                self._fail_tickets(Reply(NOT_LEADER, "not the leader", leader=g.leader))
                await self._sleep_or_kick(self.cfg.tick_s)
                continue
            assert g.node is not None
            self._health.observe(g.node.progress_view(), self.now())
            try:
                with trio.move_on_after(self.cfg.rpc_timeout_s):
                    did = await self._leader_step()
            except GroupError as exc:
                log.debug("%s: membership step failed: %s", self.ns, exc)
                did = False
            if not did:
                await self._sleep_or_kick(self.cfg.tick_s)

    def _fail_tickets(self, reply: Reply) -> None:
        for q in (self._joins, self._leaves):
            for t in q.values():
                t.resolve(reply)
            q.clear()

    def _context(self, peer: str, addrs: tuple[str, ...] = ()) -> bytes:
        if not addrs:
            rec = self.table.get(peer)
            addrs = tuple(rec.addrs) if rec is not None else ()
        if not addrs:
            return b""
        return apb.MemberContext(addrs=list(addrs)).SerializeToString()

    async def _change(self, cc: ConfChange, why: str) -> ConfState:
        cs = await self.group.propose_conf_change(cc)
        log.info("%s: membership: %s %s (%s)", self.ns, cc.type.name.lower(), cc.node_id, why)
        return cs

    async def _leader_step(self) -> bool:
        """One unit of leader work; True if it did something (the loop goes again)."""
        g = self.group
        node = g.node
        assert node is not None
        if self.record is None:
            if self._record_term == node.term:
                return False  # proposed this term already: wait for it to apply
            self._record_term = node.term
            rec = self._founding or new_record(self.id)
            log.info("%s: storing cluster record %s", self.ns, rec.id)
            await g.propose(record_command(rec))
            self._refresh_state()
            self._push_soon()
            return True
        now = self.now()
        cs = g.conf
        members = set(cs.voters) | set(cs.learners)
        # Leaves, then joins: requests from nodes that are waiting.
        for q in (self._leaves, self._joins):
            for key in [
                k for k, t in q.items() if now - t.created > _TICKET_TTL or t.done.is_set()
            ]:
                q.pop(key).resolve(Reply(BUSY, "expired"))
        if self._leaves:
            node_id, t = next(iter(self._leaves.items()))
            if node_id in members:
                await self._change(ConfChange(ConfChangeType.REMOVE_NODE, node_id), "leave")
                self.stats.removals += 1
            self._leaves.pop(node_id, None)
            t.resolve(Reply(OK, "removed"))
            return True
        if self._joins:
            return await self._serve_join(*next(iter(self._joins.items())))
        # Duplicate clusters.
        if await self._maybe_dissolve():
            return True
        view = self._membership_view()
        ch = plan_membership(view)
        if ch is not None:
            ctx = self._context(ch.node) if ch.type != ConfChangeType.REMOVE_NODE else b""
            await self._change(ConfChange(ch.type, ch.node, ctx), ch.reason)
            if ch.type == ConfChangeType.ADD_VOTER:
                self.stats.promotions += 1
            elif ch.type == ConfChangeType.ADD_LEARNER:
                self.stats.demotions += 1
            else:
                self.stats.removals += 1
            self._push_soon()
            return True
        if now - self._last_transfer > self.cfg.transfer_cooldown_s:
            connected = {i.id: i.connected for i in self._fresh_infos()}
            target = transfer_target(view, connected, self._connected())
            if target is not None:
                self._last_transfer = now
                self.stats.transfers += 1
                log.info(
                    "%s: handing leadership to %s: it reaches members we cannot", self.ns, target
                )
                g.transfer_leader(target)
        return False

    async def _serve_join(self, node_id: str, t: _Ticket) -> bool:
        g = self.group
        cs = g.conf
        if t.addrs:
            best = self.hub.ranked(t.addrs)
            if best:
                with contextlib.suppress(ValueError):
                    self.transport.add_peer_addrs(node_id, best[:1])
        if node_id in cs.voters:
            if t.empty:
                if can_remove_voter(self._membership_view(), node_id):
                    # A wiped voter lost its vote and log: remove it, then it joins as a
                    # learner like anyone else (the ticket stays queued for that).
                    await self._change(
                        ConfChange(ConfChangeType.REMOVE_NODE, node_id), "rejoins without state"
                    )
                    self.stats.readds += 1
                    return True
                self._joins.pop(node_id, None)
                t.resolve(Reply(CATCH_UP, "voter rejoining without state: catch up by snapshot"))
                return True
            self._joins.pop(node_id, None)
            t.resolve(Reply(OK, "already a voter"))
            return True
        if node_id in cs.learners:
            self._joins.pop(node_id, None)
            t.resolve(Reply(OK, "already a learner"))
            return True
        self.stats.join_requests += 1
        await self._change(
            ConfChange(ConfChangeType.ADD_LEARNER, node_id, self._context(node_id, t.addrs)),
            "join",
        )
        self._joins.pop(node_id, None)
        t.resolve(Reply(OK, "added as a learner"))
        self._push_soon()
        return True

    async def _maybe_dissolve(self) -> bool:
        own = self._own_summary()
        if own is None or self.writes:
            self._dissolve_seen = None
            return False
        target = dissolve_target(own, self._other_clusters(self._fresh_infos()))
        if target is None:
            self._dissolve_seen = None
            return False
        now = self.now()
        # Debounce: act on an announcement confirmed over a heartbeat, not on one rumour.
        if self._dissolve_seen is None or self._dissolve_seen[0] != target.id:
            self._dissolve_seen = (target.id, now)
            return False
        if now - self._dissolve_seen[1] < self.cfg.heartbeat_s:
            return False
        self._dissolve_seen = None
        log.warning(
            "%s: cluster %s (no user writes) dissolves into cluster %s (older or holding writes)",
            self.ns,
            own.id,
            target.id,
        )
        ctx = json.dumps({"into": target.id, "leader": target.leader}).encode()
        self.stats.dissolve_markers += 1
        await self._change(ConfChange(ConfChangeType.REMOVE_NODE, DISSOLVE_MARKER, ctx), "dissolve")
        return True

    # -- membership entries, as every member applies them --------------------------------------
    def _on_conf_change(self, cc: ConfChange, cs: ConfState) -> None:
        """Synchronous, inside the group's apply (no await, no raise)."""
        try:
            if cc.node_id == DISSOLVE_MARKER:
                self._apply_dissolve(cc)
                return
            if cc.node_id != self.id and cc.context and cc.type != ConfChangeType.REMOVE_NODE:
                ctx = apb.MemberContext.FromString(cc.context)
                if ctx.addrs:
                    self.table.observe_addrs(cc.node_id, list(ctx.addrs), "member")
            self._kick()
        except Exception:
            log.exception("%s: handling a membership entry failed", self.ns)

    def _apply_dissolve(self, cc: ConfChange) -> None:
        try:
            into = str(json.loads(cc.context).get("into", ""))
        except (ValueError, AttributeError):
            into = ""
        # Decided on the replicated state at exactly this log position, so every member
        # decides alike: nothing besides the cluster record may have been applied.
        if has_user_writes(self.group.sm):
            log.warning("%s: dissolve marker ignored: user writes were applied before it", self.ns)
            return
        fence_group(self.group, f"dissolving into cluster {into}")
        self._dissolve_into = into or "?"
        self._kick()
