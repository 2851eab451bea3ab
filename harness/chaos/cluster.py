"""A raftd cluster for chaos runs: one ``raftd run`` process per network namespace.

Each node is a host of a :class:`~harness.netns.Topology` (one bridge), listens on
``<bridge ip>:7420``, has static ``--peer`` lists with the bridge addresses,
``--discovery none``, identities created up front, its data directory under the run
directory, and its log in ``<run>/logs/<node>.log``. The preset is passed as
``RAFTD_PRESET`` (``raftd run --preset`` only offers the production presets); every other
``RAFTD_*`` variable of the harness's environment is blanked so it cannot leak into the
daemons. ``RAFTD_CHAOS_DAEMON_CONFIG=<file.toml>`` (a hidden knob) passes ``--config`` to
every daemon, e.g. to try other settings without changing the harness.

The harness stays in the root namespace and talks to every daemon through its unix API
socket (a file: reachable from any network namespace). Every call is bounded (see
:class:`Api`).

Faults it can inject (the nemesis decides when):

* processes: ``kill -9`` + restart, ``SIGSTOP``/``SIGCONT`` (:meth:`ChaosNode.kill` ...);
* a slow disk: with ``slow_disk=True`` every data directory is a slowfs mount
  (:mod:`harness.slowfs`, backing files in ``<run>/data/slowfs/<node>``, its log in
  ``<run>/logs/<node>.slowfs.log``), and ``node.mount.delay(...)`` delays that node's
  fsyncs;
* isolation of a host: its veth set down (:meth:`Host.link_down`), a pulled cable;
* arbitrary, also partial, partitions: a ``blackhole`` route to each peer it must not
  reach, added inside *both* hosts' namespaces (:meth:`ChaosCluster.block`). Established
  TCP connections stall (packets are silently dropped, as with a pulled cable); a new
  connect fails at once (``EINVAL``). With one bridge this gives any partition shape,
  e.g. the "bridge" partition where two halves cannot talk but one node sees both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO, TypeVar

from harness.netns import Host, NetnsError, Topology, _ip
from harness.slowfs import SlowMount
from raftd.client import Client, DeadlineExceeded, GroupStatus, Member, RaftdError
from raftd.client import _proto as P
from raftd.testing.cluster import make_identity
from raftd.testing.launch import daemon_argv
from raftd.wire.pb import api_pb2 as apb

__all__ = ["Api", "ChaosCluster", "ChaosNode", "bounded_call"]

T = TypeVar("T")
PORT = 7420
NAMESPACE = "/raft/default"
CONFIG_ENV = "RAFTD_CHAOS_DAEMON_CONFIG"
PREFIX = "rdc"
"""Name prefix of the chaos topologies' namespaces and links."""


def bounded_call(
    client: Client,
    req: apb.Request,
    parse: Callable[[apb.Response], T],
    *,
    timeout: float,
    hard_timeout: float,
) -> T:
    """Send ``req`` with the daemon-side deadline ``timeout`` and wait at most
    ``hard_timeout`` for the answer. Past it the client is closed (dropping the pending
    request) and :class:`DeadlineExceeded` is raised, ``indeterminate`` for writes."""
    fut: Future[apb.Response] = client.submit(req, timeout=timeout)
    try:
        resp = fut.result(hard_timeout)
    except FutureTimeout:
        client.close()
        raise DeadlineExceeded(
            f"harness: no answer within {hard_timeout:.1f}s", indeterminate=P.is_write(req)
        ) from None
    return parse(resp)


