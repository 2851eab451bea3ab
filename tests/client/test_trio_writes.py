"""How the trio client's requests reach the socket: a lone call writes its own frame
before it first yields; calls that come together go through the writer task; a write
the socket takes only in part is finished by the writer, in order. The daemon here is
the other end of a real socket pair, answering each request it reads."""

from __future__ import annotations

import socket

import trio
import trio.testing

from raftd.client import _proto as P
from raftd.client._core import prepare
from raftd.client._trio import _AsyncConn
from raftd.wire.framing import FrameDecoder, encode_frame
from raftd.wire.pb import api_pb2 as apb

MAX = 64 << 20


def put_req(key: str, value: bytes = b"v") -> apb.Request:
    req = P.req_put(key, value, lease=0, prev_kv=False)
    prepare(req, "/raft/default", 10.0, None)
    return req


def answer(req: apb.Request) -> bytes:
    resp = apb.Response(id=req.id, revision=req.id)
    resp.put.SetInParent()
    return encode_frame(resp.SerializeToString())


async def serve(peer: trio.SocketStream, seen: list[apb.Request], head: bytes = b"") -> None:
    """The daemon's side: answer every request read (after ``head``, bytes already read
    from it), in order, until the client closes."""
    decoder = FrameDecoder(MAX)
    data = head
    while data or (data := await peer.receive_some(1 << 20)):
        for f in decoder.feed(data):
            req = apb.Request.FromString(f)
            seen.append(req)
            await peer.send_all(answer(req))
        data = b""


def read_now(raw: socket.socket) -> list[apb.Request]:
    """The requests already on the daemon's end, read without waiting (the socket is
    non-blocking: trio's wrapper made it so)."""
    try:
        data = raw.recv(1 << 16)
    except BlockingIOError:
        data = b""
    return [apb.Request.FromString(f) for f in FrameDecoder(MAX).feed(data)]


def pair() -> tuple[_AsyncConn, trio.SocketStream, socket.socket]:
    """A client connection on one end of a socket pair; the other end, as a trio
    stream and as the stdlib socket under it (for reads that must not yield)."""
    a, b = socket.socketpair()
    conn = _AsyncConn(trio.SocketStream(trio.socket.from_stdlib_socket(a)), MAX)
    return conn, trio.SocketStream(trio.socket.from_stdlib_socket(b)), b


async def test_a_lone_call_is_on_the_socket_before_the_caller_yields() -> None:
    conn, _, raw = pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(conn.run)
            await trio.testing.wait_all_tasks_blocked()  # the writer waits for work
            for key in (b"alone", b"again"):  # one call after another
                p = conn.call(put_req(key.decode()), 5.0)
                # No checkpoint since call(): the writer task cannot have run.
                (req,) = read_now(raw)
                assert req.put.key == key and req.id == p.id
                raw.sendall(answer(req))
                await p.waker.wait()
                assert p.response is not None
                assert p.response.revision == p.id
            n.cancel_scope.cancel()


async def test_calls_that_come_together_leave_through_the_writer_in_order() -> None:
    conn, peer, raw = pair()
    seen: list[apb.Request] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(conn.run)
            await trio.testing.wait_all_tasks_blocked()
            calls = [conn.call(put_req(f"k{i}"), 5.0) for i in range(20)]
            # Only the first was written by its caller; the others wait for the writer.
            (first,) = read_now(raw)
            assert first.put.key == b"k0"
            seen.append(first)
            raw.sendall(answer(first))
            n.start_soon(serve, peer, seen)
            for p in calls:
                await p.waker.wait()
            assert [p.response.revision for p in calls if p.response] == [p.id for p in calls]
            n.cancel_scope.cancel()
    assert [r.put.key for r in seen] == [f"k{i}".encode() for i in range(20)]


async def test_a_write_the_socket_takes_in_part_is_finished_by_the_writer() -> None:
    conn, peer, raw = pair()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    seen: list[apb.Request] = []
    big = bytes(range(256)) * 8192  # 2 MiB: far more than the socket buffers hold
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(conn.run)
            await trio.testing.wait_all_tasks_blocked()
            first = conn.call(put_req("big", big), 5.0)
            # The caller wrote what the socket took; the rest waits for the writer.
            assert raw.recv(1, socket.MSG_PEEK) and conn.core.has_output
            second = conn.call(put_req("after"), 5.0)
            n.start_soon(serve, peer, seen)
            await first.waker.wait()
            await second.waker.wait()
            assert first.response is not None and second.response is not None
            n.cancel_scope.cancel()
    assert [(r.put.key, len(r.put.value)) for r in seen] == [(b"big", len(big)), (b"after", 1)]
    assert seen[0].put.value == big


async def test_a_call_made_while_the_writer_sends_waits_its_turn() -> None:
    # The first call's caller gives up (so no call waits on the connection) while the
    # writer waits to send the rest of its frame; the socket then has room before the
    # writer runs again. The next call must not write into the middle of that frame.
    conn, peer, raw = pair()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    seen: list[apb.Request] = []
    big = bytes(range(256)) * 8192
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(conn.run)
            await trio.testing.wait_all_tasks_blocked()
            first = conn.call(put_req("big", big), 5.0)
            await trio.testing.wait_all_tasks_blocked()  # the writer blocks on a full socket
            conn.core.forget(first)
            assert not conn.core.pending
            head = raw.recv(1 << 20)  # room in the socket, and no checkpoint since
            second = conn.call(put_req("after"), 5.0)
            n.start_soon(serve, peer, seen, head)
            await second.waker.wait()
            assert second.response is not None
            n.cancel_scope.cancel()
    assert [(r.put.key, len(r.put.value)) for r in seen] == [(b"big", len(big)), (b"after", 1)]


async def test_callers_answered_together_call_again_through_the_writer() -> None:
    conn, peer, raw = pair()
    wrote_at_once: list[bool] = []
    seen: list[apb.Request] = []

    async def caller(i: int) -> None:
        p = conn.call(put_req(f"a{i}"), 5.0)
        await p.waker.wait()
        again = conn.call(put_req(f"b{i}"), 5.0)
        # Written by this caller at once, or left to the writer?
        try:
            wrote_at_once.append(bool(raw.recv(1, socket.MSG_PEEK)))
        except BlockingIOError:
            wrote_at_once.append(False)
        await again.waker.wait()

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(conn.run)
            async with trio.open_nursery() as callers:
                for i in range(4):
                    callers.start_soon(caller, i)
                await trio.testing.wait_all_tasks_blocked()
                first = read_now(raw)
                assert sorted(r.put.key for r in first) == [b"a0", b"a1", b"a2", b"a3"]
                raw.sendall(b"".join(answer(r) for r in first))  # one read answers all four
                await trio.testing.wait_all_tasks_blocked()
                n.start_soon(serve, peer, seen)
            n.cancel_scope.cancel()
    assert wrote_at_once == [False] * 4
    assert sorted(r.put.key for r in seen) == [b"b0", b"b1", b"b2", b"b3"]
