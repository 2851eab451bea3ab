"""``scripts/bench-all``: every raftd measurement on 3 daemons, then the anchors."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from harness.bench.anchors import run_anchors
from harness.bench.catchup import measure_catchup
from harness.bench.failover import measure_failover
from harness.bench.load import BenchResult, result, run_load
from harness.bench.meters import (
    CpuMeter,
    ProcMeter,
    cluster_roles,
    make_key_file,
    measure_idle,
    rss_kb,
    run_measured,
)
from harness.bench.report import AllConfig, Reporter, summarize
from harness.bench.rss import measure_rss
from harness.bench.transport import round_trips

if TYPE_CHECKING:
    from raftd.testing.cluster import LocalCluster


def _load(
    rep: Reporter,
    name: str,
    roles: Sequence[tuple[str, int]],
    sockets: list[str],
    op: str,
    clients: int,
    conns: int,
    total: int,
    duration: float,
    *,
    preload: bool = False,
    spread: bool = False,
    **extra: object,
) -> None:
    with rep.step(name):
        meter: CpuMeter | None = None
        per_role: ProcMeter | None = None

        async def go() -> BenchResult:
            nonlocal meter, per_role
            if preload:  # outside the measurement
                await run_load(sockets, op, clients=64, conns=8, total=0, duration=0)
            meter = CpuMeter([pid for _, pid in roles])
            per_role = ProcMeter(roles)
            return await run_load(
                sockets,
                op,
                clients=clients,
                conns=conns,
                total=total,
                duration=duration,
                preload=False,
                spread=spread,
            )

        res = trio.run(go)
        assert meter is not None and per_role is not None
        res.extra.update(extra)
        res.extra.update(meter.result(len(res.latencies)))
        res.extra.update(per_role.result(len(res.latencies), res.elapsed))
        rep.add(name, res.as_json(), res.line())


def start_cluster(cfg: AllConfig, extra_args: Sequence[str] = ()) -> LocalCluster:
    from raftd.testing.cluster import LocalCluster

    c = LocalCluster(cfg.nodes, preset=cfg.preset, extra_args=extra_args)
    try:
        c.start()
    except BaseException:
        c.close()
        raise
    return c


def _profile_put64(rep: Reporter, cfg: AllConfig, cluster: LocalCluster, out_dir: Path) -> None:
    """put@64 again with py-spy sampling the leader (numbers not used for ratios)."""
    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        rep.say(f"no {pyspy}: profile skipped")
        return
    lead = cluster.wait_leader()
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "leader-put64.txt"
    dur = max(3, int(cfg.dur_load))
    cmd = [
        str(pyspy),
        "record",
        "--pid",
        str(lead.pid),
        "--duration",
        str(dur),
        "--rate",
        "200",
        "--format",
        "raw",
        "--nonblocking",
        "--gil",  # only stacks holding the GIL: where the CPU goes in Python
        "-o",
        str(raw),
    ]
    with rep.step("profile put@64 (leader under py-spy)"):
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            res = trio.run(
                lambda: run_load(
                    [str(n.socket) for n in cluster.nodes],
                    "put",
                    clients=64,
                    conns=8,
                    total=10**9,
                    duration=dur,
                    preload=False,
                )
            )
            _, err = spy.communicate(timeout=dur + 60)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait(10)
        res.extra.update(profiled=True, leader_pid=lead.pid, profile=str(raw))
        rep.add("raftd put@64 profiled", res.as_json(), res.line())
        if spy.returncode != 0:
            rep.say(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            return
        print(profile_summary(raw))


def profile_summary(raw: Path, top: int = 20) -> str:
    """Top functions by own (self) and total (inclusive) samples of a py-spy raw file."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [
            re.sub(r" \((?:.*/)?(site-packages/|raftd/)?", r" (\1", f) for f in stack.split(";")
        ]
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"profile: {total} samples ({raw})", "  self%  function"]
    for f, c in own.most_common(top):
        lines.append(f"  {100 * c / max(total, 1):5.1f}  {f}")
    lines.append("  total%  function")
    for f, c in incl.most_common(top + 15):
        lines.append(f"  {100 * c / max(total, 1):6.1f}  {f}")
    return "\n".join(lines)


def raftd_big_keys(rep: Reporter, cfg: AllConfig) -> None:
    """put@64 over ``cfg.big_keys`` keys on a fresh cluster, and each daemon's RSS growth
    from idle to the whole key space loaded."""
    with rep.step(f"raftd put@64 over {cfg.big_keys} keys: fresh cluster"):
        cluster = start_cluster(cfg)
        try:
            socks = [str(n.socket) for n in cluster.nodes]
            roles = cluster_roles(cluster)
            time.sleep(2.0)
            rss0 = [rss_kb(pid) for _, pid in roles]

            res = run_measured(
                socks,
                "put",
                roles,
                key_space=cfg.big_keys,
                clients=64,
                conns=8,
                total=cfg.total_put64,
                duration=cfg.dur_load,
            )
            rss1 = [rss_kb(pid) for _, pid in roles]
            growth = [round((b - a) / 1024, 1) for a, b in zip(rss0, rss1, strict=True)]
            res.extra.update(
                key_space=cfg.big_keys,
                rss_growth_mb_per_node=growth,
                rss_growth_mb_max=max(growth),
            )
            rep.add("raftd put@64 big", res.as_json(), res.line())
        finally:
            cluster.close()


