"""The peer table of one namespace: what this node knows about every other node.

Discovery sources (mDNS, DHT, pubsub, bootstrap entries, peer exchange) feed it; the
formation reads it. It maps peer ids to addresses and keeps, opaquely, the newest
self-description (``info``, a JSON-able dict defined by :mod:`raftd.formation.wire`)
each peer published, with the local time that description was produced. It never
decides membership: that only changes through Raft.

Freshness: every record remembers when its addresses and its info were last confirmed
(``addrs_at``, ``info_at``, on this node's monotonic clock). Information relayed by a
third party (peer exchange) arrives with its age and is dated back accordingly, so a
stale rumour never overrides a fresher direct observation.

Not thread-safe: owned by the trio thread (mDNS results are handed over first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

__all__ = ["PeerRecord", "PeerTable"]

Clock = Callable[[], float]

#: Sources a record can come from (for status output and tests).
SOURCES = ("mdns", "dht", "pubsub", "bootstrap", "pex", "direct", "static", "member")


@dataclass(slots=True)
class PeerRecord:
    """Everything known about one peer (see the module docstring)."""

    peer_id: str
    addrs: list[str] = field(default_factory=list)
    addrs_at: float = -math.inf
    info: dict[str, Any] | None = None
    info_at: float = -math.inf
    sources: set[str] = field(default_factory=set)
    #: Last successful direct exchange with the peer (we dialed it, or it called us).
    direct_at: float = -math.inf
    #: The address our last successful dial used (tried first next time).
    good_addr: str | None = None
    failures: int = 0
    retry_at: float = -math.inf  # no dial before this (backoff after failures)

    def info_age(self, now: float) -> float:
        return now - self.info_at

    def reachable(self, now: float, within: float) -> bool:
        """A direct exchange succeeded within the last ``within`` seconds."""
        return now - self.direct_at <= within


class PeerTable:
    """Per-namespace peer table (see the module docstring)."""

    def __init__(self, local_id: str, *, clock: Clock | None = None) -> None:
        self.local_id = local_id
        self._clock = clock or trio.current_time
        self._peers: dict[str, PeerRecord] = {}
        self._changed = trio.Event()
        #: Incremented on every change that matters to formation (new peer, new addrs,
        #: new info); cheap to compare for "anything new since I last looked?".
        self.version = 0

    # -- reading ---------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def get(self, peer_id: str) -> PeerRecord | None:
        return self._peers.get(peer_id)

    def __contains__(self, peer_id: str) -> bool:
        return peer_id in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def records(self) -> Iterator[PeerRecord]:
        """Every record, in peer id order (deterministic)."""
        for pid in sorted(self._peers):
            yield self._peers[pid]

    async def wait_changed(self) -> None:
        """Return at the next change (see :attr:`version`)."""
        await self._changed.wait()

    # -- writing ---------------------------------------------------------------------------
    def _record(self, peer_id: str) -> PeerRecord | None:
        if peer_id == self.local_id or not peer_id:
            return None
        rec = self._peers.get(peer_id)
        if rec is None:
            rec = self._peers[peer_id] = PeerRecord(peer_id)
            self._bump()
        return rec

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    def observe_addrs(
        self, peer_id: str, addrs: Sequence[str], source: str, *, age: float = 0.0
    ) -> bool:
        """Addresses of ``peer_id`` as seen ``age`` seconds ago by ``source``. Newer
        addresses replace older ones (a restarted peer moved; stale addresses would make
        the dial fail, pitfall 3). Returns True if the record changed."""
        rec = self._record(peer_id)
        if rec is None:
            return False
        at = self.now() - max(0.0, age)
        changed = source not in rec.sources
        rec.sources.add(source)
        clean = [a.split("/p2p/")[0] for a in addrs if a]
        if clean and at >= rec.addrs_at:
            if clean != rec.addrs:
                rec.addrs = clean
                if rec.good_addr not in clean:
                    rec.good_addr = None
                rec.failures = 0
                rec.retry_at = -math.inf
                changed = True
            rec.addrs_at = at
        if changed:
            self._bump()
        return changed

    def observe_info(
        self, peer_id: str, info: dict[str, Any], source: str, *, age: float = 0.0
    ) -> bool:
        """``peer_id``'s self-description as it was ``age`` seconds ago. Kept only if
        newer than what we hold; its ``addrs`` field (if any) updates the addresses."""
        rec = self._record(peer_id)
        if rec is None:
            return False
        at = self.now() - max(0.0, age)
        if at < rec.info_at:
            rec.sources.add(source)  # it told us (something older): still a source
            return False
        changed = rec.info != info
        rec.info = info
        rec.info_at = at
        addrs = info.get("addrs")
        if isinstance(addrs, list) and all(isinstance(a, str) for a in addrs):
            changed = self.observe_addrs(peer_id, addrs, source, age=age) or changed
        else:
            rec.sources.add(source)
        if changed:
            self._bump()
        return changed

    def mark_direct(self, peer_id: str, addr: str | None = None) -> None:
        """A direct exchange with ``peer_id`` just succeeded (through ``addr`` if we
        dialed)."""
        rec = self._record(peer_id)
        if rec is None:
            return
        first = rec.direct_at == -math.inf
        rec.direct_at = self.now()
        rec.failures = 0
        rec.retry_at = -math.inf
        if addr is not None:
            rec.good_addr = addr.split("/p2p/")[0]
        if first:
            self._bump()

    def mark_failed(self, peer_id: str, *, base: float = 0.5, cap: float = 30.0) -> None:
        """A dial to ``peer_id`` failed: back off (exponential, capped)."""
        rec = self._peers.get(peer_id)
        if rec is None:
            return
        rec.failures += 1
        rec.retry_at = self.now() + min(cap, base * 2 ** min(rec.failures - 1, 16))
        if rec.good_addr is not None and rec.failures >= 2:
            rec.good_addr = None

    def forget_older_than(self, horizon: float) -> list[str]:
        """Drop peers nothing has confirmed for ``horizon`` seconds; return their ids."""
        now = self.now()
        gone = [
            pid
            for pid, r in self._peers.items()
            if now - max(r.addrs_at, r.info_at, r.direct_at) > horizon
        ]
        for pid in gone:
            del self._peers[pid]
        if gone:
            self._bump()
        return gone
