"""The etcd v3 gRPC endpoint served in the daemon's trio loop: HTTP/2 (RFC 9113) and
gRPC's framing, written for what gRPC over HTTP/2 uses, with :mod:`raftd.etcd.hpackdec`
(on the ``hpack`` package's tables) for header decoding.

Why not grpcio: its per-call cost in Python (its asyncio server) plus the hand-over
between its thread and trio cost more CPU than the rest of a put (measured in the
README). Here a call costs one HEADERS and one DATA frame parsed on the trio thread, and
its answer is three frames appended to the connection's send buffer, which one writer
task sends with everything else that is ready (one ``send`` for many answers).

What is implemented, per connection (:class:`_Conn`):

- the preface and SETTINGS exchange; PING answered (see :data:`PING_ACK_DELAY_S`);
  GOAWAY sent at shutdown and obeyed when received; PRIORITY and unknown frames ignored;
- HEADERS and CONTINUATION decoded with the peer's dynamic table; our own
  header blocks use no dynamic table (static-table names and literals), so the peer's
  SETTINGS_HEADER_TABLE_SIZE never matters;
- flow control both ways: inbound windows are large (a whole request of the 4 MiB limit
  fits) and replenished as data arrives; outbound DATA waits for the peer's connection
  and stream windows;
- gRPC: length-prefixed messages (compression is refused), ``grpc-timeout`` deadlines,
  status and message in trailers (``grpc-message`` percent-encoded), unary, client
  streaming and server streaming calls, RST_STREAM cancelling a call's task.

Every read is bounded (the preface within :data:`HANDSHAKE_S`; a peer that stops
reading while we have data for it is dropped after :data:`SEND_TIMEOUT_S`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import ssl
import struct
import tempfile
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from raftd.api.deadlines import DeadlineHeap
from raftd.etcd.endpoint import TlsFiles
from raftd.etcd.errors import EtcdError
from raftd.etcd.hpackdec import HeaderBlockError, HeaderDecoder
from raftd.etcd.service import EtcdService
from raftd.etcd.status import StatusCode
from raftd.netio.sockio import SocketIO
from raftd.wire.pb.etcd import rpc_pb2 as epb

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["EtcdH2Server"]

log = logging.getLogger("raftd.etcd")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Deadline of a call that came without ``grpc-timeout``.
DEFAULT_TIMEOUT_S = 30.0
#: Time for a new connection's TLS handshake and HTTP/2 preface.
HANDSHAKE_S = 10.0
#: A peer that reads nothing of what we send for this long is disconnected.
SEND_TIMEOUT_S = 30.0
#: While unary calls are in flight on a connection, a PING is acknowledged with the next
#: answer, or after this long at the latest. grpc-go clients (etcd's clientv3 among them)
#: ping after every burst of DATA they receive to estimate the bandwidth-delay product;
#: with small answers the estimate never settles, so without this every answer cost a
#: second ``send`` for the lone 17-byte acknowledgement (half the writes on the endpoint
#: under load). With no unary call in flight (keepalive pings of an idle or watching
#: client) the acknowledgement goes out at once, as RFC 9113 §6.7 asks.
PING_ACK_DELAY_S = 0.05
#: Largest request message (grpcio's and etcd's default limit).
MAX_MESSAGE = 4 << 20
#: Largest header block (HEADERS and its CONTINUATIONs) accepted.
MAX_HEADER_BLOCK = 64 << 10
#: Concurrent calls per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
MAX_STREAMS = 1024
#: Requests of one stream read but not yet taken by its handler.
STREAM_QUEUE = 256
#: Our receive windows: a whole maximal request fits in one stream's window.
STREAM_WINDOW = MAX_MESSAGE + 1024
CONN_WINDOW = 4 * STREAM_WINDOW

# frame types and flags
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT = range(10)
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIO = 0x20
# error codes
_NO_ERROR, _PROTOCOL_ERROR, _FLOW_CONTROL_ERROR, _FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
_REFUSED_STREAM, _CANCEL, _COMPRESSION_ERROR = 0x7, 0x8, 0x9
_S_INITIAL_WINDOW, _S_MAX_FRAME = 0x4, 0x5

_HDR = struct.Struct(">I")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class _ConnectionError(Exception):
    """A connection-level protocol error: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return bytes((n >> 16, (n >> 8) & 0xFF, n & 0xFF, ftype, flags)) + _HDR.pack(sid) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes | int, value: bytes) -> bytes:
    """A literal header field without indexing (RFC 7541 §6.2.2): nothing enters the
    peer's dynamic table. ``name``: a static table index, or the name itself."""
    if isinstance(name, int):
        head = _hpack_int(name, 4, 0x00)
    else:
        head = b"\x00" + _hpack_int(len(name), 7, 0) + name
    return head + _hpack_int(len(value), 7, 0) + value


