"""Writes and reads answered without a task per request (``NamespaceService.start_write``,
``start_read``).

Daemons in one trio process (real libp2p hosts, real LevelDB, the real API server on
its unix socket), so the tests can count the tasks the server spawns and look at the
group's pending commands.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from raftd.api.deadlines import DeadlineHeap
from raftd.api.service import InlineWrite, NamespaceService
from raftd.testing.inproc import NS, Cluster, Node, cluster
from raftd.wire.framing import FrameDecoder, encode_frame
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb

C = apb.Error


class SpawnCounter(trio.abc.Instrument):
    """Counts spawned tasks by their coroutine's name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name.rpartition(".")[2])


class Raw:
    """A raw API connection: frames out, responses in (any order)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(1 << 22)
        self.got: dict[int, apb.Response] = {}

    async def send(self, *reqs: apb.Request) -> None:
        await self.stream.send_all(b"".join(encode_frame(r.SerializeToString()) for r in reqs))

    async def answers(self, ids: list[int]) -> list[apb.Response]:
        while not all(i in self.got for i in ids):
            data = await self.stream.receive_some(65536)
            assert data, "the daemon closed the connection"
            for f in self.decoder.feed(data):
                r = apb.Response.FromString(f)
                self.got[r.id] = r
        return [self.got.pop(i) for i in ids]


@asynccontextmanager
async def raw(node: Node) -> AsyncIterator[Raw]:
    stream = await trio.open_unix_socket(node.socket)
    async with stream:
        yield Raw(stream)


def put(
    rid: int, key: bytes, value: bytes, *, timeout_ms: int = 0, client_id: bytes = b"", seq: int = 0
) -> apb.Request:
    return apb.Request(
        id=rid,
        namespace=NS,
        put=kpb.PutRequest(key=key, value=value),
        timeout_ms=timeout_ms,
        client_id=client_id,
        seq=seq,
    )


def service(node: Node) -> NamespaceService:
    assert node.daemon is not None and node.daemon.api is not None
    return node.daemon.api.services[NS]


async def follower_of(c: Cluster) -> Node:
    ld = await c.leader()
    return c.other(ld)


async def wait_no_commands(node: Node) -> None:
    """Until the group holds no command waiting for an answer."""
    g = node.group()
    while g._commands:  # noqa: ASYNC110 - the group has no event for it
        await trio.sleep(0.01)


async def test_pipelined_writes_spawn_no_task_per_request(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            counter = SpawnCounter()
            async with raw(f) as conn:
                await conn.send(put(1, b"warm", b"up"))
                (first,) = await conn.answers([1])
                assert first.error.code == C.OK, first
                trio.lowlevel.add_instrument(counter)
                try:
                    n = 200
                    ids = list(range(2, n + 2))
                    await conn.send(*(put(i, b"k%d" % i, b"v%d" % i) for i in ids))
                    answers = await conn.answers(ids)
                finally:
                    trio.lowlevel.remove_instrument(counter)
            assert [a.error.code for a in answers] == [C.OK] * n
            assert len({a.revision for a in answers}) == n  # one revision per put
            # Each answer is this daemon's own apply result: a stale read here sees it.
            for i in ids:
                kv = f.group().sm.get(b"k%d" % i)
                assert kv is not None and kv.value == b"v%d" % i
            assert "_run" not in counter.names, counter.names
            # Whatever the daemon spawned meanwhile (timers, transport) is not per request.
            assert len(counter.names) < n // 4, counter.names
            await wait_no_commands(f)


async def test_answered_writes_leave_no_cyclic_garbage(tmp_path: Path) -> None:
    """A write's request, its waiter and its result are freed by reference counting once
    nothing tracks it (answered, then dropped by its connection's deadline heap): per
    request garbage for the cyclic collector cost the daemon a measurable share of its
    CPU under write load."""
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            assert f.daemon is not None and f.daemon.api is not None
            api = f.daemon.api.server
            assert api is not None
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                async with raw(f) as conn:
                    ids = list(range(1, 51))
                    await conn.send(*(put(i, b"g%d" % i, b"v") for i in ids))
                    answers = await conn.answers(ids)
                # Closed: the connection drops what its deadline heap still held.
                while api.connections:  # noqa: ASYNC110 - the server has no event for it
                    await trio.sleep(0.01)
                gc.collect()
                leaked = Counter(
                    type(o).__name__
                    for o in gc.garbage
                    if isinstance(o, (InlineWrite, apb.Request, kpb.CommandResult))
                )
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
            assert [a.error.code for a in answers] == [C.OK] * len(ids)
            assert not leaked, leaked


async def test_refused_at_once_and_other_ops_still_served(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            async with raw(f) as conn:
                await conn.send(
                    put(1, b"", b"v"),  # empty key
                    put(2, b"k", b"v", client_id=b"me"),  # client id without a seq
                    apb.Request(id=3, namespace=NS, lease_grant=kpb.LeaseGrantRequest(ttl=30)),
                    put(4, b"k", b"v", client_id=b"me", seq=1),
                    put(5, b"k", b"v2", client_id=b"me", seq=1),  # same session: deduplicated
                )
                a1, a2, a3, a4, a5 = await conn.answers([1, 2, 3, 4, 5])
            assert a1.error.code == C.INVALID_ARGUMENT and "empty key" in a1.error.message
            assert a2.error.code == C.INVALID_ARGUMENT and "seq" in a2.error.message
            assert a3.error.code == C.OK and a3.lease_grant.id > 0  # the general path
            assert a4.error.code == C.OK and a5.error.code == C.OK, (a4, a5)
            assert a4.revision == a5.revision
            kv = f.group().sm.get(b"k")
            assert kv is not None and kv.value == b"v" and kv.version == 1


async def test_deadline_answers_and_releases_the_command(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            c.isolate(f)
            async with raw(f) as conn:
                await conn.send(put(1, b"cut", b"off", timeout_ms=700))
                (a,) = await conn.answers([1])
            # Handed to a leader that never answered: it may still apply.
            assert a.error.code in (C.DEADLINE_EXCEEDED, C.UNAVAILABLE), a
            assert a.error.indeterminate or a.error.code == C.UNAVAILABLE
            assert not f.group()._commands
            c.heal()


async def test_closed_connection_drops_its_pending_writes(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            c.isolate(f)
            async with raw(f) as conn:
                await conn.send(*(put(i, b"p%d" % i, b"v", timeout_ms=600_000) for i in range(5)))
                await conn.send(put(9, b"short", b"v", timeout_ms=300))
                while len(f.group()._commands) < 6:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            # The client is gone. Answering the short write fails, which ends the
            # connection: its other writes stop waiting long before their deadline (the
            # group would otherwise propose them again at every election timeout).
            await wait_no_commands(f)
            c.heal()


async def test_writes_dropped_unanswered_leave_no_cyclic_garbage(tmp_path: Path) -> None:
    """A write its connection stops waiting for (never answered) is freed by reference
    counting too: its waiter, never called, must not keep it in a cycle."""
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            c.isolate(f)
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                async with raw(f) as conn:
                    await conn.send(
                        *(put(i, b"u%d" % i, b"v", timeout_ms=600_000) for i in range(5))
                    )
                    # Its answer fails once the client is gone, which ends the connection.
                    await conn.send(put(9, b"short", b"v", timeout_ms=300))
                    while len(f.group()._commands) < 6:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                await wait_no_commands(f)
                gc.collect()
                leaked = Counter(
                    type(o).__name__
                    for o in gc.garbage
                    if isinstance(o, (InlineWrite, apb.Request))
                )
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
            assert not leaked, leaked
            c.heal()


async def test_stale_lane_sequence_is_retried_once_applied_once(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            svc = service(f)
            async with raw(f) as conn:
                await conn.send(put(1, b"s", b"1"))
                (a1,) = await conn.answers([1])
                assert a1.error.code == C.OK
                # The lane's seq goes back (a clock that went back): the next write on
                # it is STALE_SEQUENCE, never applied, and retried on a fresh seq.
                lane = svc.lanes._free[-1]
                lane.seq -= 10
                await conn.send(put(2, b"s", b"2"))
                (a2,) = await conn.answers([2])
            assert a2.error.code == C.OK, a2
            assert a2.revision == a1.revision + 1
            kv = f.group().sm.get(b"s")
            assert kv is not None and kv.value == b"2" and kv.version == 2
            await wait_no_commands(f)


def test_answered_requests_do_not_pile_up_until_their_deadline() -> None:
    """The deadline heap is swept as it grows: it holds at most about twice the requests
    in flight, not a deadline's worth of answered ones."""
    heap = DeadlineHeap()
    open_items: list[Any] = []
    worst = 0
    for i in range(10_000):
        w: Any = SimpleNamespace(deadline=1000.0 + i, finished=False)
        heap.track(w)
        open_items.append(w)
        if len(open_items) > 50:  # 50 in flight: the oldest is answered
            open_items.pop(0).finished = True
        worst = max(worst, len(heap))
    assert worst <= 2 * max(64, 51), worst
    assert {id(e[2]) for e in heap.items} >= {id(w) for w in open_items}


async def test_the_timer_expires_what_is_due_and_only_that() -> None:
    expired: list[int] = []

    class Item:
        def __init__(self, n: int, deadline: float) -> None:
            self.n, self.deadline, self.finished = n, deadline, False

        def expire(self) -> None:
            if not self.finished:
                self.finished = True
                expired.append(self.n)

        def abandon(self) -> None:
            self.finished = True

    heap = DeadlineHeap()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(heap.run)
        now = trio.current_time()
        late, soon, answered = Item(1, now + 0.6), Item(2, now + 0.2), Item(3, now + 0.1)
        heap.track(late)
        await trio.testing.wait_all_tasks_blocked()  # the timer sleeps until `late`
        heap.track(soon)  # an earlier deadline moves the sleeping timer forward
        heap.track(answered)
        answered.finished = True
        with trio.fail_after(5):
            while expired != [2, 1]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert trio.current_time() >= now + 0.6
        never = Item(4, trio.current_time() + 60)
        heap.track(never)
        heap.abandon_all()
        assert never.finished and expired == [2, 1] and len(heap) == 0
        nursery.cancel_scope.cancel()


def get(rid: int, key: bytes, *, linearizable: bool = True, timeout_ms: int = 0) -> apb.Request:
    return apb.Request(
        id=rid,
        namespace=NS,
        get=apb.GetRequest(key=key),
        consistency=apb.LINEARIZABLE if linearizable else apb.STALE,
        timeout_ms=timeout_ms,
    )


async def test_reads_spawn_no_task_and_see_every_acknowledged_write(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            f = c.other(ld)
            counter = SpawnCounter()
            async with raw(ld) as w, raw(f) as r:
                await r.send(get(1, b"warm"))
                (first,) = await r.answers([1])
                assert first.error.code == C.NOT_FOUND, first
                trio.lowlevel.add_instrument(counter)
                try:
                    for i in range(2, 12):
                        # Acknowledged by the leader, then read linearizably through a
                        # follower at once: the read must see it.
                        await w.send(put(i, b"r", b"%d" % i))
                        (ack,) = await w.answers([i])
                        assert ack.error.code == C.OK
                        await r.send(*(get(1000 * i + j, b"r") for j in range(20)))
                        got = await r.answers([1000 * i + j for j in range(20)])
                        assert {g.get.kv.value for g in got} == {b"%d" % i}, got
                        assert all(g.raft_index >= ack.raft_index for g in got)
                    await r.send(get(5, b"r", linearizable=False), get(6, b""))
                    stale, bad = await r.answers([5, 6])
                finally:
                    trio.lowlevel.remove_instrument(counter)
            assert stale.error.code == C.OK and stale.get.kv.value == b"11"
            assert bad.error.code == C.INVALID_ARGUMENT
            # 200 linearizable reads took far fewer ReadIndex rounds than reads (one in
            # flight at a time, the others join the next) and no task per request.
            assert "_run" not in counter.names, counter.names
            assert len(counter.names) < 50, counter.names


async def test_read_without_a_leader_answers_at_its_deadline(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            c.isolate(f)
            async with raw(f) as conn:
                await conn.send(get(1, b"x", timeout_ms=1500))
                (a,) = await conn.answers([1])
            assert a.error.code in (C.DEADLINE_EXCEEDED, C.UNAVAILABLE), a
            c.heal()
            # Once healed, reads are served again (no round left stuck).
            async with raw(f) as conn:
                for i in range(2, 40):
                    await conn.send(get(i, b"x", timeout_ms=2000))
                    (a,) = await conn.answers([i])
                    if a.error.code == C.NOT_FOUND:
                        break
                assert a.error.code == C.NOT_FOUND, a


async def test_a_lost_read_round_is_given_up_on(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            f = await follower_of(c)
            svc = service(f)
            group: Any = svc.group
            # The first ReadIndex round is never answered (a request or answer lost
            # while the leader stays the same: the group has no timeout for it).
            lost: list[Any] = []
            real_start = group.read_barrier_start

            def lose_first(callback: Any) -> None:
                if not lost:
                    lost.append(callback)
                    return
                real_start(callback)

            group.read_barrier_start = lose_first
            async with raw(f) as conn:
                await conn.send(get(1, b"x", timeout_ms=1000))
                (a,) = await conn.answers([1])
                assert a.error.code == C.DEADLINE_EXCEEDED, a
                assert svc._round_reads is not None  # the lost round is still "in flight"
                # Once it is an election timeout old, the next read starts a new round.
                while trio.current_time() - svc._round_started <= svc.preset.election_s:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await conn.send(get(2, b"x", timeout_ms=5000))
                (b,) = await conn.answers([2])
                assert b.error.code == C.NOT_FOUND, b
                # The lost round answering after all changes nothing.
                lost[0](SimpleNamespace(result=10**9, error=None))
                await conn.send(get(3, b"x"))
                (d,) = await conn.answers([3])
                assert d.error.code == C.NOT_FOUND, d


def get_l(rid: int, key: bytes) -> apb.Request:
    return apb.Request(id=rid, namespace=NS, range=kpb.RangeRequest(key=key))


async def test_the_answers_of_one_ready_leave_in_one_write(tmp_path: Path) -> None:
    """The answers a group hands out for one Ready (its applied writes, the reads it
    releases) are held per connection and written together: one system call for the
    batch, no writer task step per answer."""
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            assert ld.daemon is not None and ld.daemon.api is not None
            api = ld.daemon.api.server
            assert api is not None
            async with raw(ld) as conn:
                n = 200
                ids = list(range(1, n + 1))
                await conn.send(*(put(i, b"b%d" % i, b"v%d" % i) for i in ids))
                answers = await conn.answers(ids)
                rids = list(range(n + 1, 2 * n + 1))
                await conn.send(*(get_l(i, b"b%d" % (i - n)) for i in rids))
                reads = await conn.answers(rids)
            assert [a.error.code for a in answers] == [C.OK] * n
            assert [r.range.kvs[0].value for r in reads] == [b"v%d" % i for i in ids]
            held, writes = api.stats["held_answers"], api.stats["held_writes"]
            assert held >= 2 * n, api.stats  # every answer went out held
            assert writes < held // 2, api.stats  # several per write


async def test_held_answers_that_do_not_fit_follow_in_order(tmp_path: Path) -> None:
    """A client that does not read: the held answers fill its socket, the rest follows
    through the connection's writer task, and every frame arrives whole, once."""
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            big = bytes(range(256)) * 1024  # 256 KiB
            async with raw(ld) as conn:
                await conn.send(put(1, b"big", big))
                (a,) = await conn.answers([1])
                assert a.error.code == C.OK, a
                n = 40  # 10 MiB of answers, far more than a unix socket buffers
                ids = list(range(2, n + 2))
                await conn.send(*(get_l(i, b"big") for i in ids))
                # Answered while nobody reads: wait until the daemon has them all out of
                # its hands (held, written, or queued for the writer).
                g = ld.group()
                while g._reads_in_flight or g._reads_ready:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                reads = await conn.answers(ids)
            assert all(r.error.code == C.OK and r.range.kvs[0].value == big for r in reads)
            assert not conn.got  # nothing twice, nothing extra