def raftd_main(rep: Reporter, cfg: AllConfig) -> None:
    rep.say(f"start {cfg.nodes} raftd daemons (preset {cfg.preset})")
    try:
        cluster = start_cluster(cfg)
    except Exception as exc:
        rep.fail("raftd start", exc)
        return
    try:
        socks = [str(n.socket) for n in cluster.nodes]
        roles = cluster_roles(cluster)
        with rep.step("raftd idle CPU and wake-ups"):
            rep.add("raftd idle", measure_idle(cluster, cfg.idle_s))
        with rep.step("raftd idle RSS"):
            rep.add(
                "raftd idle-rss",
                measure_rss(
                    cluster,
                    settle_s=4.0 if cfg.quick else 15.0,
                    min_idle_s=1.0 if cfg.quick else 3.0,
                ),
            )
        # The first run preloads the key space (10,000 keys) for the others and get-l.
        # One request at a time, each to the next daemon in turn, as etcd's load tool
        # balances each request over all its endpoints: a third of them through the
        # leader.
        _load(
            rep,
            "raftd put@1",
            roles,
            socks,
            "put",
            1,
            len(socks),
            cfg.total_put1,
            cfg.dur_put1,
            preload=True,
            spread=True,
        )
        # Each path on its own (a follower forwards to the leader and hears of the
        # commit: two more one-way hops).
        lead = cluster.wait_leader()
        follower = next(x for x in cluster.nodes if x is not lead and x.pid is not None)
        for path, node in (("leader", lead), ("follower", follower)):
            _load(
                rep,
                f"raftd put@1 via {path}",
                roles,
                [str(node.socket)],
                "put",
                1,
                1,
                cfg.total_put1 // 2,
                cfg.dur_put1 / 2,
            )
        _load(rep, "raftd put@64", roles, socks, "put", 64, 8, cfg.total_put64, cfg.dur_load)
        _load(rep, "raftd put@256", roles, socks, "put", 256, 16, cfg.total_put256, cfg.dur_load)
        _load(rep, "raftd get-l@64", roles, socks, "get-l", 64, 8, cfg.total_getl64, cfg.dur_load)
        if cfg.profile is not None:
            _profile_put64(rep, cfg, cluster, cfg.profile)
        with rep.step(f"raftd failover x{cfg.failover_trials}"):
            rep.add("raftd failover", measure_failover(cluster, cfg.failover_trials))
        with rep.step(f"raftd catch-up of {cfg.catchup_entries} entries"):
            rep.add("raftd catchup", measure_catchup(cluster, cfg.catchup_entries))
        with rep.step("raftd RSS after the load"):
            after = [rss_kb(n.pid) for n in cluster.nodes if n.pid is not None]
            rep.add(
                "raftd rss-after-load",
                result(
                    "rss-after-load",
                    clients=0,
                    ok=len(after),
                    rss_kb_max=max(after),
                    rss_kb_per_node=after,
                ),
            )
    finally:
        cluster.close()


def raftd_encryption(rep: Reporter, cfg: AllConfig) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="raftd-key-"))
    try:
        key = make_key_file(tmp)
        for name, extra in (
            ("raftd put@64 plain", []),
            ("raftd put@64 keyed", ["--key-file", str(key)]),
        ):
            with rep.step(f"{name}: fresh cluster"):
                cluster = start_cluster(cfg, extra)
                try:
                    res = run_measured(
                        [str(n.socket) for n in cluster.nodes],
                        "put",
                        cluster_roles(cluster),
                        clients=64,
                        conns=8,
                        total=cfg.total_put64,
                        duration=cfg.dur_load,
                    )
                    res.extra.update(encrypted=bool(extra))
                    rep.add(name, res.as_json(), res.line())
                finally:
                    cluster.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def raftd_round_trip(rep: Reporter, cfg: AllConfig) -> None:
    """The libp2p round trip between two processes' transports: put@1's network floor."""
    with rep.step(f"raftd libp2p round trip x{cfg.round_trips}"):
        rt = trio.run(round_trips, cfg.round_trips)
        rep.add(
            "raftd libp2p rtt",
            result("libp2p-rtt", ok=cfg.round_trips, p50_ms=rt["p50_ms"], p99_ms=rt["p99_ms"]),
        )


def main_all(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/bench-all",
        description="Every raftd measurement on 3 local daemons, plus the anchors.",
    )
    ap.add_argument(
        "--quick", action="store_true", help="a few seconds per measurement, no anchors (CI)"
    )
    ap.add_argument("--no-anchors", action="store_true", help="skip etcd/PySyncObj/fsync")
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also profile the leader with py-spy during an extra put@64",
    )
    ap.add_argument("--failover-trials", type=int)
    ap.add_argument("--catchup-entries", type=int)
    ap.add_argument("--out", type=Path, help="also write the JSON lines to this file")
    args = ap.parse_args(argv)
    cfg = AllConfig.make(args)
    rep = Reporter(args.out)
    started = time.monotonic()
    rep.say(
        f"cpus={os.cpu_count()} load average={os.getloadavg()} quick={cfg.quick} "
        f"anchors={cfg.anchors}"
    )
    raftd_round_trip(rep, cfg)
    raftd_main(rep, cfg)
    raftd_encryption(rep, cfg)
    if cfg.big_keys:
        raftd_big_keys(rep, cfg)
    if cfg.anchors:
        run_anchors(rep, cfg)
    ratios = summarize(rep)
    rep.say(f"done in {time.monotonic() - started:.0f} s; load average {os.getloadavg()}")
    summary = result(
        "summary",
        clients=0,
        ok=len(rep.results),
        errs=len(rep.failed),
        ratios=ratios,
        failed=rep.failed,
        results=rep.results,
        load_avg=[round(x, 2) for x in os.getloadavg()],
        quick=cfg.quick,
    )
    print(json.dumps(summary))
    return 1 if rep.failed else 0
