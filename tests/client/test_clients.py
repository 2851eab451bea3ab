"""One behaviour suite, run against both clients on a real daemon (a ``raftd run``
process, its unix socket, LevelDB): results, errors, deadlines and ``indeterminate``,
a daemon killed under a pending write, watches (resume, and the bounded queue that drops
and resumes a watcher that falls behind). The test bodies are written once; a driver
runs each call on the blocking client (in a worker thread) or on the trio client."""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from raftd.client import (
    AsyncClient,
    AsyncWatch,
    CasResult,
    Client,
    ConnectionLost,
    DeadlineExceeded,
    DeleteResult,
    Event,
    InvalidArgument,
    KeyValue,
    NotFound,
    PutResult,
    RaftdError,
    RangeResult,
    TxnResult,
    UnknownNamespace,
    Watch,
    compare,
    op_get,
    op_put,
    open_client,
)
from raftd.client._core import WATCH_BUFFER, Pending
from raftd.testing.cluster import LocalCluster, Node

pytestmark = pytest.mark.slow

NS = "/raft/default"


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """One real daemon shared by the module's tests (they use their own keys)."""
    with LocalCluster(1) as cluster:
        yield cluster.nodes[0]


class WatchDriver:
    """One watch of either client: ``next`` returns the next event (TimeoutError after
    ``within`` seconds), ``stream`` is the connection entry it currently reads."""

    def __init__(self, w: Watch | AsyncWatch, stack: AsyncExitStack | None) -> None:
        self.w = w
        self.stack = stack

    @property
    def stream(self) -> Pending | None:
        return self.w._stream

    @property
    def revision(self) -> int:
        return self.w.revision

    async def next(self, within: float = 10.0) -> Event | None:
        if isinstance(self.w, Watch):
            return await trio.to_thread.run_sync(self.w.next, within)
        try:
            with trio.fail_after(within):
                return await self.w.next()
        except trio.TooSlowError:
            raise TimeoutError("no event") from None

    async def cancel(self) -> None:
        if isinstance(self.w, Watch):
            await trio.to_thread.run_sync(self.w.cancel)
        elif self.stack is not None:
            await self.stack.aclose()


class Driver:
    """Runs the same calls on the blocking client (in a thread) or the trio client."""

    def __init__(self, kind: str, client: Client | AsyncClient) -> None:
        self.kind = kind
        self.client = client

    async def __call__(self, op: str, *args: Any, **kw: Any) -> Any:
        method = getattr(self.client, op)
        if isinstance(self.client, Client):
            return await trio.to_thread.run_sync(functools.partial(method, *args, **kw))
        return await method(*args, **kw)

    async def watch(self, key: str, *, buffer: int = WATCH_BUFFER, **kw: Any) -> WatchDriver:
        c = self.client
        if isinstance(c, Client):
            if buffer == WATCH_BUFFER:
                w = await trio.to_thread.run_sync(functools.partial(c.watch, key, **kw))
            else:
                w = Watch(
                    c, key.encode(), b"", kw.get("start_revision", 0), False, True, 30.0, buffer
                )
                await trio.to_thread.run_sync(w.start)
            return WatchDriver(w, None)
        stack = AsyncExitStack()
        if buffer == WATCH_BUFFER:
            aw = await stack.enter_async_context(c.watch(key, **kw))
        else:
            aw = AsyncWatch(
                c, key.encode(), b"", kw.get("start_revision", 0), False, True, 30.0, buffer
            )
            await aw.start()
            stack.push_async_callback(aw.cancel)
        return WatchDriver(aw, stack)


@asynccontextmanager
async def open_driver(kind: str, node: Node, namespace: str = NS) -> AsyncIterator[Driver]:
    if kind == "sync":
        c = Client(str(node.socket), namespace=namespace)
        try:
            yield Driver(kind, c)
        finally:
            c.close()
    else:
        async with open_client(str(node.socket), namespace=namespace) as ac:
            yield Driver(kind, ac)


@pytest.fixture(params=["sync", "trio"])
async def client(request: pytest.FixtureRequest, node: Node) -> AsyncIterator[Driver]:
    async with open_driver(request.param, node) as d:
        yield d


# -- results ------------------------------------------------------------------------------


