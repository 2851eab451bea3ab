"""A local cluster of real ``raftd run`` processes, for tests, benchmarks and ``raftd dev``.

Each node is a subprocess (``python -m raftd run``) on 127.0.0.1 with a free TCP port, its
own data directory and API socket under one temporary base directory, static ``--peer``
lists and ``--discovery none``; identities are created up front so every node knows the
others' peer ids. The harness talks to the nodes only through their API sockets.

::

    with LocalCluster(3) as cluster:
        leader = cluster.wait_leader()
        with cluster.nodes[1].client() as c:
            c.put("k", "v")
        leader.kill()                      # SIGKILL
        cluster.wait_leader()
        leader.start()                     # same data dir, same identity, same port

Everything waits on conditions with deadlines (never bare sleeps); a timeout raises
``TimeoutError`` with the tail of the relevant logs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from raftd.client import Client, GroupStatus, RaftdError
from raftd.testing.launch import daemon_argv, free_port, wait_until

__all__ = ["LocalCluster", "Node", "free_port", "make_identity", "wait_until"]

T = TypeVar("T")
DEFAULT_NAMESPACE = "/raft/default"


def make_identity(data_dir: Path) -> str:
    """Create (or load) the node identity in ``data_dir``; return its peer id."""
    from raftd.transport.host import load_or_create_identity, peer_id_of

    return peer_id_of(load_or_create_identity(data_dir))


class Node:
    """One ``raftd run`` process of a :class:`LocalCluster`."""

    def __init__(
        self,
        cluster: LocalCluster,
        index: int,
        *,
        founder: bool = True,
    ) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"n{index}"
        self.data_dir = cluster.base_dir / self.name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket = self.data_dir / "raftd.sock"
        self.log_path = cluster.base_dir / f"{self.name}.log"
        self.port = free_port()
        #: The etcd v3 endpoint's port when the cluster serves etcd (``etcd=True``).
        self.etcd_port = free_port() if cluster.etcd else 0
        self.peer_id = make_identity(self.data_dir)
        self.founder = founder
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []
        #: Where the process starts: with ``python -m raftd``, the ``raftd`` package
        #: there wins (another version's source tree, for upgrade tests).
        self.cwd: Path | None = None

    @property
    def addr(self) -> str:
        """The node's libp2p multiaddr with ``/p2p/<peer id>``."""
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    @property
    def etcd_endpoint(self) -> str:
        """``127.0.0.1:PORT`` of the node's etcd v3 API (cluster made with ``etcd=True``)."""
        if not self.etcd_port:
            raise RuntimeError("the cluster was made without etcd=True")
        return f"127.0.0.1:{self.etcd_port}"

    @property
    def listen_addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def args(self) -> list[str]:
        c = self.cluster
        # A joiner must not bootstrap a cluster of its own: with discovery configured
        # and no static peers the daemon waits to be added (see Daemon._serve).
        return daemon_argv(
            self.data_dir,
            python=c.python,
            listen=self.listen_addr,
            socket=self.socket,
            preset=c.preset,
            namespaces=c.namespaces,
            etcd_listen=self.etcd_endpoint if self.etcd_port else None,
            discovery="none" if self.founder else "pex",
            peers=[n.addr for n in c.nodes if n.founder] if self.founder else (),
            extra=[*c.extra_args, *self.extra_args],
        )

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start the process (again, after a kill: same identity, data and port)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            log.write(f"--- start {time.strftime('%H:%M:%S')} {' '.join(self.args())}\n".encode())
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1", **self.cluster.env)
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,  # Ctrl-C in a terminal reaches the harness only
            )
        finally:
            log.close()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the API socket accepts connections."""

        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.returncode()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket))
            return True

        try:
            wait_until(ready, timeout, what=f"{self.name} API socket")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from exc

    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful shutdown); SIGKILL after ``timeout``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def stop_signal(self, sig: int) -> None:
        """Send any signal (e.g. SIGSTOP/SIGCONT to freeze a node)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def restart(self, *, graceful: bool = True, wait: bool = True) -> None:
        if graceful:
            self.terminate()
        else:
            self.kill()
        self.start(wait=wait)

    def client(self, **kw: object) -> Client:
        """A blocking client on this node's socket (namespace: the cluster's first)."""
        kw.setdefault("namespace", self.cluster.namespaces[0])
        return Client(str(self.socket), **kw)  # type: ignore[arg-type]

    def status(self, namespace: str | None = None, timeout: float = 2.0) -> GroupStatus:
        with self.client(namespace=namespace or self.cluster.namespaces[0]) as c:
            return c.status(timeout=timeout)[0]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"({self.name}: no log)"
        return f"--- {self.name} log (last {lines} lines)\n" + "\n".join(text[-lines:])

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"Node({self.name}, {self.peer_id[-6:]}, {state})"


