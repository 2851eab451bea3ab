"""The leader's duties in formation, for one namespace (DESIGN.md "Joining", "Duplicate
clusters", "Membership automation").

While its node leads, :class:`LeaderDuties` stores the cluster record, serves join and
leave requests (queued as tickets and answered once the change is applied), dissolves a
duplicate cluster without writes into the better one, and automates membership (voter
cap, dead voters, learner garbage collection, leadership hand-off for reachability), one
membership change at a time. What to do is decided by the pure functions of
:mod:`raftd.formation.decide`; this module carries it out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio

from raftd.core import ConfChange, ConfChangeType, ConfState, PeerProgress
from raftd.formation.cluster import new_record, record_command
from raftd.formation.decide import (
    MembershipView,
    PeerHealth,
    can_remove_voter,
    caught_up,
    dissolve_target,
    plan_membership,
    transfer_target,
)
from raftd.formation.wire import (
    BUSY,
    CATCH_UP,
    MEMBER,
    NOT_LEADER,
    OK,
    REFUSED,
    WRONG_CLUSTER,
    JoinRequest,
    LeaveRequest,
    Reply,
)
from raftd.runtime.group import GroupError
from raftd.wire.pb import api_pb2 as apb

if TYPE_CHECKING:
    from raftd.formation.node import NamespaceFormation

__all__ = ["DISSOLVE_MARKER", "LeaderDuties"]

log = logging.getLogger("raftd.formation")

#: The node id of the no-op membership change that marks "this cluster dissolves here".
#: Not a peer id (no peer id contains ':'), so removing it changes nothing.
DISSOLVE_MARKER = "raftd:dissolve"

_TICKET_TTL = 30.0


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


class LeaderDuties:
    """The leader loop of one :class:`NamespaceFormation` (its ``leader``); idle while
    the node does not lead."""

    def __init__(self, node: NamespaceFormation) -> None:
        self.node = node
        self.joins: dict[str, _Ticket] = {}
        self.leaves: dict[str, _Ticket] = {}
        self._health = _Health()
        self._was_leader = False
        self._last_transfer = -math.inf
        self._ready_since: float | None = None
        self._record_term = -1
        self._dissolve_seen: tuple[str, float] | None = None

    async def handle_request(
        self, remote: str, req: JoinRequest | LeaveRequest, queue: dict[str, _Ticket]
    ) -> Reply:
        if not req.relayed and req.id != remote:
            return Reply(REFUSED, "a node may only ask for itself")
        rec = self.node.record
        if rec is None or not self.node.running or self.node.phase != MEMBER:
            return Reply(WRONG_CLUSTER, "no cluster here", info=self.node.info)
        if rec.id != req.cluster:
            return Reply(WRONG_CLUSTER, f"this is cluster {rec.id}", info=self.node.info)
        g = self.node.group
        budget = self.node.cfg.rpc_timeout_s * 0.8
        if g.is_leader:
            members = set(g.conf.voters) | set(g.conf.learners)
            if req.relayed and remote not in members:
                return Reply(REFUSED, "relayed by a non-member")
            if isinstance(req, LeaveRequest) and req.id == self.node.id:
                return Reply(REFUSED, "the leader must transfer leadership first")
            t = queue.get(req.id)
            if t is None or t.done.is_set():
                t = queue[req.id] = _Ticket(req.id, created=self.node.now())
            if isinstance(req, JoinRequest):
                t.addrs = req.addrs
                t.empty = req.empty
                self.node.table.observe_addrs(req.id, list(req.addrs), "member")
            self.node.kick()
            with trio.move_on_after(budget):
                await t.done.wait()
            return t.reply or Reply(BUSY, "membership change pending", leader=self.node.id)
        if req.relayed:
            return Reply(NOT_LEADER, "not the leader", leader=g.leader)
        leader = g.leader
        if not leader:
            return Reply(NOT_LEADER, "no leader right now")
        fwd = replace(req, relayed=True)
        reply = await self.node.endpoint.call(leader, fwd, within=budget)
        if isinstance(reply, Reply):
            return reply
        return Reply(NOT_LEADER, "leader unreachable from here", leader=leader)

    async def run(self) -> None:
        while True:
            g = self.node.group
            leading = self.node.running and g.is_leader and g.node is not None
            if leading and not self._was_leader:
                self._health.reset(self.node.now())
            self._was_leader = leading
            if not leading:
                self.fail_tickets(Reply(NOT_LEADER, "not the leader", leader=g.leader))
                await self.node.sleep_or_kick(self.node.cfg.tick_s)
                continue
            assert g.node is not None
            self._health.observe(g.node.progress_view(), self.node.now())
            try:
                with trio.move_on_after(self.node.cfg.rpc_timeout_s):
                    did = await self.step()
            except GroupError as exc:
                log.debug("%s: membership step failed: %s", self.node.ns, exc)
                did = False
            if not did:
                await self.node.sleep_or_kick(self.node.cfg.tick_s)

    def fail_tickets(self, reply: Reply) -> None:
        for q in (self.joins, self.leaves):
            for t in q.values():
                t.resolve(reply)
            q.clear()

    def context(self, peer: str, addrs: tuple[str, ...] = ()) -> bytes:
        if not addrs:
            rec = self.node.table.get(peer)
            addrs = tuple(rec.addrs) if rec is not None else ()
        if not addrs:
            return b""
        return apb.MemberContext(addrs=list(addrs)).SerializeToString()

    async def change(self, cc: ConfChange, why: str) -> ConfState:
        cs = await self.node.group.propose_conf_change(cc)
        log.info("%s: membership: %s %s (%s)", self.node.ns, cc.type.name.lower(), cc.node_id, why)
        return cs

    async def step(self) -> bool:
        """One unit of leader work; True if it did something (the loop goes again)."""
        g = self.node.group
        node = g.node
        assert node is not None
        if self.node.record is None:
            if self._record_term == node.term:
                return False  # proposed this term already: wait for it to apply
            self._record_term = node.term
            rec = self.node.founding or new_record(self.node.id)
            log.info("%s: storing cluster record %s", self.node.ns, rec.id)
            await g.propose(record_command(rec))
            self.node.refresh_state()
            self.node.push_soon()
            return True
        now = self.node.now()
        cs = g.conf
        members = set(cs.voters) | set(cs.learners)
        # Leaves, then joins: requests from nodes that are waiting.
        for q in (self.leaves, self.joins):
            for key in [
                k for k, t in q.items() if now - t.created > _TICKET_TTL or t.done.is_set()
            ]:
                q.pop(key).resolve(Reply(BUSY, "expired"))
        if self.leaves:
            node_id, t = next(iter(self.leaves.items()))
            if node_id in members:
                await self.change(ConfChange(ConfChangeType.REMOVE_NODE, node_id), "leave")
                self.node.stats.removals += 1
            self.leaves.pop(node_id, None)
            t.resolve(Reply(OK, "removed"))
            return True
        if self.joins:
            return await self.serve_join(*next(iter(self.joins.items())))
        # Duplicate clusters.
        if await self.maybe_dissolve():
            return True
        view = self.membership_view()
        ch = plan_membership(view)
        if ch is not None:
            ctx = self.context(ch.node) if ch.type != ConfChangeType.REMOVE_NODE else b""
            await self.change(ConfChange(ch.type, ch.node, ctx), ch.reason)
            if ch.type == ConfChangeType.ADD_VOTER:
                self.node.stats.promotions += 1
            elif ch.type == ConfChangeType.ADD_LEARNER:
                self.node.stats.demotions += 1
            else:
                self.node.stats.removals += 1
            self.node.push_soon()
            return True
        if now - self._last_transfer > self.node.cfg.transfer_cooldown_s:
            connected = {i.id: i.connected for i in self.node.fresh_infos()}
            target = transfer_target(view, connected, self.node.connected_peers())
            if target is not None:
                self._last_transfer = now
                self.node.stats.transfers += 1
                log.info(
                    "%s: handing leadership to %s: it reaches members we cannot",
                    self.node.ns,
                    target,
                )
                g.transfer_leader(target)
        return False

    async def serve_join(self, node_id: str, t: _Ticket) -> bool:
        g = self.node.group
        cs = g.conf
        if t.addrs:
            best = self.node.hub.ranked(t.addrs)
            if best:
                with contextlib.suppress(ValueError):
                    self.node.transport.add_peer_addrs(node_id, best[:1])
        if node_id in cs.voters:
            if t.empty:
                if can_remove_voter(self.membership_view(), node_id):
                    # A wiped voter lost its vote and log: remove it, then it joins as a
                    # learner like anyone else (the ticket stays queued for that).
                    await self.change(
                        ConfChange(ConfChangeType.REMOVE_NODE, node_id), "rejoins without state"
                    )
                    self.node.stats.readds += 1
                    return True
                self.joins.pop(node_id, None)
                t.resolve(Reply(CATCH_UP, "voter rejoining without state: catch up by snapshot"))
                return True
            self.joins.pop(node_id, None)
            t.resolve(Reply(OK, "already a voter"))
            return True
        if node_id in cs.learners:
            self.joins.pop(node_id, None)
            t.resolve(Reply(OK, "already a learner"))
            return True
        self.node.stats.join_requests += 1
        await self.change(
            ConfChange(ConfChangeType.ADD_LEARNER, node_id, self.context(node_id, t.addrs)),
            "join",
        )
        self.joins.pop(node_id, None)
        t.resolve(Reply(OK, "added as a learner"))
        self.node.push_soon()
        return True

    async def maybe_dissolve(self) -> bool:
        own = self.node.own_summary()
        if own is None or self.node.writes:
            self._dissolve_seen = None
            return False
        target = dissolve_target(own, self.node.other_clusters(self.node.fresh_infos()))
        if target is None:
            self._dissolve_seen = None
            return False
        now = self.node.now()
        # Debounce: act on an announcement confirmed over a heartbeat, not on one rumour.
        if self._dissolve_seen is None or self._dissolve_seen[0] != target.id:
            self._dissolve_seen = (target.id, now)
            return False
        if now - self._dissolve_seen[1] < self.node.cfg.heartbeat_s:
            return False
        self._dissolve_seen = None
        log.warning(
            "%s: cluster %s (no user writes) dissolves into cluster %s (older or holding writes)",
            self.node.ns,
            own.id,
            target.id,
        )
        ctx = json.dumps({"into": target.id, "leader": target.leader}).encode()
        self.node.stats.dissolve_markers += 1
        await self.change(ConfChange(ConfChangeType.REMOVE_NODE, DISSOLVE_MARKER, ctx), "dissolve")
        return True

    def membership_view(self) -> MembershipView:
        g = self.node.group
        node = g.node
        assert node is not None
        now = self.node.now()
        cfg = self.node.cfg
        health: dict[str, PeerHealth] = {}
        for pid, pr in node.progress_view().items():
            if pid == self.node.id:
                continue
            silent = self._health.silent(pid, now)
            health[pid] = PeerHealth(
                match=pr.match,
                alive=silent <= cfg.alive_s,
                dead=silent >= cfg.dead_voter_s,
                gone=silent >= cfg.learner_gc_s,
            )
        view = MembershipView(
            leader=self.node.id,
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
