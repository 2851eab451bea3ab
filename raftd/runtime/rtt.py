"""Round-trip time to each peer, as the leader sees it through its heartbeats.

:class:`RttEstimator` pairs a message sent to a peer with that peer's next response and
keeps a smoothed RTT per peer (an EWMA, as TCP's SRTT: RFC 6298 with ``alpha = 1/8``).
The group runtime feeds it heartbeats (``MsgHeartbeat`` out, ``MsgHeartbeatResp`` in),
so only a leader measures, and only the heartbeats that ask for an answer (an idle,
caught-up follower is asked about once per election timeout, see
:class:`~raftd.core.types.Message`). What it measures is the Raft-level round trip: the
send queue, the network and the follower's Ready loop (which answers a heartbeat
without an fsync), not an ICMP ping.

Pairing: a heartbeat response does not say which heartbeat it answers. The estimator
keeps **one probe per peer in flight**: :meth:`RttEstimator.sent` stamps a probe only
when none is outstanding, and the next :meth:`RttEstimator.received` from that peer
completes it. Raft messages to one peer travel in order on one stream, so that response
answers the stamped heartbeat unless the heartbeat or its response was lost; then the
next response completes it late (the sample is too high by about one heartbeat interval,
and the EWMA damps it). A probe older than ``expiry`` counts as lost and is replaced by
the next send, so one loss never blocks measuring for good.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["RttEstimator"]


class RttEstimator:
    """Smoothed round-trip time per peer, in seconds. See the module docstring.

    ``alpha``: the weight of a new sample (0 < alpha <= 1); the first sample of a peer is
    taken as is. ``expiry``: seconds after which an unanswered probe counts as lost.
    Times are whatever monotonic clock the caller passes as ``now``. Not thread-safe
    (the group's trio task owns it).
    """

    def __init__(self, *, alpha: float = 0.125, expiry: float = 1.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        if expiry <= 0:
            raise ValueError(f"expiry must be positive, not {expiry}")
        self.alpha = alpha
        self.expiry = expiry
        self._probes: dict[str, float] = {}
        self._srtt: dict[str, float] = {}
        self._view: Mapping[str, float] = MappingProxyType(self._srtt)

    @property
    def smoothed(self) -> Mapping[str, float]:
        """A live, read-only mapping peer id -> smoothed RTT (seconds); a peer appears
        once one of its probes was answered."""
        return self._view

    def sent(self, peer: str, now: float) -> None:
        """A request that ``peer`` will answer left at ``now``: stamp it, unless a probe
        to that peer is already in flight (and not yet expired)."""
        t0 = self._probes.get(peer)
        if t0 is None or now - t0 > self.expiry:
            self._probes[peer] = now

    def received(self, peer: str, now: float) -> float | None:
        """A response from ``peer`` arrived at ``now``: complete its probe. Returns the
        sample (seconds), or None if no probe was in flight (nothing is recorded)."""
        t0 = self._probes.pop(peer, None)
        if t0 is None:
            return None
        sample = max(0.0, now - t0)
        old = self._srtt.get(peer)
        self._srtt[peer] = sample if old is None else old + self.alpha * (sample - old)
        return sample

    def forget(self, peer: str) -> None:
        """Drop everything about ``peer`` (it left the group)."""
        self._probes.pop(peer, None)
        self._srtt.pop(peer, None)

    def clear(self) -> None:
        """Drop everything (this node stopped leading: its numbers would go stale)."""
        self._probes.clear()
        self._srtt.clear()
