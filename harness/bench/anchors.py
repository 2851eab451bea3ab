"""The anchors of ``scripts/bench-all``: etcd, PySyncObj and the fsync floor, measured by
the scripts of /work/shared/anchors in the same run."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.bench.meters import CpuMeter
from harness.bench.report import AllConfig, Reporter

if TYPE_CHECKING:
    pass

ANCHORS_DIR = Path(os.environ.get("RAFTD_ANCHORS_DIR", "/work/shared/anchors"))


def _etcd_pids() -> list[int]:
    work = Path(os.environ.get("ANCHORS_WORK", "/tmp/raftd-anchors"))
    try:
        return [int(x) for x in (work / "etcd" / "pids").read_text().split()]
    except (OSError, ValueError):
        return []


def _anchor(
    rep: Reporter,
    name: str,
    script: str,
    *args: str,
    timeout: float = 300,
    attempts: int = 3,
    cpu_pids: Sequence[int] = (),
) -> None:
    """Run an anchor script; its last line is its JSON result. Retried (``attempts``):
    under heavy load the anchors' etcd/cluster.sh can take a member that has not
    exec'd yet for one that "exited during startup"."""
    with rep.step(f"anchor {name}"):
        for attempt in range(1, attempts + 1):
            meter = CpuMeter(cpu_pids, client="children")
            p = subprocess.run(
                ["bash", str(ANCHORS_DIR / script), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            lines = p.stdout.strip().splitlines()
            for line in lines[:-1]:
                print(f"  {line}")
            if p.returncode == 0 and lines and lines[-1].startswith("{"):
                res = json.loads(lines[-1])
                if cpu_pids:
                    res.update(meter.result(int(res.get("ok") or 0)))
                if attempt > 1:
                    res["attempt"] = attempt
                rep.add(name, res)
                return
            err = f"exit {p.returncode}: {(p.stderr or p.stdout)[-400:]}"
            if attempt == attempts:
                raise RuntimeError(err)
            rep.say(f"anchor {name}: attempt {attempt} failed ({err.splitlines()[0]}), retrying")


def _etcd(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ANCHORS_DIR / "etcd/cluster.sh"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_anchors(rep: Reporter, cfg: AllConfig) -> None:
    _anchor(rep, "raw fsync", "raw/fsync.sh", "2000", "fsync", timeout=150)
    started = False
    with rep.step("anchor etcd cluster start 3"):
        for attempt in range(3):
            _etcd("stop", timeout=60)
            p = _etcd("start", "3")
            if p.returncode == 0:
                started = True
                break
            rep.say(f"etcd start attempt {attempt + 1} failed: {(p.stderr or p.stdout)[-300:]}")
        if not started:
            raise RuntimeError("etcd did not start")
    try:
        for name, args in (
            ("etcd put@1", ("put", "1", "1", "3000")),
            ("etcd put@64", ("put", "64", "8", "20000")),
            ("etcd put@256", ("put", "256", "16", "40000")),
            ("etcd get-l@64", ("get-l", "64", "8", "40000")),
        ):
            if not started:
                break
            op, clients, conns, total = args
            _anchor(
                rep,
                name,
                "etcd/bench.sh",
                *("--op", op, "--clients", clients, "--conns", conns, "--total", total),
                timeout=120,
                attempts=1,
                cpu_pids=_etcd_pids(),
            )
    finally:
        _etcd("stop", timeout=60)
    _anchor(
        rep,
        "etcd failover",
        "etcd/failover.sh",
        str(cfg.etcd_failover_trials),
        timeout=60 + 40 * cfg.etcd_failover_trials,
    )
    _anchor(
        rep,
        "pysyncobj tput-all",
        "pysyncobj/bench.sh",
        *("tput-all", "--duration", "10", "--window", "5000"),
        timeout=200,
    )
