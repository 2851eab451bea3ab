"""Command line of ``scripts/chaos`` (see :mod:`harness.chaos`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.chaos.checks import NemesisAvailability
from harness.chaos.nemesis import KINDS, KindPicker, NemesisTiming
from harness.chaos.runner import RunConfig, RunResult, run_once
from raftd.app.presets import PRESETS

__all__ = ["CampaignResult", "availability_table", "main", "run_campaign", "write_key_file"]

Log = Callable[[str], None]


@dataclass(slots=True)
class CampaignResult:
    seed: int
    out: Path
    runs: list[RunResult] = field(default_factory=list)
    availability: dict[str, NemesisAvailability] = field(default_factory=dict)

    @property
    def anomalies(self) -> int:
        return sum(len(r.anomalies) for r in self.runs)

    @property
    def lost_writes(self) -> int:
        return sum(len(r.lost) for r in self.runs)

    @property
    def unavailable_s(self) -> float:
        return sum(r.unavailable_s for r in self.runs)

    @property
    def unknown(self) -> int:
        return sum(len(r.unknown) for r in self.runs)

    @property
    def ok(self) -> bool:
        return self.anomalies == 0 and self.lost_writes == 0

    def summary_line(self) -> str:
        return (
            f"{len(self.runs)} runs, {self.anomalies} anomalies, {self.lost_writes} lost writes, "
            f"{self.unavailable_s:.1f} unavailable seconds"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "out": str(self.out),
            "runs": len(self.runs),
            "anomalies": self.anomalies,
            "lost_writes": self.lost_writes,
            "unavailable_s": round(self.unavailable_s, 3),
            "longest_unavailable_s": round(
                max((b - a for r in self.runs for a, b in r.windows), default=0.0), 3
            ),
            "unchecked": self.unknown,
            "ops": sum(r.ops for r in self.runs),
            "answered": sum(r.answered for r in self.runs),
            "snapshots_installed": sum(r.snapshots_installed for r in self.runs),
            "availability": {k: v.as_dict() for k, v in sorted(self.availability.items())},
            "per_run": [r.as_dict() for r in self.runs],
        }


def availability_table(rows: Iterable[NemesisAvailability]) -> str:
    """A text table of availability per nemesis kind."""
    head = (
        f"{'nemesis':<17}{'faults':>7}{'ops':>8}{'answered':>10}{'unavail s':>11}{'longest s':>11}"
    )
    lines = [head, "-" * len(head)]
    for a in sorted(rows, key=lambda a: a.kind):
        frac = "-" if math.isnan(a.fraction) else f"{100 * a.fraction:.1f}%"
        lines.append(
            f"{a.kind:<17}{a.faults:>7}{a.ops:>8}{frac:>10}"
            f"{a.unavailable_s:>11.1f}{a.longest_unavailable_s:>11.1f}"
        )
    return "\n".join(lines)


def write_key_file(path: Path) -> Path:
    """A fresh random 32-byte key, hex, in a file created with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def run_campaign(
    cfg: RunConfig,
    *,
    runs: int,
    seed: int,
    out: Path,
    encrypt: bool = False,
    log: Log | None = None,
) -> CampaignResult:
    """``runs`` runs; run ``i`` (0-based) uses seed ``seed + i`` and ``out/run-<i+1>``."""
    say: Log = log or _print
    out.mkdir(parents=True, exist_ok=True)
    if encrypt:
        cfg = dataclasses.replace(cfg, key_file=write_key_file(out / "cluster.key"))
    if "slow-disk" in cfg.nemeses:
        from harness.slowfs import fuse_unavailable

        why = fuse_unavailable()
        if why is not None:
            say(f"slow-disk nemesis left out: {why}")
            cfg = dataclasses.replace(
                cfg, nemeses=tuple(k for k in cfg.nemeses if k != "slow-disk")
            )
    picker = KindPicker(cfg.nemeses or KINDS)
    camp = CampaignResult(seed=seed, out=out)
    for i in range(runs):
        run_seed = seed + i
        say(f"run {i + 1}/{runs}: seed {run_seed} (replay: --seed {run_seed} --runs 1)")
        res = run_once(cfg, i + 1, run_seed, out / f"run-{i + 1}", picker, log=say)
        camp.runs.append(res)
        for kind, a in res.availability.items():
            camp.availability.setdefault(kind, NemesisAvailability(kind)).merge(a)
        longest = max((b - a for a, b in res.windows), default=0.0)
        say(
            f"run {i + 1}: {res.ops} ops, {res.answered} answered, {res.infos} info; "
            f"unavailable {res.unavailable_s:.1f}s (longest {longest:.1f}s); "
            f"snapshots installed {res.snapshots_installed}; {len(res.anomalies)} anomalies, "
            f"{len(res.lost)} lost writes; {res.elapsed_s:.0f}s -> "
            f"{'OK' if res.ok else 'FAILED'}"
        )
        for line in res.anomalies + res.lost + res.unknown + res.harness_errors:
            say(f"  ! {line[:2000]}")
        if res.availability:
            say(_indent(availability_table(res.availability.values())))
        (out / "summary.json").write_text(json.dumps(camp.as_dict(), indent=2) + "\n")
    return camp


