"""Prometheus metrics of one daemon, read from its state at scrape time.

:func:`make_registry` builds a per-daemon :class:`~prometheus_client.CollectorRegistry`
(never the global one: tests run several daemons in one process) holding
:class:`RaftdCollector` and prometheus-client's process, platform and GC collectors.

:class:`RaftdCollector` keeps no gauges of its own: every scrape reads the groups,
transports, forwarders and discovery state, so the hot paths pay nothing for metrics.
The one exception is latency: a histogram must see every observation. The group
runtime already hands each apply and fsync duration to a list (``GroupStats``'s
``apply_seconds`` / ``fsync_seconds``, trimmed to recent samples); the collector swaps
those lists for :class:`ObservedSamples`, a ``list`` that also counts each appended
value into cumulative histogram buckets (one ``bisect`` per Ready, not per entry).

Every series carries a ``namespace`` label (except ``raftd_info`` and the event-loop
series). The metric list, with types and labels, is :data:`METRICS`.

What it reads is an :class:`~raftd.ops.source.OpsSource`, typed, built by the app: the
groups (status, :class:`~raftd.runtime.group.GroupStats`, ``peer_rtt``: smoothed
heartbeat round-trip seconds per peer, measured only while the group leads, so followers
expose no ``raftd_peer_rtt_seconds`` series), the transports' ``TransportStats``, the
event-loop watchdog, and three per-namespace counters other components keep: requests
the API forwarded to the leader by command, peers discovery saw, and the formation
counters (``raftd_formation_events_total``, and ``conflict`` as
``raftd_discovery_namespace_conflicts``).
"""

from __future__ import annotations

import bisect
import gc
import importlib.metadata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from raftd.core import NONE
from raftd.ops.health import DEFAULT_MAX_LAG, readiness
from raftd.ops.source import OpsSource
from raftd.runtime.group import GroupStats
from raftd.transport.base import TransportStats

