"""``scripts/bench rss``: VmRSS of each idle daemon once startup has settled."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from harness.bench.load import result
from harness.bench.meters import pace, rss_kb, settle

if TYPE_CHECKING:
    from raftd.testing.cluster import LocalCluster


def measure_rss(
    cluster: LocalCluster, *, settle_s: float = 10.0, min_idle_s: float = 2.0
) -> dict[str, object]:
    """VmRSS of every daemon once it is idle: at least ``min_idle_s`` after the cluster
    settled and stable (within 1%) over the last second, at most ``settle_s``."""
    settle(cluster)
    t0 = time.monotonic()
    pids = [n.pid for n in cluster.nodes if n.pid is not None]
    history: list[list[int]] = []
    while True:
        t = time.perf_counter()
        history.append([rss_kb(p) for p in pids])
        recent = history[-5:]
        stable = len(recent) == 5 and all(
            max(col) - min(col) <= 0.01 * max(col) for col in zip(*recent, strict=True)
        )
        waited = time.monotonic() - t0
        if (stable and waited >= min_idle_s) or waited >= settle_s:
            break
        pace(t, 0.25)
    last = history[-1]
    return result(
        "idle-rss",
        clients=0,
        ok=len(last),
        idle_rss_kb=int(statistics.median(last)),
        rss_kb_max=max(last),
        rss_kb_per_node=last,
        idle_s=round(time.monotonic() - t0, 1),
        stable=stable,
    )
