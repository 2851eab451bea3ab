"""Where the time goes: py-spy profiles of a leader and a follower under load
(``scripts/profile``).

``python -m harness.profile MODE [--clients N] [--seconds S] [--out DIR]`` starts a
3-node :class:`~raftd.testing.cluster.LocalCluster`, preloads the key space, then runs
``scripts/bench``'s load (``MODE`` is ``put``, ``get-l`` or ``get-s``) while ``py-spy
record`` samples the leader and one follower for ``--seconds``. It prints, per process,
the top frames by own time (samples where the frame was running) and by total time
(samples where it was on the stack), each as a share of that process's samples, and
keeps the raw collapsed stacks in ``--out`` (feed them to any flame-graph tool).

``--via etcd`` runs the put load through every node's etcd v3 endpoint with etcd's own
Go load tool (``../shared/anchors/etcd/bench.sh``) instead, so that the two paths'
profiles can be set side by side.

py-spy is in the ``dev`` extra; it needs ptrace rights (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import trio

from harness.bench.load import OPS, run_load

__all__ = ["FrameTable", "main", "parse_collapsed"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


class FrameTable:
    """Own and total sample counts per frame (function and file, lines folded)."""

    def __init__(self) -> None:
        self.own: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.samples = 0

    def add(self, stack: list[str], count: int) -> None:
        self.samples += count
        names = [_short(f) for f in stack]
        if names:
            self.own[names[-1]] += count
        for name in set(names):
            self.total[name] += count

    def top(self, which: str, n: int) -> list[tuple[str, float]]:
        table = self.own if which == "own" else self.total
        return [(k, 100.0 * v / max(1, self.samples)) for k, v in table.most_common(n)]


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/raftd/", "/lib/python"):
        i = path.rfind(marker)
        if i >= 0:
            path = path[i + len(marker) :] if marker != "/raftd/" else "raftd/" + path[i + 7 :]
            break
    return f"{m.group('func')} ({path})"


def parse_collapsed(text: str) -> FrameTable:
    """Parse py-spy's ``--format raw`` output (``frame;frame;... count`` per line)."""
    table = FrameTable()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # py-spy prefixes the thread ("thread (0x...)") and process when asked; keep
        # only Python frames.
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        table.add(frames, int(count))
    return table


def _etcd_load(endpoints: list[str], clients: int, conns: int, seconds: float) -> str:
    """Put load from etcd's Go load tool over ``endpoints`` for ``seconds``: its summary."""
    from harness.bench.etcd import ANCHOR

    if not ANCHOR.exists():
        return f"{ANCHOR} not found: no etcd load"
    cmd = ["bash", str(ANCHOR), "--endpoints", ",".join(endpoints), "--op", "put"]
    cmd += ["--clients", str(clients), "--conns", str(conns), "--total", str(10**9)]
    cmd += ["--maxdur", f"{int(seconds)}s", "--no-json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    return (p.stdout + p.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=sorted(OPS))
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--key-space", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--endpoints", choices=["all", "leader"], default="all")
    ap.add_argument("--out", type=Path, help="keep the raw stacks here")
    ap.add_argument(
        "--gil",
        action="store_true",
        help="only samples py-spy attributes to the GIL's holder (at 64 in flight it also "
        "counts the writer thread in its queue wait and LevelDB write, both of which "
        "release the GIL: read CPU from /proc)",
    )
    ap.add_argument(
        "--via",
        choices=["native", "etcd"],
        default="native",
        help="drive the load through raftd's socket API or, with etcd's Go load tool, "
        "through the etcd endpoints (put only)",
    )
    args = ap.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy not found: install the dev extra (pip install -e '.[dev]')")
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="raftd-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    from raftd.testing.cluster import LocalCluster

    if args.via == "etcd" and args.mode != "put":
        print("--via etcd drives put only")
        return 2
    with LocalCluster(3, etcd=args.via == "etcd") as cluster:
        lead = cluster.wait_leader()
        follower = next(n for n in cluster.nodes if n is not lead)
        nodes = cluster.nodes if args.endpoints == "all" else [lead]
        sockets = [str(n.socket) for n in nodes]
        # Preload outside the profile window.
        trio.run(
            lambda: run_load(sockets, "put", clients=64, conns=8, total=0, key_space=args.key_space)
        )
        procs = []
        for name, node in (("leader", lead), ("follower", follower)):
            raw = out / f"{name}.txt"
            procs.append(
                (
                    name,
                    raw,
                    subprocess.Popen(
                        [
                            pyspy,
                            "record",
                            "--pid",
                            str(node.pid),
                            "--format",
                            "raw",
                            "--rate",
                            str(args.rate),
                            "--duration",
                            str(int(args.seconds)),
                            "--nonblocking",
                            "--output",
                            str(raw),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            )
        if args.via == "etcd":
            print(_etcd_load(cluster.etcd_endpoints(), args.clients, args.conns, args.seconds))
        else:
            res = trio.run(
                lambda: run_load(
                    sockets,
                    args.mode,
                    clients=args.clients,
                    conns=args.conns,
                    total=10**9,
                    duration=args.seconds,
                    key_space=args.key_space,
                    preload=False,
                )
            )
            print(res.line())
        for name, raw, proc in procs:
            proc.wait(timeout=args.seconds + 30)
            if not raw.exists():
                print(f"{name}: py-spy wrote nothing (exit {proc.returncode}; ptrace rights?)")
                continue
            table = parse_collapsed(raw.read_text())
            print(
                f"\n== {name} (pid {lead.pid if name == 'leader' else follower.pid}): "
                f"{table.samples} samples =="
            )
            for which in ("own", "total"):
                print(f"-- top by {which} time --")
                for frame, pct in table.top(which, args.top):
                    print(f"{pct:6.1f}%  {frame}")
    print(f"\nraw stacks in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
