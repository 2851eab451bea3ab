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

Every series carries a ``namespace`` label (except ``raftd_info``). The metric list,
with types and labels, is :data:`METRICS`.

Inputs owned by other components, read defensively (a missing attribute reads as 0 or
no series):

- ``daemon.api.forwarders[ns].stats["calls"]``: requests forwarded to the leader.
- ``daemon.discovery``: an object (or its ``.stats``) with ``peers_seen`` and
  ``namespace_conflicts``, each an int, a sized collection (its length counts), or a
  mapping from namespace to either; or a ``DiscoveryHub`` (``tables[ns]``: its peers),
  also found as ``daemon.formation.hub``.
- ``daemon.formation.namespaces[ns].stats.as_dict()`` (``FormationStats``): the
  ``raftd_formation_events_total`` counters and the ``conflict`` gauge
  (``raftd_discovery_namespace_conflicts``).
- ``group.peer_rtt`` (:attr:`raftd.runtime.group.Group.peer_rtt`): a mapping peer id ->
  smoothed heartbeat round-trip seconds, measured only while the group leads (empty on
  followers, so they expose no ``raftd_peer_rtt_seconds`` series).
"""

from __future__ import annotations

import bisect
import importlib.metadata
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
        "Snapshots by kind: taken here, installed from the leader, sent to followers.",
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


def install_histograms(group: Any) -> None:
    """Make ``group.stats.apply_seconds`` / ``fsync_seconds`` :class:`ObservedSamples`
    (keeping the samples already there). Idempotent; a group without them is left alone."""
    st = getattr(group, "stats", None)
    if st is None:
        return
    for attr in ("apply_seconds", "fsync_seconds"):
        cur = getattr(st, attr, None)
        if isinstance(cur, list) and not isinstance(cur, ObservedSamples):
            setattr(st, attr, ObservedSamples(cur))


def _as_count(value: Any, namespace: str) -> float:
    """An int-like reading from a defensive source: ints, sized collections (their
    length), or a mapping keyed by namespace (that namespace's entry)."""
    if isinstance(value, Mapping):
        return _as_count(value.get(namespace, 0), namespace)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if hasattr(value, "__len__"):
        try:
            return float(len(value))
        except TypeError:
            return 0.0
    return 0.0


def _discovery_value(daemon: Any, namespace: str, attr: str) -> float:
    disc = getattr(daemon, "discovery", None)
    if disc is None:  # the formation service owns the DiscoveryHub
        disc = getattr(getattr(daemon, "formation", None), "hub", None)
    if disc is None:
        return 0.0
    for src in (getattr(disc, "stats", None), disc):
        if src is None:
            continue
        value = src.get(attr) if isinstance(src, Mapping) else getattr(src, attr, None)
        if value is not None:
            return _as_count(value, namespace)
    if attr == "peers_seen":  # a DiscoveryHub: one peer table per namespace
        tables = getattr(disc, "tables", None)
        if isinstance(tables, Mapping):
            return _as_count(tables.get(namespace, 0), namespace)
    return 0.0


def _formation_stats(daemon: Any, namespace: str) -> dict[str, float]:
    """The namespace's formation counters (``FormationStats.as_dict()``), if the daemon
    exposes its formation nodes as ``daemon.formation`` (or ``formations``): a mapping
    from namespace to node, or an object with such a mapping in ``namespaces`` or
    ``nodes`` (``raftd.formation.service.Formation``)."""
    for name in ("formation", "formations"):
        holder = getattr(daemon, name, None)
        if holder is None:
            continue
        nodes = holder
        for attr in ("namespaces", "nodes"):
            if not isinstance(nodes, Mapping):
                nodes = getattr(holder, attr, None)
        node = nodes.get(namespace) if isinstance(nodes, Mapping) else None
        stats = getattr(node, "stats", None)
        as_dict = getattr(stats, "as_dict", None)
        if callable(as_dict):
            raw = as_dict()
            if isinstance(raw, Mapping):
                return {
                    str(k): float(v)
                    for k, v in raw.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
    return {}


def _forwarded(daemon: Any, namespace: str) -> float:
    """Writes proposed to the leader in PROP messages plus requests sent by command."""
    group = getattr(daemon, "groups", {}).get(namespace)
    n = float(getattr(getattr(group, "stats", None), "proposals_forwarded", 0))
    api = getattr(daemon, "api", None)
    fwd = getattr(api, "forwarders", {}).get(namespace) if api is not None else None
    stats = getattr(fwd, "stats", None)
    if isinstance(stats, Mapping):
        n += float(stats.get("calls", 0))
    return n


def _version() -> str:
    try:
        return importlib.metadata.version("raftd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RaftdCollector(Collector):
    """Reads ``daemon`` (a :class:`raftd.app.daemon.Daemon`) on every ``collect()``.

    Must be called on the thread that runs the daemon (the ops HTTP server does so on
    the trio thread); it never blocks and never raises for a group in a bad state."""

    def __init__(self, daemon: Any, *, max_lag: int = DEFAULT_MAX_LAG) -> None:
        self.daemon = daemon
        self.max_lag = max_lag
        self.version = _version()
        for g in list(getattr(daemon, "groups", {}).values()):
            install_histograms(g)

    def describe(self) -> list[Metric]:
        # Names are only known per scrape; returning [] skips duplicate checks at register.
        return []

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        groups: dict[str, Any] = dict(getattr(d, "groups", {}))
        transports: dict[str, Any] = dict(getattr(d, "transports", {}))

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
        info.add_metric([str(getattr(d, "peer_id", "") or ""), self.version], {})
        yield info

        f: dict[str, Any] = {name: fam(name) for name in METRICS if name != "raftd_info"}
        ready = {r.namespace: r.ready for r in readiness(d, self.max_lag).namespaces}
        for ns, g in groups.items():
            install_histograms(g)
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

            gs = getattr(g, "stats", None)
            f["raftd_leader_changes_total"].add_metric(
                [ns], float(getattr(gs, "leader_changes", 0))
            )
            f["raftd_slow_persists_total"].add_metric([ns], float(getattr(gs, "slow_persists", 0)))
            f["raftd_stuck_persist_handovers_total"].add_metric(
                [ns], float(getattr(gs, "stuck_persist_handovers", 0))
            )
            f["raftd_proposals_total"].add_metric([ns, "ok"], float(getattr(gs, "proposals_ok", 0)))
            f["raftd_proposals_total"].add_metric(
                [ns, "failed"], float(getattr(gs, "proposals_failed", 0))
            )
            f["raftd_forwarded_requests_total"].add_metric([ns], _forwarded(d, ns))
            for attr, name in (
                ("apply_seconds", "raftd_apply_duration_seconds"),
                ("fsync_seconds", "raftd_fsync_duration_seconds"),
            ):
                samples = getattr(gs, attr, None)
                if isinstance(samples, ObservedSamples):
                    f[name].add_metric([ns], samples.buckets(), samples.total)
            for kind in ("taken", "installed", "sent"):
                f["raftd_snapshots_total"].add_metric(
                    [ns, kind], float(getattr(gs, f"snapshots_{kind}", 0))
                )

            t = transports.get(ns)
            ts = getattr(t, "stats", None)
            f["raftd_transport_messages_total"].add_metric(
                [ns, "sent"], float(getattr(ts, "sent", 0))
            )
            f["raftd_transport_messages_total"].add_metric(
                [ns, "received"], float(getattr(ts, "received", 0))
            )
            for direction in ("sent", "received"):
                f["raftd_transport_frames_total"].add_metric(
                    [ns, direction], float(getattr(ts, f"frames_{direction}", 0))
                )
                f["raftd_transport_bytes_total"].add_metric(
                    [ns, direction], float(getattr(ts, f"bytes_{direction}", 0))
                )
            for reason in ("queue_full", "unreachable", "fault", "invalid"):
                f["raftd_transport_dropped_total"].add_metric(
                    [ns, reason], float(getattr(ts, f"dropped_{reason}", 0))
                )
            by_peer = getattr(ts, "dropped_by_peer", None)
            if isinstance(by_peer, Mapping):
                for peer, n in sorted(by_peer.items()):
                    f["raftd_send_queue_dropped_total"].add_metric([ns, str(peer)], float(n))
            rtt = getattr(g, "peer_rtt", None)  # measured by the group while it leads
            if isinstance(rtt, Mapping):
                for peer, secs in sorted(rtt.items()):
                    f["raftd_peer_rtt_seconds"].add_metric([ns, str(peer)], float(secs))

            f["raftd_discovery_peers_seen"].add_metric([ns], _discovery_value(d, ns, "peers_seen"))
            formation = _formation_stats(d, ns)
            conflict = formation.pop("conflict", None)
            if conflict is None:
                conflict = _discovery_value(d, ns, "namespace_conflicts")
            f["raftd_discovery_namespace_conflicts"].add_metric([ns], conflict)
            for event, n in sorted(formation.items()):
                f["raftd_formation_events_total"].add_metric([ns, event], n)
        wd = getattr(d, "watchdog", None)
        f["raftd_event_loop_stalls_total"].add_metric([], float(getattr(wd, "stalls", 0)))
        f["raftd_event_loop_longest_stall_seconds"].add_metric(
            [], float(getattr(wd, "longest_s", 0.0))
        )
        yield from f.values()


def make_registry(daemon: Any, *, max_lag: int = DEFAULT_MAX_LAG) -> CollectorRegistry:
    """A fresh registry with :class:`RaftdCollector` for ``daemon`` plus the process,
    platform and GC collectors (``process_*``, ``python_info``, ``python_gc_*``)."""
    reg = CollectorRegistry()
    reg.register(RaftdCollector(daemon, max_lag=max_lag))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg
