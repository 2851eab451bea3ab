"""Measuring daemons: CPU, RSS and wake-ups from /proc, Raft frames from /metrics, and
waiting for a cluster to settle before a measurement."""

from __future__ import annotations

import math
import os
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from harness.bench.load import BenchResult, result, run_load

if TYPE_CHECKING:
    from raftd.testing.cluster import LocalCluster, Node


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


def deadline_loop(timeout: float, what: str) -> Iterator[float]:
    """Yield the time left until ``timeout`` s have passed, then raise TimeoutError."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        yield left
    raise TimeoutError(f"{what} not reached within {timeout:.1f}s")


def pace(since: float, interval: float) -> None:
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
    for _ in deadline_loop(timeout, f"every node applied {target}"):
        t = time.perf_counter()
        sts = cluster.statuses()
        if len(sts) == len(cluster.nodes) and all(s.applied >= target for s in sts.values()):
            return cluster.wait_leader(timeout=timeout)
        pace(t, 0.05)
    raise AssertionError("unreachable")


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


def make_key_file(directory: Path) -> Path:
    """A 0600 file with a random 32-byte hex key (as ``openssl rand -hex 32``)."""
    path = directory / "cluster.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


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
