"""The collector against stand-in objects: every input it reads, including the ones
other components expose (forwarders, discovery, formation, peer RTT), read defensively."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest

from raftd.app.config import DaemonConfig
from raftd.ops.metrics import METRICS, ObservedSamples, install_histograms, make_registry
from raftd.runtime.group import GroupStats
from raftd.transport.base import TransportStats

from .helpers import parse_metrics, sample

NS = "/raft/x"


@dataclass
class FakeGroup:
    st: dict[str, Any]
    stats: GroupStats = field(default_factory=GroupStats)
    node: object = object()
    failed: BaseException | None = None
    peer_rtt: dict[str, float] = field(default_factory=dict)  # Group.peer_rtt

    def status(self) -> dict[str, Any]:
        return self.st


def _daemon(**extra: Any) -> SimpleNamespace:
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
    group.stats.proposals_ok = 10
    group.stats.snapshots_installed = 1
    group.stats.apply_seconds.extend([0.0001, 0.003])  # before the collector: kept
    ts = TransportStats(sent=5, received=6)
    ts.count_queue_drop("peerB")
    ts.count_queue_drop("peerB")
    group.peer_rtt["peerB"] = 0.012  # measured by the group (leader), not the transport
    transport = SimpleNamespace(stats=ts)
    return SimpleNamespace(
        cfg=DaemonConfig(data_dir=Path("/nonexistent"), namespaces=[NS]),
        peer_id="me",
        groups={NS: group},
        transports={NS: transport},
        _stop=None,
        **extra,
    )


def test_collector_reads_every_input() -> None:
    formation_stats = SimpleNamespace(as_dict=lambda: {"bootstraps": 1, "joins": 2, "conflict": 1})
    # The shapes of raftd.api.runtime.ApiRuntime and raftd.formation.service.Formation.
    d = _daemon(
        api=SimpleNamespace(forwarders={NS: SimpleNamespace(stats={"calls": 4})}),
        formation=SimpleNamespace(
            hub=SimpleNamespace(tables={NS: ["p1", "p2", "p3"]}),
            namespaces={NS: SimpleNamespace(stats=formation_stats)},
        ),
    )
    reg = make_registry(d)
    g = d.groups[NS]
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
    assert sample(m, "raftd_proposals_total", namespace=NS, result="ok") == 10
    assert sample(m, "raftd_forwarded_requests_total", namespace=NS) == 4
    assert sample(m, "raftd_apply_duration_seconds_count", namespace=NS) == 3
    assert sample(m, "raftd_apply_duration_seconds_bucket", namespace=NS, le="0.0001") == 1
    assert sample(m, "raftd_apply_duration_seconds_bucket", namespace=NS, le="0.005") == 2
    assert sample(m, "raftd_apply_duration_seconds_bucket", namespace=NS, le="0.5") == 3
    assert abs(sample(m, "raftd_apply_duration_seconds_sum", namespace=NS) - 0.5031) < 1e-9
    assert sample(m, "raftd_fsync_duration_seconds_count", namespace=NS) == 1
    assert sample(m, "raftd_snapshots_total", namespace=NS, kind="installed") == 1
    assert sample(m, "raftd_transport_messages_total", namespace=NS, direction="sent") == 5
    assert sample(m, "raftd_transport_dropped_total", namespace=NS, reason="queue_full") == 2
    assert sample(m, "raftd_send_queue_dropped_total", namespace=NS, peer="peerB") == 2
    assert sample(m, "raftd_peer_rtt_seconds", namespace=NS, peer="peerB") == 0.012
    assert sample(m, "raftd_discovery_peers_seen", namespace=NS) == 3
    assert sample(m, "raftd_discovery_namespace_conflicts", namespace=NS) == 1
    assert sample(m, "raftd_formation_events_total", namespace=NS, event="joins") == 2
    assert "process_cpu_seconds_total" in m and "python_info" in m
    # Every family in METRICS is exposed (the docs list is the truth).
    exposed = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n in m}
    assert set(METRICS) <= exposed, set(METRICS) - exposed


def _version(m: Any) -> str:
    (labels,) = m["raftd_info"]
    return str(dict(labels)["version"])


def test_collector_without_optional_inputs() -> None:
    """No API, discovery, formation or RTT: zeros, and no series for per-peer metrics."""
    d = _daemon()
    d.transports[NS] = SimpleNamespace(stats=TransportStats())
    d.groups[NS].st = {}  # a group that reports nothing useful
    d.groups[NS].peer_rtt.clear()  # a follower measures no RTT
    m = parse_metrics(generate_latest(make_registry(d)).decode())
    assert sample(m, "raftd_forwarded_requests_total", namespace=NS) == 0
    assert sample(m, "raftd_discovery_peers_seen", namespace=NS) == 0
    assert sample(m, "raftd_discovery_namespace_conflicts", namespace=NS) == 0
    assert sample(m, "raftd_role", namespace=NS, role="stopped") == 1
    assert sample(m, "raftd_ready", namespace=NS) == 0
    assert "raftd_peer_rtt_seconds" not in m
    assert "raftd_send_queue_dropped_total" not in m


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
    g = SimpleNamespace(stats=GroupStats(apply_seconds=[0.1]))
    install_histograms(g)
    first = g.stats.apply_seconds
    install_histograms(g)
    assert g.stats.apply_seconds is first and isinstance(first, ObservedSamples)
    assert first.observations == 1
    install_histograms(SimpleNamespace())  # no stats: left alone


def test_metric_list_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "daemon" / "README.md").read_text()
    missing = [n for n in METRICS if f"`{n}`" not in readme]
    assert not missing, f"add to daemon/README.md's metric table: {missing}"
