"""Peer exchange for one namespace (``pex``, DESIGN.md "Peer exchange").

A node talks to every newly seen peer at once, to a few random ones every heartbeat (every
third once it is a settled member), and, right after a change worth telling (its state,
cluster or leader), to the leader it knows and a bounded random subset. Request and
response carry the sender's node info and what it knows about others, each dated, so
knowledge spreads through intermediaries. Decisions are not made here: the exchange only
feeds the namespace's peer table, which the formation's loops read.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from raftd.formation.wire import MEMBER, NodeInfo, PexEntry, PexMessage, WireError

if TYPE_CHECKING:
    from raftd.formation.node import NamespaceFormation

__all__ = ["PeerExchange"]

_PEX_FANOUT = 3
_PUSH_FANOUT = 8
_PEX_ENTRIES = 64


class PeerExchange:
    """The peer exchange loop of one :class:`NamespaceFormation` (its ``pex``)."""

    def __init__(self, node: NamespaceFormation) -> None:
        self.node = node
        self._push = trio.Event()

    def push_soon(self) -> None:
        """Tell the others at the next turn of the loop (wake it: see ``node.kick``)."""
        self._push.set()

    def entries(self, exclude: str) -> tuple[PexEntry, ...]:
        if not self.node.hub.pex:
            return ()
        now = self.node.table.now()
        entries: list[tuple[float, PexEntry]] = []
        for rec in self.node.table.records():
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
            if age > self.node.cfg.stale_s * 4:
                continue
            entries.append((age, PexEntry(rec.peer_id, tuple(rec.addrs), int(age * 1000), info)))
        entries.sort(key=lambda e: e[0])
        return tuple(e for _, e in entries[:_PEX_ENTRIES])

    def absorb(self, remote: str, msg: PexMessage) -> None:
        info = msg.info
        if info.id != remote or info.ns != self.node.ns:
            return  # a peer speaks only for itself
        self.node.table.observe_info(remote, info.to_dict(), "direct")
        self.node.note_direct_info(remote, info)
        if not self.node.hub.pex:
            return
        for e in msg.peers:
            if e.id == self.node.id:
                continue
            age = e.age_ms / 1000
            if e.info is not None and e.info.ns == self.node.ns:
                self.node.table.observe_info(e.id, e.info.to_dict(), "pex", age=age)
            elif e.addrs:
                self.node.table.observe_addrs(e.id, list(e.addrs), "pex", age=age)

    async def exchange(self, peer: str) -> None:
        msg = PexMessage(self.node.info, self.entries(peer))
        reply = await self.node.endpoint.call(peer, msg, within=self.node.cfg.rpc_timeout_s)
        if isinstance(reply, PexMessage):
            self.node.stats.pex_ok += 1
            self.absorb(peer, reply)
        else:
            self.node.stats.pex_failed += 1

    async def run(self) -> None:
        next_round = self.node.now()
        busy: set[str] = set()

        async def one(peer: str) -> None:
            try:
                await self.exchange(peer)
            finally:
                busy.discard(peer)

        async with trio.open_nursery() as nursery:
            while True:
                now = self.node.table.now()
                push = self._push.is_set()
                if push:
                    self._push = trio.Event()
                    if self.node.hub.pubsub is not None:
                        nursery.start_soon(self.node.hub.pubsub.publish_now, self.node.ns)
                eligible = [
                    r
                    for r in self.node.table.records()
                    if r.peer_id not in busy and r.retry_at <= now and r.addrs
                ]
                targets = {r.peer_id for r in eligible if r.direct_at == -math.inf}
                if push:
                    # A change worth telling at once: to the leader we know and a bounded
                    # random subset (the rest hear it through their own exchanges within
                    # a heartbeat or two): N nodes changing state together must not cost
                    # N * (N - 1) streams at once.
                    ids = [r.peer_id for r in eligible if r.peer_id not in targets]
                    self.node.rng.shuffle(ids)
                    leader = self.node.group.leader
                    if leader in ids:
                        ids.remove(leader)
                        ids.insert(0, leader)
                    targets.update(ids[:_PUSH_FANOUT])
                if self.node.now() >= next_round:
                    # A settled member needs the exchange for freshness only (addresses,
                    # other clusters): every third heartbeat. A node still forming: every one.
                    period = self.node.cfg.heartbeat_s * (3 if self.node.phase == MEMBER else 1)
                    next_round = self.node.now() + period * self.node.rng.uniform(0.8, 1.2)
                    others = [r.peer_id for r in eligible if r.peer_id not in targets]
                    self.node.rng.shuffle(others)
                    targets.update(others[:_PEX_FANOUT])
                for peer in sorted(targets):
                    busy.add(peer)
                    nursery.start_soon(one, peer)
                await self.node.sleep_or_kick(
                    max(0.05, min(self.node.cfg.tick_s, next_round - self.node.now()))
                )
