"""The trio HTTP/2 + gRPC server (raftd.etcd.http2) against grpcio's client (a real
HTTP/2 stack nobody here wrote), with a stand-in service, in one process: flow control
both ways, deadlines, cancellation, errors, streams, and bad peers."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import trio
import trio.lowlevel
import trio.testing

from raftd.etcd import errors
from raftd.etcd.errors import EtcdError
from raftd.etcd.http2 import MAX_MESSAGE, EtcdH2Server
from raftd.etcd.status import StatusCode
from raftd.wire.pb.etcd import kv_pb2 as mvcc
from raftd.wire.pb.etcd import rpc_pb2 as epb


class InlineCall:
    """What an inline starter returns (``NamespaceService.start_write``'s contract)."""

    def __init__(self, deadline: float, finished: bool = False) -> None:
        self.deadline = deadline
        self.finished = finished
        self.on_expire: Callable[[], None] = lambda: None
        self.abandoned = False

    def expire(self) -> None:
        if not self.finished:
            self.finished = True
            self.on_expire()

    def abandon(self) -> None:
        self.finished = self.abandoned = True


class Service:
    """Answers Range with a value of the asked size (``limit`` bytes) (for the key
    ``gate``, once :attr:`gate` is set), Put by waiting until cancelled, Txn with an
    error, and Watch by echoing each create request's key ``limit`` times."""

    def __init__(self) -> None:
        self.inline_calls: list[InlineCall] = []
        self.cancelled = 0
        self.two_cancelled = trio.Event()
        self.gate = trio.Event()
        self.at_gate = trio.Event()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def unknown(req: Any, deadline: float) -> Any:
            raise errors.invalid(f"{name} not in this stand-in")

        return unknown

    async def range(self, req: epb.RangeRequest, deadline: float) -> epb.RangeResponse:
        if req.key == b"gate":
            self.at_gate.set()
            await self.gate.wait()
        out = epb.RangeResponse(count=1)
        out.kvs.append(mvcc.KeyValue(key=req.key, value=b"v" * req.limit))
        return out

    async def put(self, req: epb.PutRequest, deadline: float) -> epb.PutResponse:
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled += 1
            if self.cancelled == 2:
                self.two_cancelled.set()

    def put_start(self, req: epb.PutRequest, deadline: float, done: Any, spawn: Any) -> Any:
        """Inline for the keys ``now`` (answered at once), ``later`` (from a task, once
        :attr:`gate` is set), ``bad`` (an error) and ``never`` (expires at its
        deadline); the task path (:meth:`put`) for any other key."""
        if req.key == b"now":
            done(epb.PutResponse(header=epb.ResponseHeader(revision=1)))
            return InlineCall(deadline, True)
        if req.key == b"bad":
            done(errors.LEASE_NOT_FOUND)
            return InlineCall(deadline, True)
        if req.key == b"later":
            call = InlineCall(deadline)

            async def answer() -> None:
                await self.gate.wait()
                call.finished = True
                done(epb.PutResponse(header=epb.ResponseHeader(revision=2)))

            spawn(answer)
            return call
        if req.key == b"never":
            call = InlineCall(deadline - 0.3)  # before the client gives up itself
            call.on_expire = lambda: done(errors.TIMEOUT)
            self.inline_calls.append(call)
            return call
        return None

    async def txn(self, req: epb.TxnRequest, deadline: float) -> epb.TxnResponse:
        raise EtcdError(StatusCode.FAILED_PRECONDITION, "etcdserver: nö, 100% sure")

    async def watch(self, requests: trio.MemoryReceiveChannel[Any], send: Any) -> None:
        async for req in requests:
            cr = req.create_request
            for i in range(cr.start_revision):
                resp = epb.WatchResponse(watch_id=i)
                resp.events.add().kv.key = cr.key
                await send(resp)


@pytest.fixture
async def server() -> AsyncIterator[tuple[EtcdH2Server, Service]]:
    svc = Service()
    srv = EtcdH2Server(svc, "127.0.0.1", 0)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.run)
        yield srv, svc
        nursery.cancel_scope.cancel()


def unary(ch: grpc.Channel, method: str, req_type: Any, resp_type: Any) -> Any:
    return ch.unary_unary(
        method,
        request_serializer=req_type.SerializeToString,
        response_deserializer=resp_type.FromString,
    )


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