# ":status: 200" is static entry 8; "content-type" is static entry 31.
_RESPONSE_HEADERS = b"\x88" + _literal(31, b"application/grpc")
_TRAILERS_OK = _literal(b"grpc-status", b"0")


def _grpc_message(text: str) -> bytes:
    """Percent-encoding as gRPC's spec asks for ``grpc-message``."""
    out = bytearray()
    for b in text.encode():
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


def _trailers(code: StatusCode, message: str) -> bytes:
    return _literal(b"grpc-status", str(int(code)).encode()) + _literal(
        b"grpc-message", _grpc_message(message)
    )


def _timeout_s(value: bytes | None) -> float:
    if not value:
        return DEFAULT_TIMEOUT_S
    s = value.decode("ascii", "replace")
    unit = _TIMEOUT_UNITS.get(s[-1:])
    if unit is None or not s[:-1].isdigit():
        return DEFAULT_TIMEOUT_S
    return int(s[:-1]) * unit


Unary = Callable[[Any, float], Awaitable[Any]]
Streaming = Callable[[Any, Callable[[Any], Awaitable[None]]], Awaitable[None]]
_UNARY, _STREAM, _SERVER_STREAM = 0, 1, 2


def method_table(s: EtcdService) -> dict[str, tuple[Any, ...]]:
    """Every etcd method served: gRPC path -> (kind, handler, request type[, inline
    starter]). An inline starter serves the usual case of a unary call without a task
    (:meth:`EtcdService.put_start`); when it declines, the handler runs in a task."""
    u, st = _UNARY, _STREAM
    return {
        "/etcdserverpb.KV/Range": (u, s.range, epb.RangeRequest),
        "/etcdserverpb.KV/Put": (u, s.put, epb.PutRequest, s.put_start),
        "/etcdserverpb.KV/DeleteRange": (u, s.delete_range, epb.DeleteRangeRequest),
        "/etcdserverpb.KV/Txn": (u, s.txn, epb.TxnRequest),
        "/etcdserverpb.KV/Compact": (u, s.compact, epb.CompactionRequest),
        "/etcdserverpb.Watch/Watch": (st, s.watch, epb.WatchRequest),
        "/etcdserverpb.Lease/LeaseGrant": (u, s.lease_grant, epb.LeaseGrantRequest),
        "/etcdserverpb.Lease/LeaseRevoke": (u, s.lease_revoke, epb.LeaseRevokeRequest),
        "/etcdserverpb.Lease/LeaseKeepAlive": (st, s.lease_keepalive, epb.LeaseKeepAliveRequest),
        "/etcdserverpb.Lease/LeaseTimeToLive": (
            u,
            s.lease_time_to_live,
            epb.LeaseTimeToLiveRequest,
        ),
        "/etcdserverpb.Lease/LeaseLeases": (u, s.lease_leases, epb.LeaseLeasesRequest),
        "/etcdserverpb.Cluster/MemberAdd": (u, s.member_add, epb.MemberAddRequest),
        "/etcdserverpb.Cluster/MemberRemove": (u, s.member_remove, epb.MemberRemoveRequest),
        "/etcdserverpb.Cluster/MemberUpdate": (u, s.member_update, epb.MemberUpdateRequest),
        "/etcdserverpb.Cluster/MemberList": (u, s.member_list, epb.MemberListRequest),
        "/etcdserverpb.Cluster/MemberPromote": (u, s.member_promote, epb.MemberPromoteRequest),
        "/etcdserverpb.Maintenance/Alarm": (u, s.alarm, epb.AlarmRequest),
        "/etcdserverpb.Maintenance/Status": (u, s.status, epb.StatusRequest),
        "/etcdserverpb.Maintenance/Defragment": (u, s.defragment, epb.DefragmentRequest),
        "/etcdserverpb.Maintenance/Hash": (u, s.hash, epb.HashRequest),
        "/etcdserverpb.Maintenance/HashKV": (u, s.hash_kv, epb.HashKVRequest),
        "/etcdserverpb.Maintenance/Snapshot": (_SERVER_STREAM, s.snapshot, epb.SnapshotRequest),
        "/etcdserverpb.Maintenance/MoveLeader": (u, s.move_leader, epb.MoveLeaderRequest),
        "/etcdserverpb.Auth/Authenticate": (u, s.authenticate, epb.AuthenticateRequest),
    }


