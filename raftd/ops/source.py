"""What the ops endpoints read: :class:`OpsSource`, built by the app from its parts.

The groups and transports are the daemon's own (live mappings, read at each probe or
scrape); what other components count (requests the API forwarded, peers discovery saw,
formation events) comes through small callables, so this package depends on no
component above the group runtime. Every callable must be cheap and must not block: the
ops server calls them on the trio thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raftd.runtime.group import GroupStats
from raftd.transport.base import TransportStats

__all__ = ["ObservedGroup", "ObservedTransport", "ObservedWatchdog", "OpsSource"]


class ObservedGroup(Protocol):
    """The parts of a :class:`raftd.runtime.group.Group` the ops endpoints read."""

    @property
    def stats(self) -> GroupStats: ...

    @property
    def peer_rtt(self) -> Mapping[str, float]:
        """Smoothed heartbeat round-trip seconds per peer (only while leading)."""
        ...

    @property
    def failed(self) -> BaseException | None:
        """The storage error that stopped the group, if any."""
        ...

    @property
    def running(self) -> bool:
        """True once the group runs (its Raft node is open)."""
        ...

    def status(self) -> dict[str, Any]:
        """The ``raftd status`` record: role, term, leader, commit, applied, members."""
        ...


class ObservedTransport(Protocol):
    @property
    def stats(self) -> TransportStats: ...


class ObservedWatchdog(Protocol):
    """The event-loop watchdog's counters (:class:`raftd.runtime.watchdog.LoopWatchdog`)."""

    @property
    def stalls(self) -> int: ...

    @property
    def longest_s(self) -> float: ...


def _zero(namespace: str) -> int:
    return 0


def _no_events(namespace: str) -> Mapping[str, int]:
    return {}


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class OpsSource:
    """Everything ``/readyz`` and ``/metrics`` read, per namespace where it applies."""

    peer_id: str
    #: The configured namespaces; one without a group reads as "group not started".
    namespaces: Sequence[str]
    groups: Mapping[str, ObservedGroup]
    transports: Mapping[str, ObservedTransport]
    watchdog: ObservedWatchdog | None = None
    #: True once the daemon is shutting down (then never ready).
    stopping: Callable[[], bool] = _never
    #: Requests sent to the leader by command (the API's forwarders), per namespace.
    forwarded_calls: Callable[[str], int] = _zero
    #: Peers discovery has seen for the namespace.
    discovery_peers: Callable[[str], int] = _zero
    #: Formation counters of the namespace (``FormationStats.as_dict()``: event counts,
    #: and ``conflict``, 0 or 1); empty without formation.
    formation_events: Callable[[str], Mapping[str, int]] = _no_events