def _print(s: str) -> None:
    print(s, flush=True)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if kinds == ("all",):
        return KINDS
    if kinds == ("none",):
        return ()
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown nemesis {bad}; choose from {', '.join(KINDS)}")
    return kinds


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="chaos",
        description="Jepsen-style chaos test of real raftd daemons in network namespaces "
        "(needs root). See harness/chaos/__init__.py for what it does and checks.",
    )
    ap.add_argument("--runs", type=int, default=1, help="number of runs (1)")
    ap.add_argument("--duration", type=float, default=60.0, help="load seconds per run (60)")
    ap.add_argument("--nodes", type=int, default=5, help="daemons (5)")
    ap.add_argument("--clients", type=int, default=10, help="concurrent clients (10)")
    ap.add_argument("--keys", type=int, default=5, help="keys (5)")
    ap.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    ap.add_argument(
        "--nemesis",
        type=_kinds,
        default=KINDS,
        help=f"comma list of {', '.join(KINDS)}; 'all' (default) or 'none'",
    )
    ap.add_argument("--out", type=Path, default=None, help="runs/chaos-<timestamp>")
    ap.add_argument("--keep", action="store_true", help="keep the daemons' data dirs")
    ap.add_argument("--encrypt", action="store_true", help="shared key on every node")
    ap.add_argument(
        "--preset", choices=sorted(PRESETS), default="chaos", help="daemon preset (chaos)"
    )
    ap.add_argument(
        "--hold",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="fault hold time range in seconds (2 5)",
    )
    ap.add_argument(
        "--quiet-time",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="time between faults in seconds (1 2.5)",
    )
    args = ap.parse_args(argv)
    if args.nodes < 1 or args.clients < 1 or args.keys < 1 or args.runs < 1:
        ap.error("--nodes, --clients, --keys and --runs must be >= 1")
    from harness.netns import require_netns

    reason = require_netns()
    if reason is not None:
        print(f"chaos: {reason}", file=sys.stderr)
        return 2
    if "slow-disk" in args.nemesis and args.nemesis != KINDS:
        from harness.slowfs import fuse_unavailable

        why = fuse_unavailable()
        if why is not None:
            print(f"chaos: --nemesis slow-disk needs FUSE: {why}", file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    out = args.out or Path("runs") / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}"
    timing = NemesisTiming()
    if args.hold:
        timing = dataclasses.replace(timing, hold=(args.hold[0], args.hold[1]))
    if args.quiet_time:
        timing = dataclasses.replace(timing, quiet=(args.quiet_time[0], args.quiet_time[1]))
    cfg = RunConfig(
        nodes=args.nodes,
        clients=args.clients,
        keys=args.keys,
        duration=args.duration,
        nemeses=args.nemesis,
        keep=args.keep,
        preset=args.preset,
        timing=timing,
    )
    _print(
        f"seed={seed}  out={out}  (replay: scripts/chaos --seed {seed} --runs {args.runs} "
        f"--duration {args.duration:g} --nodes {args.nodes} --nemesis {','.join(args.nemesis)})"
    )
    camp = run_campaign(cfg, runs=args.runs, seed=seed, out=out, encrypt=args.encrypt)
    _print("availability per nemesis (all runs):")
    _print(availability_table(camp.availability.values()))
    if camp.unknown:
        _print(f"{camp.unknown} key histories could not be checked in time (see summary.json)")
    _print(f"summary: {out / 'summary.json'}  seed={seed}")
    _print(camp.summary_line())
    return 0 if camp.ok else 1


if __name__ == "__main__":
    sys.exit(main())
