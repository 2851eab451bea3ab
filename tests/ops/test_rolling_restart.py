"""Graceful shutdown: a rolling restart of all 3 nodes under a steady write load.

Each node in turn gets SIGTERM (a leader hands leadership to its most caught-up voter
first), must exit 0, and is started again. Writers send each write to a node that is not
being restarted, as an application behind a load balancer would. Every write must
succeed; the longest write latency (the stall) is printed.
"""

from __future__ import annotations

import threading
import time
from functools import partial

from raftd.client import RaftdError
from raftd.testing.cluster import LocalCluster, wait_until


def test_rolling_restart_under_load_loses_no_write() -> None:
    with LocalCluster(3) as cluster:
        cluster.wait_leader()
        down: set[str] = set()
        lock = threading.Lock()
        stop = threading.Event()
        acked: list[bytes] = []
        failures: list[str] = []
        latencies: list[float] = []
        inflight = {n.name: 0 for n in cluster.nodes}

        def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                with lock:
                    up = [n for n in cluster.nodes if n.name not in down]
                    node = up[(w + i) % len(up)]
                    inflight[node.name] += 1
                key = b"w%d-%06d" % (w, i)
                t0 = time.monotonic()
                try:
                    with node.client(timeout=10.0) as c:
                        c.put(key, b"v")
                except (RaftdError, OSError) as exc:
                    failures.append(f"{node.name} at {time.strftime('%H:%M:%S')}: {exc!r}")
                    continue
                finally:
                    with lock:
                        inflight[node.name] -= 1
                latencies.append(time.monotonic() - t0)
                acked.append(key)
                i += 1

        def drained(name: str) -> bool:
            return inflight[name] == 0

        def progressed(target: int) -> bool:
            return len(acked) > target

        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) > 50, 30, what="initial writes")
        codes = []
        for node in cluster.nodes:
            with lock:
                down.add(node.name)
            # Drain: the writers move to the other nodes; the ones in flight here finish.
            wait_until(partial(drained, node.name), 30, what="drain")
            codes.append(node.terminate())
            node.start()
            with lock:
                down.discard(node.name)
            wait_until(partial(progressed, len(acked) + 50), 30, what="writes after restart")
        stop.set()
        for t in threads:
            t.join(30)
        assert codes == [0, 0, 0]
        assert failures == []
        leader = cluster.wait_leader()
        with leader.client() as c:
            for key in acked[:: max(1, len(acked) // 200)]:
                assert c.get(key) is not None, key
        stall = max(latencies)
        print(f"rolling restart: {len(acked)} writes, 0 failed, max stall {stall * 1000:.0f} ms")
