"""CI variant of the chaos campaign: 2 runs of 20 s, 3 nodes, every nemesis.

Needs root and network namespaces (skips without, fails under ``RAFTD_REQUIRE_NETNS=1``).
The seed is random and printed (``-s`` shows it; it is also in the assertion message);
replay with ``RAFTD_CHAOS_SEED=<seed>`` or ``scripts/chaos --seed <seed> --runs 2
--duration 20 --nodes 3``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from harness.chaos.cli import run_campaign
from harness.chaos.nemesis import KINDS, NemesisTiming
from harness.chaos.runner import RunConfig

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_chaos_short(tmp_path: Path, need_netns: None) -> None:
    seed = int(os.environ.get("RAFTD_CHAOS_SEED") or random.randrange(1 << 31))
    print(f"chaos seed={seed} (replay: RAFTD_CHAOS_SEED={seed})", flush=True)
    cfg = RunConfig(
        nodes=3,
        clients=10,
        keys=5,
        duration=20.0,
        nemeses=KINDS,
        timing=NemesisTiming(quiet=(0.3, 1.0), hold=(1.0, 2.5), recovery=15.0),
        start_timeout=60.0,
        recovery_timeout=60.0,
        check_timeout=120.0,
    )
    lines: list[str] = []

    def log(s: str) -> None:
        lines.append(s)
        print(s, flush=True)

    t0 = time.monotonic()
    camp = run_campaign(cfg, runs=2, seed=seed, out=tmp_path / "chaos", log=log)
    elapsed = time.monotonic() - t0
    log(camp.summary_line() + f" ({elapsed:.0f}s, seed {seed})")
    context = f"seed {seed}; output in {tmp_path / 'chaos'}\n" + "\n".join(lines[-80:])
    assert camp.anomalies == 0, context
    assert camp.lost_writes == 0, context
    assert camp.unknown == 0, context
    assert all(not r.harness_errors for r in camp.runs), context
    answered = sum(r.answered for r in camp.runs)
    assert answered > 100, context
    faults = sum(a.faults for a in camp.availability.values())
    assert faults >= 4, context
    summary = tmp_path / "chaos" / "summary.json"
    assert summary.is_file()
    assert (tmp_path / "chaos" / "run-1" / "history.txt").stat().st_size > 0
