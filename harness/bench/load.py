"""API benchmarks against a local cluster of real daemons (``scripts/bench``,
``scripts/bench-all``).

``python -m harness.bench.load OP [options]`` starts a :class:`LocalCluster` (or uses
running daemons given with ``--socket``, for the load ops) and measures one thing:

- ``get-l`` (linearizable get: ReadIndex then a local read), ``get-s`` (stale get),
  ``put`` (100-byte values over the key space): after preloading the key space, keep
  ``--clients`` requests outstanding over ``--conns`` API connections (spread over the
  endpoints, like etcd's benchmark tool) until ``--total`` requests or ``--duration``
  seconds. ``--key-file`` runs the daemons with a shared key (encrypted Raft traffic).
- ``failover``: ``--trials`` times, SIGKILL the leader and time until the next
  acknowledged put through the survivors (each attempt with a 300 ms deadline, alternating
  survivors, as /work/shared/anchors/etcd/failover.sh); the killed daemon is restarted and
  caught up between trials (one reused cluster).
- ``catchup``: SIGKILL a follower, write ``--entries`` keys pipelined through the leader,
  restart the follower and time from the restart to its applied index reaching the
  leader's (the log is compacted past it with ``--entries`` above the preset's snapshot
  threshold, so it catches up by snapshot; ``snapshot_installed`` says if it did).
- ``rss``: VmRSS of each idle daemon once startup has settled.

``python -m harness.bench.load gray [--short]`` (``scripts/bench gray``): raftd and etcd
side by side under gray failures (slow disk, CPU starvation); see
:mod:`harness.gray`.

``python -m harness.bench.load all [--quick] [--no-anchors] [--profile DIR]``
(``scripts/bench-all``) runs every measurement on 3 daemons, then the anchors of
/work/shared/anchors (etcd 3 members, its failover, PySyncObj, the fsync floor) in the
same run, and prints a table of ratios against the goals. ``--quick`` (CI): a few
seconds per measurement and no anchors.

Output, as the anchors: one human-readable line, then one JSON object per measurement
with at least ``system, op, clients, ops_per_s, p50_ms, p99_ms, ok, errs``. For one op
that JSON object is the LAST line. ``all`` ends with the table and then a summary JSON
line (``"op": "summary"``, with ``results`` and ``ratios``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from raftd.client import AsyncClient, RaftdError, open_client

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from raftd.testing.cluster import LocalCluster, Node

__all__ = [
    "REQUIRED_KEYS",
    "BenchResult",
    "main",
    "measure_catchup",
    "measure_failover",
    "measure_rss",
    "run_load",
    "write_keys",
]

#: Keys every JSON result line carries (the anchors' format).
REQUIRED_KEYS = ("system", "op", "clients", "ops_per_s", "p50_ms", "p99_ms", "ok", "errs")
ANCHORS_DIR = Path(os.environ.get("RAFTD_ANCHORS_DIR", "/work/shared/anchors"))


@dataclass
class BenchResult:
    op: str
    clients: int
    conns: int
    latencies: list[float] = field(default_factory=list)
    errs: int = 0
    elapsed: float = 0.0
    endpoints: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        i = min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))
        return round(xs[i] * 1000, 3)

    def as_json(self) -> dict[str, object]:
        ok = len(self.latencies)
        return {
            "system": "raftd",
            "op": self.op,
            "clients": self.clients,
            "ops_per_s": round(ok / self.elapsed) if self.elapsed > 0 else 0,
            "p50_ms": self.pct(0.50),
            "p99_ms": self.pct(0.99),
            "ok": ok,
            "errs": self.errs,
            "conns": self.conns,
            "p90_ms": self.pct(0.90),
            "max_ms": self.pct(1.0),
            "elapsed_s": round(self.elapsed, 2),
            "endpoints": self.endpoints,
            **self.extra,
        }

    def line(self) -> str:
        j = self.as_json()
        return (
            f"op={j['op']} clients={j['clients']} conns={j['conns']} ok={j['ok']} "
            f"errs={j['errs']} elapsed={j['elapsed_s']}s ops/s={j['ops_per_s']} "
            f"p50={j['p50_ms']}ms p90={j['p90_ms']}ms p99={j['p99_ms']}ms max={j['max_ms']}ms"
        )


Op = Callable[[AsyncClient, bytes, bytes], Awaitable[object]]


async def _get_l(c: AsyncClient, key: bytes, value: bytes) -> object:
    return await c.get(key)


async def _get_s(c: AsyncClient, key: bytes, value: bytes) -> object:
    return await c.get(key, stale=True)


async def _put(c: AsyncClient, key: bytes, value: bytes) -> object:
    return await c.put(key, value)


OPS: dict[str, Op] = {"get-l": _get_l, "get-s": _get_s, "put": _put}
OTHER_OPS = ("failover", "catchup", "rss")


def _key(i: int, size: int) -> bytes:
    return f"bench/{i:0{max(1, size - 6)}d}".encode()[:size]


async def run_load(
    sockets: list[str],
    op: str,
    *,
    clients: int = 64,
    conns: int = 8,
    total: int = 20000,
    duration: float = 30.0,
    key_space: int = 10_000,
    key_size: int = 16,
    val_size: int = 100,
    preload: bool = True,
    seed: int = 1,
) -> BenchResult:
    """Run the load and return the measurements (latency per successful request)."""
    fn = OPS[op]
    res = BenchResult(op, clients, conns, endpoints=len(sockets))
    value = b"v" * val_size
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        cls: list[AsyncClient] = []
        for i in range(conns):
            cm = open_client(sockets[i % len(sockets)], timeout=10.0)
            cls.append(await nursery.start(_hold, cm))
        if preload:
            async with trio.open_nursery() as pre:
                for w in range(min(64, key_space)):
                    pre.start_soon(
                        _preload, cls[w % conns], range(w, key_space, 64), key_size, value
                    )
        issued = 0
        stop_at = trio.current_time() + duration

        async def worker(c: AsyncClient) -> None:
            nonlocal issued
            while issued < total and trio.current_time() < stop_at:
                issued += 1
                key = _key(rng.randrange(key_space), key_size)
                t0 = time.perf_counter()
                try:
                    await fn(c, key, value)
                except RaftdError:
                    res.errs += 1
                    continue
                res.latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        async with trio.open_nursery() as load:
            for w in range(clients):
                load.start_soon(worker, cls[w % conns])
        res.elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return res


async def write_keys(
    sockets: Sequence[str],
    n: int,
    *,
    prefix: str = "w/",
    clients: int = 128,
    conns: int = 4,
    val_size: int = 100,
    request_timeout: float = 10.0,
    namespace: str | None = None,
) -> BenchResult:
    """Write the ``n`` distinct keys ``<prefix><i:08d>`` (i < n) once each, ``clients``
    requests in flight over ``conns`` connections; one Raft entry per key. Failed puts
    count in ``errs`` (not retried)."""
    res = BenchResult("put-keys", clients, conns, endpoints=len(sockets))
    value = b"x" * val_size
    next_i = 0
    async with trio.open_nursery() as nursery:
        cls: list[AsyncClient] = []
        for i in range(conns):
            cm = open_client(
                sockets[i % len(sockets)], timeout=request_timeout, namespace=namespace
            )
            cls.append(await nursery.start(_hold, cm))

        async def worker(c: AsyncClient) -> None:
            nonlocal next_i
            while next_i < n:
                i = next_i
                next_i += 1
                t0 = time.perf_counter()
                try:
                    await c.put(f"{prefix}{i:08d}", value)
                except RaftdError:
                    res.errs += 1
                    continue
                res.latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        async with trio.open_nursery() as load:
            for w in range(clients):
                load.start_soon(worker, cls[w % conns])
        res.elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return res


async def _hold(
    cm: AbstractAsyncContextManager[AsyncClient],
    *,
    task_status: TaskStatus[AsyncClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with cm as client:
        task_status.started(client)
        await trio.sleep_forever()


async def _preload(c: AsyncClient, idx: range, key_size: int, value: bytes) -> None:
    for i in idx:
        await c.put(_key(i, key_size), value)


# -- cluster-level measurements ----------------------------------------------------------


def result(
    op: str,
    *,
    system: str = "raftd",
    clients: int = 1,
    ops_per_s: float | None = None,
    p50_ms: float | None = None,
    p99_ms: float | None = None,
    ok: int = 0,
    errs: int = 0,
    **extra: object,
) -> dict[str, object]:
    """A JSON result in the anchors' format (``extra`` keys follow the required ones)."""
    return {
        "system": system,
        "op": op,
        "clients": clients,
        "ops_per_s": ops_per_s,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
        "ok": ok,
        "errs": errs,
        **extra,
    }


