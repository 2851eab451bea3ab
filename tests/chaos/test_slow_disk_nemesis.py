"""The ``slow-disk`` nemesis on its own: one short run, 3 nodes, data dirs on slowfs.

The faults must bite (slowfs delayed fsyncs of the chosen nodes) and the run must stay
clean (linearizable, no lost write). Needs root, network namespaces and FUSE (skips
without; fails under ``RAFTD_REQUIRE_NETNS=1`` / ``RAFTD_REQUIRE_FUSE=1``). The seed is
random and printed; replay with ``RAFTD_CHAOS_SEED=<seed>`` or ``scripts/chaos --seed
<seed> --runs 1 --duration 15 --nodes 3 --nemesis slow-disk``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from harness.chaos.cli import run_campaign
from harness.chaos.nemesis import NemesisTiming
from harness.chaos.runner import RunConfig
from harness.slowfs import fuse_or_skip, is_mounted

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_slow_disk_nemesis(tmp_path: Path, need_netns: None) -> None:
    fuse_or_skip()
    seed = int(os.environ.get("RAFTD_CHAOS_SEED") or random.randrange(1 << 31))
    print(f"chaos seed={seed} (replay: RAFTD_CHAOS_SEED={seed})", flush=True)
    cfg = RunConfig(
        nodes=3,
        clients=5,
        keys=3,
        duration=15.0,
        nemeses=("slow-disk",),
        timing=NemesisTiming(
            quiet=(0.3, 1.0), hold=(1.5, 3.0), disk_delay=(0.5, 1.0), recovery=15.0
        ),
        start_timeout=60.0,
        recovery_timeout=60.0,
        check_timeout=120.0,
    )
    lines: list[str] = []

    def log(s: str) -> None:
        lines.append(s)
        print(s, flush=True)

    out = tmp_path / "chaos"
    camp = run_campaign(cfg, runs=1, seed=seed, out=out, log=log)
    context = f"seed {seed}; output in {out}\n" + "\n".join(lines[-60:])
    assert camp.anomalies == 0, context
    assert camp.lost_writes == 0, context
    assert all(not r.harness_errors for r in camp.runs), context
    events = [json.loads(x) for x in (out / "run-1" / "nemesis.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["kind"] == "slow-disk" and e["phase"] == "start"]
    heals = [e for e in events if e["kind"] == "slow-disk" and e["phase"] == "heal"]
    assert len(starts) >= 2, context
    assert len(heals) == len(starts), context
    assert sum(int(e["delayed"]) for e in heals) > 0, context
    assert all(0.5 <= float(e["delay_s"]) <= 1.0 for e in starts), context
    assert sum(r.answered for r in camp.runs) > 50, context
    # The mounts are gone with the cluster; the slowfs logs are kept with the others.
    assert not any(is_mounted(p) for p in (out / "run-1" / "data").glob("n*"))
    assert list((out / "run-1" / "logs").glob("n*.slowfs.log")), context