async def test_large_messages_cross_flow_control_windows(
    server: tuple[EtcdH2Server, Service],
) -> None:
    srv, _ = server

    def call() -> list[int]:
        with grpc.insecure_channel(srv.target) as ch:
            rng = unary(ch, "/etcdserverpb.KV/Range", epb.RangeRequest, epb.RangeResponse)
            sizes = [0, 70_000, 3_000_000]
            got = [
                len(rng(epb.RangeRequest(key=b"k", limit=n), timeout=30).kvs[0].value)
                for n in sizes
            ]
            # a request near the limit comes in through our receive windows
            big = rng(epb.RangeRequest(key=b"x" * (MAX_MESSAGE - 100), limit=1), timeout=30)
            got.append(len(big.kvs[0].key))
            with pytest.raises(grpc.RpcError) as ei:
                rng(epb.RangeRequest(key=b"x" * (MAX_MESSAGE + 10)), timeout=30)
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return got

    assert await in_thread(call) == [0, 70_000, 3_000_000, MAX_MESSAGE - 100]


async def test_deadline_cancel_errors_unknown_method(server: tuple[EtcdH2Server, Service]) -> None:
    srv, svc = server

    def call() -> None:
        with grpc.insecure_channel(srv.target) as ch:
            put = unary(ch, "/etcdserverpb.KV/Put", epb.PutRequest, epb.PutResponse)
            with pytest.raises(grpc.RpcError) as ei:
                put(epb.PutRequest(key=b"k"), timeout=0.3)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            fut = put.future(epb.PutRequest(key=b"k"), timeout=30)
            assert not fut.done()
            fut.cancel()  # RST_STREAM: the handler is cancelled
            txn = unary(ch, "/etcdserverpb.KV/Txn", epb.TxnRequest, epb.TxnResponse)
            with pytest.raises(grpc.RpcError) as ei:
                txn(epb.TxnRequest(), timeout=5)
            assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert ei.value.details() == "etcdserver: nö, 100% sure"
            nope = unary(ch, "/etcdserverpb.KV/Nope", epb.TxnRequest, epb.TxnResponse)
            with pytest.raises(grpc.RpcError) as ei:
                nope(epb.TxnRequest(), timeout=5)
            assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED

    await in_thread(call)
    with trio.fail_after(10):  # the deadline's and the reset's handlers were cancelled
        await svc.two_cancelled.wait()


async def test_inline_calls_answer_without_a_task(server: tuple[EtcdH2Server, Service]) -> None:
    srv, svc = server

    def call() -> list[Any]:
        with grpc.insecure_channel(srv.target) as ch:
            put = unary(ch, "/etcdserverpb.KV/Put", epb.PutRequest, epb.PutResponse)
            out: list[Any] = [put(epb.PutRequest(key=b"now"), timeout=10).header.revision]
            later = put.future(epb.PutRequest(key=b"later"), timeout=10)
            trio.from_thread.run_sync(svc.gate.set)
            out.append(later.result().header.revision)
            for key, timeout in ((b"bad", 10.0), (b"never", 0.5)):
                with pytest.raises(grpc.RpcError) as ei:
                    put(epb.PutRequest(key=key), timeout=timeout)
                out.append((ei.value.code(), ei.value.details()))
            # A call left waiting when the client goes away is abandoned.
            put.future(epb.PutRequest(key=b"never"), timeout=60)
            until = time.monotonic() + 10
            while len(svc.inline_calls) < 2 and time.monotonic() < until:
                time.sleep(0.01)
        return out

    spawned: list[str] = []

    class Spawns(trio.abc.Instrument):
        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            spawned.append(task.name.rpartition(".")[2])

    spawns = Spawns()
    trio.lowlevel.add_instrument(spawns)
    try:
        got = await in_thread(call)
    finally:
        trio.lowlevel.remove_instrument(spawns)
    assert "_run_unary" not in spawned, spawned
    assert got[:2] == [1, 2]
    assert got[2] == (grpc.StatusCode.NOT_FOUND, errors.LEASE_NOT_FOUND.message)
    assert got[3] == (grpc.StatusCode.UNAVAILABLE, errors.TIMEOUT.message)
    with trio.fail_after(10):
        while not svc.inline_calls[1].abandoned:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert not svc.inline_calls[0].abandoned  # it expired and was answered


async def test_bidirectional_stream_beyond_the_window(server: tuple[EtcdH2Server, Service]) -> None:
    srv, _ = server
    key = b"w" * 1000  # 2,000 responses of about 1 KB: several windows' worth

    def call() -> int:
        with grpc.insecure_channel(srv.target) as ch:
            watch = ch.stream_stream(
                "/etcdserverpb.Watch/Watch",
                request_serializer=epb.WatchRequest.SerializeToString,
                response_deserializer=epb.WatchResponse.FromString,
            )
            reqs = [
                epb.WatchRequest(
                    create_request=epb.WatchCreateRequest(key=key, start_revision=1000)
                )
            ] * 2
            n = 0
            for resp in watch(iter(reqs), timeout=60):
                assert resp.events[0].kv.key == key and resp.watch_id == n % 1000
                n += 1
            return n

    assert await in_thread(call) == 2000