class Api:
    """One long-lived client of one node (not shared between threads: the worker that
    owns it is its only user). ``timeout`` is the daemon-side deadline of each request,
    ``hard_timeout`` how long the harness waits at most."""

    def __init__(self, socket: Path, *, timeout: float = 2.0, hard_timeout: float = 3.0) -> None:
        self.socket = socket
        self.timeout = timeout
        self.hard_timeout = hard_timeout
        self._client: Client | None = None

    def _get(self) -> Client:
        if self._client is None:
            self._client = Client(str(self.socket), namespace=NAMESPACE, connect_timeout=1.0)
        return self._client

    def call(self, req: apb.Request, parse: Callable[[apb.Response], T]) -> T:
        return bounded_call(
            self._get(), req, parse, timeout=self.timeout, hard_timeout=self.hard_timeout
        )

    def close(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            c.close()


def _daemon_env(preset: str) -> dict[str, str]:
    env = {k: "" for k in os.environ if k.startswith("RAFTD_")}
    env.update(RAFTD_PRESET=preset, PYTHONUNBUFFERED="1")
    return env


class ChaosNode:
    """One daemon of a :class:`ChaosCluster` (in its own namespace ``host``)."""

    def __init__(self, cluster: ChaosCluster, index: int, host: Host) -> None:
        self.cluster = cluster
        self.index = index
        self.name = host.label
        self.host = host
        self.data_dir = cluster.data_root / self.name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = cluster.log_dir / f"{self.name}.log"
        self.socket = cluster.socket_dir / f"{self.name}.sock"
        self.peer_id = make_identity(self.data_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0
        #: The slowfs mount serving ``data_dir`` (``slow_disk`` clusters), else None.
        self.mount: SlowMount | None = None

    def mount_slowfs(self) -> None:
        """Serve ``data_dir`` from a slowfs mount (before the first start): the files
        made so far (the identity) move to the backing directory."""
        backing = self.cluster.data_root / "slowfs" / self.name
        backing.parent.mkdir(parents=True, exist_ok=True)
        if not backing.exists():
            os.rename(self.data_dir, backing)
            self.data_dir.mkdir()
        self.mount = SlowMount(
            self.data_dir, backing, log=self.cluster.log_dir / f"{self.name}.slowfs.log"
        )
        self.mount.start()

    @property
    def ip(self) -> str:
        return self.host.ip

    @property
    def addr(self) -> str:
        return f"/ip4/{self.ip}/tcp/{PORT}/p2p/{self.peer_id}"

    @property
    def listen(self) -> str:
        return f"/ip4/{self.ip}/tcp/{PORT}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        c = self.cluster
        return daemon_argv(
            self.data_dir,
            python=c.python,
            listen=self.listen,
            socket=self.socket,
            namespaces=[NAMESPACE],
            discovery="none",
            peers=[n.addr for n in c.nodes],
            key_file=c.key_file,
            config=os.environ.get(CONFIG_ENV) or None,
        )

    def start(self) -> None:
        """Start the daemon (again: same identity, data and address). Does not wait."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        argv = self.argv()
        log: IO[bytes]
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%H:%M:%S")
            log.write(f"--- chaos: start {stamp} {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = self.host.popen(
                argv, env=_daemon_env(self.cluster.preset), stdout=log, stderr=subprocess.STDOUT
            )
        self.paused = False
        self.starts += 1

    def note(self, text: str) -> None:
        """Append a harness line to the node's log (what the nemesis did to it)."""
        with open(self.log_path, "ab") as log:
            log.write(f"--- chaos: {time.strftime('%H:%M:%S')} {text}\n".encode())

    def kill(self) -> None:
        """SIGKILL (also when paused) and reap."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.note("kill -9")
        self.host.kill(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10.0)
        self.paused = False

    def send_term(self) -> None:
        """SIGTERM (a graceful shutdown starts); see :meth:`terminate`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.note("SIGTERM")
        self.host.resume(proc)
        self.paused = False
        self.host.kill(proc, signal.SIGTERM)

    def terminate(self, timeout: float = 10.0, *, send: bool = True) -> None:
        """SIGTERM (unless ``send`` is False: already sent by :meth:`send_term`; a second
        one would kill the daemon mid-shutdown), SIGKILL after ``timeout``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if send:
            self.send_term()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.note(f"no exit {timeout:.0f}s after SIGTERM: kill -9")
            self.host.kill(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10.0)
        self.paused = False

    def pause(self) -> None:
        if self.proc is not None and self.alive:
            self.note("SIGSTOP")
            self.host.pause(self.proc)
            self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            self.note("SIGCONT")
            self.host.resume(self.proc)
        self.paused = False

    def client(self) -> Client:
        """A fresh client (the caller closes it)."""
        return Client(str(self.socket), namespace=NAMESPACE, connect_timeout=1.0)

    def call(self, req: apb.Request, parse: Callable[[apb.Response], T], timeout: float) -> T:
        """One bounded request on a fresh connection (control plane)."""
        with self.client() as c:
            return bounded_call(c, req, parse, timeout=timeout, hard_timeout=timeout + 1.0)

    def status(self, timeout: float = 1.0) -> GroupStatus:
        return self.call(apb.Request(status=apb.StatusRequest()), P.parse_status, timeout)[0]

    def __repr__(self) -> str:
        return f"ChaosNode({self.name}, {self.ip}, {'alive' if self.alive else 'down'})"


class ChaosCluster:
    """``n`` nodes ``n1..nN`` (see the module docstring); a context manager.

    ``run_dir`` receives ``data/<node>/`` and ``logs/<node>.log``; the API sockets go to
    ``run_dir/sock/`` unless that path is too long for a unix socket (then a temporary
    directory). ``key_file``: the shared key passed to every daemon (``--key-file``).
    """

    def __init__(
        self,
        n: int,
        run_dir: Path,
        *,
        preset: str = "chaos",
        key_file: Path | None = None,
        python: str = sys.executable,
        slow_disk: bool = False,
    ) -> None:
        if n < 1:
            raise ValueError("at least one node")
        self.n = n
        self.slow_disk = slow_disk
        self.run_dir = run_dir
        self.data_root = run_dir / "data"
        self.log_dir = run_dir / "logs"
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        sock_dir = (run_dir / "sock").resolve()
        self._tmp_sock: str | None = None
        if len(str(sock_dir / "n99.sock")) > 100:
            self._tmp_sock = tempfile.mkdtemp(prefix="raftd-chaos-")
            sock_dir = Path(self._tmp_sock)
        sock_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir = sock_dir
        self.preset = preset
        self.key_file = key_file
        self.python = python
        self.topology = Topology([f"n{i}" for i in range(1, n + 1)], prefix=PREFIX)
        self.nodes: list[ChaosNode] = []
        self._blocked: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(2, n), thread_name_prefix="chaos-status")

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> ChaosCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Create the namespaces and start every daemon (does not wait: see
        :meth:`wait_stable`)."""
        self.topology.start()
        self.nodes = [ChaosNode(self, i, h) for i, h in enumerate(self.topology.hosts)]
        if self.slow_disk:
            # Mounted before any daemon starts: ``ip netns exec`` gives each daemon a
            # copy of the mount table as it is then.
            for node in self.nodes:
                node.mount_slowfs()
        for node in self.nodes:
            node.start()

    def close(self) -> None:
        """Kill every daemon and remove the namespaces (logs and data stay)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()
        for node in self.nodes:
            if node.mount is not None:
                node.mount.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.topology.close()
        finally:
            if self._tmp_sock is not None:
                import shutil

                shutil.rmtree(self._tmp_sock, ignore_errors=True)

    # -- queries -----------------------------------------------------------------------
    def statuses(
        self, nodes: Iterable[ChaosNode] | None = None, timeout: float = 1.0
    ) -> dict[str, GroupStatus]:
        """Status of every given node (default: all) that answers within ``timeout``,
        queried in parallel; the whole call is bounded by ``timeout + 2`` seconds."""
        targets = [n for n in (self.nodes if nodes is None else nodes) if n.alive]
        futs = {n.name: self._pool.submit(n.status, timeout) for n in targets}
        deadline = time.monotonic() + timeout + 2.0
        out: dict[str, GroupStatus] = {}
        for name, fut in futs.items():
            try:
                out[name] = fut.result(max(0.0, deadline - time.monotonic()))
            except (RaftdError, OSError, FutureTimeout):
                continue
        return out

    def by_id(self, peer_id: str) -> ChaosNode | None:
        return next((n for n in self.nodes if n.peer_id == peer_id), None)

    def by_name(self, name: str) -> ChaosNode:
        return next(n for n in self.nodes if n.name == name)

    def leader(self, timeout: float = 1.0) -> ChaosNode | None:
        """The node that claims leadership in the highest term among those answering."""
        sts = self.statuses(timeout=timeout)
        leaders = [s for s in sts.values() if s.role == "leader"]
        if not leaders:
            return None
        best = max(leaders, key=lambda s: s.term)
        return self.by_id(best.id)

    def stable(self, timeout: float = 1.0) -> tuple[ChaosNode, GroupStatus] | None:
        """If every node is up, answers, and agrees on one leader and term whose
        membership has every node as a voter: (leader, its status). Else None."""
        if not all(n.alive and not n.paused for n in self.nodes):
            return None
        sts = self.statuses(timeout=timeout)
        if len(sts) != len(self.nodes):
            return None
        leaders = {(s.leader, s.term) for s in sts.values()}
        if len(leaders) != 1:
            return None
        lead_id, _ = leaders.pop()
        lead = self.by_id(lead_id)
        if lead is None:
            return None
        st = sts[lead.name]
        voters = {m.id for m in st.members if m.voter}
        if st.role != "leader" or voters != {n.peer_id for n in self.nodes}:
            return None
        return lead, st

    def wait_stable(self, timeout: float) -> tuple[ChaosNode, GroupStatus]:
        """Wait for :meth:`stable`; TimeoutError (with statuses) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.stable()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                sts = self.statuses()
                desc = "; ".join(
                    f"{name}: {s.role} term {s.term} leader ..{s.leader[-6:]} applied {s.applied}"
                    for name, s in sorted(sts.items())
                )
                raise TimeoutError(f"cluster not stable within {timeout:.0f}s: {desc}")
            time.sleep(0.2)

    # -- network faults ----------------------------------------------------------------
    def isolate(self, node: ChaosNode) -> None:
        """Cut ``node`` off the bridge (link down)."""
        node.note("link down")
        node.host.link_down()

    def block(
        self, groups: Sequence[Sequence[ChaosNode]], *, bridge: Sequence[ChaosNode] = ()
    ) -> None:
        """Partition: nodes of different ``groups`` cannot talk to each other; ``bridge``
        nodes (in no group) still talk to everyone. Blackhole routes, both directions."""
        for gi, ga in enumerate(groups):
            for gb in groups[gi + 1 :]:
                for a in ga:
                    for b in gb:
                        self._block_pair(a, b)
        names = [[n.name for n in g] for g in groups]
        for g in groups:
            for n in g:
                n.note(f"partition {names} (bridge {[b.name for b in bridge]})")

    def _block_pair(self, a: ChaosNode, b: ChaosNode) -> None:
        with self._lock:
            for x, y in ((a, b), (b, a)):
                if (x.index, y.index) in self._blocked:
                    continue
                _ip("route", "add", "blackhole", f"{y.ip}/32", ns=x.host.name)
                self._blocked.add((x.index, y.index))

    def unblock_all(self) -> None:
        with self._lock:
            for xi, yi in sorted(self._blocked):
                x, y = self.nodes[xi], self.nodes[yi]
                with contextlib.suppress(NetnsError):
                    _ip("route", "del", "blackhole", f"{y.ip}/32", ns=x.host.name)
            self._blocked.clear()

    def heal_network(self) -> None:
        """Links up, blackhole routes gone."""
        self.unblock_all()
        for node in self.nodes:
            if not node.host.is_up():
                node.note("link up")
            node.host.link_up()

    def heal(self) -> None:
        """Undo every fault: network healed, disks fast, paused nodes continued, dead
        nodes started."""
        self.heal_network()
        for node in self.nodes:
            if node.mount is not None:
                node.mount.clear()
        for node in self.nodes:
            node.resume()
        for node in self.nodes:
            if not node.alive:
                node.start()

    # -- membership --------------------------------------------------------------------
    def members(self, via: ChaosNode, timeout: float = 2.0) -> list[Member]:
        return via.call(apb.Request(members=apb.MembersRequest()), P.parse_members, timeout)

    def restore_membership(self, timeout: float) -> list[str]:
        """Add back (as voters) nodes that are missing from the membership, promote
        learners; bounded by ``timeout``. Returns what was done."""
        done: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            via = [n for n in self.nodes if n.alive and not n.paused]
            changed = False
            try:
                lead = self.leader() or via[0]
                members = {m.id: m for m in self.members(lead)}
                for node in self.nodes:
                    m = members.get(node.peer_id)
                    if m is not None and m.voter:
                        continue
                    if m is None:
                        req = P.req_member("add_voter", node.peer_id, [node.addr])
                        done.append(f"add_voter {node.name}")
                    else:
                        req = P.req_member("promote", node.peer_id, ())
                        done.append(f"promote {node.name}")
                    lead.call(req, P.parse_members, 5.0)
                    changed = True
                    break
            except (RaftdError, OSError, IndexError):
                time.sleep(0.3)
                continue
            if not changed:
                return done
        raise TimeoutError(f"membership not restored within {timeout:.0f}s (did: {done})")
