"""``scripts/bench-formation``: how long N fresh daemons (one network namespace each,
nothing configured but a namespace) take to form one cluster.

Per trial: a new topology, every daemon started at once; the clock starts when the first
process is spawned and stops when every daemon's ``status.json`` reports the same leader
and the full membership (``min(N, cap)`` voters, the rest learners). The status files are
rewritten at most every 0.1 s and polled every 20 ms, so figures carry up to ~0.12 s of
observation delay. Prints one line per trial, then medians and p99 (nearest rank), and
a last line of JSON. Needs root (network namespaces).

``--hold S --rate R``: once formed, the fleet is kept for S more seconds under R puts per
second (each through the next daemon in turn, so most are forwarded), and the trial
reports the leader changes seen in that time (distinct leader and term pairs in the
status files, polled every 0.2 s, minus one) and the puts that failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from harness.fleet import Fleet, one_cluster
from harness.netns import Topology, require_netns

__all__ = ["main"]


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return math.nan
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def hold(fleet: Fleet, seconds: float, rate: float) -> tuple[int, int, int]:
    """Puts at ``rate`` per second for ``seconds``; (leader changes, ok, failed)."""
    seen: set[tuple[str, int]] = set()
    ok = failed = i = 0
    interval = 1.0 / rate if rate > 0 else math.inf
    start = time.monotonic()
    next_put = start
    next_look = start
    while (now := time.monotonic()) < start + seconds:
        if now >= next_look:
            next_look = now + 0.2
            for st in fleet.statuses():
                if st and st.get("leader"):
                    seen.add((st["leader"], int(st.get("term", 0))))
        if now >= next_put:
            next_put += interval
            node = fleet[i % len(fleet)]
            i += 1
            try:
                with node.client(timeout=5.0) as c:
                    c.put(f"hold/{i % 1000}", "x" * 100)
                ok += 1
            except Exception:
                failed += 1
        time.sleep(max(0.0, min(next_put, next_look) - time.monotonic()))
    return max(0, len(seen) - 1), ok, failed


def one_trial(n: int, args: argparse.Namespace, base: Path) -> tuple[float, float, float]:
    extra: list[str] = []
    if args.expect:
        extra += ["--expect", str(n)]
    if args.discovery:
        extra += ["--discovery", args.discovery]
    with Topology(n) as topo:
        fleet = Fleet(topo, base, preset=args.preset, extra_args=extra)
        ids = {x.peer_id for x in fleet}
        try:
            t0 = time.monotonic()
            fleet.start_all()
            leader_at = up_at = math.nan
            deadline = t0 + args.timeout
            while time.monotonic() < deadline:
                sts = fleet.statuses()
                now = time.monotonic() - t0
                if math.isnan(up_at) and all(sts):
                    up_at = now
                leaders = {s["leader"] for s in sts if s}
                if math.isnan(leader_at) and all(sts) and len(leaders) == 1 and "" not in leaders:
                    leader_at = now
                if one_cluster(sts, ids, args.cap):
                    if args.hold > 0:
                        changes, ok, failed = hold(fleet, args.hold, args.rate)
                        print(
                            f"nodes={n} held {args.hold:.0f}s at {args.rate:g} puts/s: "
                            f"{changes} leader changes, {ok} puts ok, {failed} failed",
                            flush=True,
                        )
                    return up_at, leader_at, now
                time.sleep(0.02)
            print(fleet.explain(), file=sys.stderr)
            return up_at, leader_at, math.nan
        finally:
            fleet.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-formation", description=__doc__)
    ap.add_argument("--nodes", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--preset", default="local")
    ap.add_argument("--expect", action="store_true", help="pass --expect N to every node")
    ap.add_argument("--discovery", help="pass --discovery to every node")
    ap.add_argument("--cap", type=int, default=5, help="voter cap the daemons use")
    ap.add_argument("--timeout", type=float, default=120.0, help="per trial")
    ap.add_argument("--keep", help="keep the data directories under this path")
    ap.add_argument("--hold", type=float, default=0.0, help="seconds to keep each formed fleet")
    ap.add_argument("--rate", type=float, default=10.0, help="puts per second while held")
    args = ap.parse_args(argv)
    reason = require_netns()
    if reason is not None:
        print(f"bench-formation: {reason}", file=sys.stderr)
        return 2
    results = {}
    for n in args.nodes:
        ups: list[float] = []
        leaders: list[float] = []
        formed: list[float] = []
        failures = 0
        for trial in range(args.trials):
            with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
                up_at, leader_at, formed_at = one_trial(n, args, Path(tmp))
            if math.isnan(formed_at):
                failures += 1
            else:
                formed.append(formed_at)
            if not math.isnan(leader_at):
                leaders.append(leader_at)
            if not math.isnan(up_at):
                ups.append(up_at)
            print(
                f"nodes={n} trial={trial + 1}/{args.trials} all up {up_at:.2f}s, one leader "
                f"{leader_at:.2f}s, formed {formed_at:.2f}s",
                flush=True,
            )
        r = {
            "nodes": n,
            "trials": args.trials,
            "failures": failures,
            "up_median_s": round(percentile(ups, 50), 3),
            "leader_median_s": round(percentile(leaders, 50), 3),
            "leader_p99_s": round(percentile(leaders, 99), 3),
            "formed_median_s": round(percentile(formed, 50), 3),
            "formed_p99_s": round(percentile(formed, 99), 3),
        }
        results[str(n)] = r
        print(
            f"nodes={n}: formed median {r['formed_median_s']}s p99 {r['formed_p99_s']}s; "
            f"one leader median {r['leader_median_s']}s p99 {r['leader_p99_s']}s; all daemons "
            f"up (first status written) median {r['up_median_s']}s; "
            f"{failures} failed of {args.trials}",
            flush=True,
        )
    print(json.dumps({"preset": args.preset, "expect": args.expect, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
