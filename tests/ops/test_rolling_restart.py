"""Graceful shutdown: a rolling restart of all 3 nodes under a steady write load.

Each node in turn gets SIGTERM (a leader hands leadership to its most caught-up voter
first), must exit 0, and is started again. Writers send each write to a node that is not
being restarted, as an application behind a load balancer would. Every write must
succeed; the longest write latency (the stall) is printed.
"""

from __future__ import annotations

import pytest

from raftd.testing.cluster import LocalCluster

from .writers import Writers

pytestmark = pytest.mark.slow


def test_rolling_restart_under_load_loses_no_write() -> None:
    with LocalCluster(3) as cluster:
        cluster.wait_leader()
        load = Writers(cluster)
        load.start()
        codes = []
        for node in cluster.nodes:
            with load.taken_out(node):
                codes.append(node.terminate())
                node.start()
        load.stop()
        assert codes == [0, 0, 0]
        assert load.failures == []
        leader = cluster.wait_leader()
        with leader.client() as c:
            for key in load.acked[:: max(1, len(load.acked) // 200)]:
                assert c.get(key) is not None, key
        stall = max(load.latencies)
        print(
            f"rolling restart: {len(load.acked)} writes, 0 failed, max stall {stall * 1000:.0f} ms"
        )
