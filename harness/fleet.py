"""A fleet of real ``raftd run`` daemons, each in its own network namespace: the harness
of the formation tests and of ``scripts/bench-formation``.

Each :class:`FleetNode` is one host of a :class:`harness.netns.Topology` (one
network namespace, like one docker-compose container) running
``python -m raftd run --data-dir D --namespace NS --listen /ip4/0.0.0.0/tcp/7420`` with
nothing else: no peer list, discovery at its defaults. The file system is shared, so
the harness reads each daemon's ``<data-dir>/status.json`` and talks to its API socket
directly.

Everything waits on conditions with deadlines (:func:`wait_for`); a timeout raises
:class:`TimeoutError` naming what was awaited, with every node's last status and the
tail of its log.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from harness.netns import Host, Topology
from raftd.testing.cluster import make_identity
from raftd.testing.launch import daemon_argv, wait_until

__all__ = ["Fleet", "FleetNode", "one_cluster"]

T = TypeVar("T")

PORT = 7420
DEFAULT_NS = "/raft/x"


class FleetNode:
    """One daemon on one host of the fleet."""

    def __init__(self, fleet: Fleet, host: Host, index: int) -> None:
        self.fleet = fleet
        self.host = host
        self.index = index
        self.name = host.label
        self.data_dir = fleet.base_dir / self.name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = fleet.base_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.extra_args: list[str] = []
        self.peer_id = make_identity(self.data_dir)

    @property
    def socket(self) -> Path:
        return self.data_dir / "raftd.sock"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self, extra: Sequence[str] = ()) -> list[str]:
        f = self.fleet
        return daemon_argv(
            self.data_dir,
            python=f.python,
            listen=f"/ip4/0.0.0.0/tcp/{PORT}",
            preset=f.preset,
            namespaces=f.namespaces,
            extra=[*f.extra_args, *self.extra_args, *extra],
        )

    def start(self, extra: Sequence[str] = ()) -> None:
        """Start the daemon (again): same identity, same data directory."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        with open(self.log_path, "ab") as log:
            log.write(
                f"--- start {time.strftime('%H:%M:%S')} {' '.join(self.argv(extra))}\n".encode()
            )
            log.flush()
            self.started_at = time.monotonic()
            self.proc = self.host.popen(
                self.argv(extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PYTHONUNBUFFERED": "1", **self.fleet.env},
            )

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        """Signal the daemon and wait for it to exit; its exit status."""
        if self.proc is None:
            return None
        self.host.kill(self.proc, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.host.kill(self.proc, signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int | None:
        return self.kill(signal.SIGTERM, timeout)

    def wipe(self) -> None:
        """Erase the data directory except the identity (a wiped disk, same peer id)."""
        assert not self.alive
        for p in self.data_dir.iterdir():
            if p.name == "identity.key":
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()

    def status(self, ns: str | None = None) -> dict[str, Any] | None:
        """This daemon's ``status.json`` entry for ``ns``: None if the running process
        has not written it yet (a file left by an earlier process does not count)."""
        if self.proc is None:
            return None
        try:
            doc = json.loads((self.data_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None
        if doc.get("pid") != self.proc.pid or not self.alive:
            return None
        st = doc.get("namespaces", {}).get(ns or self.fleet.namespaces[0])
        return st if isinstance(st, dict) else None

    def client(self, ns: str | None = None, timeout: float = 10.0) -> Any:
        from raftd.client import Client

        return Client(str(self.socket), namespace=ns or self.fleet.namespaces[0], timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


class Fleet:
    """N hosts of a topology, one daemon each (see the module docstring)."""

    def __init__(
        self,
        topology: Topology,
        base_dir: Path,
        *,
        namespaces: Sequence[str] = (DEFAULT_NS,),
        preset: str = "local",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.topology = topology
        self.base_dir = base_dir
        self.namespaces = list(namespaces)
        self.preset = preset
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.python = python
        base_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = [FleetNode(self, h, i) for i, h in enumerate(topology)]

    def __iter__(self) -> Iterator[FleetNode]:
        return iter(self.nodes)

    def __getitem__(self, i: int) -> FleetNode:
        return self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)

    def by_id(self, peer_id: str) -> FleetNode:
        return next(n for n in self.nodes if n.peer_id == peer_id)

    def start_all(self) -> None:
        for n in self.nodes:
            n.start()

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every live daemon (all at once) and wait; exit statuses by name."""
        live = [n for n in self.nodes if n.alive]
        for n in live:
            assert n.proc is not None
            n.host.kill(n.proc, signal.SIGTERM)
        out: dict[str, int | None] = {}
        for n in live:
            assert n.proc is not None
            try:
                out[n.name] = n.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                n.host.kill(n.proc, signal.SIGKILL)
                out[n.name] = n.proc.wait(timeout=10)
        return out

    def statuses(
        self, nodes: Sequence[FleetNode] | None = None, ns: str | None = None
    ) -> list[dict[str, Any] | None]:
        return [n.status(ns) for n in (nodes if nodes is not None else self.nodes)]

    def describe(self, nodes: Sequence[FleetNode] | None = None, ns: str | None = None) -> str:
        lines = []
        for n in nodes if nodes is not None else self.nodes:
            st = n.status(ns)
            if st is None:
                lines.append(f"  {n.name} ({n.peer_id[-6:]}): no status; alive={n.alive}")
                continue
            voters = sum(1 for m in st["members"] if m["voter"])
            lines.append(
                f"  {n.name} ({n.peer_id[-6:]}): {st['phase']} {st['role']} cluster="
                f"{st['cluster_id'] or '-'} leader={(st['leader'] or '-')[-6:]} "
                f"members={len(st['members'])} voters={voters} conflict={st['conflict']} "
                f"decision={st['decision']!r} alive={n.alive}"
            )
        return "\n".join(lines)

    def explain(self, nodes: Sequence[FleetNode] | None = None, ns: str | None = None) -> str:
        out = self.describe(nodes, ns)
        for n in nodes if nodes is not None else self.nodes:
            out += f"\n--- {n.name} log tail ---\n{n.log_tail(15)}"
        return out

    def wait_one_cluster(
        self,
        nodes: Sequence[FleetNode] | None = None,
        *,
        timeout: float,
        cap: int = 5,
        ns: str | None = None,
        interval: float = 0.05,
    ) -> str:
        """Wait until ``nodes`` (default: all) form one cluster: each reports the same
        cluster id and leader, and the full membership with ``min(N, cap)`` voters.
        Returns the cluster id."""
        group = list(nodes) if nodes is not None else self.nodes
        ids = {n.peer_id for n in group}

        def check() -> str | None:
            return one_cluster(self.statuses(group, ns), ids, cap)

        return wait_until(
            check,
            timeout,
            interval=interval,
            what=f"one cluster of {len(group)} in {ns or self.namespaces[0]}",
            explain=lambda: self.explain(group, ns),
        )


def one_cluster(
    statuses: Sequence[dict[str, Any] | None], ids: set[str], cap: int = 5
) -> str | None:
    """The cluster id if every status reports the same cluster and leader, exactly
    ``ids`` as members and ``min(len(ids), cap)`` voters; else None."""
    if not statuses or any(s is None for s in statuses):
        return None
    cluster = {s["cluster_id"] for s in statuses if s is not None}
    leaders = {s["leader"] for s in statuses if s is not None}
    if len(cluster) != 1 or len(leaders) != 1 or "" in cluster or "" in leaders:
        return None
    want_voters = min(len(ids), cap)
    for s in statuses:
        assert s is not None
        members = {m["id"] for m in s["members"]}
        voters = {m["id"] for m in s["members"] if m["voter"]}
        if members != ids or len(voters) != want_voters:
            return None
    return str(cluster.pop())


@contextlib.contextmanager
def fleet(
    n: int | Sequence[str],
    base_dir: Path,
    *,
    bridges: dict[str, list[str]] | None = None,
    **kwargs: Any,
) -> Iterator[Fleet]:
    """A topology of ``n`` hosts and a fleet on it; everything is torn down after."""
    with Topology(n, bridges=bridges) as topo:
        f = Fleet(topo, base_dir, **kwargs)
        try:
            yield f
        finally:
            with contextlib.suppress(Exception):
                f.stop_all()
