"""The two I/O shells over a real socket pair, the far end played by the test: what the
core queues on its own (the cancel of a watch that fell behind) reaches the daemon, and
a peer that sends garbage fails pending requests with the named error."""

from __future__ import annotations

import socket
from concurrent.futures import Future

import trio

from raftd.client import _proto as P
from raftd.client._core import MalformedResponse
from raftd.client._sync import _Conn
from raftd.client._trio import _AsyncConn
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
        call = conn.request(P.req_put("k", "v", lease=0, prev_kv=False))
        await requests(1)
        await peer_stream.send_all(encode_frame(b"\xff\xff\xff"))
        with trio.fail_after(10):
            await call.waker.wait()
        assert isinstance(call.error, MalformedResponse) and call.error.indeterminate
        with trio.fail_after(10):
            await conn.done.wait()
        await peer_stream.aclose()
