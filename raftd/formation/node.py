"""Formation of one namespace on one daemon: :class:`NamespaceFormation`.

It owns the group's lifecycle (the daemon hands it the group unstarted) and runs, in its
own nursery:

- the **control loop**: a node without state looks for a cluster and joins it, or
  founds one (:func:`raftd.formation.decide.decide_fresh`); a node with state runs its
  group; a dissolving node stops its group, wipes it and starts over as a fresh node;
- the **tick loop** (:class:`raftd.formation.tick.TickLoop`): refreshes this node's
  announcement, keeps the transport's address book in step with discovery (one best
  address per peer), detects namespace conflicts and orphaned state;
- the **peer exchange loop** (:class:`raftd.formation.exchange.PeerExchange`): talks to
  new peers at once, to a few random ones every heartbeat, and to everyone after a state
  change;
- the **leader loop** (:class:`raftd.formation.leader.LeaderDuties`): while this node
  leads, stores the cluster record, serves join and leave requests, dissolves a
  duplicate cluster, and automates membership (voter cap, dead voters, learner garbage
  collection, leadership hand-off for reachability), one membership change at a time;
- the formation protocol endpoint (:class:`raftd.formation.rpc.FormEndpoint`).

Inbound Raft traffic for a node without state is held back (dropped) until a cluster
accepted it, so that a wiped voter never votes with a blank memory before the leader
removed and re-added it; traffic from a cluster that does not list this node as a voter
(an operator added it through the API) opens the gate at once.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from raftd.core import NONE, ConfChange, ConfChangeType, ConfState, Message, NodeId
from raftd.discovery.hub import DiscoveryHub
from raftd.discovery.table import PeerTable
from raftd.formation import wire
from raftd.formation.cluster import (
    ClusterRecord,
    has_user_writes,
    new_record,
    read_record,
)
from raftd.formation.config import FormationConfig
from raftd.formation.decide import (
    ClusterSummary,
    FreshView,
    decide_fresh,
    summarize_clusters,
)
from raftd.formation.exchange import PeerExchange
from raftd.formation.leader import DISSOLVE_MARKER, LeaderDuties
from raftd.formation.rpc import FormEndpoint
from raftd.formation.tick import TickLoop
from raftd.formation.wipe import fence_group, finish_pending_wipe, wipe_group
from raftd.formation.wire import (
    CATCH_UP,
    DISSOLVING,
    FRESH,
    JOINING,
    MEMBER,
    REFUSED,
    WRONG_CLUSTER,
    JoinRequest,
    LeaveRequest,
    NodeInfo,
    PexMessage,
    Reply,
    WireError,
)
from raftd.runtime.group import Group
from raftd.storage.leveldb import LevelDB
from raftd.transport.libp2p import Libp2pTransport
from raftd.wire.pb import api_pb2 as apb

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["FormationStats", "NamespaceFormation"]

log = logging.getLogger("raftd.formation")

#: Failed exchanges in a row after which a discovered peer no longer holds founding back.
_WRITE_OFF_FAILURES = 3


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
        started_ago: float = 0.0,
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
        self.rng = rng or random.Random()
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
        self._gate_open = False
        self._accepted = False  # a cluster accepted us (join reply, or its traffic)
        #: First Raft traffic from each sender we had no node info about (the gate).
        self._gate_heard: dict[str, float] = {}
        self._joined_at = -math.inf
        self._fresh_since = -math.inf
        self._born = self.now() - started_ago
        self._next_join = -math.inf
        self.founding: ClusterRecord | None = None
        self._dissolve_into: str | None = None
        self._leaderless: dict[str, float] = {}
        self._candidates: frozenset[str] = frozenset()
        self._candidates_changed = -math.inf
        self._removed_at_start = False
        #: Started with state that lists us as a member: until our cluster's leader
        #: announces its membership, we cannot tell whether we were removed meanwhile.
        self._confirm_membership = False
        self._rejoin_cluster = ""  # the cluster to ask back into, when we have no record
        self._info: NodeInfo = NodeInfo(id=self.id, ns=namespace)
        self._info_json: bytes = b""
        self._parsed: dict[str, tuple[dict[str, Any], NodeInfo]] = {}
        self.pex = PeerExchange(self)
        self.leader = LeaderDuties(self)
        self.ticker = TickLoop(self)
        group.add_conf_listener(self._on_conf_change)
        group.add_leader_listener(lambda _leader: self.kick())

    # -- small helpers ----------------------------------------------------------------------
    def now(self) -> float:
        return trio.current_time()

    def kick(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    async def sleep_or_kick(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._wake.wait()

    def push_soon(self) -> None:
        """Our announcement changed: tell everyone now, not at the next heartbeat."""
        self.pex.push_soon()
        self.kick()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- announcements ----------------------------------------------------------------------
    def connected_peers(self) -> tuple[str, ...]:
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
            connected=self.connected_peers(),
            conflict=self.conflict["other_cluster_id"] if self.conflict else "",
            applied=g.sm.applied_index(),
        )

    @property
    def info(self) -> NodeInfo:
        return self._info

    def announce(self) -> None:
        """Recompute this node's announcement; tell the others at once if what fresh
        nodes act on changed."""
        info = self._compute_info()
        if info != self._info:
            # Push at once only what fresh nodes act on (a cluster exists, who leads
            # it); membership details spread with the periodic exchange, or every conf
            # change would cost N * (N - 1) exchanges.
            important = (info.state, info.cluster, info.leader) != (
                self._info.state,
                self._info.cluster,
                self._info.leader,
            )
            self._info = info
            self._info_json = json.dumps(info.to_dict(), separators=(",", ":")).encode()
            if important:
                self.push_soon()
            self._changed()
        elif not self._info_json:
            self._info_json = json.dumps(info.to_dict(), separators=(",", ":")).encode()

    def dissolve_into(self, cluster_id: str) -> None:
        """Fence the group (nothing more is applied or acknowledged) and have the
        control loop wipe it and join ``cluster_id``."""
        fence_group(self.group, f"dissolving into cluster {cluster_id}")
        self._dissolve_into = cluster_id
        self.kick()

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
                self.kick()
            return
        if self.table.observe_info(origin, info.to_dict(), "pubsub"):
            self.kick()

    def settled(self) -> bool:
        """A member of a cluster with a known leader (formation's boot work is done)."""
        return self.phase == MEMBER and self.group.leader != NONE

    # -- views ------------------------------------------------------------------------------
    def fresh_infos(self) -> list[NodeInfo]:
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

    def own_summary(self) -> ClusterSummary | None:
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

    def other_clusters(self, infos: list[NodeInfo]) -> list[ClusterSummary]:
        own = self.record.id if self.record is not None else None
        return [c for c in summarize_clusters(infos).values() if c.id != own]

    def _fresh_view(self) -> FreshView:
        infos = self.fresh_infos()
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
        self.kick()

    # -- running ----------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        finish_pending_wipe(self.group, self.db, self.data_dir)
        self._gate_transport()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.endpoint.run)
            if self._has_data():
                await self._start_group()
                self.refresh_state()
                cs = self.group.conf
                self._removed_at_start = (
                    self.record is not None and self.id not in cs.voters + cs.learners
                )
                self._confirm_membership = not self._removed_at_start
            self._info = self._compute_info()
            nursery.start_soon(self._control_loop)
            nursery.start_soon(self.ticker.run)
            nursery.start_soon(self.pex.run)
            nursery.start_soon(self.leader.run)
            nursery.start_soon(self._watch_table)
            task_status.started()

    async def _watch_table(self) -> None:
        while True:
            await self.table.wait_changed()
            self.kick()

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
                self.push_soon()
                wipe_group(self.group, self.db, self.data_dir)
                self.stats.dissolves += 1
                log.warning("%s: state wiped; joining cluster %s", self.ns, target)
            self._dissolve_into = None
            self._accepted = False
            self._removed_at_start = False
            self._confirm_membership = False
            self._rejoin_cluster = ""
            self.record = None
            self.writes = False

    async def _fresh_phase(self) -> None:
        if not self.group.is_empty():
            # Only a hard state (a term heard from some leader, no log): drop it, or a
            # higher stale term would make us refuse the cluster we join next.
            wipe_group(self.group, self.db, self.data_dir)
        self.phase = FRESH
        # The first window counts from the process start (``started_ago``): nodes
        # started together get the same window however long each one's start-up took.
        first = self._fresh_since == -math.inf
        self._fresh_since = self._born if first else self.now()
        self._gate_heard.clear()
        self._leaderless.clear()
        self._candidates = frozenset()
        self._candidates_changed = self.now()
        self.push_soon()
        last = ""
        asked = ""  # the cluster we last asked to join
        attempts = 0
        while True:
            if self._accepted:
                self.phase = JOINING
                self._joined_at = self.now()
                await self._start_group()  # (already running if we asked early)
                self.push_soon()
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
                self.founding = new_record(self.id)
                self.group.bootstrap([self.id])
                self.stats.bootstraps += 1
                log.info("%s: founding cluster %s", self.ns, self.founding.id)
                self.phase = MEMBER
                await self._start_group()
                self.group.campaign()
                self.push_soon()
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
            # Wake when a window ends, not up to a tick later (new information kicks).
            await self.sleep_or_kick(min(self.cfg.tick_s, max(0.0, d.recheck) + 0.001))

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
        self.push_soon()
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
                    self.push_soon()
                if self._removed_at_start:
                    await self._rejoin_own_cluster()
            await self.sleep_or_kick(self.cfg.tick_s)

    def note_direct_info(self, peer: str, info: NodeInfo) -> None:
        """``peer`` told us its announcement itself (a peer exchange, either way).

        Started with state that lists us, the first such announcement from our
        cluster's leader says whether that is still true. A node can be removed without
        ever applying its own removal: while it was down, or when it left on shutdown
        and exited before the commit reached it (the leader no longer replicates to a
        removed node). Its own configuration then lists it forever, and without this
        check it would wait for a leader that never contacts it again. Only the
        leader's own words count: a relayed or gossiped copy may predate the removal.
        Our cluster is the one of our record, or, before the record is applied (a node
        stopped right after joining), the one whose leader our configuration lists."""
        if not self._confirm_membership:
            return
        if self.group.is_leader:
            self._confirm_membership = False  # elected: we are in the membership
            return
        if info.leader != peer or info.state != MEMBER or not info.cluster:
            return
        rec = self.record
        if rec is not None:
            if info.cluster != rec.id:
                return
        else:
            cs = self.group.conf
            if peer not in cs.voters + cs.learners:
                return
        self._confirm_membership = False
        if self.id not in info.voters + info.learners:
            log.info(
                "%s: the leader %s does not list us: removed while we were away", self.ns, peer
            )
            self._rejoin_cluster = info.cluster
            self._removed_at_start = True
            self.kick()

    async def _rejoin_own_cluster(self) -> None:
        """Started with state, but no longer in our cluster's membership (removed while
        down): ask to be added back (our log is a prefix of the cluster's history). A
        join from a member is answered "already a member": asking is always safe."""
        rec = self.record
        cid = rec.id if rec is not None else self._rejoin_cluster
        if not cid:
            self._removed_at_start = False
            return
        if self.now() < self._next_join:
            return
        self._next_join = self.now() + self.cfg.heartbeat_s
        own = summarize_clusters(i for i in self.fresh_infos() if i.cluster == cid).get(cid)
        if own is not None and await self._join(own, empty=False):
            self._removed_at_start = False
            log.info("%s: removed while down; added back to cluster %s", self.ns, cid)

    # -- tick: announcement, addresses, conflicts -------------------------------------------
    def refresh_state(self) -> None:
        if self.running and self._has_data():
            rec = read_record(self.group.sm)
            if rec is not None:
                self.record = rec
            self.writes = has_user_writes(self.group.sm)

    # -- peer exchange ------------------------------------------------------------------------

    # -- the protocol handler ----------------------------------------------------------------
    async def _handle(self, remote: str, msg: wire.Message) -> wire.Message:
        if isinstance(msg, PexMessage):
            self.pex.absorb(remote, msg)
            return PexMessage(self._info, self.pex.entries(remote))
        if isinstance(msg, JoinRequest):
            return await self.leader.handle_request(remote, msg, self.leader.joins)
        if isinstance(msg, LeaveRequest):
            return await self.leader.handle_request(remote, msg, self.leader.leaves)
        return Reply(wire.ERROR, "unexpected message")

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
            self.kick()
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
        self.dissolve_into(into or "?")
