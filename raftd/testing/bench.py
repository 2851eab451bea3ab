"""API benchmarks against a local cluster of real daemons (``scripts/bench``).

``python -m raftd.testing.bench OP [options]`` starts a :class:`LocalCluster` (or uses
running daemons given with ``--socket``), preloads the key space, then keeps ``--clients``
requests outstanding over ``--conns`` API connections (spread over the endpoints, like
etcd's benchmark tool) until ``--total`` requests or ``--duration`` seconds.

Ops: ``get-l`` (linearizable get: ReadIndex then a local read), ``get-s`` (stale get),
``put`` (100-byte values over the key space).

Output, as the anchors in /work/shared/anchors: one human-readable line, then one JSON
object as the LAST line with at least ``system, op, clients, ops_per_s, p50_ms, p99_ms,
ok, errs``. New benchmarks (failover, catch-up, RSS) register in :data:`OPS` or add a
subcommand in :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from raftd.client import AsyncClient, RaftdError, open_client

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["BenchResult", "main", "run_load"]


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
    key_space: int = 1000,
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("op", choices=sorted(OPS))
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
    ap.add_argument("--key-space", type=int, default=1000)
    ap.add_argument("--key-size", type=int, default=16)
    ap.add_argument("--val-size", type=int, default=100)
    ap.add_argument("--no-json", action="store_true")
    args = ap.parse_args(argv)

    cluster = None
    try:
        if args.socket:
            sockets = list(args.socket)
        else:
            from raftd.testing.cluster import LocalCluster

            cluster = LocalCluster(args.nodes)
            cluster.start()
            lead = cluster.wait_leader()
            nodes = {
                "all": cluster.nodes,
                "leader": [lead],
                "follower": [n for n in cluster.nodes if n is not lead][:1] or [lead],
            }[args.endpoints]
            sockets = [str(n.socket) for n in nodes]
        res = trio.run(
            lambda: run_load(
                sockets,
                args.op,
                clients=args.clients,
                conns=args.conns,
                total=args.total,
                duration=args.duration,
                key_space=args.key_space,
                key_size=args.key_size,
                val_size=args.val_size,
            )
        )
    finally:
        if cluster is not None:
            cluster.close()
    print(res.line())
    if not args.no_json:
        print(json.dumps(res.as_json()))
    return 0 if res.latencies else 2


if __name__ == "__main__":
    sys.exit(main())
