"""Writers behind a "load balancer": threads that put keys through the nodes of a
:class:`~raftd.testing.cluster.LocalCluster` that are not marked down, as applications
would while an operator restarts or upgrades nodes one at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from raftd.client import RaftdError
from raftd.testing.cluster import LocalCluster, Node, wait_until


class Writers:
    """``n`` writer threads; each write goes to a node that is up (round robin). Every
    acknowledged key, every failure and every write latency is recorded."""

    def __init__(self, cluster: LocalCluster, n: int = 4, *, prefix: bytes = b"w") -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.down: set[str] = set()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.acked: list[bytes] = []
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.inflight = {node.name: 0 for node in cluster.nodes}
        self.threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(n)
        ]

    def _run(self, w: int) -> None:
        i = 0
        while not self.stop_event.is_set():
            with self.lock:
                up = [nd for nd in self.cluster.nodes if nd.name not in self.down]
                node = up[(w + i) % len(up)]
                self.inflight[node.name] += 1
            key = self.prefix + b"%d-%06d" % (w, i)
            t0 = time.monotonic()
            try:
                with node.client(timeout=15.0) as c:
                    c.put(key, b"v")
            except (RaftdError, OSError) as exc:
                self.failures.append(f"{node.name} at {time.strftime('%H:%M:%S')}: {exc!r}")
                continue
            finally:
                with self.lock:
                    self.inflight[node.name] -= 1
            self.latencies.append(time.monotonic() - t0)
            self.acked.append(key)
            i += 1

    def start(self, *, warm_up: int = 50) -> None:
        for t in self.threads:
            t.start()
        wait_until(lambda: len(self.acked) > warm_up, 30, what="initial writes")

    @contextmanager
    def taken_out(self, node: Node, *, then: int = 50, timeout: float = 30) -> Iterator[None]:
        """Route writes away from ``node`` and wait until its writes in flight are done;
        on exit, route to it again and wait for ``then`` more acknowledged writes."""
        with self.lock:
            self.down.add(node.name)
        wait_until(lambda: self.inflight[node.name] == 0, 30, what="drain")
        yield
        with self.lock:
            self.down.discard(node.name)
        target = len(self.acked) + then
        wait_until(lambda: len(self.acked) > target, timeout, what="writes after the restart")

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
