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

``--cut-leader K``: once formed (and after any hold), K times: the leader's link goes
down (no reset reaches anyone: its peers only stop hearing it), and the sample is the
time until a put through another node is acknowledged (each attempt bounded by 0.3 s,
through the survivors in turn); then the link comes back and the old leader must catch
up before the next cut. Prints each sample, then the median and the worst.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.fleet import Fleet, FleetNode, one_cluster
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


def cut_leader(fleet: Fleet, cuts: int, ns: str | None = None) -> list[float]:
    """See the module docstring; returns the samples in seconds (nan: not replaced
    within 30 s)."""
    samples: list[float] = []
    for k in range(cuts):
        lead = settled_leader(fleet, ns)
        others = [x for x in fleet if x is not lead]
        for x in others:  # connections open, forwarding warm
            with x.client(timeout=5.0) as c:
                c.put("cut/warm", "v")
        t0 = time.monotonic()
        lead.host.link_down()
        sample = math.nan
        i = 0
        while time.monotonic() < t0 + 30.0:
            node = others[i % len(others)]
            i += 1
            try:
                with node.client(timeout=0.3) as c:
                    c.put(f"cut/{k}", "x")
                sample = time.monotonic() - t0
                break
            except Exception:
                continue
        lead.host.link_up()
        print(f"cut {k + 1}/{cuts}: new leader acknowledged a put after {sample:.3f}s", flush=True)
        samples.append(sample)
    return samples


def settled_leader(fleet: Fleet, ns: str | None, within: float = 30.0) -> FleetNode:
    """The node every daemon names as leader (asked through its socket, not the status
    file, which may lag), itself included, once all have applied the same index (a
    cut-off leader is back and caught up)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            sts = []
            for x in fleet:
                with x.client(ns, timeout=1.0) as c:
                    sts.append(c.status()[0])
        except Exception:
            time.sleep(0.1)
            continue
        leaders = {st.leader for st in sts}
        if len(leaders) == 1 and len({st.applied for st in sts}) == 1:
            (pid,) = leaders
            roles = {st.id: st.role for st in sts}
            if pid and roles.get(pid) == "leader":
                return fleet.by_id(pid)
        time.sleep(0.1)
    raise RuntimeError(f"no settled leader within {within:.0f} s:\n{fleet.describe()}")


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
                    if args.cut_leader > 0:
                        cuts = sorted(cut_leader(fleet, args.cut_leader))
                        print(
                            f"nodes={n} leader cut off {len(cuts)} times: replaced (next "
                            f"acknowledged put) median {statistics.median(cuts):.3f}s, "
                            f"worst {cuts[-1]:.3f}s",
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
    ap.add_argument("--cut-leader", type=int, default=0, help="times to cut the leader's link")
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