async def test_bad_peers_do_not_disturb_others(server: tuple[EtcdH2Server, Service]) -> None:
    srv, _ = server
    # Not HTTP/2: closed without an answer.
    s1 = trio.socket.socket()
    await s1.connect(("127.0.0.1", srv.port))
    await s1.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 20)
    with trio.fail_after(15):
        assert await s1.recv(100) == b""
    s1.close()
    # A frame larger than the 16 KiB we allow: GOAWAY (type 7, FRAME_SIZE_ERROR), closed.
    s2 = trio.socket.socket()
    await s2.connect(("127.0.0.1", srv.port))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    await s2.send(preface + bytes([0x01, 0x00, 0x00, 0, 0, 0, 0, 0, 1]))
    got = b""
    with trio.fail_after(15):
        while chunk := await s2.recv(65536):
            got += chunk
    s2.close()
    frames = []
    while len(got) >= 9:
        n = int.from_bytes(got[:3], "big")
        frames.append((got[3], got[9 : 9 + n]))
        got = got[9 + n :]
    goaway = [p for t, p in frames if t == 7]
    assert goaway and int.from_bytes(goaway[0][4:8], "big") == 0x6
    # A connection that goes away mid-call.
    s3 = socket.create_connection(("127.0.0.1", srv.port))
    s3.sendall(preface)
    s3.close()

    def call() -> int:
        with grpc.insecure_channel(srv.target) as ch:
            rng = unary(ch, "/etcdserverpb.KV/Range", epb.RangeRequest, epb.RangeResponse)
            return len(rng(epb.RangeRequest(key=b"k", limit=5), timeout=10).kvs[0].value)

    assert await in_thread(call) == 5


def _h2_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + sid.to_bytes(4, "big") + payload
    )


def _h2_call(enc: Any, sid: int, path: str, msg: bytes) -> bytes:
    block = enc.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    return _h2_frame(1, 0x4, sid, block) + _h2_frame(0, 0x1, sid, body)


async def _h2_frames_until(
    sock: Any, done: Callable[[list[tuple[int, int, int]]], bool]
) -> list[list[tuple[int, int, int]]]:
    """Frames (type, flags, stream) grouped by the ``recv`` that brought them, until
    ``done`` holds for all received so far."""
    chunks: list[list[tuple[int, int, int]]] = []
    buf = b""
    seen: list[tuple[int, int, int]] = []
    with trio.fail_after(15):
        while not done(seen):
            data = await sock.recv(65536)
            assert data, "connection closed"
            buf += data
            got = []
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                n = int.from_bytes(buf[:3], "big")
                got.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big")))
                buf = buf[9 + n :]
            chunks.append(got)
            seen.extend(got)
    return chunks


async def test_ping_ack_rides_with_the_next_answer_while_calls_are_in_flight(
    server: tuple[EtcdH2Server, Service],
) -> None:
    import hpack

    srv, svc = server
    ack = (6, 1, 0)
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", srv.port))
    enc = hpack.Encoder()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0)
    # No call in flight (an idle client's keepalive): acknowledged at once.
    await sock.send(preface + _h2_frame(6, 0, 0, b"12345678"))
    await _h2_frames_until(sock, lambda seen: ack in seen)
    # A Range is in flight, held at the gate: a PING that follows it is not answered on
    # its own...
    req = epb.RangeRequest(key=b"gate").SerializeToString()
    await sock.send(
        _h2_call(enc, 1, "/etcdserverpb.KV/Range", req) + _h2_frame(6, 0, 0, b"abcdefgh")
    )
    with trio.fail_after(15):
        await svc.at_gate.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert select.select([sock.fileno()], [], [], 0)[0] == []  # nothing came
    # ...but leaves with the answer, in the same write and after it (a grpc-go client
    # takes the answer's DATA while its ping is outstanding: no new ping for it).
    svc.gate.set()
    chunks = await _h2_frames_until(sock, lambda seen: ack in seen and (1, 5, 1) in seen)
    together = [c for c in chunks if ack in c and (1, 5, 1) in c]
    assert together, chunks
    assert together[0].index((1, 5, 1)) < together[0].index(ack)
    # With only a Put that never ends in flight, a PING is still answered, after the
    # bounded delay.
    put = epb.PutRequest(key=b"k").SerializeToString()
    await sock.send(_h2_call(enc, 3, "/etcdserverpb.KV/Put", put) + _h2_frame(6, 0, 0, b"zzzzzzzz"))
    await _h2_frames_until(sock, lambda seen: ack in seen)
    sock.close()