def load1() -> float:
    """The 1-minute load average (the machine is shared: every result records it)."""
    return round(os.getloadavg()[0], 2)


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in kB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by some server processes and by this process (the load
    generator, when it runs in-process) or by its waited-for children (an external load
    tool) between construction and :meth:`result`. On a shared 2-core machine, CPU per
    operation is a steadier comparison than throughput."""

    def __init__(self, pids: Sequence[int], *, client: str = "self") -> None:
        self.pids = list(pids)
        self.client = client
        self.t0 = self._servers()
        self.c0 = self._client()

    def _servers(self) -> list[float]:
        out = []
        for p in self.pids:
            try:
                out.append(proc_cpu_s(p))
            except OSError:
                out.append(math.nan)
        return out

    def _client(self) -> float:
        t = os.times()
        if self.client == "children":
            return t.children_user + t.children_system
        return t.user + t.system

    def result(self, ok: int) -> dict[str, object]:
        servers = [b - a for a, b in zip(self.t0, self._servers(), strict=True)]
        srv = sum(x for x in servers if not math.isnan(x))
        cli = self._client() - self.c0
        return {
            "server_cpu_s": round(srv, 2),
            "client_cpu_s": round(cli, 2),
            "server_cpu_ms_per_op": round(1000 * srv / ok, 3) if ok else None,
            "total_cpu_ms_per_op": round(1000 * (srv + cli) / ok, 3) if ok else None,
        }


class ProcMeter:
    """CPU µs per operation of each named process and of this process (the load client),
    and event-loop wake-ups per operation where strace-free counting is possible
    (voluntary context switches from /proc/<pid>/status, summed over the process's
    threads: each is a sleep in epoll_wait, a futex or a blocking read)."""

    def __init__(
        self, roles: Sequence[tuple[str, int]], metrics: Mapping[str, str] | None = None
    ) -> None:
        self.roles = list(roles)
        self.metrics = dict(metrics or {})
        self.t0 = {name: self._sample(pid) for name, pid in self.roles}
        self.m0 = {name: sent_frames_bytes(url) for name, url in self.metrics.items()}
        self.c0 = self._self_cpu()

    @staticmethod
    def _self_cpu() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _sample(pid: int) -> tuple[float, int]:
        try:
            cpu = proc_cpu_s(pid)
        except OSError:
            return math.nan, 0
        return cpu, vol_switches(pid)

    def result(self, ok: int, elapsed: float) -> dict[str, object]:
        out: dict[str, object] = {}
        total = 0.0
        for name, pid in self.roles:
            c0, w0 = self.t0[name]
            c1, w1 = self._sample(pid)
            cpu = c1 - c0
            if not math.isnan(cpu):
                total += cpu
            out[f"cpu_us_per_op_{name}"] = round(1e6 * cpu / ok) if ok else None
            out[f"wakeups_per_op_{name}"] = round((w1 - w0) / ok, 1) if ok else None
        for name, url in self.metrics.items():
            f1, b1 = sent_frames_bytes(url)
            f0, b0 = self.m0[name]
            out[f"frames_per_op_{name}"] = round((f1 - f0) / ok, 3) if ok else None
            out[f"bytes_per_op_{name}"] = round((b1 - b0) / ok) if ok else None
        cli = self._self_cpu() - self.c0
        out["cpu_us_per_op_client"] = round(1e6 * cli / ok) if ok else None
        out["cpu_us_per_op_daemons"] = round(1e6 * total / ok) if ok else None
        out["cpu_cores_daemons"] = round(total / elapsed, 2) if elapsed > 0 else None
        return out


def run_measured(
    sockets: list[str],
    op: str,
    roles: Sequence[tuple[str, int]],
    *,
    metrics: Mapping[str, str] | None = None,
    preload: bool = True,
    key_space: int = 10_000,
    key_size: int = 16,
    val_size: int = 100,
    **load: Any,
) -> BenchResult:
    """Load the key space (outside the measured window, unless ``preload=False``), then
    run :func:`run_load` with each process of ``roles`` metered (:class:`ProcMeter`);
    the result carries the CPU and wake-up figures, and with ``metrics`` (role -> /metrics
    URL) the Raft frames and bytes each daemon sent per operation."""
    sizes: dict[str, Any] = {"key_space": key_space, "key_size": key_size, "val_size": val_size}
    if preload:
        trio.run(lambda: run_load(sockets, "put", total=0, duration=0, **sizes))
    meter = ProcMeter(roles, metrics)
    res = trio.run(lambda: run_load(sockets, op, preload=False, **sizes, **load))
    res.extra.update(meter.result(len(res.latencies), res.elapsed))
    return res


def sent_frames_bytes(metrics_url: str) -> tuple[float, float]:
    """Raft stream frames and bytes a daemon has sent so far, from its /metrics."""
    frames = sent = 0.0
    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if 'direction="sent"' not in line:
                continue
            if line.startswith("raftd_transport_frames_total{"):
                frames += float(line.rsplit(" ", 1)[1])
            elif line.startswith("raftd_transport_bytes_total{"):
                sent += float(line.rsplit(" ", 1)[1])
    return frames, sent


def with_metrics(cluster: LocalCluster) -> None:
    """Give every node of a cluster not started yet a /metrics listener."""
    from raftd.testing.cluster import free_port

    for n in cluster.nodes:
        n.extra_args += ["--metrics", f"127.0.0.1:{free_port()}"]


def cluster_metrics(cluster: LocalCluster) -> dict[str, str]:
    """role -> /metrics URL of each running node started by :func:`with_metrics`."""
    urls = {}
    by_pid = {pid: name for name, pid in cluster_roles(cluster)}
    for n in cluster.nodes:
        if n.pid in by_pid and "--metrics" in n.extra_args:
            addr = n.extra_args[n.extra_args.index("--metrics") + 1]
            urls[by_pid[n.pid]] = f"http://{addr}/metrics"
    return urls


def vol_switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` (each one a sleep)."""
    n = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        n += int(line.split()[1])
                        break
        except OSError:
            continue
    return n