class LocalCluster:
    """``n`` founder nodes (see the module doc). ``base_dir``: where data, sockets and
    logs go (default: a fresh temp dir, removed by :meth:`close` unless ``keep``)."""

    def __init__(
        self,
        n: int = 3,
        *,
        base_dir: Path | str | None = None,
        namespaces: Sequence[str] = (DEFAULT_NAMESPACE,),
        preset: str = "local",
        python: str = sys.executable,
        extra_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        keep: bool = False,
        etcd: bool = False,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        self._own_dir = base_dir is None
        # Short paths: a unix socket path must fit in 108 bytes.
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="raftd-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.namespaces = list(namespaces)
        self.preset = preset
        self.python = python
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.keep = keep
        self.etcd = etcd
        self.nodes: list[Node] = []
        for i in range(1, n + 1):
            self.nodes.append(Node(self, i))

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, *, wait_leader: bool = True, timeout: float = 60.0) -> LocalCluster:
        """Start every node (in parallel), wait for their sockets, then for a leader."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if not node.alive:
                node.start(wait=False)
        for node in self.nodes:
            node.wait_ready(max(1.0, deadline - time.monotonic()))
        if wait_leader:
            self.wait_leader(timeout=max(1.0, deadline - time.monotonic()))
        return self

    def add_node(self, *, start: bool = True) -> Node:
        """A new, empty node that does not bootstrap: add it with ``add_learner`` /
        ``add_voter`` (its address is ``node.addr``)."""
        node = Node(self, len(self.nodes) + 1, founder=False)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove the base dir."""
        for node in self.nodes:
            node.stop_signal(signal.SIGCONT)
            node.stop_signal(signal.SIGTERM)
        for node in self.nodes:
            node.terminate(timeout=10.0)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    stop = close

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            # The test failed inside: its output (captured by pytest, shown on failure)
            # gets each node's last log lines, since close() may remove them.
            for node in self.nodes:
                print(node.log_tail(80))
        self.close()

    # -- queries -------------------------------------------------------------------------
    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def etcd_endpoints(self) -> list[str]:
        """Every node's etcd endpoint (``etcd=True``), for ``etcdctl --endpoints``."""
        return [n.etcd_endpoint for n in self.nodes]

    def node_by_id(self, peer_id: str) -> Node | None:
        return next((n for n in self.nodes if n.peer_id == peer_id), None)

    def statuses(self, namespace: str | None = None) -> dict[str, GroupStatus]:
        out: dict[str, GroupStatus] = {}
        for n in self.alive():
            with contextlib.suppress(RaftdError, OSError):
                out[n.peer_id] = n.status(namespace, timeout=1.0)
        return out

    def wait_leader(
        self,
        timeout: float = 30.0,
        *,
        namespace: str | None = None,
        exclude: Iterable[Node] = (),
    ) -> Node:
        """Wait until a live node leads and a majority of the live voters agree on it
        (same leader, same term); return it. ``exclude``: nodes that must not be it."""
        excluded = {n.peer_id for n in exclude}

        def check() -> Node | None:
            sts = self.statuses(namespace)
            leaders = [s for s in sts.values() if s.role == "leader"]
            if len(leaders) != 1 or leaders[0].id in excluded:
                return None
            lead = leaders[0]
            agree = [s for s in sts.values() if s.leader == lead.id and s.term == lead.term]
            voters = [m for m in lead.members if m.voter]
            if len(agree) * 2 <= len(voters) and len(agree) < len(sts):
                return None
            return self.node_by_id(lead.id)

        try:
            return wait_until(check, timeout, interval=0.05, what="a leader")
        except TimeoutError as exc:
            tails = "\n".join(n.log_tail(15) for n in self.nodes)
            raise TimeoutError(f"{exc}\n{tails}") from exc

    def leader(self, namespace: str | None = None) -> Node:
        return self.wait_leader(namespace=namespace)

    def followers(self, namespace: str | None = None) -> list[Node]:
        lead = self.wait_leader(namespace=namespace)
        return [n for n in self.alive() if n is not lead and n.founder]

    def wait_applied(self, revision: int, timeout: float = 10.0) -> None:
        """Wait until every live node's state machine reached ``revision``."""
        wait_until(
            lambda: (
                all(s.revision >= revision for s in self.statuses().values())
                and len(self.statuses()) == len(self.alive())
            ),
            timeout,
            what=f"revision {revision} everywhere",
        )
