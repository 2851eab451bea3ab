"""``python -m harness.timeline`` (``scripts/timeline``): see the package doc.

Starts a 3-node :class:`~raftd.testing.cluster.LocalCluster` whose daemons load the
probes, preloads the key space, records ``--total`` puts sent one at a time through the
leader or a follower (``--via``), and prints the median time of each step from the
request's arrival at that daemon, with the client's own p50 for comparison.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import trio

from harness.bench.load import run_load
from harness.timeline import read_trace, segments, step_medians

HOOK = Path(__file__).resolve().parent / "hook"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/timeline", description=__doc__.split("\n\n")[1])
    ap.add_argument("--via", choices=["leader", "follower"], default="follower")
    ap.add_argument("--total", type=int, default=1500, help="puts recorded")
    ap.add_argument("--last", type=int, default=1000, help="segments analysed (the last ones)")
    ap.add_argument("--key-space", type=int, default=10_000)
    ap.add_argument("--min-share", type=float, default=0.5)
    ap.add_argument("--show", type=int, default=0, help="also print this many whole segments")
    ap.add_argument("--out", type=Path, help="keep the traces here (default: a new temp dir)")
    args = ap.parse_args(argv)
    from raftd.testing.cluster import LocalCluster

    out = args.out or Path(tempfile.mkdtemp(prefix="raftd-timeline-"))
    out.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(HOOK), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {"PYTHONPATH": path, "RAFTD_TIMELINE_DIR": str(out)}
    with LocalCluster(3, env=env) as cluster:
        lead = cluster.wait_leader()
        followers = [n for n in cluster.nodes if n is not lead]
        origin = lead if args.via == "leader" else followers[0]
        roles = {"origin": origin}
        others = [n for n in cluster.nodes if n is not origin]
        if origin is lead:
            roles.update({"follower a": others[0], "follower b": others[1]})
        else:
            other_follower = next(n for n in others if n is not lead)
            roles.update({"leader": lead, "other follower": other_follower})
        sock = [str(origin.socket)]
        trio.run(
            lambda: run_load(sock, "put", clients=64, conns=8, total=0, key_space=args.key_space)
        )
        pids: dict[str, int] = {}
        for role, node in roles.items():
            assert node.pid is not None
            pids[role] = node.pid
        for pid in pids.values():
            os.kill(pid, signal.SIGUSR1)
        res = trio.run(
            lambda: run_load(
                sock,
                "put",
                clients=1,
                conns=1,
                total=args.total,
                key_space=args.key_space,
                preload=False,
            )
        )
        for pid in pids.values():
            os.kill(pid, signal.SIGUSR2)
        traces = {}
        deadline = time.monotonic() + 10.0
        for role, pid in pids.items():
            f = out / f"{pid}.trace"
            while not f.exists():
                if time.monotonic() > deadline:
                    print(f"{role} (pid {pid}) wrote no trace: were the probes loaded?")
                    return 1
                time.sleep(0.05)
            missing, records = read_trace(f)
            if missing:
                print(f"{role}: probes not installed (renamed?): {', '.join(missing)}")
                return 1
            traces[role] = records
    segs = segments(traces, "origin")[-args.last :]
    origin_role = "leader" if origin is lead else "follower"
    print(res.line())
    print(f"{len(segs)} puts through a {origin_role} (the origin); ms from the request's arrival")
    print(f"{'median':>8} {'p90':>8}  {'seen':>5}  step")
    for s in step_medians(segs, min_share=args.min_share):
        nth = f" #{s.occurrence + 1}" if s.occurrence else ""
        print(
            f"{s.median_ms:8.3f} {s.p90_ms:8.3f}  {100 * s.share:4.0f}%  {s.role}: {s.event}{nth}"
        )
    for seg in segs[-args.show :] if args.show else []:
        print("-- one put: ms from the request (+ since the step before)")
        prev = 0.0
        for dt, role, event in seg:
            print(f"{1000 * dt:8.3f} (+{1000 * (dt - prev):6.3f})  {role}: {event}")
            prev = dt
    (out / "roles.txt").write_text("".join(f"{pid} {role}\n" for role, pid in pids.items()))
    print(f"traces in {out} (roles.txt names each pid's role)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
