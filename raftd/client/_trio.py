"""The trio client: one connection per client, reused and pipelined (a writer task batches
queued requests into one write, a reader task routes responses by id).

Use it as an async context manager, which owns the background tasks::

    async with raftd.client.open_client() as c:
        await c.put("k", "v")
"""

# ``timeout=`` arguments are the request's deadline *sent to the daemon* (which answers
# by then); waiting is bounded by trio cancel scopes as usual.
# ruff: noqa: ASYNC109

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from raftd.client import _proto as P
from raftd.client._proto import (
    CasResult,
    Compacted,
    ConnectionLost,
    DeadlineExceeded,
    DeleteResult,
    Event,
    GroupStatus,
    KeyValue,
    Lease,
    LeaseInfo,
    LeaseTTL,
    Member,
    PutResult,
    RaftdError,
    RangeResult,
    TxnResult,
)
from raftd.wire.framing import FrameDecoder, FrameError, encode_frame
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb

__all__ = ["AsyncClient", "AsyncWatch", "open_client"]

T = TypeVar("T")
_MARGIN = 2.0


class _Slot:
    __slots__ = ("error", "event", "response", "write")

    def __init__(self, write: bool) -> None:
        self.event = trio.Event()
        self.response: apb.Response | None = None
        self.error: RaftdError | None = None
        self.write = write


class _AsyncConn:
    def __init__(self, stream: trio.abc.Stream, max_frame_size: int) -> None:
        self.stream = stream
        self.pending: dict[int, _Slot | trio.MemorySendChannel[Any]] = {}
        self.writes: dict[int, bool] = {}
        self.namespaces: dict[int, str] = {}  # of watches, to cancel them
        self.ids = itertools.count(1)
        self.outq: list[bytes] = []
        self.wake = trio.Event()
        self.closed = False
        self.error = ""
        self.max_frame_size = max_frame_size
        self.done = trio.Event()

    def register(self, req: apb.Request, sink: _Slot | trio.MemorySendChannel[Any]) -> int:
        if self.closed:
            raise ConnectionLost(self.error or "connection closed")
        rid = next(self.ids)
        req.id = rid
        self.pending[rid] = sink
        self.writes[rid] = P.is_write(req)
        if req.WhichOneof("op") == "watch":
            self.namespaces[rid] = req.namespace
        self.outq.append(encode_frame(req.SerializeToString()))
        self.wake.set()
        return rid

    def forget(self, rid: int) -> None:
        self.pending.pop(rid, None)
        self.writes.pop(rid, None)
        self.namespaces.pop(rid, None)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._writer)
                await self._reader()
                n.cancel_scope.cancel()
        except Exception as exc:
            self.error = self.error or f"connection failed: {exc!r}"
        finally:
            self._fail(self.error or "connection closed by the daemon")
            with contextlib.suppress(Exception):
                await trio.aclose_forcefully(self.stream)
            self.done.set()

    async def _writer(self) -> None:
        while True:
            while not self.outq:
                self.wake = trio.Event()
                await self.wake.wait()
                if self.closed:
                    return
            data, self.outq = b"".join(self.outq), []
            await self.stream.send_all(data)

    async def _reader(self) -> None:
        decoder = FrameDecoder(self.max_frame_size)
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.error = f"connection failed: {exc!r}"
                return
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameError as exc:
                self.error = f"bad frame from the daemon: {exc}"
                return
            for frame in frames:
                resp = apb.Response.FromString(frame)
                sink = self.pending.get(resp.id)
                if sink is None:
                    if resp.id == 0 and resp.error.code != apb.Error.OK:
                        self.error = f"{apb.Error.Code.Name(resp.error.code)}: {resp.error.message}"
                    continue
                if isinstance(sink, _Slot):
                    self.forget(resp.id)
                    sink.response = resp
                    sink.event.set()
                else:
                    try:
                        sink.send_nowait(resp)
                    except trio.WouldBlock:
                        # A watcher that does not keep up: end its watch; it resumes from
                        # its last revision if it asked to.
                        ns = self.namespaces.get(resp.id, "")
                        self.forget(resp.id)
                        with contextlib.suppress(Exception):
                            sink.close()
                        cancel = apb.Request(
                            namespace=ns,
                            watch_cancel=apb.WatchCancelRequest(watch_id=resp.id),
                        )
                        with contextlib.suppress(RaftdError):
                            self.register(cancel, _Slot(False))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.forget(resp.id)

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = self.error or reason
        pending, self.pending = self.pending, {}
        writes, self.writes = self.writes, {}
        for rid, sink in pending.items():
            err = ConnectionLost(self.error, indeterminate=writes.get(rid, False))
            if isinstance(sink, _Slot):
                sink.error = err
                sink.event.set()
            else:
                with contextlib.suppress(Exception):
                    sink.send_nowait(err)
                with contextlib.suppress(Exception):
                    sink.close()
        self.wake.set()


