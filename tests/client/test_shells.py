"""The two I/O shells over a real socket pair, the far end played by the test: what the
core queues on its own (the cancel of a watch that fell behind) reaches the daemon, a
peer that sends garbage fails pending requests with the named error, and the trio
client's calls end at their deadlines (each in its turn, however they were queued),
leave nothing behind once answered, and can be cancelled like any trio checkpoint."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from raftd.client import _proto as P
from raftd.client._core import MalformedResponse
from raftd.client._sync import _Conn
from raftd.client._trio import AsyncClient, _AsyncConn
from raftd.wire.framing import FrameDecoder, encode_frame
from raftd.wire.pb import api_pb2 as apb

MAX = 1 << 20


def watch_req() -> apb.Request:
    req = P.req_watch("k", b"", start_revision=0, prev_kv=False)
    req.namespace = "/raft/w"
    return req


def event(rid: int, rev: int) -> bytes:
    resp = apb.Response(id=rid)
    ev = resp.watch.events.add()
    ev.kv.key, ev.kv.mod_revision = b"k", rev
    return encode_frame(resp.SerializeToString())


def read_requests(sock: socket.socket, n: int) -> list[apb.Request]:
    dec = FrameDecoder(MAX)
    out: list[apb.Request] = []
    sock.settimeout(10)
    while len(out) < n:
        data = sock.recv(65536)
        assert data, "the client closed the connection"
        out += [apb.Request.FromString(f) for f in dec.feed(data)]
    return out


def test_sync_overflow_cancel_reaches_the_daemon() -> None:
    ours, peer = socket.socketpair()
    conn = _Conn(ours, MAX)
    try:
        p = conn.stream(watch_req(), limit=2)
        (sent,) = read_requests(peer, 1)
        assert sent.id == p.id and sent.watch.key == b"k"
        peer.sendall(b"".join(event(p.id, r) for r in (1, 2, 3)))
        got = [conn.take(p, 10) for _ in range(3)]
        assert [type(x) for x in got[:2]] == [apb.Response, apb.Response]
        assert isinstance(got[2], P.ConnectionLost) and "keep up" in got[2].message
        (cancel,) = read_requests(peer, 1)
        assert cancel.watch_cancel.watch_id == p.id and cancel.namespace == "/raft/w"
    finally:
        conn.close()
        peer.close()


def test_sync_garbage_fails_pending_with_a_named_error() -> None:
    ours, peer = socket.socketpair()
    conn = _Conn(ours, MAX)
    try:
        fut: Future[apb.Response] = Future()
        conn.request(P.req_put("k", "v", lease=0, prev_kv=False), fut)
        read_requests(peer, 1)
        peer.sendall(encode_frame(b"\xff\xff\xff"))
        err = fut.exception(10)
        assert isinstance(err, MalformedResponse) and err.indeterminate
        conn.thread.join(10)
        assert not conn.thread.is_alive()
    finally:
        conn.close()
        peer.close()


async def test_trio_overflow_cancel_reaches_the_daemon() -> None:
    ours, peer = trio.socket.socketpair()
    conn = _AsyncConn(trio.SocketStream(ours), MAX)
    peer_stream = trio.SocketStream(peer)
    async with trio.open_nursery() as n:
        n.start_soon(conn.run)
        p = conn.stream_request(watch_req(), 2)
        dec = FrameDecoder(MAX)

        async def requests(k: int) -> list[apb.Request]:
            out: list[apb.Request] = []
            with trio.fail_after(10):
                while len(out) < k:
                    data = await peer_stream.receive_some(65536)
                    out += [apb.Request.FromString(f) for f in dec.feed(data)]
            return out

        (sent,) = await requests(1)
        assert sent.id == p.id
        await peer_stream.send_all(b"".join(event(p.id, r) for r in (1, 2, 3)))
        (cancel,) = await requests(1)  # sent by the client's writer, unprompted
        assert cancel.watch_cancel.watch_id == p.id and cancel.namespace == "/raft/w"
        with trio.fail_after(10):
            got = [await conn.take(p) for _ in range(3)]
        assert isinstance(got[2], P.ConnectionLost) and "keep up" in got[2].message
        # Garbage from the daemon: pending calls fail with the named error.
        call = conn.call(P.req_put("k", "v", lease=0, prev_kv=False), 30.0)
        await requests(1)
        await peer_stream.send_all(encode_frame(b"\xff\xff\xff"))
        with trio.fail_after(10):
            await call.waker.wait()
        assert isinstance(call.error, MalformedResponse) and call.error.indeterminate
        with trio.fail_after(10):
            await conn.done.wait()
        await peer_stream.aclose()


class FarEnd:
    """The daemon's side of a trio socket pair: reads the client's requests, answers
    the ones the test chooses."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.dec = FrameDecoder(MAX)

    async def requests(self, k: int) -> list[apb.Request]:
        out: list[apb.Request] = []
        with trio.fail_after(10):
            while len(out) < k:
                data = await self.stream.receive_some(65536)
                assert data, "the client closed the connection"
                out += [apb.Request.FromString(f) for f in self.dec.feed(data)]
        return out

    async def answer(self, *rids: int) -> None:
        resps = [apb.Response(id=r, revision=r) for r in rids]
        for r in resps:
            r.put.SetInParent()
        await self.stream.send_all(b"".join(encode_frame(r.SerializeToString()) for r in resps))


@asynccontextmanager
async def trio_conn() -> AsyncIterator[tuple[_AsyncConn, FarEnd]]:
    ours, peer = trio.socket.socketpair()
    conn = _AsyncConn(trio.SocketStream(ours), MAX)
    async with trio.open_nursery() as n:
        n.start_soon(conn.run)
        yield conn, FarEnd(trio.SocketStream(peer))
        n.cancel_scope.cancel()


