"""``python -m harness.bench.startup``: the CPU a daemon spends starting, against the
floor of ``import libp2p``.

Per trial: one daemon (``local`` preset, default discovery) in a network namespace of
its own; the sample is its utime+stime (``/proc/<pid>/stat``) when its API socket
appears. The floors are child processes' CPU (``getrusage``) for ``python -c pass`` and
``python -c "import libp2p"``. Prints the medians and raftd's share above the floor.
Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.fleet import Fleet
from harness.netns import Topology, require_netns

__all__ = ["main"]

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _child_cpu(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _daemon_pid(data_dir: Path) -> int | None:
    """The daemon's own python process (the netns launcher execs through a wrapper)."""
    key = str(data_dir).encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if key in cmd and b"python" in cmd.split(b"\0")[0]:
            return int(p.name)
    return None


def daemon_start_cpu(base: Path, timeout: float = 30.0) -> float:
    """CPU seconds of one daemon when its API socket appears."""
    with Topology(1) as topo:
        fleet = Fleet(topo, base, preset="local")
        node = fleet[0]
        fleet.start_all()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if node.socket.exists():
                    pid = _daemon_pid(node.data_dir)
                    if pid is not None:
                        return _cpu_of(pid)
                time.sleep(0.005)
            raise RuntimeError(f"no API socket within {timeout:.0f} s:\n{node.log_tail()}")
        finally:
            fleet.stop_all()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness.bench.startup", description=__doc__)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args(argv)
    reason = require_netns()
    if reason is not None:
        print(f"startup: {reason}", file=sys.stderr)
        return 2
    py = sys.executable
    bare = [_child_cpu([py, "-c", "pass"]) for _ in range(args.trials)]
    floor = [_child_cpu([py, "-c", "import libp2p"]) for _ in range(args.trials)]
    up: list[float] = []
    for _ in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            up.append(daemon_start_cpu(Path(tmp)))
    m = statistics.median
    print(
        f"CPU, medians of {args.trials}: python -c pass {m(bare):.3f} s; "
        f"import libp2p {m(floor):.3f} s; a daemon when its API socket listens "
        f"{m(up):.3f} s ({', '.join(f'{x:.2f}' for x in up)})"
    )
    print(f"raftd's start-up above the import libp2p floor: {m(up) - m(floor):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