async def _open_unix(path: str) -> trio.SocketStream:
    """Connect, retrying while the daemon's accept queue is full (EAGAIN)."""
    delay = 0.002
    while True:
        try:
            return await trio.open_unix_socket(path)
        except BlockingIOError:
            await trio.sleep(delay)
            delay = min(delay * 2, 0.1)


class AsyncClient:
    """A trio raftd client; create it with :func:`open_client`. Same methods and
    semantics as :class:`raftd.client.Client`, as coroutines."""

    def __init__(
        self,
        nursery: trio.Nursery,
        socket: str | Any = None,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
        token: str | None = None,
        connect_timeout: float = 5.0,
        max_frame_size: int = 64 * 1024 * 1024,
    ) -> None:
        self._nursery = nursery
        self.address = P.default_socket(socket)
        self.namespace = P.default_namespace(namespace)
        self.timeout = timeout
        self.token = P.default_token(token)
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self._conn: _AsyncConn | None = None
        self._lock = trio.Lock()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn._fail("client closed")
            with contextlib.suppress(Exception):
                await trio.aclose_forcefully(conn.stream)

    async def _connect(self) -> _AsyncConn:
        kind, host, port = P.parse_address(self.address)
        try:
            with trio.fail_after(self.connect_timeout):
                stream: trio.abc.Stream
                if kind == "tcp":
                    stream = await trio.open_tcp_stream(host, port)
                else:
                    stream = await _open_unix(host)
        except (OSError, trio.TooSlowError) as exc:
            raise ConnectionLost(f"cannot connect to raftd at {self.address}: {exc!r}") from None
        conn = _AsyncConn(stream, self.max_frame_size)
        self._nursery.start_soon(conn.run)
        if self.token is not None:
            slot = _Slot(False)
            conn.register(apb.Request(auth=apb.AuthRequest(token=self.token)), slot)
            with trio.move_on_after(self.connect_timeout + _MARGIN):
                await slot.event.wait()
            if slot.error is not None:
                raise slot.error
            if slot.response is None:
                conn._fail("no answer to auth")
                raise ConnectionLost("no answer to auth")
            P.check(slot.response)
        return conn

    async def _connection(self) -> _AsyncConn:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            return self._conn

    def _prepare(self, req: apb.Request, timeout: float | None) -> float | None:
        req.namespace = self.namespace
        t = self.timeout if timeout is None else timeout
        if t is not None:
            req.timeout_ms = max(1, int(t * 1000))
        return t

    async def call(
        self, req: apb.Request, parse: Callable[[apb.Response], T], timeout: float | None = None
    ) -> T:
        """Send ``req``, wait for its response, parse it (raising its error)."""
        t = self._prepare(req, timeout)
        conn = await self._connection()
        slot = _Slot(P.is_write(req))
        rid = conn.register(req, slot)
        wait = (t if t is not None else 30.0) + _MARGIN
        try:
            with trio.move_on_after(wait):
                await slot.event.wait()
        finally:
            if not slot.event.is_set():
                conn.forget(rid)
        if slot.error is not None:
            raise slot.error
        if slot.response is None:
            raise DeadlineExceeded(f"no response within {wait:.1f}s", indeterminate=slot.write)
        return parse(slot.response)

    # -- key-value ---------------------------------------------------------------------
    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> PutResult:
        req = P.req_put(key, value, lease=lease, prev_kv=prev_kv)
        return await self.call(req, P.parse_put, timeout)

    async def get(
        self,
        key: bytes | str,
        *,
        stale: bool = False,
        min_revision: int = 0,
        timeout: float | None = None,
    ) -> KeyValue | None:
        req = P.req_get(key, stale=stale, min_revision=min_revision)
        return await self.call(req, P.parse_get, timeout)

    async def range(
        self,
        key: bytes | str,
        range_end: bytes | str = b"",
        *,
        limit: int = 0,
        keys_only: bool = False,
        stale: bool = False,
        min_revision: int = 0,
        timeout: float | None = None,
    ) -> RangeResult:
        req = P.req_range(
            key, range_end, limit=limit, keys_only=keys_only, stale=stale, min_revision=min_revision
        )
        return await self.call(req, P.parse_range, timeout)

    async def get_prefix(
        self,
        prefix: bytes | str,
        *,
        limit: int = 0,
        keys_only: bool = False,
        stale: bool = False,
        timeout: float | None = None,
    ) -> RangeResult:
        p = P.to_bytes(prefix)
        end = P.prefix_end(p) if p else b"\x00"
        return await self.range(
            p or b"\x00", end, limit=limit, keys_only=keys_only, stale=stale, timeout=timeout
        )

    async def delete(
        self, key: bytes | str, *, prev_kv: bool = False, timeout: float | None = None
    ) -> DeleteResult:
        return await self.call(P.req_delete(key, prev_kv=prev_kv), P.parse_delete, timeout)

    async def delete_range(
        self,
        key: bytes | str,
        range_end: bytes | str,
        *,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        req = P.req_delete_range(key, range_end, prev_kv=prev_kv)
        return await self.call(req, P.parse_delete_range, timeout)

    async def delete_prefix(
        self, prefix: bytes | str, *, timeout: float | None = None
    ) -> DeleteResult:
        p = P.to_bytes(prefix)
        return await self.delete_range(p or b"\x00", P.prefix_end(p), timeout=timeout)

    async def cas(
        self,
        key: bytes | str,
        new_value: bytes | str,
        *,
        value: bytes | str | None = None,
        mod_revision: int | None = None,
        absent: bool = False,
        timeout: float | None = None,
    ) -> CasResult:
        req = P.req_cas(key, new_value, value=value, mod_revision=mod_revision, absent=absent)
        return await self.call(req, P.parse_cas, timeout)

    async def txn(
        self,
        compares: Iterable[kpb.Compare],
        success: Iterable[kpb.RequestOp] = (),
        failure: Iterable[kpb.RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        return await self.call(P.req_txn(compares, success, failure), P.parse_txn, timeout)

    async def barrier(self, *, timeout: float | None = None) -> int:
        req = apb.Request(barrier=apb.BarrierRequest())
        return await self.call(req, P.parse_revision, timeout)

    # -- cluster -----------------------------------------------------------------------
    async def status(
        self,
        *,
        all_namespaces: bool = False,
        leader_commit: bool = False,
        timeout: float | None = None,
    ) -> list[GroupStatus]:
        """See :meth:`raftd.client.Client.status`."""
        req = apb.Request(
            status=apb.StatusRequest(all_namespaces=all_namespaces, leader_commit=leader_commit)
        )
        return await self.call(req, P.parse_status, timeout)

    async def members(self, *, timeout: float | None = None) -> list[Member]:
        req = apb.Request(members=apb.MembersRequest())
        return await self.call(req, P.parse_members, timeout)

    async def add_voter(
        self, peer_id: str, addrs: Iterable[str] = (), *, timeout: float | None = None
    ) -> list[Member]:
        req = P.req_member("add_voter", peer_id, addrs)
        return await self.call(req, P.parse_members, timeout)

    async def add_learner(
        self, peer_id: str, addrs: Iterable[str] = (), *, timeout: float | None = None
    ) -> list[Member]:
        req = P.req_member("add_learner", peer_id, addrs)
        return await self.call(req, P.parse_members, timeout)

    async def promote(self, peer_id: str, *, timeout: float | None = None) -> list[Member]:
        req = P.req_member("promote", peer_id, ())
        return await self.call(req, P.parse_members, timeout)

    async def remove(self, peer_id: str, *, timeout: float | None = None) -> list[Member]:
        req = P.req_member("remove", peer_id, ())
        return await self.call(req, P.parse_members, timeout)

    async def transfer_leader(self, target: str = "", *, timeout: float | None = None) -> str:
        req = apb.Request(transfer_leader=apb.TransferLeaderRequest(target=target))
        return await self.call(req, P.parse_transfer, timeout)

    # -- leases ------------------------------------------------------------------------
    async def lease_grant(
        self, ttl: int, *, lease_id: int = 0, timeout: float | None = None
    ) -> Lease:
        req = apb.Request(lease_grant=kpb.LeaseGrantRequest(ttl=ttl, id=lease_id))
        return await self.call(req, P.parse_lease, timeout)

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> int:
        req = apb.Request(lease_revoke=kpb.LeaseRevokeRequest(id=lease_id))
        return await self.call(req, P.parse_revoke, timeout)

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        req = apb.Request(lease_keepalive=apb.LeaseKeepAliveRequest(id=lease_id))
        return await self.call(req, P.parse_keepalive, timeout)

    async def lease_ttl(
        self, lease_id: int, *, keys: bool = False, timeout: float | None = None
    ) -> LeaseTTL:
        req = apb.Request(lease_ttl=apb.LeaseTimeToLiveRequest(id=lease_id, keys=keys))
        return await self.call(req, P.parse_lease_ttl, timeout)

    async def leases(self, *, timeout: float | None = None) -> list[LeaseInfo]:
        req = apb.Request(lease_list=apb.LeaseListRequest())
        return await self.call(req, P.parse_leases, timeout)

    # -- watch -------------------------------------------------------------------------
    @asynccontextmanager
    async def watch(
        self,
        key: bytes | str,
        range_end: bytes | str = b"",
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        resume: bool = True,
        resume_timeout: float = 30.0,
    ) -> AsyncIterator[AsyncWatch]:
        """``async with client.watch(...) as w: async for ev in w: ...`` (see
        :meth:`raftd.client.Client.watch`). Leaving the block cancels the watch."""
        k = P.to_bytes(key)
        end = P.to_bytes(range_end)
        if prefix:
            end = P.prefix_end(k) if k else b"\x00"
            k = k or b"\x00"
        w = AsyncWatch(self, k, end, start_revision, prev_kv, resume, resume_timeout)
        await w.start()
        try:
            yield w
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await w.cancel()


class AsyncWatch:
    """An open watch of :class:`AsyncClient`: ``async for`` yields :class:`Event`."""

    def __init__(
        self,
        client: AsyncClient,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        prev_kv: bool,
        resume: bool,
        resume_timeout: float,
        buffer: int = 1024,
    ) -> None:
        self.client = client
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        self.prev_kv = prev_kv
        self.resume = resume
        self.resume_timeout = resume_timeout
        self.revision = start_revision - 1 if start_revision > 0 else 0
        self._bufsize = buffer
        self._recv: trio.MemoryReceiveChannel[Any] | None = None
        self._conn: _AsyncConn | None = None
        self._rid = 0
        self._events: list[Event] = []
        self._done = False

    async def start(self) -> None:
        conn = await self.client._connection()
        send, recv = trio.open_memory_channel[Any](self._bufsize)
        req = P.req_watch(
            self.key, self.range_end, start_revision=self.next_revision, prev_kv=self.prev_kv
        )
        req.namespace = self.client.namespace
        self._rid = conn.register(req, send)
        self._conn = conn
        self._recv = recv
        first = await self._take(self.client.connect_timeout + 10.0)
        if isinstance(first, BaseException):
            raise first
        P.check(first)
        if first.watch.created and self.next_revision <= 0:
            self.next_revision = first.watch.header_revision + 1
            self.revision = first.watch.header_revision

    async def _take(self, timeout: float = math.inf) -> apb.Response | BaseException:
        assert self._recv is not None
        with trio.move_on_after(timeout):
            try:
                item: apb.Response | BaseException = await self._recv.receive()
            except trio.EndOfChannel:
                return ConnectionLost("watch dropped: the client did not keep up")
            return item
        raise TimeoutError("no watch response within the timeout")

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Event:
        ev = await self.next()
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def next(self) -> Event | None:
        """The next event; None once the watch is cancelled (bound it with trio's
        timeouts)."""
        while not self._events:
            if self._done:
                return None
            item = await self._take()
            if isinstance(item, ConnectionLost):
                if not self.resume:
                    raise item
                await self._reconnect(item)
                continue
            if isinstance(item, BaseException):
                raise item
            if item.watch.canceled:
                self._done = True
                if item.error.code != apb.Error.OK:
                    raise P.error_from_pb(item.error)
                return None
            if item.error.code != apb.Error.OK:
                raise P.error_from_pb(item.error)
            evs = P.events_of(item)
            if evs:
                self.revision = evs[-1].revision
                self.next_revision = self.revision + 1
            self._events.extend(evs)
        return self._events.pop(0)

    async def _reconnect(self, cause: ConnectionLost) -> None:
        delay = 0.05
        with trio.move_on_after(self.resume_timeout):
            while True:
                try:
                    await self.start()
                    return
                except Compacted:
                    raise
                except (RaftdError, TimeoutError):
                    pass
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise ConnectionLost("watch could not resume") from cause

    async def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn is None or conn.closed:
            return
        req = apb.Request(watch_cancel=apb.WatchCancelRequest(watch_id=self._rid))
        req.namespace = self.client.namespace
        with contextlib.suppress(RaftdError):
            conn.register(req, _Slot(False))
        conn.forget(self._rid)


@asynccontextmanager
async def open_client(
    socket: str | Any = None,
    *,
    namespace: str | None = None,
    timeout: float | None = None,
    token: str | None = None,
    connect_timeout: float = 5.0,
) -> AsyncIterator[AsyncClient]:
    """An :class:`AsyncClient` whose background tasks live in this context."""
    async with trio.open_nursery() as nursery:
        client = AsyncClient(
            nursery,
            socket,
            namespace=namespace,
            timeout=timeout,
            token=token,
            connect_timeout=connect_timeout,
        )
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