async def test_key_value_operations(client: Driver) -> None:
    t = f"kv-{client.kind}"
    r1 = await client("put", f"{t}/a", "1")
    assert isinstance(r1, PutResult) and r1.prev is None
    r2 = await client("put", f"{t}/a", "2", prev_kv=True)
    assert r2.revision == r1.revision + 1 and r2.prev is not None and r2.prev.value == b"1"
    kv = await client("get", f"{t}/a")
    assert isinstance(kv, KeyValue) and kv.value == b"2" and kv.version == 2
    assert await client("get", f"{t}/missing") is None
    for i in range(4):
        await client("put", f"{t}/r/{i}", str(i))
    rr = await client("get_prefix", f"{t}/r/")
    assert isinstance(rr, RangeResult) and [x.value for x in rr.kvs] == [b"0", b"1", b"2", b"3"]
    lim = await client("range", f"{t}/r/", f"{t}/r/9", limit=2, keys_only=True)
    assert len(lim.kvs) == 2 and lim.more and all(x.value == b"" for x in lim.kvs)
    ok = await client("cas", f"{t}/a", "3", value="2")
    assert isinstance(ok, CasResult) and ok.succeeded
    bad = await client("cas", f"{t}/a", "4", value="2")
    assert not bad.succeeded and bad.current is not None and bad.current.value == b"3"
    tx = await client(
        "txn",
        [compare(f"{t}/a", "value", "=", "3")],
        [op_put(f"{t}/b", "x"), op_get(f"{t}/a")],
        [],
    )
    assert isinstance(tx, TxnResult) and tx.succeeded and len(tx.responses) == 2
    d = await client("delete", f"{t}/b", prev_kv=True)
    assert isinstance(d, DeleteResult) and d.deleted == 1 and d.prev[0].value == b"x"
    dr = await client("delete_prefix", f"{t}/r/")
    assert dr.deleted == 4
    assert await client("barrier") >= dr.revision


async def test_cluster_and_lease_operations(client: Driver, node: Node) -> None:
    (st,) = await client("status")
    assert st.namespace == NS and st.role == "leader" and st.leader == node.peer_id
    (me,) = await client("members")
    assert me.id == node.peer_id and me.voter
    lease = await client("lease_grant", 30)
    await client("put", f"lease-{client.kind}", "v", lease=lease.id)
    ttl = await client("lease_ttl", lease.id, keys=True)
    assert ttl.granted_ttl == lease.ttl and ttl.keys == [f"lease-{client.kind}".encode()]
    assert await client("lease_keepalive", lease.id) == lease.ttl
    assert lease.id in {x.id for x in await client("leases")}
    assert await client("lease_revoke", lease.id) == 1
    assert await client("get", f"lease-{client.kind}") is None


async def test_errors_are_the_same_typed_errors(client: Driver, node: Node) -> None:
    with pytest.raises(InvalidArgument):
        await client("put", "", "v")
    with pytest.raises(NotFound):
        await client("lease_keepalive", 123456789)
    with pytest.raises(ValueError):
        await client("cas", "k", "v")  # refused before sending
    async with open_driver(client.kind, node, "/raft/nope") as other:
        with pytest.raises(UnknownNamespace):
            await other("get", "k")


# -- deadlines, indeterminate writes, a dead daemon ---------------------------------------


async def test_no_answer_in_time_is_indeterminate_only_for_writes(
    client: Driver, node: Node
) -> None:
    await client("get", "warm-up")  # connected before the daemon freezes
    node.stop_signal(signal.SIGSTOP)
    try:
        async with trio.open_nursery() as n:
            errors: dict[str, RaftdError] = {}

            async def attempt(name: str, op: str, *args: Any) -> None:
                try:
                    await client(op, *args, timeout=0.2)
                except RaftdError as exc:
                    errors[name] = exc

            n.start_soon(attempt, "write", "put", "frozen", "v")
            n.start_soon(attempt, "read", "get", "frozen")
    finally:
        node.stop_signal(signal.SIGCONT)
    assert isinstance(errors["write"], DeadlineExceeded) and errors["write"].indeterminate
    assert isinstance(errors["read"], DeadlineExceeded) and not errors["read"].indeterminate
    # The connection is still usable (the late answers are dropped).
    assert (await client("put", "thawed", "v")).revision > 0


