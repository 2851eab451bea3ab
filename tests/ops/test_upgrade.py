"""Rolling upgrade under load from the version before etcd-style write forwarding.

Three daemons run the previous release's code (commit ``cf28ceb``, exported from git),
take writes through every node, and are restarted one at a time on the current code,
as an operator upgrades: a new follower's PROP messages reach a leader that drops them
(it answers writes by command only) until the leader is upgraded too. Every write must
succeed, and every acknowledged key be there on every node afterwards. Data dirs written
by the old code open with the new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftd.testing.cluster import LocalCluster
from tests.storage.helpers import export_release

from .writers import Writers

PREVIOUS = "cf28ceb"
pytestmark = pytest.mark.slow


def test_rolling_upgrade_under_load_loses_no_write(tmp_path: Path) -> None:
    old = tmp_path / "previous"
    old.mkdir()
    export_release(PREVIOUS, old)
    cluster = LocalCluster(3, base_dir=tmp_path / "c")
    for n in cluster.nodes:
        n.cwd = old
    with cluster:
        load = Writers(cluster, prefix=b"u")
        load.start()
        codes = []
        # Followers first, the leader last: the longest mixed stretch (new followers, an
        # old leader that drops their PROP messages).
        for node in sorted(cluster.nodes, key=lambda n: n is cluster.wait_leader()):
            with load.taken_out(node, then=60, timeout=60):
                codes.append(node.terminate())
                node.cwd = None  # the current code
                node.start()
        load.stop()
        assert codes == [0, 0, 0]
        assert load.failures == []
        # The mixed stretch happened: an upgraded follower found the old leader taking no
        # PROP and sent its writes by command.
        logs = "".join(n.log_path.read_text(errors="replace") for n in cluster.nodes)
        assert "sending writes to it by command" in logs
        cluster.wait_leader()
        sample = load.acked[:: max(1, len(load.acked) // 100)]
        for node in cluster.nodes:
            with node.client() as c:
                for key in sample:
                    assert c.get(key) is not None, (node.name, key)
        print(
            f"rolling upgrade: {len(load.acked)} writes, 0 failed, "
            f"max stall {max(load.latencies) * 1000:.0f} ms"
        )
