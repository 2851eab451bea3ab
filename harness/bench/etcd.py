"""The etcd endpoint's cost against raftd's own socket API, from one run
(``scripts/bench-etcd``).

Starts one :class:`LocalCluster` of real daemons with ``--etcd-listen`` on every node,
then measures, on that same cluster, ``put`` (100-byte values, 16-byte keys over 10,000
keys, 64 in flight over 8 connections spread over the nodes):

1. through raftd's native API (the load generator of :mod:`harness.bench.load`);
2. through the etcd endpoints, with the Go load tool that measures etcd itself
   (``/work/shared/anchors/etcd/bench.sh``, etcd's clientv3), when it is installed.

3. with ``--with-etcd``, etcd itself (3 members started by the anchors'
   ``etcd/cluster.sh`` in a private work dir and ports, after raftd has stopped), with
   the same tool and load.

For each it prints the throughput, the latencies and the server processes' CPU per
operation (:class:`harness.bench.meters.ProcMeter`), then the ratio etcd endpoint/native,
and as the last line one JSON object with all results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from harness.bench.load import run_load
from harness.bench.meters import ProcMeter, cluster_roles, load1
from raftd.testing.cluster import LocalCluster

__all__ = ["main"]

ANCHOR = Path(os.environ.get("RAFTD_ANCHORS", "/work/shared/anchors")) / "etcd" / "bench.sh"


def _native(
    cluster: LocalCluster, clients: int, conns: int, total: int, dur: float
) -> dict[str, object]:
    sockets = [str(n.socket) for n in cluster.nodes]
    roles = cluster_roles(cluster)
    trio.run(lambda: run_load(sockets, "put", total=0, duration=0))  # preload
    meter = ProcMeter(roles)
    res = trio.run(
        lambda: run_load(
            sockets, "put", clients=clients, conns=conns, total=total, duration=dur, preload=False
        )
    )
    res.extra.update(meter.result(len(res.latencies), res.elapsed))
    out = res.as_json()
    out["system"] = "raftd-native"
    return out


def _etcd(
    cluster: LocalCluster, clients: int, conns: int, total: int, dur: float
) -> dict[str, object] | None:
    if not ANCHOR.exists():
        print(f"skipping the etcd endpoint: {ANCHOR} not found", file=sys.stderr)
        return None
    roles = cluster_roles(cluster)
    return _go_load(cluster.etcd_endpoints(), roles, "raftd-etcd-api", clients, conns, total, dur)


def _real_etcd(clients: int, conns: int, total: int, dur: float) -> dict[str, object] | None:
    """etcd 3.4 itself: 3 members in a private anchors work dir, on their own ports."""
    script = ANCHOR.with_name("cluster.sh")
    env = dict(
        os.environ,
        ANCHORS_WORK=tempfile.mkdtemp(prefix="raftd-etcdbench-"),
        ANCHORS_ETCD_CLIENT_BASE="33791",
        ANCHORS_ETCD_PEER_BASE="33801",
    )
    start = subprocess.run(
        ["bash", str(script), "start", "3"], capture_output=True, text=True, env=env, timeout=90
    )
    try:
        if start.returncode != 0:
            print(f"etcd did not start:\n{start.stdout}\n{start.stderr}", file=sys.stderr)
            return None
        work = Path(env["ANCHORS_WORK"]) / "etcd"
        endpoints = (work / "endpoints").read_text().strip().split(",")
        pids = [int(p) for p in (work / "pids").read_text().split()]
        roles = [(f"member{i + 1}", pid) for i, pid in enumerate(pids)]
        return _go_load(endpoints, roles, "etcd", clients, conns, total, dur)
    finally:
        subprocess.run(["bash", str(script), "stop"], capture_output=True, env=env, timeout=60)
        shutil.rmtree(env["ANCHORS_WORK"], ignore_errors=True)


def _go_load(
    endpoints: list[str],
    roles: list[tuple[str, int]],
    system: str,
    clients: int,
    conns: int,
    total: int,
    dur: float,
) -> dict[str, object] | None:
    """etcd's Go load tool (clientv3) against ``endpoints``, metering ``roles``."""
    meter = ProcMeter(roles)
    cmd = [
        "bash",
        str(ANCHOR),
        "--endpoints",
        ",".join(endpoints),
        "--op",
        "put",
        "--clients",
        str(clients),
        "--conns",
        str(conns),
        "--total",
        str(total),
        "--maxdur",
        f"{int(dur)}s",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 120)
    if p.returncode != 0:
        print(f"etcd load tool failed ({p.returncode}):\n{p.stdout}\n{p.stderr}", file=sys.stderr)
        return None
    doc: dict[str, object] = json.loads(p.stdout.strip().splitlines()[-1])
    ok = int(doc.get("ok") or 0)  # type: ignore[call-overload]
    elapsed = ok / float(doc["ops_per_s"]) if doc.get("ops_per_s") else 0.0  # type: ignore[arg-type]
    doc.update(meter.result(ok, elapsed))
    if system == "etcd":  # the per-role keys are named after the members
        cpu = [doc.get(f"cpu_us_per_op_{name}") for name, _ in roles]
        doc["cpu_us_per_op_daemons"] = sum(c for c in cpu if isinstance(c, int | float))
    doc["system"] = system
    return doc


def _line(d: dict[str, object]) -> str:
    return (
        f"{d['system']}: put@{d['clients']} ops/s={d['ops_per_s']} p50={d['p50_ms']}ms "
        f"p99={d['p99_ms']}ms errs={d['errs']} servers' CPU/op={d.get('cpu_us_per_op_daemons')}us"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-etcd", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--total", type=int, default=20000)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--with-etcd", action="store_true", help="also measure etcd itself")
    a = ap.parse_args(argv)
    with LocalCluster(a.nodes, etcd=True) as cluster:
        native = _native(cluster, a.clients, a.conns, a.total, a.duration)
        print(_line(native), flush=True)
        etcd = _etcd(cluster, a.clients, a.conns, a.total, a.duration)
        if etcd is not None:
            print(_line(etcd), flush=True)
    real = _real_etcd(a.clients, a.conns, a.total, a.duration) if a.with_etcd else None
    if real is not None:
        print(_line(real), flush=True)
    summary: dict[str, object] = {
        "op": "etcd-vs-native",
        "load1": load1(),
        "native": native,
        "etcd": etcd,
        "real_etcd": real,
    }
    if etcd is not None and native.get("ops_per_s"):
        ratio = float(etcd["ops_per_s"]) / float(native["ops_per_s"])  # type: ignore[arg-type]
        summary["throughput_ratio"] = round(ratio, 3)
        print(f"etcd endpoint / native API throughput: {ratio:.2f}x")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