def put_req(key: str) -> apb.Request:
    return P.req_put(key, "v", lease=0, prev_kv=False)


async def test_trio_calls_time_out_at_their_own_deadlines() -> None:
    async with trio_conn() as (conn, far):
        slow = conn.call(put_req("slow"), 30.0)
        await far.requests(1)  # the timer now sleeps until the slow call's deadline
        fast = conn.call(put_req("fast"), 0.05)  # queued later, due first
        await far.requests(1)
        t0 = trio.current_time()
        with trio.fail_after(10):
            await fast.waker.wait()
        # Woken by the timer: neither answered nor failed, which the caller reports as
        # DeadlineExceeded.
        assert fast.response is None and fast.error is None and not fast.done
        assert 0.04 <= trio.current_time() - t0 < 10
        assert not slow.done and not slow.waker.fired
        await far.answer(slow.id)
        with trio.fail_after(10):
            await slow.waker.wait()
        assert slow.response is not None and slow.response.revision == slow.id


async def test_trio_answered_calls_leave_the_deadline_heap() -> None:
    async with trio_conn() as (conn, far):
        for _ in range(200):
            batch = [conn.call(put_req("k"), 30.0) for _ in range(5)]
            await far.requests(5)
            await far.answer(*(p.id for p in batch))
            with trio.fail_after(10):
                for p in batch:
                    await p.waker.wait()
            assert all(p.response is not None for p in batch)
        # 1,000 calls made; what is left are at most the last batch's entries.
        assert len(conn.deadlines) <= 5
        assert not conn.core.pending


async def test_trio_given_up_calls_leave_the_deadline_heap() -> None:
    async with trio_conn() as (conn, far):
        first = conn.call(put_req("first"), 30.0)
        await far.requests(1)  # the timer now sleeps until the first call's deadline
        conn.core.forget(first)
        for _ in range(100):
            p = conn.call(put_req("k"), 30.0)
            conn.core.forget(p)  # what a cancelled or timed-out caller does
        # Each call dropped those given up before it (the timer did not run meanwhile).
        assert [e[2] for e in conn.deadlines] == [p]
        await far.requests(100)
        later = conn.call(put_req("later"), 30.0)
        (req,) = await far.requests(1)
        await far.answer(req.id)
        with trio.fail_after(10):
            await later.waker.wait()
        assert later.response is not None
        assert [e[2] for e in conn.deadlines] == [later]


async def test_trio_cancelled_call_is_forgotten_and_its_late_answer_dropped(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "fake.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(1)
    async with trio.open_nursery() as n:
        client = AsyncClient(n, path, namespace="/raft/t")
        conn = await client._connection()  # connected before the cancel scope starts
        sock, _ = await listener.accept()
        far = FarEnd(trio.SocketStream(sock))
        with trio.move_on_after(0.05) as scope:
            await client.put("first", "v")  # the daemon does not answer in time
        assert scope.cancelled_caught
        assert client._conn is conn and not conn.core.pending  # forgotten
        (first,) = await far.requests(1)
        async with trio.open_nursery() as calls:
            got: list[int] = []

            async def second() -> None:
                got.append((await client.put("second", "v")).revision)

            calls.start_soon(second)
            (nxt,) = await far.requests(1)
            await far.answer(first.id, nxt.id)  # the late answer first: dropped
        assert got == [nxt.id]
        assert not conn.core.pending and not conn.closed
        await client.aclose()
        n.cancel_scope.cancel()
    listener.close()


async def test_trio_a_cancelled_wait_is_not_woken_at_its_deadline() -> None:
    async with trio_conn() as (conn, far):
        p = conn.call(put_req("k"), 0.05)
        with trio.CancelScope() as scope:
            scope.cancel()
            await p.waker.wait()
        assert scope.cancelled_caught
        # A call due after it: once the timer has woken that one, it has passed the
        # cancelled call's deadline too, and found no task to wake there.
        after = conn.call(put_req("after"), 0.2)
        await far.requests(2)
        with trio.fail_after(10):
            await after.waker.wait()
        assert after.response is None and p.waker.fired and p.waker.task is None
        assert not conn.deadlines
        later = conn.call(put_req("later"), 30.0)
        (req,) = await far.requests(1)
        await far.answer(req.id)
        with trio.fail_after(10):
            await later.waker.wait()
        assert later.response is not None and not conn.closed


async def test_trio_client_authenticates_first_and_a_refusal_is_named(tmp_path: Path) -> None:
    path = str(tmp_path / "fake.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(2)
    async with trio.open_nursery() as n:

        async def daemon(token_ok: bool) -> None:
            sock, _ = await listener.accept()
            far = FarEnd(trio.SocketStream(sock))
            (auth,) = await far.requests(1)
            assert auth.WhichOneof("op") == "auth" and auth.auth.token == "t0ken"
            resp = apb.Response(id=auth.id)
            if token_ok:
                resp.auth.SetInParent()
            else:
                resp.error.code = apb.Error.UNAUTHENTICATED
                resp.error.message = "wrong API token"
            await far.stream.send_all(encode_frame(resp.SerializeToString()))
            if token_ok:
                (put,) = await far.requests(1)
                await far.answer(put.id)

        n.start_soon(daemon, True)
        good = AsyncClient(n, path, namespace="/raft/t", token="t0ken")
        with trio.fail_after(10):
            assert (await good.put("k", "v")).revision > 0
        await good.aclose()
        n.start_soon(daemon, False)
        bad = AsyncClient(n, path, namespace="/raft/t", token="t0ken")
        with trio.fail_after(10), pytest.raises(P.Unauthenticated):
            await bad.put("k", "v")
        await bad.aclose()
        n.cancel_scope.cancel()
    listener.close()
