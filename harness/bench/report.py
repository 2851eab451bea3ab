"""``scripts/bench-all`` bookkeeping: its configuration, the reporter that prints and keeps
each result, and the summary table of ratios against the goals."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.bench.meters import load1

if TYPE_CHECKING:
    pass


@dataclass
class AllConfig:
    quick: bool
    anchors: bool
    profile: Path | None
    nodes: int = 3
    preset: str = "local"
    dur_put1: float = 15.0
    dur_load: float = 20.0
    total_put1: int = 3000
    total_put64: int = 20000
    total_put256: int = 40000
    total_getl64: int = 40000
    failover_trials: int = 10
    catchup_entries: int = 100_000
    etcd_failover_trials: int = 5
    idle_s: float = 10.0
    big_keys: int = 100_000  # the scale-with-data row (0: skipped)
    round_trips: int = 2000  # the libp2p round trip of put@1's floor

    @classmethod
    def make(cls, args: argparse.Namespace) -> AllConfig:
        cfg = cls(
            quick=args.quick, anchors=not args.no_anchors and not args.quick, profile=args.profile
        )
        if args.quick:
            cfg.dur_put1 = cfg.dur_load = 2.0
            cfg.total_put1, cfg.total_put64, cfg.total_put256, cfg.total_getl64 = (
                300,
                2000,
                3000,
                3000,
            )
            cfg.failover_trials = 2
            cfg.catchup_entries = 1500
            cfg.idle_s = 2.0
            cfg.big_keys = 3000
            cfg.round_trips = 200
        if args.failover_trials is not None:
            cfg.failover_trials = args.failover_trials
        if args.catchup_entries is not None:
            cfg.catchup_entries = args.catchup_entries
        return cfg


class Reporter:
    """Prints each measurement (human line + JSON line) and keeps the results."""

    def __init__(self, out: Path | None) -> None:
        self.results: dict[str, dict[str, object]] = {}
        self.failed: dict[str, str] = {}
        self.out = out.open("w") if out is not None else None

    def say(self, msg: str) -> None:
        print(f"[bench-all] {msg}", flush=True)

    def add(self, name: str, res: dict[str, object], human: str | None = None) -> None:
        res = {**res, "load1": load1()}
        self.results[name] = res
        if human:
            print(human)
        line = json.dumps(res)
        print(line, flush=True)
        if self.out is not None:
            self.out.write(line + "\n")
            self.out.flush()

    def fail(self, name: str, exc: BaseException) -> None:
        self.failed[name] = f"{type(exc).__name__}: {exc}"
        self.say(f"{name} FAILED: {self.failed[name]}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"{name} (load average {load1()})")
        try:
            yield
        except Exception as exc:
            self.fail(name, exc)


def _num(rep: Reporter, name: str, key: str) -> float | None:
    v = rep.results.get(name, {}).get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def summarize(rep: Reporter) -> dict[str, object]:
    """The goals table (printed) and the ratios (returned). CPU columns: µs of CPU per
    operation summed over the three daemons (raftd) or the three members (etcd)."""
    n = _num
    Row = tuple[str, str, float | None, float | None, float | None, str, bool | None]
    rows: list[tuple[Row, float | None, float | None]] = []

    def cpu(name: str) -> float | None:
        v = n(rep, name, "cpu_us_per_op_daemons")
        if v is None:
            ms = n(rep, name, "server_cpu_ms_per_op")
            v = round(ms * 1000) if ms is not None else None
        return v

    def row(
        label: str,
        unit: str,
        ours: float | None,
        anchor: float | None,
        value: float | None,
        goal: str,
        ok: bool | None,
        cpu_rows: tuple[str, str] | None = None,
    ) -> None:
        c = (cpu(cpu_rows[0]), cpu(cpu_rows[1])) if cpu_rows else (None, None)
        rows.append(((label, unit, ours, anchor, value, goal, ok), *c))

    def ge(v: float | None, g: float) -> bool | None:
        return None if v is None else v >= g

    def le(v: float | None, g: float) -> bool | None:
        return None if v is None else v <= g

    def ops(name: str) -> float | None:
        return n(rep, name, "ops_per_s")

    r_put64 = _ratio(ops("raftd put@64"), ops("etcd put@64"))
    row(
        "put@64 / etcd put@64",
        "ops/s",
        ops("raftd put@64"),
        ops("etcd put@64"),
        r_put64,
        ">= 1",
        ge(r_put64, 1.0),
        ("raftd put@64", "etcd put@64"),
    )
    cpu64 = _ratio(cpu("raftd put@64"), cpu("etcd put@64"))
    row(
        "put@64 CPU per put / etcd's",
        "us",
        cpu("raftd put@64"),
        cpu("etcd put@64"),
        cpu64,
        "<= 1",
        le(cpu64, 1.0),
    )
    r_p50 = _ratio(n(rep, "raftd put@1", "p50_ms"), n(rep, "etcd put@1", "p50_ms"))
    row(
        "put@1 p50 / etcd put@1 p50",
        "ms",
        n(rep, "raftd put@1", "p50_ms"),
        n(rep, "etcd put@1", "p50_ms"),
        r_p50,
        "<= 2",
        le(r_p50, 2.0),
        ("raftd put@1", "etcd put@1"),
    )
    by_path: dict[str, float | None] = {}
    for path in ("leader", "follower"):
        name = f"raftd put@1 via {path}"
        r = by_path[path] = _ratio(n(rep, name, "p50_ms"), n(rep, "etcd put@1", "p50_ms"))
        row(
            f"  put@1 via the {path} / etcd's",
            "ms",
            n(rep, name, "p50_ms"),
            n(rep, "etcd put@1", "p50_ms"),
            r,
            "(info)",
            None,
            (name, "etcd put@1"),
        )
    r_put256e = _ratio(ops("raftd put@256"), ops("etcd put@256"))
    row(
        "put@256 / etcd put@256",
        "ops/s",
        ops("raftd put@256"),
        ops("etcd put@256"),
        r_put256e,
        ">= 1",
        ge(r_put256e, 1.0),
        ("raftd put@256", "etcd put@256"),
    )
    p99 = n(rep, "raftd put@256", "p99_ms")
    row(
        "put@256 p99",
        "ms",
        p99,
        n(rep, "etcd put@256", "p99_ms"),
        p99,
        "<= 100 ms",
        le(p99, 100.0),
    )
    r_get = _ratio(ops("raftd get-l@64"), ops("etcd get-l@64"))
    row(
        "get-l@64 / etcd get-l@64",
        "ops/s",
        ops("raftd get-l@64"),
        ops("etcd get-l@64"),
        r_get,
        ">= 1",
        ge(r_get, 1.0),
        ("raftd get-l@64", "etcd get-l@64"),
    )
    r_enc = _ratio(ops("raftd put@64 keyed"), ops("raftd put@64 plain"))
    row(
        "put@64 keyed / plain (encryption)",
        "ops/s",
        ops("raftd put@64 keyed"),
        ops("raftd put@64 plain"),
        r_enc,
        ">= 0.8",
        ge(r_enc, 0.8),
        ("raftd put@64 keyed", "raftd put@64 plain"),
    )
    for role in ("leader", "follower1"):
        pct = n(rep, "raftd idle", f"cpu_pct_{role}")
        row(f"idle {role}: CPU", "% core", pct, None, pct, "<= 1 %", le(pct, 1.0))
        wk = n(rep, "raftd idle", f"wakeups_per_s_{role}")
        row(f"idle {role}: wake-ups", "/s", wk, None, wk, "(info)", None)
    keys = n(rep, "raftd put@64 big", "key_space")
    r_big = _ratio(ops("raftd put@64 big"), ops("raftd put@64"))
    row(
        f"put@64 at {f'{keys:.0f}' if keys else '-'} keys / at 10000",
        "ops/s",
        ops("raftd put@64 big"),
        ops("raftd put@64"),
        r_big,
        ">= 0.8",
        ge(r_big, 0.8),
        ("raftd put@64 big", "raftd put@64"),
    )
    growth = n(rep, "raftd put@64 big", "rss_growth_mb_max")
    per100k = round(growth * 100_000 / keys, 1) if growth is not None and keys else None
    row("RSS growth per 100k keys", "MB", per100k, None, per100k, "<= 40 MB", le(per100k, 40.0))
    r_put256 = _ratio(ops("raftd put@256"), ops("pysyncobj tput-all"))
    row(
        "put@256 / PySyncObj tput-all",
        "ops/s",
        ops("raftd put@256"),
        ops("pysyncobj tput-all"),
        r_put256,
        "(info)",
        None,
    )
    fo = n(rep, "raftd failover", "p50_ms")
    fo_s = fo / 1000 if fo is not None else None
    efo = n(rep, "etcd failover", "p50_ms")
    row(
        "failover p50 (local preset)",
        "s",
        fo_s,
        efo / 1000 if efo is not None else None,
        fo_s,
        "<= 0.6 s",
        le(fo_s, 0.6),
    )
    cu = n(rep, "raftd catchup", "catchup_s")
    entries = rep.results.get("raftd catchup", {}).get("entries")
    row(f"catch-up of {entries} entries", "s", cu, None, cu, "<= 5 s (100k)", le(cu, 5.0))
    rss = n(rep, "raftd idle-rss", "idle_rss_kb")
    rss_mb = round(rss / 1024, 1) if rss is not None else None
    erss = n(rep, "etcd failover", "idle_rss_kb")
    row(
        "idle RSS",
        "MB",
        rss_mb,
        round(erss / 1024, 1) if erss is not None else None,
        rss_mb,
        "<= 120 MB",
        le(rss_mb, 120.0),
    )
    r_p1 = _ratio(n(rep, "raftd put@1", "p50_ms"), n(rep, "raw fsync", "p50_ms"))
    row(
        "put@1 p50 / fsync p50",
        "ms",
        n(rep, "raftd put@1", "p50_ms"),
        n(rep, "raw fsync", "p50_ms"),
        r_p1,
        "(info)",
        None,
    )
    # put@1's floor: the network round trips of its path between two daemons' transports
    # (one through the leader: the append and its acknowledgement; two through a
    # follower: its PROP and the commit coming back too) plus one fsync (the followers'
    # and the leader's run in parallel). The local socket to the client is left out.
    rtt = n(rep, "raftd libp2p rtt", "p50_ms")
    sync = n(rep, "raw fsync", "p50_ms")
    floors: dict[str, float | None] = {}
    for path, hops in (("leader", 1), ("follower", 2)):
        floor = round(hops * rtt + sync, 3) if rtt is not None and sync is not None else None
        floors[path] = floor
        measured = n(rep, f"raftd put@1 via {path}", "p50_ms")
        row(
            f"put@1 via {path}: p50 / floor",
            "ms",
            measured,
            floor,
            _ratio(measured, floor),
            "(info)",
            None,
        )

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:g}"

    print()
    print(
        f"{'measurement':<36} {'unit':<6} {'raftd':>10} {'anchor':>10} {'ratio/value':>12}"
        f"  {'goal':<10} {'met':<4} {'raftd cpu':>10} {'anchor cpu':>10}"
    )
    for (label, unit, ours, anchor, value, goal, ok), c_ours, c_anchor in rows:
        met = "n/a" if ok is None else ("yes" if ok else "NO")
        print(
            f"{label:<36} {unit:<6} {f(ours):>10} {f(anchor):>10} {f(value):>12}  {goal:<10} "
            f"{met:<4} {f(c_ours):>10} {f(c_anchor):>10}"
        )
    print("(cpu: µs of CPU per operation, all daemons / all etcd members together)")
    return {
        "put64_vs_etcd": r_put64,
        "put64_cpu_vs_etcd": cpu64,
        "put256_vs_etcd": r_put256e,
        "put256_vs_pysyncobj": r_put256,
        "put256_p99_ms": p99,
        "put1_p50_vs_etcd": r_p50,
        "put1_leader_p50_vs_etcd": by_path["leader"],
        "put1_follower_p50_vs_etcd": by_path["follower"],
        "failover_p50_s": fo_s,
        "catchup_s": cu,
        "idle_rss_mb": rss_mb,
        "getl64_vs_etcd": r_get,
        "keyed_vs_plain_put64": r_enc,
        "big_vs_10k_put64": r_big,
        "rss_growth_mb_per_100k": per100k,
        "libp2p_rtt_p50_ms": rtt,
        "put1_leader_floor_ms": floors["leader"],
        "put1_follower_floor_ms": floors["follower"],
        "idle_cpu_pct_leader": n(rep, "raftd idle", "cpu_pct_leader"),
    }
