"""Command line of ``scripts/crash-test``."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from harness.crash import run as crash_harness


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="crash-test", description=crash_harness.__doc__)
    ap.add_argument("--kills", type=int, default=200, help="kill/restart cycles (200)")
    ap.add_argument("--seed", type=int, default=None, help="replay a run (printed first)")
    ap.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    ap.add_argument(
        "--bug",
        choices=["split-apply"],
        default=None,
        help="break the writer on purpose: the test must then fail",
    )
    ap.add_argument("--quiet", action="store_true", help="only the summary")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(
        f"seed={seed}  (replay: scripts/crash-test --kills {args.kills} --seed {seed})", flush=True
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    rep = crash_harness.run(args.kills, seed, args.keep, bug=args.bug, log=not args.quiet)
    s = rep.summary()
    print(
        f"kill points: {rep.kills}  lost acks: {rep.lost_acks}  double applies: "
        f"{rep.double_applies}  acks: {rep.acks}  time: {rep.elapsed_s:.1f}s  "
        f"{'OK' if rep.ok else 'FAILED'}"
    )
    print(json.dumps(s, separators=(",", ":")))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
