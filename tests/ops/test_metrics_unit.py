"""The collector against stand-in parts: every input of its typed source, including the
counters other components keep (forwarders, discovery, formation) and peer RTT."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from raftd.ops.metrics import METRICS, ObservedSamples, install_histograms, make_registry
from raftd.ops.source import OpsSource
from raftd.runtime.group import GroupStats
from raftd.transport.base import TransportStats

from .helpers import parse_metrics, sample

NS = "/raft/x"


@dataclass
class FakeGroup:
    st: dict[str, Any]
    stats: GroupStats = field(default_factory=GroupStats)
    running: bool = True
    failed: BaseException | None = None
    peer_rtt: dict[str, float] = field(default_factory=dict)  # Group.peer_rtt

    def status(self) -> dict[str, Any]:
        return self.st


@dataclass
class FakeTransport:
    stats: TransportStats


@dataclass
class FakeWatchdog:
    stalls: int
    longest_s: float


def _source(**extra: Any) -> OpsSource:
    group = FakeGroup(
        {
            "role": "follower",
            "term": 7,
            "leader": "L",
            "commit": 50,
            "applied": 48,
            "members": [{"id": "a", "voter": True}, {"id": "b", "voter": False}],
        }
    )
    group.stats.leader_changes = 3
    group.stats.campaigns = 2
    group.stats.proposals_ok = 10
    group.stats.snapshots_installed = 1
    group.stats.snapshot_failures = 2
    group.stats.apply_seconds.extend([0.0001, 0.003])  # before the collector: kept
    ts = TransportStats(sent=5, received=6)
    ts.count_queue_drop("peerB")
    ts.count_queue_drop("peerB")
    group.peer_rtt["peerB"] = 0.012  # measured by the group (leader), not the transport
    return OpsSource(
        peer_id="me",
        namespaces=[NS],
        groups={NS: group},
        transports={NS: FakeTransport(ts)},
        **extra,
    )


def test_collector_reads_every_input() -> None:
    def formation(ns: str) -> Mapping[str, int]:
        return {"bootstraps": 1, "joins": 2, "conflict": 1} if ns == NS else {}

    src = _source(
        watchdog=FakeWatchdog(stalls=2, longest_s=1.5),
        forwarded_calls=lambda ns: 4 if ns == NS else 0,
        discovery_peers=lambda ns: 3 if ns == NS else 0,
        formation_events=formation,
    )
    reg = make_registry(src)
    g = src.groups[NS]
    g.stats.apply_seconds.append(0.5)  # observed after the swap
    g.stats.fsync_seconds.append(0.002)
    m = parse_metrics(generate_latest(reg).decode())
    assert sample(m, "raftd_info", peer_id="me", version=_version(m)) == 1
    assert sample(m, "raftd_role", namespace=NS, role="follower") == 1
    assert sample(m, "raftd_role", namespace=NS, role="leader") == 0
    assert sample(m, "raftd_has_leader", namespace=NS) == 1
    assert sample(m, "raftd_ready", namespace=NS) == 1
    assert sample(m, "raftd_term", namespace=NS) == 7
    assert sample(m, "raftd_commit_index", namespace=NS) == 50
    assert sample(m, "raftd_applied_index", namespace=NS) == 48
    assert sample(m, "raftd_members", namespace=NS, kind="voter") == 1
    assert sample(m, "raftd_members", namespace=NS, kind="learner") == 1
    assert sample(m, "raftd_leader_changes_total", namespace=NS) == 3
    assert sample(m, "raftd_campaigns_total", namespace=NS) == 2
    assert sample(m, "raftd_proposals_total", namespace=NS, result="ok") == 10
    assert sample(m, "raftd_forwarded_requests_total", namespace=NS) == 4
    assert sample(m, "raftd_apply_duration_seconds_count", namespace=NS) == 3
    assert sample(m, "raftd_apply_duration_seconds_bucket", namespace=NS, le="0.0001") == 1
    assert sample(m, "raftd_apply_duration_seconds_bucket", namespace=NS, le="0.005") == 2
    assert sample(m, "raftd_apply_duration_seconds_bucket", namespace=NS, le="0.5") == 3
    assert abs(sample(m, "raftd_apply_duration_seconds_sum", namespace=NS) - 0.5031) < 1e-9
    assert sample(m, "raftd_fsync_duration_seconds_count", namespace=NS) == 1
    assert sample(m, "raftd_snapshots_total", namespace=NS, kind="installed") == 1
    assert sample(m, "raftd_snapshots_total", namespace=NS, kind="failed") == 2
    assert sample(m, "raftd_transport_messages_total", namespace=NS, direction="sent") == 5
    assert sample(m, "raftd_transport_dropped_total", namespace=NS, reason="queue_full") == 2
    assert sample(m, "raftd_send_queue_dropped_total", namespace=NS, peer="peerB") == 2
    assert sample(m, "raftd_peer_rtt_seconds", namespace=NS, peer="peerB") == 0.012
    assert sample(m, "raftd_discovery_peers_seen", namespace=NS) == 3
    assert sample(m, "raftd_discovery_namespace_conflicts", namespace=NS) == 1
    assert sample(m, "raftd_formation_events_total", namespace=NS, event="joins") == 2
    # ``conflict`` is a gauge of its own, not an event.
    assert not any(dict(k).get("event") == "conflict" for k in m["raftd_formation_events_total"])
    assert sample(m, "raftd_event_loop_stalls_total") == 2
    assert sample(m, "raftd_event_loop_longest_stall_seconds") == 1.5
    assert "process_cpu_seconds_total" in m and "python_info" in m
    # Every family in METRICS is exposed (the docs list is the truth).
    exposed = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in m}
    assert set(METRICS) <= exposed, set(METRICS) - exposed


def _version(m: Any) -> str:
    (labels,) = m["raftd_info"]
    return str(dict(labels)["version"])


def test_collector_without_optional_inputs() -> None:
    """No API, discovery, formation or RTT: zeros, and no series for per-peer metrics."""
    src = replace(_source(), transports={})  # and no transport: its counters read 0
    g = src.groups[NS]
    assert isinstance(g, FakeGroup)
    g.st = {}  # a group that reports nothing useful
    g.peer_rtt.clear()  # a follower measures no RTT
    m = parse_metrics(generate_latest(make_registry(src)).decode())
    assert sample(m, "raftd_forwarded_requests_total", namespace=NS) == 0
    assert sample(m, "raftd_discovery_peers_seen", namespace=NS) == 0
    assert sample(m, "raftd_discovery_namespace_conflicts", namespace=NS) == 0
    assert sample(m, "raftd_transport_messages_total", namespace=NS, direction="sent") == 0
    assert sample(m, "raftd_event_loop_stalls_total") == 0
    assert sample(m, "raftd_role", namespace=NS, role="stopped") == 1
    assert sample(m, "raftd_ready", namespace=NS) == 0
    assert "raftd_peer_rtt_seconds" not in m
    assert "raftd_send_queue_dropped_total" not in m


def test_readiness_of_a_stopped_or_failed_group() -> None:
    src = _source()
    g = src.groups[NS]
    assert isinstance(g, FakeGroup)
    m = parse_metrics(generate_latest(make_registry(src)).decode())
    assert sample(m, "raftd_ready", namespace=NS) == 1
    g.running = False
    m = parse_metrics(generate_latest(make_registry(src)).decode())
    assert sample(m, "raftd_ready", namespace=NS) == 0
    g.running, g.failed = True, OSError("disk full")
    m = parse_metrics(generate_latest(make_registry(src)).decode())
    assert sample(m, "raftd_ready", namespace=NS) == 0


def test_observed_samples_stay_monotonic_when_trimmed() -> None:
    s = ObservedSamples([0.001])
    for _ in range(5000):
        s.append(0.02)
    del s[:2048]  # what GroupStats does past 4096 samples
    assert len(s) == 5001 - 2048
    b = dict(s.buckets())
    assert b["0.001"] == 1 and b["0.025"] == 5001 and b["+Inf"] == 5001
    assert s.observations == 5001


def test_install_histograms_is_idempotent() -> None:
    stats = GroupStats(apply_seconds=[0.1])
    install_histograms(stats)
    first = stats.apply_seconds
    install_histograms(stats)
    assert stats.apply_seconds is first and isinstance(first, ObservedSamples)
    assert first.observations == 1


def test_metric_list_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "daemon" / "README.md").read_text()
    missing = [n for n in METRICS if f"`{n}`" not in readme]
    assert not missing, f"add to daemon/README.md's metric table: {missing}"