__all__ = [
    "LATENCY_BUCKETS",
    "METRICS",
    "ROLES",
    "ObservedSamples",
    "RaftdCollector",
    "install_histograms",
    "make_registry",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds (seconds) of the apply and fsync histograms (+Inf is implicit)."""

ROLES = ("leader", "candidate", "follower", "learner", "stopped")
"""Values of the ``role`` label of ``raftd_role`` (one series each, 1 for the current)."""

METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name (as exposed, without _bucket/_sum/_count): (type, labels, help)
    "raftd_info": ("info", ("peer_id", "version"), "This daemon's identity."),
    "raftd_role": ("gauge", ("namespace", "role"), "1 for this node's current role."),
    "raftd_has_leader": ("gauge", ("namespace",), "1 if this node knows a leader."),
    "raftd_ready": ("gauge", ("namespace",), "1 if the namespace passes /readyz."),
    "raftd_term": ("gauge", ("namespace",), "Current Raft term."),
    "raftd_commit_index": ("gauge", ("namespace",), "Highest log index known committed."),
    "raftd_applied_index": ("gauge", ("namespace",), "Highest log index applied here."),
    "raftd_members": ("gauge", ("namespace", "kind"), "Group members by kind (voter/learner)."),
    "raftd_leader_changes_total": (
        "counter",
        ("namespace",),
        "Times this node saw the leader change (including to none).",
    ),
    "raftd_campaigns_total": (
        "counter",
        ("namespace",),
        "Elections this node started (pre-vote or vote rounds), for any cause: an election "
        "timeout, a lost leader, a leadership transfer. Grows while a healthy leader leads: "
        "this node disrupts the group.",
    ),
    "raftd_slow_persists_total": (
        "counter",
        ("namespace",),
        "Log writes that took longer than a tick (Raft kept stepping while they ran).",
    ),
    "raftd_stuck_persist_handovers_total": (
        "counter",
        ("namespace",),
        "Times this leader handed leadership over because its own log write was stuck.",
    ),
    "raftd_proposals_total": (
        "counter",
        ("namespace", "result"),
        "Proposals on this node as leader, by result (ok/failed).",
    ),
    "raftd_forwarded_requests_total": (
        "counter",
        ("namespace",),
        "Requests this node sent to the leader: writes (in Raft PROP messages) and admin "
        "operations (by command).",
    ),
    "raftd_apply_duration_seconds": (
        "histogram",
        ("namespace",),
        "Time to apply one batch of committed entries to the state machine.",
    ),
    "raftd_fsync_duration_seconds": (
        "histogram",
        ("namespace",),
        "Time to persist one Ready (entries, hard state, snapshot) with fsync.",
    ),
    "raftd_snapshots_total": (
        "counter",
        ("namespace", "kind"),
        "Snapshots by kind: taken here (no image), images made for followers, installed "
        "from the leader, sent to followers, failed (an image that could not be written).",
    ),
    "raftd_transport_messages_total": (
        "counter",
        ("namespace", "direction"),
        "Raft messages sent or received.",
    ),
    "raftd_transport_frames_total": (
        "counter",
        ("namespace", "direction"),
        "Raft stream frames (batches of messages, one write each) sent or received.",
    ),
    "raftd_transport_bytes_total": (
        "counter",
        ("namespace", "direction"),
        "Bytes of Raft stream frames sent or received (sealed, before libp2p's framing).",
    ),
    "raftd_transport_dropped_total": (
        "counter",
        ("namespace", "reason"),
        "Outbound Raft messages dropped, by reason (queue_full, unreachable, fault, invalid).",
    ),
    "raftd_send_queue_dropped_total": (
        "counter",
        ("namespace", "peer"),
        "Outbound Raft messages dropped because the peer's send queue was full.",
    ),
    "raftd_peer_rtt_seconds": (
        "gauge",
        ("namespace", "peer"),
        "Smoothed heartbeat round-trip time to each peer (only on the leader).",
    ),
    "raftd_discovery_peers_seen": (
        "gauge",
        ("namespace",),
        "Peers discovery has seen for the namespace.",
    ),
    "raftd_discovery_namespace_conflicts": (
        "gauge",
        ("namespace",),
        "Other clusters with writes found using the same namespace (0 or 1).",
    ),
    "raftd_event_loop_stalls_total": (
        "counter",
        (),
        "Times the daemon's event loop woke up a second or more late (CPU starvation, "
        "a blocking call).",
    ),
    "raftd_event_loop_longest_stall_seconds": (
        "gauge",
        (),
        "Longest event-loop lateness seen since start.",
    ),
    "raftd_gc_young_threshold": (
        "gauge",
        (),
        "Net allocations between young-generation collections of Python's garbage "
        "collector (raftd run sets it; Python's default is 700).",
    ),
    "raftd_gc_frozen_objects": (
        "gauge",
        (),
        "Objects that start-up left in the collector's permanent generation, which no "
        "collection walks (0: not frozen).",
    ),
    "raftd_formation_events_total": (
        "counter",
        ("namespace", "event"),
        "Formation events (bootstraps, joins, dissolves, promotions, pex_ok, ...).",
    ),
}


class ObservedSamples(list[float]):
    """A ``list[float]`` that also counts every appended value into cumulative histogram
    buckets (``le`` semantics: a value equal to a bound falls in that bucket).

    It replaces a ``GroupStats`` sample list in place: trimming the list (``del``) does
    not touch the counts, so the histogram stays monotonic as Prometheus requires."""

    def __init__(self, samples: Iterable[float] = (), bounds: Sequence[float] = LATENCY_BUCKETS):
        super().__init__()
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.counts: list[int] = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.observations = 0
        for v in samples:
            self.append(v)

    def append(self, value: float, /) -> None:
        super().append(value)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.observations += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((_le(bound), acc))
        out.append(("+Inf", self.observations))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


def install_histograms(stats: GroupStats) -> None:
    """Make ``stats.apply_seconds`` / ``fsync_seconds`` :class:`ObservedSamples`
    (keeping the samples already there). Idempotent."""
    if not isinstance(stats.apply_seconds, ObservedSamples):
        stats.apply_seconds = ObservedSamples(stats.apply_seconds)
    if not isinstance(stats.fsync_seconds, ObservedSamples):
        stats.fsync_seconds = ObservedSamples(stats.fsync_seconds)


def _version() -> str:
    try:
        return importlib.metadata.version("raftd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RaftdCollector(Collector):
    """Reads ``source`` on every ``collect()``.

    Must be called on the thread that runs the daemon (the ops HTTP server does so on
    the trio thread); it never blocks and never raises for a group in a bad state."""

    def __init__(self, source: OpsSource, *, max_lag: int = DEFAULT_MAX_LAG) -> None:
        self.source = source
        self.max_lag = max_lag
        self.version = _version()
        for g in list(source.groups.values()):
            install_histograms(g.stats)

    def describe(self) -> list[Metric]:
        # Names are only known per scrape; returning [] skips duplicate checks at register.
        return []

    def collect(self) -> Iterator[Metric]:
        src = self.source
        groups = dict(src.groups)

        def fam(name: str) -> Any:
            kind, labels, doc = METRICS[name]
            # The families add these suffixes themselves.
            short = name.removesuffix("_total") if kind == "counter" else name
            short = short.removesuffix("_info") if kind == "info" else short
            cls = {
                "gauge": GaugeMetricFamily,
                "counter": CounterMetricFamily,
                "histogram": HistogramMetricFamily,
                "info": InfoMetricFamily,
            }[kind]
            return cls(short, doc, labels=list(labels))

        info = fam("raftd_info")
        info.add_metric([src.peer_id, self.version], {})
        yield info

        f: dict[str, Any] = {name: fam(name) for name in METRICS if name != "raftd_info"}
        ready = {
            r.namespace: r.ready
            for r in readiness(src.namespaces, src.groups, self.max_lag).namespaces
        }
        for ns, g in groups.items():
            gs = g.stats
            install_histograms(gs)
            try:
                st: dict[str, Any] = g.status()
            except Exception:
                st = {"role": "stopped"}
            role = str(st.get("role", "stopped"))
            for r in ROLES:
                f["raftd_role"].add_metric([ns, r], 1.0 if r == role else 0.0)
            f["raftd_has_leader"].add_metric([ns], 0.0 if st.get("leader", NONE) == NONE else 1.0)
            f["raftd_ready"].add_metric([ns], 1.0 if ready.get(ns) else 0.0)
            f["raftd_term"].add_metric([ns], float(st.get("term", 0)))
            f["raftd_commit_index"].add_metric([ns], float(st.get("commit", 0)))
            f["raftd_applied_index"].add_metric([ns], float(st.get("applied", 0)))
            members = st.get("members", [])
            voters = sum(1 for m in members if m.get("voter"))
            f["raftd_members"].add_metric([ns, "voter"], float(voters))
            f["raftd_members"].add_metric([ns, "learner"], float(len(members) - voters))

            f["raftd_leader_changes_total"].add_metric([ns], float(gs.leader_changes))
            f["raftd_campaigns_total"].add_metric([ns], float(gs.campaigns))
            f["raftd_slow_persists_total"].add_metric([ns], float(gs.slow_persists))
            f["raftd_stuck_persist_handovers_total"].add_metric(
                [ns], float(gs.stuck_persist_handovers)
            )
            f["raftd_proposals_total"].add_metric([ns, "ok"], float(gs.proposals_ok))
            f["raftd_proposals_total"].add_metric([ns, "failed"], float(gs.proposals_failed))
            # Writes proposed to the leader in PROP messages plus requests sent by command.
            forwarded = gs.proposals_forwarded + src.forwarded_calls(ns)
            f["raftd_forwarded_requests_total"].add_metric([ns], float(forwarded))
            for samples, name in (
                (gs.apply_seconds, "raftd_apply_duration_seconds"),
                (gs.fsync_seconds, "raftd_fsync_duration_seconds"),
            ):
                if isinstance(samples, ObservedSamples):
                    f[name].add_metric([ns], samples.buckets(), samples.total)
            for kind, n in (
                ("taken", gs.snapshots_taken),
                ("image", gs.snapshot_images),
                ("installed", gs.snapshots_installed),
                ("sent", gs.snapshots_sent),
                ("failed", gs.snapshot_failures),
            ):
                f["raftd_snapshots_total"].add_metric([ns, kind], float(n))

            t = src.transports.get(ns)
            ts = t.stats if t is not None else TransportStats()
            for direction, msgs, frames, nbytes in (
                ("sent", ts.sent, ts.frames_sent, ts.bytes_sent),
                ("received", ts.received, ts.frames_received, ts.bytes_received),
            ):
                f["raftd_transport_messages_total"].add_metric([ns, direction], float(msgs))
                f["raftd_transport_frames_total"].add_metric([ns, direction], float(frames))
                f["raftd_transport_bytes_total"].add_metric([ns, direction], float(nbytes))
            for reason, n in (
                ("queue_full", ts.dropped_queue_full),
                ("unreachable", ts.dropped_unreachable),
                ("fault", ts.dropped_fault),
                ("invalid", ts.dropped_invalid),
            ):
                f["raftd_transport_dropped_total"].add_metric([ns, reason], float(n))
            for peer, n in sorted(ts.dropped_by_peer.items()):
                f["raftd_send_queue_dropped_total"].add_metric([ns, peer], float(n))
            for peer, secs in sorted(g.peer_rtt.items()):
                f["raftd_peer_rtt_seconds"].add_metric([ns, peer], float(secs))

            f["raftd_discovery_peers_seen"].add_metric([ns], float(src.discovery_peers(ns)))
            events = dict(src.formation_events(ns))
            conflict = events.pop("conflict", 0)
            f["raftd_discovery_namespace_conflicts"].add_metric([ns], float(conflict))
            for event, n in sorted(events.items()):
                f["raftd_formation_events_total"].add_metric([ns, event], float(n))
        wd = src.watchdog
        f["raftd_event_loop_stalls_total"].add_metric([], float(wd.stalls if wd else 0))
        f["raftd_event_loop_longest_stall_seconds"].add_metric(
            [], float(wd.longest_s if wd else 0.0)
        )
        f["raftd_gc_young_threshold"].add_metric([], float(gc.get_threshold()[0]))
        f["raftd_gc_frozen_objects"].add_metric([], float(gc.get_freeze_count()))
        yield from f.values()


def make_registry(source: OpsSource, *, max_lag: int = DEFAULT_MAX_LAG) -> CollectorRegistry:
    """A fresh registry with :class:`RaftdCollector` for ``source`` plus the process,
    platform and GC collectors (``process_*``, ``python_info``, ``python_gc_*``)."""
    reg = CollectorRegistry()
    reg.register(RaftdCollector(source, max_lag=max_lag))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg
