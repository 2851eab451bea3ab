"""``scripts/bench failover``: SIGKILL the leader, time until the next acknowledged put."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.bench.load import result
from harness.bench.meters import pace, settle
from raftd.client import RaftdError

if TYPE_CHECKING:
    from raftd.testing.cluster import LocalCluster


def measure_failover(
    cluster: LocalCluster,
    trials: int,
    *,
    attempt_timeout: float = 0.3,
    limit: float = 30.0,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """``trials`` times: SIGKILL the leader, then put through the survivors (alternating,
    ``attempt_timeout`` each) until one is acknowledged; the time from the kill to that
    ack is one sample. The killed daemon is restarted and caught up before the next
    trial."""
    times: list[float] = []
    errs = 0
    attempts: list[int] = []
    for t in range(1, trials + 1):
        lead = settle(cluster)
        survivors = [n for n in cluster.nodes if n is not lead]
        clients = [n.client(timeout=attempt_timeout) for n in survivors]
        try:
            for c in clients:  # connections open, forwarding paths warm
                c.put("failover/warm", "v", timeout=5.0)
            ok = False
            i = 0
            t0 = time.perf_counter()
            lead.kill()
            while time.perf_counter() - t0 < limit:
                c = clients[i % len(clients)]
                i += 1
                a0 = time.perf_counter()
                try:
                    c.put("failover", f"{t}-{i}")
                    ok = True
                    break
                except RaftdError:
                    pace(a0, 0.01)  # an immediate refusal: do not spin
            t1 = time.perf_counter()
        finally:
            for c in clients:
                c.close()
        if ok:
            times.append(t1 - t0)
            attempts.append(i)
            log(
                f"trial {t}: leader {lead.name} killed, next put acknowledged after "
                f"{t1 - t0:.3f} s ({i} attempts)"
            )
        else:
            errs += 1
            log(f"trial {t}: no put acknowledged within {limit:.0f} s")
        lead.start()
    settle(cluster)
    xs = sorted(times)
    return result(
        "failover",
        clients=1,
        p50_ms=round(statistics.median(xs) * 1000, 1) if xs else None,
        p99_ms=round(xs[-1] * 1000, 1) if xs else None,
        ok=len(xs),
        errs=errs,
        min_ms=round(xs[0] * 1000, 1) if xs else None,
        max_ms=round(xs[-1] * 1000, 1) if xs else None,
        trials_s=[round(x, 3) for x in times],
        attempts=attempts,
        attempt_timeout_s=attempt_timeout,
        preset=cluster.preset,
    )
