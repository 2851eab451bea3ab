"""The load generator: ``--clients`` requests kept outstanding over ``--conns`` API
connections, and the result format every benchmark prints."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from raftd.client import AsyncClient, RaftdError, open_client

if TYPE_CHECKING:
    from trio_typing import TaskStatus


#: Keys every JSON result line carries (the anchors' format).
REQUIRED_KEYS = ("system", "op", "clients", "ops_per_s", "p50_ms", "p99_ms", "ok", "errs")


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
    key_space: int = 10_000,
    key_size: int = 16,
    val_size: int = 100,
    preload: bool = True,
    seed: int = 1,
    spread: bool = False,
) -> BenchResult:
    """Run the load and return the measurements (latency per successful request).

    Each worker keeps to one connection, unless ``spread``: then it sends each request
    on the next connection in turn, as etcd's client balances every request over its
    endpoints (with one worker and one connection per daemon, a third of the requests
    go through the leader)."""
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
        # Built once: formatting a key per request was the load tool's own cost, not
        # the client's (the same keys, drawn in the same order).
        keys = [_key(i, key_size) for i in range(key_space)]

        def next_call(c: AsyncClient) -> Awaitable[object] | None:
            nonlocal issued
            if issued >= total or trio.current_time() >= stop_at:
                return None
            issued += 1
            return fn(c, keys[rng.randrange(key_space)], value)

        await _timed_calls(res, cls, clients, next_call, spread=spread)
        nursery.cancel_scope.cancel()
    if spread:
        res.extra["spread"] = True
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

        def next_call(c: AsyncClient) -> Awaitable[object] | None:
            nonlocal next_i
            if next_i >= n:
                return None
            i = next_i
            next_i += 1
            return c.put(f"{prefix}{i:08d}", value)

        await _timed_calls(res, cls, clients, next_call)
        nursery.cancel_scope.cancel()
    return res


async def _timed_calls(
    res: BenchResult,
    cls: Sequence[AsyncClient],
    clients: int,
    next_call: Callable[[AsyncClient], Awaitable[object] | None],
    *,
    spread: bool = False,
) -> None:
    """Keep ``clients`` requests in flight over the connections ``cls`` (worker ``w`` uses
    ``cls[w % len(cls)]``, or with ``spread`` each of them in turn from there) until
    ``next_call`` returns None. Each call's latency goes to ``res.latencies``, a
    :class:`RaftdError` counts in ``res.errs``; ``res.elapsed`` is the whole run."""

    async def worker(w: int) -> None:
        k = w
        while (call := next_call(cls[k % len(cls)])) is not None:
            if spread:
                k += 1
            t0 = time.perf_counter()
            try:
                await call
            except RaftdError:
                res.errs += 1
                continue
            res.latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with trio.open_nursery() as load:
        for w in range(clients):
            load.start_soon(worker, w)
    res.elapsed = time.perf_counter() - t0


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


# Used by the tests: a blocking view of :func:`write_keys`.
def write_keys_sync(sockets: Sequence[str], n: int, **kw: Any) -> BenchResult:
    return trio.run(lambda: write_keys(sockets, n, **kw))
