"""``scripts/bench catchup``: a follower down while entries are written, then restarted:
time until it has caught up."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from harness.bench.load import result, write_keys
from harness.bench.meters import deadline_loop, pace, scrape_metric, settle
from raftd.client import RaftdError

if TYPE_CHECKING:
    from raftd.testing.cluster import LocalCluster

_ACCEPTED = re.compile(r"snapshot index=(\d+) term=\d+ \(\d+ bytes\) from \S+ accepted")


def measure_catchup(
    cluster: LocalCluster,
    entries: int,
    *,
    clients: int = 256,
    conns: int = 16,
    timeout: float = 120.0,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """SIGKILL a follower, write ``entries`` keys (one entry each) pipelined through the
    leader, restart the follower and time from the restart until its applied index
    reaches the leader's. The follower runs with ``--metrics`` after the restart, so the
    result says whether it installed a snapshot."""
    from raftd.testing.cluster import free_port

    lead = settle(cluster)
    victim = next(n for n in cluster.nodes if n is not lead)
    victim.kill()
    w = trio.run(
        lambda: write_keys(
            [str(lead.socket)], entries, prefix="catchup/", clients=clients, conns=conns
        )
    )
    log(
        f"wrote {len(w.latencies)} entries ({w.errs} errors) with {victim.name} down in "
        f"{w.elapsed:.1f} s ({len(w.latencies) / max(w.elapsed, 1e-9):.0f}/s)"
    )
    lead = cluster.wait_leader()
    target = lead.status().commit
    first_index = target
    port = free_port()
    saved = list(victim.extra_args)
    victim.extra_args = [*saved, "--metrics", f"127.0.0.1:{port}"]
    ready_s: float | None = None
    applied = 0
    try:
        t0 = time.perf_counter()
        victim.start(wait=False)
        for _ in deadline_loop(timeout, f"{victim.name} applied {target}"):
            a0 = time.perf_counter()
            with contextlib.suppress(RaftdError, OSError):
                st = victim.status(timeout=2.0)
                if ready_s is None:
                    ready_s = time.perf_counter() - t0
                    first_index = st.applied
                applied = st.applied
                if applied >= target:
                    break
            if not victim.alive:
                raise RuntimeError(f"{victim.name} exited\n{victim.log_tail()}")
            pace(a0, 0.02)
        took = time.perf_counter() - t0
        installed: float | None = None
        with contextlib.suppress(OSError, ValueError):
            installed = scrape_metric(
                port,
                "raftd_snapshots_total",
                {"namespace": cluster.namespaces[0], "kind": "installed"},
            )
    finally:
        victim.extra_args = saved
    # The snapshot it installed (from its log): the entries after it were replayed, and
    # how many there were (the leader's last snapshot lands anywhere between its
    # snapshots) is most of the spread between runs.
    snap_index: int | None = None
    with contextlib.suppress(OSError):
        found = _ACCEPTED.findall(victim.log_path.read_text(errors="replace"))
        snap_index = int(found[-1]) if found else None
    return result(
        "catchup",
        clients=clients,
        ops_per_s=round(entries / took) if took > 0 else None,
        p50_ms=round(took * 1000, 1),
        p99_ms=round(took * 1000, 1),
        ok=1,
        errs=0,
        entries=entries,
        target_index=target,
        applied_at_first_status=first_index,
        catchup_s=round(took, 3),
        api_ready_s=round(ready_s, 3) if ready_s is not None else None,
        snapshot_installed=None if installed is None else installed > 0,
        snapshot_index=snap_index,
        replayed_entries=None if snap_index is None else target - snap_index,
        write_ops_per_s=round(len(w.latencies) / w.elapsed) if w.elapsed > 0 else 0,
        write_errs=w.errs,
        preset=cluster.preset,
    )