class _Stream:
    """One call (an HTTP/2 stream)."""

    __slots__ = (
        "closed",
        "deadline",
        "handler",
        "headers_sent",
        "inline",
        "kind",
        "rbuf",
        "recv_ch",
        "req_type",
        "requests",
        "scope",
        "send_ch",
        "sid",
        "window",
    )

    def __init__(self, sid: int, window: int) -> None:
        self.sid = sid
        self.window = window  # what we may still send on it
        self.rbuf = b""
        self.kind = _UNARY
        self.handler: Callable[..., Any] | None = None
        self.inline: Callable[..., Any] | None = None
        self.req_type: Any = None
        self.requests: list[Any] = []
        self.deadline = math.inf
        self.headers_sent = False
        self.closed = False  # trailers sent
        self.scope: trio.CancelScope | None = None
        self.send_ch: trio.MemorySendChannel[Any] | None = None
        self.recv_ch: trio.MemoryReceiveChannel[Any] | None = None


class _Conn:
    """One client connection: a reader loop (this task), a writer task, a deadline timer,
    and one task per call except those served inline (see :func:`method_table`), all in
    one nursery."""

    def __init__(self, stream: trio.abc.Stream, methods: dict[bytes, Any]) -> None:
        self.stream = stream
        self.io = SocketIO(stream)
        self.methods = methods
        self.decoder = HeaderDecoder()
        self.out = bytearray()
        self.out_ready = trio.Event()
        self.window_changed = trio.Event()
        self.streams: dict[int, _Stream] = {}
        #: Calls served inline (see :func:`method_table`), by deadline.
        self.deadlines = DeadlineHeap()
        self.send_window = 65535  # the peer's connection window
        self.peer_initial = 65535
        self.peer_max_frame = 16384
        self.last_sid = 0
        self.unacked_in = 0  # received on the connection, not yet given back
        self.going_away = False
        self.nursery: trio.Nursery | None = None
        self.unary_in_flight = 0
        self.acks = bytearray()  # deferred PING acknowledgements...
        self.flush_at = math.inf  # ...due then
        self.writer_scope: trio.CancelScope | None = None

    # -- output -----------------------------------------------------------------------------
    def _queue(self, data: bytes) -> None:
        self.out += data
        self.out_ready.set()

    def _queue_ping_ack(self, payload: bytes) -> None:
        ack = _frame(_PING, _ACK, 0, payload)
        if not self.unary_in_flight:
            self._queue(ack)
            return
        # Rides with the next answer (see PING_ACK_DELAY_S): no wake-up of the writer.
        # It goes after that answer, so a grpc-go client has taken the answer's DATA
        # while its ping was still outstanding, and does not ping again for it.
        self.acks += ack
        if self.flush_at == math.inf:
            self.flush_at = trio.current_time() + PING_ACK_DELAY_S
            if self.writer_scope is not None:
                self.writer_scope.deadline = self.flush_at

    async def _writer(self) -> None:
        while True:
            with trio.CancelScope(deadline=self.flush_at) as self.writer_scope:
                await self.out_ready.wait()
            self.writer_scope = None
            self.out_ready = trio.Event()
            if self.acks:
                self.out += self.acks
                self.acks = bytearray()
            if not self.out:
                continue
            data, self.out = bytes(self.out), bytearray()
            self.flush_at = math.inf
            if not await self.io.send_all_within(data, SEND_TIMEOUT_S):
                raise trio.TooSlowError(f"peer read nothing for {SEND_TIMEOUT_S} s")

    def _settings(self) -> bytes:
        payload = struct.pack(">HIHI", 0x3, MAX_STREAMS, _S_INITIAL_WINDOW, STREAM_WINDOW)
        return _frame(_SETTINGS, 0, 0, payload) + _frame(
            _WINDOW, 0, 0, _HDR.pack(CONN_WINDOW - 65535)
        )

    # -- reading ----------------------------------------------------------------------------
    async def serve(self) -> None:
        buf = b""
        with trio.fail_after(HANDSHAKE_S):
            while len(buf) < len(PREFACE):
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    return
                buf += chunk
        if not buf.startswith(PREFACE):
            return  # not HTTP/2 with prior knowledge: nothing to answer
        buf = buf[len(PREFACE) :]
        goaway = b""
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self.deadlines.run)
                self._queue(self._settings())
                try:
                    await self._read_loop(buf)
                except _ConnectionError as exc:
                    log.debug("etcd client connection error: %s", exc)
                    goaway = _frame(_GOAWAY, 0, 0, _HDR.pack(self.last_sid) + _HDR.pack(exc.code))
                nursery.cancel_scope.cancel()
        finally:
            self.deadlines.abandon_all()  # calls still waiting: nobody to answer now
        if goaway:  # best effort: the connection is closed next anyway
            with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError):
                await self.stream.send_all(goaway)

    async def _read_loop(self, buf: bytes) -> None:
        pos = 0
        cont: tuple[int, int, bytearray] | None = None  # HEADERS awaiting CONTINUATION
        while True:
            while len(buf) - pos >= 9:
                n = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
                if n > 16384:
                    raise _ConnectionError(_FRAME_SIZE_ERROR, f"frame of {n} bytes")
                if len(buf) - pos < 9 + n:
                    break
                ftype, flags = buf[pos + 3], buf[pos + 4]
                sid = _HDR.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
                payload = buf[pos + 9 : pos + 9 + n]
                pos += 9 + n
                if cont is not None:
                    if ftype != _CONT or sid != cont[0]:
                        raise _ConnectionError(_PROTOCOL_ERROR, "expected CONTINUATION")
                    cont[2].extend(payload)
                    if len(cont[2]) > MAX_HEADER_BLOCK:
                        raise _ConnectionError(_PROTOCOL_ERROR, "header block too large")
                    if flags & _END_HEADERS:
                        self._on_headers(sid, cont[1], bytes(cont[2]))
                        cont = None
                    continue
                if ftype == _DATA:
                    self._on_data(sid, flags, payload)
                elif ftype == _HEADERS:
                    block = self._strip(flags, payload, prio=True)
                    if flags & _END_HEADERS:
                        self._on_headers(sid, flags, block)
                    else:
                        cont = (sid, flags, bytearray(block))
                elif ftype == _SETTINGS:
                    if not flags & _ACK:
                        self._on_settings(payload)
                elif ftype == _PING:
                    if not flags & _ACK:
                        self._queue_ping_ack(payload)
                elif ftype == _WINDOW:
                    self._on_window(sid, _HDR.unpack(payload[:4])[0] & 0x7FFFFFFF)
                elif ftype == _RST:
                    st = self.streams.pop(sid, None)
                    if st is not None:
                        st.closed = True  # nothing more goes out on it
                        if st.scope is not None:
                            st.scope.cancel()
                elif ftype == _GOAWAY:
                    self.going_away = True
                elif ftype == _CONT:
                    raise _ConnectionError(_PROTOCOL_ERROR, "unexpected CONTINUATION")
            buf = buf[pos:]
            pos = 0
            data = await self.io.receive_some(1 << 18)
            if not data:
                return
            buf = buf + data if buf else data

    @staticmethod
    def _strip(flags: int, payload: bytes, *, prio: bool = False) -> bytes:
        start, end = 0, len(payload)
        if flags & _PADDED:
            if not payload:
                raise _ConnectionError(_PROTOCOL_ERROR, "bad padding")
            start, end = 1, end - payload[0]
        if prio and flags & _PRIO:
            start += 5
        if end < start:
            raise _ConnectionError(_PROTOCOL_ERROR, "bad padding")
        return payload[start:end]

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "bad SETTINGS")
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack_from(">HI", payload, i)
            if ident == _S_INITIAL_WINDOW:
                if value > 0x7FFFFFFF:
                    raise _ConnectionError(_FLOW_CONTROL_ERROR, "window too large")
                delta = value - self.peer_initial
                self.peer_initial = value
                for st in self.streams.values():
                    st.window += delta
                self._windows_changed()
            elif ident == _S_MAX_FRAME:
                if not 16384 <= value <= 16777215:
                    raise _ConnectionError(_PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
        self._queue(_frame(_SETTINGS, _ACK, 0))

    def _on_window(self, sid: int, inc: int) -> None:
        if sid == 0:
            self.send_window += inc
        else:
            st = self.streams.get(sid)
            if st is not None:
                st.window += inc
        self._windows_changed()

    def _windows_changed(self) -> None:
        self.window_changed.set()
        self.window_changed = trio.Event()

    def _on_headers(self, sid: int, flags: int, block: bytes) -> None:
        try:
            h = self.decoder.decode(block)
        except HeaderBlockError as exc:
            raise _ConnectionError(_COMPRESSION_ERROR, f"bad header block: {exc}") from None
        if sid in self.streams:  # trailers from the client: the end of its input
            if flags & _END_STREAM:
                self._end_input(self.streams[sid])
            return
        if sid % 2 == 0 or sid <= self.last_sid:
            raise _ConnectionError(_PROTOCOL_ERROR, f"bad stream id {sid}")
        self.last_sid = sid
        if self.going_away or len(self.streams) >= MAX_STREAMS:
            self._queue(_frame(_RST, 0, sid, _HDR.pack(_REFUSED_STREAM)))
            return
        st = _Stream(sid, self.peer_initial)
        self.streams[sid] = st
        m = self.methods.get(h.get(b":path", b""))
        if m is None:
            self._finish(st, StatusCode.UNIMPLEMENTED, "unknown service or method")
            return
        enc = h.get(b"grpc-encoding", b"identity")
        if enc != b"identity":
            self._finish(st, StatusCode.UNIMPLEMENTED, "compression is not supported")
            return
        st.kind, st.handler, st.req_type = m[:3]
        if len(m) > 3:
            st.inline = m[3]
        st.deadline = trio.current_time() + _timeout_s(h.get(b"grpc-timeout"))
        if st.kind != _UNARY:
            send_ch, recv_ch = trio.open_memory_channel[Any](STREAM_QUEUE)
            st.send_ch, st.recv_ch = send_ch, recv_ch
            assert self.nursery is not None
            self.nursery.start_soon(self._run_stream, st)
        if flags & _END_STREAM:
            self._end_input(st)

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        self.unacked_in += len(payload)
        if self.unacked_in > CONN_WINDOW:
            raise _ConnectionError(_FLOW_CONTROL_ERROR, "sent beyond the connection window")
        if self.unacked_in >= CONN_WINDOW // 2:
            self._queue(_frame(_WINDOW, 0, 0, _HDR.pack(self.unacked_in)))
            self.unacked_in = 0
        st = self.streams.get(sid)
        if st is None or st.closed:
            return  # a call already answered or reset: its data is dropped
        data = self._strip(flags, payload)
        if len(payload) and st.kind != _UNARY:
            self._queue(_frame(_WINDOW, 0, sid, _HDR.pack(len(payload))))
        buf = st.rbuf + data if st.rbuf else data
        pos = 0
        while len(buf) - pos >= 5:
            size = _HDR.unpack_from(buf, pos + 1)[0]
            if buf[pos]:
                self._fail(st, StatusCode.UNIMPLEMENTED, "compressed messages")
                return
            if size > MAX_MESSAGE:
                self._fail(
                    st,
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"received message larger than max ({size} vs. {MAX_MESSAGE})",
                )
                return
            if len(buf) - pos < 5 + size:
                break
            try:
                req = st.req_type.FromString(buf[pos + 5 : pos + 5 + size])
            except Exception:
                self._fail(st, StatusCode.INTERNAL, "cannot parse the request")
                return
            pos += 5 + size
            if st.kind == _UNARY:
                if st.requests:
                    self._fail(st, StatusCode.INTERNAL, "a unary call takes one request")
                    return
                st.requests.append(req)
            else:
                assert st.send_ch is not None
                try:
                    st.send_ch.send_nowait(req)
                except trio.WouldBlock:
                    self._fail(st, StatusCode.RESOURCE_EXHAUSTED, "too many requests queued")
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the handler has finished: its answer is on the way
        st.rbuf = buf[pos:]
        if flags & _END_STREAM:
            self._end_input(st)

    def _end_input(self, st: _Stream) -> None:
        if st.kind != _UNARY:
            if st.send_ch is not None:
                st.send_ch.close()
            return
        if st.closed:
            return
        if len(st.requests) != 1 or st.rbuf:
            self._fail(st, StatusCode.INTERNAL, "a unary call needs exactly one request")
            return
        assert self.nursery is not None
        self.unary_in_flight += 1
        req = st.requests.pop()
        if st.inline is not None:
            call = st.inline(
                req, st.deadline, functools.partial(self._inline_done, st), self.nursery.start_soon
            )
            if call is not None:
                if not call.finished:
                    self.deadlines.track(call)
                return
        self.nursery.start_soon(self._run_unary, st, req)

    def _inline_done(self, st: _Stream, result: Any) -> None:
        """The answer of a call served inline: a response message or an EtcdError."""
        if st.closed:  # reset by the client meanwhile
            self._unary_done()
        elif isinstance(result, EtcdError):
            self._finish(st, result.code, result.message)
            self._unary_done()
        elif self._answer_now(st, result):
            self._unary_done()
        else:
            assert self.nursery is not None
            self.nursery.start_soon(self._answer_later, st, result)

    async def _answer_later(self, st: _Stream, msg: Any) -> None:
        try:
            with trio.CancelScope(deadline=st.deadline) as scope:
                st.scope = scope
                await self._send(st, msg)
                self._finish(st, StatusCode.OK)
            if scope.cancelled_caught and not st.closed:
                self._finish(st, StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
        finally:
            self._unary_done()

    def _unary_done(self) -> None:
        self.unary_in_flight -= 1
        if not self.unary_in_flight and self.flush_at != math.inf:
            self.out_ready.set()  # no answer left for a PING ack to ride with

    def _fail(self, st: _Stream, code: StatusCode, message: str) -> None:
        if st.scope is not None:
            st.scope.cancel()
        self._finish(st, code, message)

    # -- answering ---------------------------------------------------------------------------
    def _finish(self, st: _Stream, code: StatusCode, message: str = "") -> None:
        """Trailers (or a trailers-only answer) ending the call."""
        if st.closed:
            return
        st.closed = True
        self.streams.pop(st.sid, None)
        block = _TRAILERS_OK if code == StatusCode.OK else _trailers(code, message)
        if not st.headers_sent:
            block = _RESPONSE_HEADERS + block
        self._queue(_frame(_HEADERS, _END_HEADERS | _END_STREAM, st.sid, block))

    async def _send(self, st: _Stream, msg: Any) -> None:
        """One response message, within the peer's flow-control windows."""
        body = msg.SerializeToString()
        data = b"\x00" + _HDR.pack(len(body)) + body
        if not st.headers_sent:
            st.headers_sent = True
            self._queue(_frame(_HEADERS, _END_HEADERS, st.sid, _RESPONSE_HEADERS))
        pos = 0
        while pos < len(data):
            if st.closed:
                return  # reset by the client: its scope is cancelled too
            n = min(len(data) - pos, self.send_window, st.window, self.peer_max_frame)
            if n <= 0:
                await self.window_changed.wait()
                continue
            self._queue(_frame(_DATA, 0, st.sid, data[pos : pos + n]))
            self.send_window -= n
            st.window -= n
            pos += n

    def _answer_now(self, st: _Stream, msg: Any) -> bool:
        """A unary answer when the windows allow it at once (the usual case): headers,
        message and trailers in one go. False if it must wait for window."""
        body = msg.SerializeToString()
        n = len(body) + 5
        if n > min(self.send_window, st.window, self.peer_max_frame):
            return False
        self.send_window -= n
        st.window -= n
        st.headers_sent = st.closed = True
        self.streams.pop(st.sid, None)
        sid = st.sid
        self._queue(
            _frame(_HEADERS, _END_HEADERS, sid, _RESPONSE_HEADERS)
            + _frame(_DATA, 0, sid, b"\x00" + _HDR.pack(len(body)) + body)
            + _frame(_HEADERS, _END_HEADERS | _END_STREAM, sid, _TRAILERS_OK)
        )
        return True

    async def _run_unary(self, st: _Stream, req: Any) -> None:
        try:
            with trio.CancelScope(deadline=st.deadline) as scope:
                st.scope = scope
                try:
                    resp = await st.handler(req, st.deadline)  # type: ignore[misc]
                    if not self._answer_now(st, resp):
                        await self._send(st, resp)
                        self._finish(st, StatusCode.OK)
                    return
                except EtcdError as exc:
                    self._finish(st, exc.code, exc.message)
                    return
                except Exception as exc:
                    log.exception("etcd call failed")
                    self._finish(st, StatusCode.UNKNOWN, f"etcdserver: {exc}")
                    return
            if scope.cancelled_caught and not st.closed:
                self._finish(st, StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
        finally:
            self._unary_done()

    async def _run_stream(self, st: _Stream) -> None:
        assert st.recv_ch is not None
        fn = st.handler
        assert fn is not None

        async def send(msg: Any) -> None:
            await self._send(st, msg)

        with trio.CancelScope() as scope:
            st.scope = scope
            try:
                async with st.recv_ch:
                    if st.kind == _SERVER_STREAM:
                        async for req in st.recv_ch:
                            await fn(req, send)
                            break
                    else:
                        await fn(st.recv_ch, send)
                self._finish(st, StatusCode.OK)
            except EtcdError as exc:
                self._finish(st, exc.code, exc.message)
            except Exception as exc:
                log.exception("etcd stream failed")
                self._finish(st, StatusCode.UNKNOWN, f"etcdserver: {exc}")


class EtcdH2Server:
    """Serves ``service`` on ``host:port`` in the calling trio loop (see the module doc).
    ``port`` 0 picks a free one; :attr:`port` is the bound port once :meth:`run` has
    started."""

    def __init__(
        self, service: EtcdService, host: str, port: int, *, tls: TlsFiles | None = None
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.tls = tls
        self.methods = {path.encode(): m for path, m in method_table(service).items()}
        self._ssl: ssl.SSLContext | None = self._ssl_context(tls) if tls is not None else None

    @property
    def target(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @staticmethod
    def _ssl_context(tls: TlsFiles) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["h2"])
        with tempfile.TemporaryDirectory(prefix="raftd-etcd-tls-") as d:
            cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            for path, data in ((cert, tls.cert), (key, tls.key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(cert, key)
        if tls.client_ca is not None:
            ctx.load_verify_locations(cadata=tls.client_ca.decode())
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, serve until cancelled. OSError if the address cannot be bound."""
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as exc:
            raise OSError(
                f"etcd endpoint {self.target}: cannot listen: {exc.strerror or exc}"
            ) from None
        self.port = listeners[0].socket.getsockname()[1]
        log.info("etcd v3 API on %s%s", self.target, " (TLS)" if self._ssl else "")
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started()

    async def _connection(self, tcp: trio.SocketStream) -> None:
        with contextlib.suppress(OSError):
            tcp.setsockopt(6, 1, 1)  # TCP_NODELAY
        stream: trio.abc.Stream = tcp
        try:
            if self._ssl is not None:
                tls = trio.SSLStream(tcp, self._ssl, server_side=True)
                with trio.fail_after(HANDSHAKE_S):
                    await tls.do_handshake()
                stream = tls
            await _Conn(stream, self.methods).serve()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as eg:
            log.debug("etcd client connection closed: %r", eg.exceptions[0])
        except* ssl.SSLError as eg:
            log.debug("etcd client TLS failed: %s", eg.exceptions[0])
        except* Exception:  # one client's connection never ends the endpoint
            log.exception("etcd client connection failed")
        finally:
            await trio.aclose_forcefully(stream)
