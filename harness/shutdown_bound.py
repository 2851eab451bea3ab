"""How long SIGTERM takes to end a daemon, over many tries (``scripts/shutdown-bound``).

Per try: a fleet of daemons in network namespaces (one host each, one bridge) forms one
cluster and takes acknowledged writes; with ``links_down`` every host's link goes down
first (the daemons can no longer reach each other: the leader's hand-over cannot
happen). Then every daemon gets SIGTERM at once; the try records each daemon's time to
exit and its exit status. The fleet is started again for the next try with the same
data directories, and every write acknowledged so far must still read back.

A try passes when every daemon exits within the documented bound
(:func:`raftd.app.shutdown.shutdown_bound_s`) with status 0, or 124 if the bound cut a
shutdown short. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.fleet import Fleet, FleetNode, fleet
from harness.netns import require_netns
from raftd.app.presets import PRESETS
from raftd.app.shutdown import EXIT_SHUTDOWN_BOUND, shutdown_bound_s

__all__ = ["main", "run"]


def _terminate_all(nodes: list[FleetNode], limit: float) -> list[tuple[str, float, int | None]]:
    """SIGTERM every node at once; (name, seconds to exit, status) each, waiting at most
    ``limit`` per node before SIGKILL (then the status is None)."""
    t0 = time.monotonic()
    for n in nodes:
        assert n.proc is not None
        n.host.kill(n.proc, signal.SIGTERM)
    out: list[tuple[str, float, int | None]] = []
    for n in nodes:
        assert n.proc is not None
        deadline = t0 + limit
        code: int | None = None
        while time.monotonic() < deadline:
            code = n.proc.poll()
            if code is not None:
                break
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        if code is None:
            n.host.kill(n.proc, signal.SIGKILL)
            n.proc.wait(10)
        out.append((n.name, elapsed, code))
    return out


def _write_some(f: Fleet, acked: list[str], count: int, tag: str) -> None:
    cl = f[0].client(timeout=10)
    try:
        for i in range(count):
            key = f"{tag}-{i}"
            cl.put(key, b"v")
            acked.append(key)
    finally:
        cl.close()


def _check_acked(f: Fleet, acked: list[str]) -> list[str]:
    cl = f[0].client(timeout=10)
    try:
        return [k for k in acked if cl.get(k) is None]
    finally:
        cl.close()


def run(
    tries: int, nodes: int, links_down: bool, seed: int, base: Path, preset: str = "local"
) -> dict[str, Any]:
    rng = random.Random(seed)
    bound = shutdown_bound_s(PRESETS[preset].election_s)
    limit = bound + 10.0
    acked: list[str] = []
    times: list[float] = []
    within = 0
    codes: dict[str, int] = {}
    lost: list[str] = []
    with fleet(nodes, base, preset=preset) as f:
        for t in range(tries):
            f.start_all()
            f.wait_one_cluster(timeout=60)
            _write_some(f, acked, rng.randint(1, 20), f"t{t}")
            if links_down:
                for n in f:
                    n.host.link_down()
            res = _terminate_all(list(f), limit)
            if links_down:
                for n in f:
                    n.host.link_up()
            worst = max(e for _, e, _ in res)
            ok = all(e <= bound and c in (0, EXIT_SHUTDOWN_BOUND) for _, e, c in res)
            within += ok
            times.extend(e for _, e, _ in res)
            for _, _, c in res:
                codes[str(c)] = codes.get(str(c), 0) + 1
            print(
                f"try {t + 1}/{tries}: worst {worst:.2f}s, statuses "
                f"{sorted({c for _, _, c in res}, key=str)}{'' if ok else '  OVER THE BOUND'}",
                flush=True,
            )
        f.start_all()
        f.wait_one_cluster(timeout=60)
        lost = _check_acked(f, acked)
    times.sort()
    return {
        "tries": tries,
        "nodes": nodes,
        "links_down": links_down,
        "seed": seed,
        "bound_s": bound,
        "within_bound": within,
        "exit_statuses": codes,
        "exit_s_p50": round(times[len(times) // 2], 3),
        "exit_s_max": round(times[-1], 3),
        "acked_writes": len(acked),
        "lost_writes": len(lost),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/shutdown-bound", description=__doc__)
    ap.add_argument("--tries", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--links-down", action="store_true", help="every link down before SIGTERM")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--preset", default="local")
    args = ap.parse_args(argv)
    why = require_netns()
    if why is not None:
        print(f"shutdown-bound: needs network namespaces: {why}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="raftd-sb-") as tmp:
        summary = run(args.tries, args.nodes, args.links_down, seed, Path(tmp), args.preset)
    print(json.dumps(summary))
    ok = summary["within_bound"] == args.tries and summary["lost_writes"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