def _deadline_loop(timeout: float, what: str) -> Iterator[float]:
    """Yield the time left until ``timeout`` s have passed, then raise TimeoutError."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        yield left
    raise TimeoutError(f"{what} not reached within {timeout:.1f}s")


def _pace(since: float, interval: float) -> None:
    """Wait until ``interval`` s after ``since`` (perf_counter): polling pace."""
    rest = interval - (time.perf_counter() - since)
    if rest > 0:
        time.sleep(rest)


def settle(cluster: LocalCluster, timeout: float = 30.0) -> Node:
    """Wait until every node runs, a leader is agreed on and every node has applied the
    leader's commit index; return the leader."""
    for node in cluster.nodes:
        if not node.alive:
            node.start()
    lead = cluster.wait_leader(timeout=timeout)
    target = lead.status().commit
    for _ in _deadline_loop(timeout, f"every node applied {target}"):
        t = time.perf_counter()
        sts = cluster.statuses()
        if len(sts) == len(cluster.nodes) and all(s.applied >= target for s in sts.values()):
            return cluster.wait_leader(timeout=timeout)
        _pace(t, 0.05)
    raise AssertionError("unreachable")


def measure_rss(
    cluster: LocalCluster, *, settle_s: float = 10.0, min_idle_s: float = 2.0
) -> dict[str, object]:
    """VmRSS of every daemon once it is idle: at least ``min_idle_s`` after the cluster
    settled and stable (within 1%) over the last second, at most ``settle_s``."""
    settle(cluster)
    t0 = time.monotonic()
    pids = [n.pid for n in cluster.nodes if n.pid is not None]
    history: list[list[int]] = []
    while True:
        t = time.perf_counter()
        history.append([rss_kb(p) for p in pids])
        recent = history[-5:]
        stable = len(recent) == 5 and all(
            max(col) - min(col) <= 0.01 * max(col) for col in zip(*recent, strict=True)
        )
        waited = time.monotonic() - t0
        if (stable and waited >= min_idle_s) or waited >= settle_s:
            break
        _pace(t, 0.25)
    last = history[-1]
    return result(
        "idle-rss",
        clients=0,
        ok=len(last),
        idle_rss_kb=int(statistics.median(last)),
        rss_kb_max=max(last),
        rss_kb_per_node=last,
        idle_s=round(time.monotonic() - t0, 1),
        stable=stable,
    )


