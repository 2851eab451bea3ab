"""The tick loop of formation, for one namespace (DESIGN.md "Duplicate clusters",
"Namespace conflicts").

Every tick it refreshes what this node knows of its own cluster and its announcement,
keeps the Raft transport's address book in step with discovery (one best address per
peer: docs/libp2p.md, pitfall 3), reports a namespace conflict (two clusters that both
hold writes), and notices that its own cluster vanished around it (no leader, nobody
announcing it, no writes), in which case the node dissolves into the cluster that is
there. The decisions are the pure functions of :mod:`raftd.formation.decide`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from raftd.formation.decide import ClusterSummary, cluster_vanished, conflict_with
from raftd.formation.wire import MEMBER

if TYPE_CHECKING:
    from raftd.formation.node import NamespaceFormation

__all__ = ["TickLoop"]

log = logging.getLogger("raftd.formation")

#: Peers not heard of for this long are dropped from the namespace's table.
_FORGET_AFTER = 600.0


class TickLoop:
    """The tick loop of one :class:`NamespaceFormation` (its ``ticker``)."""

    def __init__(self, node: NamespaceFormation) -> None:
        self.node = node
        self._orphan_since: float | None = None

    async def run(self) -> None:
        last_addr_refresh = self.node.now()
        while True:
            now = self.node.now()
            if now - last_addr_refresh > 10.0:
                last_addr_refresh = now
                self.node.hub.refresh_addrs()
            self.node.refresh_state()
            self.check_conflict()
            self.check_orphan()
            self.sync_transport()
            self.node.announce()
            self.node.table.forget_older_than(_FORGET_AFTER)
            await trio.sleep(self.node.cfg.tick_s)

    def best_addr(self, peer: str) -> str | None:
        rec = self.node.table.get(peer)
        if rec is None:
            return None
        if rec.good_addr:
            return rec.good_addr
        ranked = self.node.hub.ranked(rec.addrs)
        return ranked[0] if ranked else None

    def sync_transport(self) -> None:
        """One best address per peer in the Raft transport (pitfall 3), for every peer
        that takes part in this namespace."""
        members = set(self.node.group.conf.voters) | set(self.node.group.conf.learners)
        for rec in self.node.table.records():
            if rec.info is None and rec.peer_id not in members:
                continue
            best = self.best_addr(rec.peer_id)
            if best is None:
                continue
            try:
                if self.node.transport.peer_addrs(rec.peer_id) != [best]:
                    self.node.transport.add_peer_addrs(rec.peer_id, [best])
            except ValueError as exc:
                log.debug("%s: bad address for %s: %s", self.node.ns, rec.peer_id, exc)

    def check_conflict(self) -> None:
        own = self.node.own_summary()
        other = (
            conflict_with(own, self.node.other_clusters(self.node.fresh_infos())) if own else None
        )
        if other is None:
            if self.node.conflict is not None:
                log.warning(
                    "%s: namespace conflict with cluster %s no longer seen",
                    self.node.ns,
                    self.node.conflict["other_cluster_id"],
                )
                self.node.conflict = None
                self.node.stats.conflict = 0
                self.node.hub.namespace_conflicts[self.node.ns] = 0
            return
        assert own is not None
        if self.node.conflict is None or self.node.conflict["other_cluster_id"] != other.id:
            self.node.stats.conflicts_detected += 1
            log.error(
                "%s: namespace conflict: cluster %s (ours) and cluster %s (leader %s) both "
                "hold writes; not merging. See DESIGN.md, 'Namespace conflicts'.",
                self.node.ns,
                own.id,
                other.id,
                other.leader or "unknown",
            )
        self.node.conflict = {
            "cluster_id": own.id,
            "other_cluster_id": other.id,
            "other_leader": other.leader,
            "other_members": sorted(other.members()),
            "since_ms": (self.node.conflict or {}).get("since_ms") or time.time_ns() // 1_000_000,
        }
        self.node.stats.conflict = 1
        self.node.hub.namespace_conflicts[self.node.ns] = 1

    def check_orphan(self) -> None:
        """Our cluster vanished around us (its other members dissolved while we were
        away, or died for good) and holds no writes: join the cluster that is there.
        "Vanished": nobody announces our cluster with a leader, and we have no leader,
        or the leader we last knew now announces another cluster (it dissolved before
        the change adding us reached us: a node outside the membership never campaigns,
        so it would keep that leader forever)."""
        if (
            self.node.phase != MEMBER
            or self.node.record is None
            or self.node.writes
            or not self.node.running
        ):
            self._orphan_since = None
            return
        infos = self.node.fresh_infos()
        own = self.node.record.id
        if not cluster_vanished(own, self.node.group.leader, infos):
            self._orphan_since = None
            return
        others = self.node.other_clusters(infos)
        if not others:
            self._orphan_since = None
            return
        now = self.node.now()
        if self._orphan_since is None:
            self._orphan_since = now
            return
        if now - self._orphan_since < self.node.cfg.orphan_s:
            return
        target = min(others, key=ClusterSummary.rank)
        log.warning(
            "%s: cluster %s has no leader and no other member around for %.0fs; "
            "it holds no writes: dissolving into %s",
            self.node.ns,
            own,
            now - self._orphan_since,
            target.id,
        )
        self.node.dissolve_into(target.id)
