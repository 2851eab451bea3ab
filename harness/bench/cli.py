"""API benchmarks against a local cluster of real daemons (``scripts/bench``,
``scripts/bench-all``).

``python -m harness.bench OP [options]`` starts a :class:`LocalCluster` (or uses
running daemons given with ``--socket``, for the load ops) and measures one thing:

- ``get-l`` (linearizable get: ReadIndex then a local read), ``get-s`` (stale get),
  ``put`` (100-byte values over the key space): after preloading the key space, keep
  ``--clients`` requests outstanding over ``--conns`` API connections (spread over the
  endpoints, like etcd's benchmark tool) until ``--total`` requests or ``--duration``
  seconds. ``--key-file`` runs the daemons with a shared key (encrypted Raft traffic).
- ``failover``: ``--trials`` times, SIGKILL the leader and time until the next
  acknowledged put through the survivors (each attempt with a 300 ms deadline, alternating
  survivors, as /work/shared/anchors/etcd/failover.sh); the killed daemon is restarted and
  caught up between trials (one reused cluster).
- ``catchup``: SIGKILL a follower, write ``--entries`` keys pipelined through the leader,
  restart the follower and time from the restart to its applied index reaching the
  leader's (the log is compacted past it with ``--entries`` above the preset's snapshot
  threshold, so it catches up by snapshot; ``snapshot_installed`` says if it did).
- ``rss``: VmRSS of each idle daemon once startup has settled.

``python -m harness.bench gray [--short]`` (``scripts/bench gray``): raftd and etcd
side by side under gray failures (slow disk, CPU starvation); see
:mod:`harness.gray`.

``python -m harness.bench all [--quick] [--no-anchors] [--profile DIR]``
(``scripts/bench-all``) runs every measurement on 3 daemons, then the anchors of
/work/shared/anchors (etcd 3 members, its failover, PySyncObj, the fsync floor) in the
same run, and prints a table of ratios against the goals. ``--quick`` (CI): a few
seconds per measurement and no anchors.

Output, as the anchors: one human-readable line, then one JSON object per measurement
with at least ``system, op, clients, ops_per_s, p50_ms, p99_ms, ok, errs``. For one op
that JSON object is the LAST line. ``all`` ends with the table and then a summary JSON
line (``"op": "summary"``, with ``results`` and ``ratios``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from harness.bench.catchup import measure_catchup
from harness.bench.failover import measure_failover
from harness.bench.load import OPS, REQUIRED_KEYS
from harness.bench.meters import (
    cluster_metrics,
    cluster_roles,
    make_key_file,
    run_measured,
    with_metrics,
)
from harness.bench.rss import measure_rss
from harness.bench.suite import main_all

if TYPE_CHECKING:
    pass

OTHER_OPS = ("failover", "catchup", "rss")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["all"]:
        return main_all(argv[1:])
    if argv[:1] == ["gray"]:
        from harness.gray import main as main_gray

        return main_gray(argv[1:])
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("op", choices=sorted(OPS) + list(OTHER_OPS))
    ap.add_argument("--clients", type=int, default=64, help="requests kept outstanding")
    ap.add_argument("--conns", type=int, default=8, help="API connections")
    ap.add_argument("--total", type=int, default=20000)
    ap.add_argument("--duration", type=float, default=30.0, help="max seconds")
    ap.add_argument("--nodes", type=int, default=3, help="cluster size (own cluster)")
    ap.add_argument(
        "--endpoints",
        choices=["all", "leader", "follower"],
        default="all",
        help="which daemons the connections go to",
    )
    ap.add_argument("--socket", action="append", help="use running daemons instead")
    ap.add_argument("--key-space", type=int, default=10_000)
    ap.add_argument("--key-size", type=int, default=16)
    ap.add_argument("--val-size", type=int, default=100)
    ap.add_argument("--preset", default="local", choices=["local", "regional", "global"])
    ap.add_argument(
        "--key-file", type=Path, help="run the daemons with this shared key (--key-file)"
    )
    ap.add_argument(
        "--encrypt", action="store_true", help="run the daemons with a fresh random shared key"
    )
    ap.add_argument("--trials", type=int, default=10, help="failover trials")
    ap.add_argument("--entries", type=int, default=100_000, help="catchup: entries written")
    ap.add_argument(
        "--spread",
        action="store_true",
        help="each worker sends each request on the next connection in turn (as etcd's "
        "client balances requests over its endpoints); with --clients 1 --conns 3, a "
        "third go through the leader",
    )
    ap.add_argument("--no-json", action="store_true")
    args = ap.parse_args(argv)

    if args.op in OTHER_OPS and args.socket:
        ap.error(f"{args.op} needs its own cluster (no --socket)")
    cluster = None
    tmp = None
    out: dict[str, object]
    human: str | None = None
    try:
        extra_args: list[str] = []
        key_file = args.key_file
        if args.encrypt and key_file is None:
            tmp = Path(tempfile.mkdtemp(prefix="raftd-key-"))
            key_file = make_key_file(tmp)
        if key_file is not None:
            extra_args += ["--key-file", str(key_file)]
        if args.socket:
            sockets = list(args.socket)
        else:
            from raftd.testing.cluster import LocalCluster

            cluster = LocalCluster(args.nodes, preset=args.preset, extra_args=extra_args)
            with_metrics(cluster)
            cluster.start()
            lead = cluster.wait_leader()
            nodes = {
                "all": cluster.nodes,
                "leader": [lead],
                "follower": [n for n in cluster.nodes if n is not lead][:1] or [lead],
            }[args.endpoints]
            sockets = [str(n.socket) for n in nodes]
        if args.op == "failover":
            assert cluster is not None
            out = measure_failover(cluster, args.trials)
        elif args.op == "catchup":
            assert cluster is not None
            out = measure_catchup(cluster, args.entries, clients=args.clients, conns=args.conns)
        elif args.op == "rss":
            assert cluster is not None
            out = measure_rss(cluster)
        else:
            res = run_measured(
                sockets,
                args.op,
                cluster_roles(cluster) if cluster is not None else [],
                metrics=cluster_metrics(cluster) if cluster is not None else None,
                key_space=args.key_space,
                key_size=args.key_size,
                val_size=args.val_size,
                clients=args.clients,
                conns=args.conns,
                total=args.total,
                duration=args.duration,
                spread=args.spread,
            )
            res.extra["encrypted"] = key_file is not None
            out = res.as_json()
            human = res.line()
            cpu = [
                f"{k[len('cpu_us_per_op_') :]}={v}"
                for k, v in out.items()
                if k.startswith("cpu_us_per_op_")
            ]
            frames = [
                f"{k[len('frames_per_op_') :]}={v}/{out[k.replace('frames', 'bytes')]}B"
                for k, v in out.items()
                if k.startswith("frames_per_op_")
            ]
            if frames:
                human += "\nRaft frames/bytes sent per op: " + " ".join(frames)
            if cpu:
                human += "\ncpu us/op: " + " ".join(cpu)
                wake = [
                    f"{k[len('wakeups_per_op_') :]}={v}"
                    for k, v in out.items()
                    if k.startswith("wakeups_per_op_")
                ]
                human += "\nwake-ups/op: " + " ".join(wake)
    finally:
        if cluster is not None:
            cluster.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if human is None:
        human = " ".join(f"{k}={out[k]}" for k in REQUIRED_KEYS[1:])
    print(human)
    if not args.no_json:
        print(json.dumps(out))
    return 0 if out.get("ok") else 2


if __name__ == "__main__":
    sys.exit(main())
