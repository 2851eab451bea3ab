"""Command line of scripts/sim.

Usage: scripts/sim [--scenario random|stall] --seeds N [--start S] [--nodes K] [--steps M]
                  [--jobs J]

--scenario random (the default): the fault menu of raftd/testing/sim.py, safety
invariants after every step, liveness at the end. --nodes 0 (the default) picks 3 to 7
nodes per seed from the seed itself.
--scenario stall: raftd/testing/sim_stall.py, a follower or leader whose own process
stalls (no drops, healthy leader) must not campaign or be deposed when it resumes;
--nodes and --steps do not apply (3 or 5 nodes, picked by the seed).
Prints each violation with its replay command; the last line is
"N seeds, V violations". Exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

from raftd.testing.sim import SimConfig, run_seed
from raftd.testing.sim_stall import run_stall_seed


def config_for(seed: int, nodes: int, steps: int) -> SimConfig:
    n = nodes if nodes else 3 + seed % 5
    return SimConfig(seed=seed, nodes=n, steps=steps)


def _one(args: tuple[str, int, int, int]) -> tuple[int, str | None]:
    scenario, seed, nodes, steps = args
    if scenario == "stall":
        return seed, run_stall_seed(seed)
    return seed, run_seed(config_for(seed, nodes, steps))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", choices=("random", "stall"), default="random")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=0, help="3..7; 0 = vary by seed")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    if a.nodes and not 3 <= a.nodes <= 7:
        ap.error("--nodes must be between 3 and 7")
    t0 = time.monotonic()
    work = [(a.scenario, s, a.nodes, a.steps) for s in range(a.start, a.start + a.seeds)]
    violations = 0
    if a.jobs > 1 and len(work) > 1:
        with multiprocessing.Pool(a.jobs) as pool:
            results = pool.imap_unordered(_one, work, chunksize=4)
            for _, report in results:
                if report:
                    violations += 1
                    print(report, flush=True)
    else:
        for w in work:
            _, report = _one(w)
            if report:
                violations += 1
                print(report, flush=True)
    dt = time.monotonic() - t0
    print(
        f"seeds {a.start}..{a.start + a.seeds - 1} in {dt:.1f} s ({a.jobs} jobs)", file=sys.stderr
    )
    print(f"{a.seeds} seeds, {violations} violations")
    return 1 if violations else 0