async def test_a_daemon_killed_under_pending_requests(client: Driver, node: Node) -> None:
    t = f"kill-{client.kind}"
    rev = (await client("put", f"{t}/k", "0")).revision
    w = await client.watch(f"{t}/k", start_revision=rev + 1)
    node.stop_signal(signal.SIGSTOP)
    errors: dict[str, RaftdError] = {}

    async def attempt(name: str, op: str, *args: Any) -> None:
        try:
            await client(op, *args, timeout=30)
        except RaftdError as exc:
            errors[name] = exc

    try:
        async with trio.open_nursery() as n:
            n.start_soon(attempt, "write", "put", f"{t}/k", "lost?")
            n.start_soon(attempt, "read", "get", f"{t}/k")
            await trio.sleep(0.3)  # both sent, neither answered: the daemon is frozen
            node.kill()
    finally:
        node.stop_signal(signal.SIGCONT)
    assert isinstance(errors["write"], ConnectionLost) and errors["write"].indeterminate
    assert isinstance(errors["read"], ConnectionLost) and not errors["read"].indeterminate
    await trio.to_thread.run_sync(node.start)
    # The client reconnects by itself; the watch resumes after its last event.
    after = await client("put", f"{t}/k", "1")
    seen = []
    while True:
        ev = await w.next(within=30)
        assert ev is not None
        seen.append(ev)
        if ev.revision >= after.revision:
            break
    assert seen[-1].kv.value == b"1"
    assert [e.revision for e in seen] == sorted({e.revision for e in seen})
    await w.cancel()


# -- watches and back-pressure ------------------------------------------------------------


async def test_watch_delivers_every_revision_in_order(client: Driver) -> None:
    t = f"watch-{client.kind}"
    w = await client.watch(t, prefix=True, prev_kv=True)
    start = w.revision
    revs = [(await client("put", f"{t}/{i % 3}", str(i))).revision for i in range(20)]
    got = [await w.next() for _ in revs]
    assert [e.revision for e in got if e is not None] == revs
    assert all(e is not None and e.type == "put" for e in got)
    assert got[5] is not None and got[5].prev is not None and got[5].prev.value == b"2"
    assert start < revs[0]
    await w.cancel()


async def overflow(client: Driver, key: str, buffer: int) -> None:
    """A watcher that stops reading falls more than ``buffer`` responses behind: the
    client drops its stream (and cancels it at the daemon), then delivers what it had
    queued, resumes after the last revision delivered, and loses nothing."""
    w = await client.watch(key, buffer=buffer)
    first = w.stream
    assert first is not None and not first.done
    writer = Client(client.client.address, namespace=NS)

    def write_until_dropped() -> list[int]:
        # Each put is acknowledged only once applied, so the daemon sends about one
        # watch response per put; stop once the client has dropped the stream.
        revs: list[int] = []
        deadline = time.monotonic() + 120
        while not first.done:
            assert len(revs) < 20 * buffer + 100, "the watch queue never overflowed"
            assert time.monotonic() < deadline, "the watch queue never overflowed"
            revs.append(writer.put(key, str(len(revs))).revision)
        return revs

    try:
        revs = await trio.to_thread.run_sync(write_until_dropped)
    finally:
        writer.close()
    assert first.error is not None and "did not keep up" in first.error.message
    assert first.items is not None and len(first.items) == buffer  # bounded
    got: list[int] = []
    while not got or got[-1] < revs[-1]:
        ev = await w.next(within=30)
        assert ev is not None
        got.append(ev.revision)
    assert got == revs  # every revision once, in order, across the resume
    assert w.stream is not first  # it did resume on a new stream
    await w.cancel()


async def test_a_watcher_that_falls_behind_resumes_without_losing_events(
    client: Driver,
) -> None:
    await overflow(client, f"slow-{client.kind}", buffer=8)


async def test_the_watch_queue_is_bounded_by_default(client: Driver) -> None:
    """The blocking client's queue too (it used to grow without bound)."""
    await overflow(client, f"bound-{client.kind}", buffer=WATCH_BUFFER)