def measure_failover(
    cluster: LocalCluster,
    trials: int,
    *,
    attempt_timeout: float = 0.3,
    limit: float = 30.0,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """``trials`` times: SIGKILL the leader, then put through the survivors (alternating,
    ``attempt_timeout`` each) until one is acknowledged; the time from the kill to that
    ack is one sample. The killed daemon is restarted and caught up before the next
    trial."""
    times: list[float] = []
    errs = 0
    attempts: list[int] = []
    for t in range(1, trials + 1):
        lead = settle(cluster)
        survivors = [n for n in cluster.nodes if n is not lead]
        clients = [n.client(timeout=attempt_timeout) for n in survivors]
        try:
            for c in clients:  # connections open, forwarding paths warm
                c.put("failover/warm", "v", timeout=5.0)
            ok = False
            i = 0
            t0 = time.perf_counter()
            lead.kill()
            while time.perf_counter() - t0 < limit:
                c = clients[i % len(clients)]
                i += 1
                a0 = time.perf_counter()
                try:
                    c.put("failover", f"{t}-{i}")
                    ok = True
                    break
                except RaftdError:
                    _pace(a0, 0.01)  # an immediate refusal: do not spin
            t1 = time.perf_counter()
        finally:
            for c in clients:
                c.close()
        if ok:
            times.append(t1 - t0)
            attempts.append(i)
            log(
                f"trial {t}: leader {lead.name} killed, next put acknowledged after "
                f"{t1 - t0:.3f} s ({i} attempts)"
            )
        else:
            errs += 1
            log(f"trial {t}: no put acknowledged within {limit:.0f} s")
        lead.start()
    settle(cluster)
    xs = sorted(times)
    return result(
        "failover",
        clients=1,
        p50_ms=round(statistics.median(xs) * 1000, 1) if xs else None,
        p99_ms=round(xs[-1] * 1000, 1) if xs else None,
        ok=len(xs),
        errs=errs,
        min_ms=round(xs[0] * 1000, 1) if xs else None,
        max_ms=round(xs[-1] * 1000, 1) if xs else None,
        trials_s=[round(x, 3) for x in times],
        attempts=attempts,
        attempt_timeout_s=attempt_timeout,
        preset=cluster.preset,
    )


def scrape_metric(port: int, name: str, labels: dict[str, str]) -> float | None:
    """One sample of a Prometheus metric from ``http://127.0.0.1:<port>/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        m = re.fullmatch(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def measure_catchup(
    cluster: LocalCluster,
    entries: int,
    *,
    clients: int = 256,
    conns: int = 16,
    timeout: float = 120.0,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """SIGKILL a follower, write ``entries`` keys (one entry each) pipelined through the
    leader, restart the follower and time from the restart until its applied index
    reaches the leader's. The follower runs with ``--metrics`` after the restart, so the
    result says whether it installed a snapshot."""
    from raftd.testing.cluster import free_port

    lead = settle(cluster)
    victim = next(n for n in cluster.nodes if n is not lead)
    victim.kill()
    w = trio.run(
        lambda: write_keys(
            [str(lead.socket)], entries, prefix="catchup/", clients=clients, conns=conns
        )
    )
    log(
        f"wrote {len(w.latencies)} entries ({w.errs} errors) with {victim.name} down in "
        f"{w.elapsed:.1f} s ({len(w.latencies) / max(w.elapsed, 1e-9):.0f}/s)"
    )
    lead = cluster.wait_leader()
    target = lead.status().commit
    first_index = target
    port = free_port()
    saved = list(victim.extra_args)
    victim.extra_args = [*saved, "--metrics", f"127.0.0.1:{port}"]
    ready_s: float | None = None
    applied = 0
    try:
        t0 = time.perf_counter()
        victim.start(wait=False)
        for _ in _deadline_loop(timeout, f"{victim.name} applied {target}"):
            a0 = time.perf_counter()
            with contextlib.suppress(RaftdError, OSError):
                st = victim.status(timeout=2.0)
                if ready_s is None:
                    ready_s = time.perf_counter() - t0
                    first_index = st.applied
                applied = st.applied
                if applied >= target:
                    break
            if not victim.alive:
                raise RuntimeError(f"{victim.name} exited\n{victim.log_tail()}")
            _pace(a0, 0.02)
        took = time.perf_counter() - t0
        installed: float | None = None
        with contextlib.suppress(OSError, ValueError):
            installed = scrape_metric(
                port,
                "raftd_snapshots_total",
                {"namespace": cluster.namespaces[0], "kind": "installed"},
            )
    finally:
        victim.extra_args = saved
    return result(
        "catchup",
        clients=clients,
        ops_per_s=round(entries / took) if took > 0 else None,
        p50_ms=round(took * 1000, 1),
        p99_ms=round(took * 1000, 1),
        ok=1,
        errs=0,
        entries=entries,
        target_index=target,
        applied_at_first_status=first_index,
        catchup_s=round(took, 3),
        api_ready_s=round(ready_s, 3) if ready_s is not None else None,
        snapshot_installed=None if installed is None else installed > 0,
        write_ops_per_s=round(len(w.latencies) / w.elapsed) if w.elapsed > 0 else 0,
        write_errs=w.errs,
        preset=cluster.preset,
    )


def make_key_file(directory: Path) -> Path:
    """A 0600 file with a random 32-byte hex key (as ``openssl rand -hex 32``)."""
    path = directory / "cluster.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


# -- bench-all ---------------------------------------------------------------------------


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
            )

        res = trio.run(go)
        assert meter is not None and per_role is not None
        res.extra.update(extra)
        res.extra.update(meter.result(len(res.latencies)))
        res.extra.update(per_role.result(len(res.latencies), res.elapsed))
        rep.add(name, res.as_json(), res.line())


def _cluster(cfg: AllConfig, extra_args: Sequence[str] = ()) -> LocalCluster:
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


def cluster_roles(cluster: LocalCluster) -> list[tuple[str, int]]:
    """(role, pid) of every running node: "leader", then "follower1", "follower2"..."""
    lead = cluster.wait_leader()
    roles: list[tuple[str, int]] = []
    followers = 0
    for n in cluster.nodes:
        if n.pid is None:
            continue
        if n is lead:
            roles.insert(0, ("leader", n.pid))
        else:
            followers += 1
            roles.append((f"follower{followers}", n.pid))
    return roles


def measure_idle(cluster: LocalCluster, seconds: float) -> dict[str, object]:
    """CPU share of a core and voluntary context switches (sleeps: event-loop wake-ups,
    thread hand-offs) per second of each idle daemon, over ``seconds``."""
    roles = cluster_roles(cluster)
    time.sleep(min(3.0, seconds))  # let the startup and the last load settle
    t0 = {name: (proc_cpu_s(pid), vol_switches(pid)) for name, pid in roles}
    time.sleep(seconds)
    out: dict[str, object] = {}
    for name, pid in roles:
        c0, w0 = t0[name]
        out[f"cpu_pct_{name}"] = round(100 * (proc_cpu_s(pid) - c0) / seconds, 2)
        out[f"wakeups_per_s_{name}"] = round((vol_switches(pid) - w0) / seconds)
    res = result("idle", clients=0, ok=len(roles), seconds=seconds)
    res.update(out)
    return res


def _raftd_big_keys(rep: Reporter, cfg: AllConfig) -> None:
    """put@64 over ``cfg.big_keys`` keys on a fresh cluster, and each daemon's RSS growth
    from idle to the whole key space loaded."""
    with rep.step(f"raftd put@64 over {cfg.big_keys} keys: fresh cluster"):
        cluster = _cluster(cfg)
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


def _raftd_main(rep: Reporter, cfg: AllConfig) -> None:
    rep.say(f"start {cfg.nodes} raftd daemons (preset {cfg.preset})")
    try:
        cluster = _cluster(cfg)
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
        _load(
            rep,
            "raftd put@1",
            roles,
            socks,
            "put",
            1,
            1,
            cfg.total_put1,
            cfg.dur_put1,
            preload=True,
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


def _raftd_encryption(rep: Reporter, cfg: AllConfig) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="raftd-key-"))
    try:
        key = make_key_file(tmp)
        for name, extra in (
            ("raftd put@64 plain", []),
            ("raftd put@64 keyed", ["--key-file", str(key)]),
        ):
            with rep.step(f"{name}: fresh cluster"):
                cluster = _cluster(cfg, extra)
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


def _anchors(rep: Reporter, cfg: AllConfig) -> None:
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
        "failover_p50_s": fo_s,
        "catchup_s": cu,
        "idle_rss_mb": rss_mb,
        "getl64_vs_etcd": r_get,
        "keyed_vs_plain_put64": r_enc,
        "big_vs_10k_put64": r_big,
        "rss_growth_mb_per_100k": per100k,
        "idle_cpu_pct_leader": n(rep, "raftd idle", "cpu_pct_leader"),
    }


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
    _raftd_main(rep, cfg)
    _raftd_encryption(rep, cfg)
    if cfg.big_keys:
        _raftd_big_keys(rep, cfg)
    if cfg.anchors:
        _anchors(rep, cfg)
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


# -- one measurement ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["all"]:
        return main_all(argv[1:])
    if argv[:1] == ["gray"]:
        from harness.gray import main as main_gray

        return main_gray(argv[1:])
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("op", choices=sorted(OPS) + list(OTHER_OPS))
    ap.add_argument("--clients", type=int, default=64, help="requests kept outstanding")
    ap.add_argument("--conns", type=int, default=8, help="API connections")
    ap.add_argument("--total", type=int, default=20000)
    ap.add_argument("--duration", type=float, default=30.0, help="max seconds")
    ap.add_argument("--nodes", type=int, default=3, help="cluster size (own cluster)")
    ap.add_argument(
        "--endpoints",
        choices=["all", "leader", "follower"],
        default="all",
        help="which daemons the connections go to",
    )
    ap.add_argument("--socket", action="append", help="use running daemons instead")
    ap.add_argument("--key-space", type=int, default=10_000)
    ap.add_argument("--key-size", type=int, default=16)
    ap.add_argument("--val-size", type=int, default=100)
    ap.add_argument("--preset", default="local", choices=["local", "regional", "global"])
    ap.add_argument(
        "--key-file", type=Path, help="run the daemons with this shared key (--key-file)"
    )
    ap.add_argument(
        "--encrypt", action="store_true", help="run the daemons with a fresh random shared key"
    )
    ap.add_argument("--trials", type=int, default=10, help="failover trials")
    ap.add_argument("--entries", type=int, default=100_000, help="catchup: entries written")
    ap.add_argument("--no-json", action="store_true")
    args = ap.parse_args(argv)

    if args.op in OTHER_OPS and args.socket:
        ap.error(f"{args.op} needs its own cluster (no --socket)")
    cluster = None
    tmp = None
    out: dict[str, object]
    human: str | None = None
    try:
        extra_args: list[str] = []
        key_file = args.key_file
        if args.encrypt and key_file is None:
            tmp = Path(tempfile.mkdtemp(prefix="raftd-key-"))
            key_file = make_key_file(tmp)
        if key_file is not None:
            extra_args += ["--key-file", str(key_file)]
        if args.socket:
            sockets = list(args.socket)
        else:
            from raftd.testing.cluster import LocalCluster

            cluster = LocalCluster(args.nodes, preset=args.preset, extra_args=extra_args)
            with_metrics(cluster)
            cluster.start()
            lead = cluster.wait_leader()
            nodes = {
                "all": cluster.nodes,
                "leader": [lead],
                "follower": [n for n in cluster.nodes if n is not lead][:1] or [lead],
            }[args.endpoints]
            sockets = [str(n.socket) for n in nodes]
        if args.op == "failover":
            assert cluster is not None
            out = measure_failover(cluster, args.trials)
        elif args.op == "catchup":
            assert cluster is not None
            out = measure_catchup(cluster, args.entries, clients=args.clients, conns=args.conns)
        elif args.op == "rss":
            assert cluster is not None
            out = measure_rss(cluster)
        else:
            res = run_measured(
                sockets,
                args.op,
                cluster_roles(cluster) if cluster is not None else [],
                metrics=cluster_metrics(cluster) if cluster is not None else None,
                key_space=args.key_space,
                key_size=args.key_size,
                val_size=args.val_size,
                clients=args.clients,
                conns=args.conns,
                total=args.total,
                duration=args.duration,
            )
            res.extra["encrypted"] = key_file is not None
            out = res.as_json()
            human = res.line()
            cpu = [
                f"{k[len('cpu_us_per_op_') :]}={v}"
                for k, v in out.items()
                if k.startswith("cpu_us_per_op_")
            ]
            frames = [
                f"{k[len('frames_per_op_') :]}={v}/{out[k.replace('frames', 'bytes')]}B"
                for k, v in out.items()
                if k.startswith("frames_per_op_")
            ]
            if frames:
                human += "\nRaft frames/bytes sent per op: " + " ".join(frames)
            if cpu:
                human += "\ncpu us/op: " + " ".join(cpu)
                wake = [
                    f"{k[len('wakeups_per_op_') :]}={v}"
                    for k, v in out.items()
                    if k.startswith("wakeups_per_op_")
                ]
                human += "\nwake-ups/op: " + " ".join(wake)
    finally:
        if cluster is not None:
            cluster.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if human is None:
        human = " ".join(f"{k}={out[k]}" for k in REQUIRED_KEYS[1:])
    print(human)
    if not args.no_json:
        print(json.dumps(out))
    return 0 if out.get("ok") else 2


# Used by the tests: a blocking view of :func:`write_keys`.
def write_keys_sync(sockets: Sequence[str], n: int, **kw: Any) -> BenchResult:
    return trio.run(lambda: write_keys(sockets, n, **kw))


if __name__ == "__main__":
    sys.exit(main())
