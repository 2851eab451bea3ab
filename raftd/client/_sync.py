"""The blocking client: one connection, reused and pipelined, safe to share between
threads (a reader thread routes responses to waiting callers by request id)."""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

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

__all__ = ["Client", "Watch"]

T = TypeVar("T")
#: Extra time the client waits beyond the request's deadline (the daemon answers at it).
_MARGIN = 2.0


def _connect_unix(path: str, timeout: float) -> socket.socket:
    """Connect, retrying while the daemon's accept queue is full (a non-blocking unix
    connect fails with EAGAIN then, instead of waiting)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        except BaseException:
            sock.close()
            raise


class _Conn:
    """One socket to the daemon with its reader thread."""

    def __init__(self, sock: socket.socket, max_frame_size: int) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[Future[apb.Response] | queue.Queue[Any], bool]] = {}
        self.ids = itertools.count(1)
        self.closed = False
        self.error: str = ""
        self._max_frame = max_frame_size
        self.thread = threading.Thread(target=self._read_loop, name="raftd-client", daemon=True)
        self.thread.start()

    def request(self, req: apb.Request, sink: Future[apb.Response] | queue.Queue[Any]) -> int:
        with self.lock:
            if self.closed:
                raise ConnectionLost(self.error or "connection closed")
            rid = next(self.ids)
            self.pending[rid] = (sink, P.is_write(req))
        req.id = rid
        data = encode_frame(req.SerializeToString())
        try:
            with self.send_lock:
                self.sock.sendall(data)
        except OSError as exc:
            self._fail(f"send failed: {exc}")
        return rid

    def forget(self, rid: int) -> None:
        with self.lock:
            self.pending.pop(rid, None)

    def _read_loop(self) -> None:
        decoder = FrameDecoder(self._max_frame)
        reason = "connection closed by the daemon"
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for frame in decoder.feed(data):
                    self._dispatch(apb.Response.FromString(frame))
        except (OSError, FrameError, ValueError, DecodeError) as exc:
            reason = f"connection failed: {exc}"
        finally:
            self._fail(reason)
            # Only this thread closes the socket. Closed from another thread, its file
            # descriptor number could be reused by a new connection while this thread
            # is between loading the number and entering recv(): it would then read,
            # and swallow, the new connection's response (seen as a request answered
            # by the daemon that the client never received).
            # Under the send lock for the same reason: a sendall() of another thread
            # must not write a request into a reused descriptor.
            with self.send_lock, contextlib.suppress(OSError):
                self.sock.close()

    def _dispatch(self, resp: apb.Response) -> None:
        with self.lock:
            entry = self.pending.get(resp.id)
            if entry is None:
                if resp.id == 0 and resp.error.code != apb.Error.OK:
                    # An error the daemon could not attribute: it closes the connection
                    # next (framing error) or answered a garbled request of ours.
                    self.error = f"{apb.Error.Code.Name(resp.error.code)}: {resp.error.message}"
                return
            sink, _ = entry
            if isinstance(sink, Future):
                del self.pending[resp.id]
        if isinstance(sink, Future):
            if not sink.done():
                sink.set_result(resp)
        else:
            sink.put(resp)

    def _fail(self, reason: str) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.error = self.error or reason
            pending, self.pending = self.pending, {}
        for sink, write in pending.values():
            err = ConnectionLost(self.error, indeterminate=write)
            if isinstance(sink, Future):
                if not sink.done():
                    sink.set_exception(err)
            else:
                sink.put(err)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Fail what is pending and stop the reader, which closes the socket (see
        :meth:`_read_loop`): shutdown() wakes it with end-of-file at once."""
        self._fail("client closed")


class Client:
    """A blocking raftd client (see :mod:`raftd.client`).

    ``socket``: a unix socket path or ``tcp://host:port`` (default ``$RAFTD_SOCKET``, then
    ``/var/lib/raftd/raftd.sock``); ``namespace`` (default ``$RAFTD_NAMESPACE``, then the
    daemon's first); ``timeout``: per-request deadline in seconds sent to the daemon
    (None: the daemon's default); ``token``: the API token for a TCP listener (default
    ``$RAFTD_API_TOKEN`` or the file named by ``$RAFTD_API_TOKEN_FILE``).

    The connection opens at the first request and reopens after a failure. Requests from
    several threads share it and are pipelined. :meth:`submit` returns a future for
    explicit pipelining from one thread.
    """

    def __init__(
        self,
        socket: str | Any = None,
        *,
        namespace: str | None = None,
        timeout: float | None = None,
        token: str | None = None,
        connect_timeout: float = 5.0,
        max_frame_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.address = P.default_socket(socket)
        self.namespace = P.default_namespace(namespace)
        self.timeout = timeout
        self.token = P.default_token(token)
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self._conn: _Conn | None = None
        self._lock = threading.Lock()

    # -- connection --------------------------------------------------------------------
    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connect(self) -> _Conn:
        kind, host, port = P.parse_address(self.address)
        try:
            if kind == "tcp":
                sock = socket.create_connection((host, port), timeout=self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                sock = _connect_unix(host, self.connect_timeout)
            sock.settimeout(None)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to raftd at {self.address}: {exc}") from None
        conn = _Conn(sock, self.max_frame_size)
        if self.token is not None:
            fut: Future[apb.Response] = Future()
            conn.request(apb.Request(auth=apb.AuthRequest(token=self.token)), fut)
            try:
                P.check(fut.result(self.connect_timeout + _MARGIN))
            except FutureTimeout:
                conn.close()
                raise ConnectionLost("no answer to auth") from None
            except RaftdError:
                conn.close()
                raise
        return conn

    def _connection(self) -> _Conn:
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            return self._conn

    def _prepare(self, req: apb.Request, timeout: float | None) -> float | None:
        req.namespace = self.namespace
        t = self.timeout if timeout is None else timeout
        if t is not None:
            req.timeout_ms = max(1, int(t * 1000))
        return t

    def submit(self, req: apb.Request, timeout: float | None = None) -> Future[apb.Response]:
        """Send ``req`` (its id and namespace are filled in) and return a future of the
        raw response. The future fails with :class:`ConnectionLost` if the connection
        does."""
        self._prepare(req, timeout)
        fut: Future[apb.Response] = Future()
        self._connection().request(req, fut)
        return fut

    def call(
        self, req: apb.Request, parse: Callable[[apb.Response], T], timeout: float | None = None
    ) -> T:
        """Send ``req``, wait for the response and parse it (raising its error)."""
        t = self._prepare(req, timeout)
        fut: Future[apb.Response] = Future()
        conn = self._connection()
        rid = conn.request(req, fut)
        wait = (t if t is not None else 30.0) + _MARGIN
        try:
            resp = fut.result(wait)
        except FutureTimeout:
            conn.forget(rid)
            raise DeadlineExceeded(
                f"no response within {wait:.1f}s", indeterminate=P.is_write(req)
            ) from None
        return parse(resp)

    # -- key-value ---------------------------------------------------------------------
    def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> PutResult:
        return self.call(P.req_put(key, value, lease=lease, prev_kv=prev_kv), P.parse_put, timeout)

    def get(
        self,
        key: bytes | str,
        *,
        stale: bool = False,
        min_revision: int = 0,
        timeout: float | None = None,
    ) -> KeyValue | None:
        """The key's current value, or None. Linearizable unless ``stale``."""
        req = P.req_get(key, stale=stale, min_revision=min_revision)
        return self.call(req, P.parse_get, timeout)

    def range(
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
        """Keys in ``[key, range_end)`` (etcd conventions: empty end = just ``key``,
        ``b"\\0"`` = every key >= ``key``), in key order, at most ``limit``."""
        req = P.req_range(
            key, range_end, limit=limit, keys_only=keys_only, stale=stale, min_revision=min_revision
        )
        return self.call(req, P.parse_range, timeout)

    def get_prefix(
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
        return self.range(
            p or b"\x00", end, limit=limit, keys_only=keys_only, stale=stale, timeout=timeout
        )

    def delete(
        self, key: bytes | str, *, prev_kv: bool = False, timeout: float | None = None
    ) -> DeleteResult:
        return self.call(P.req_delete(key, prev_kv=prev_kv), P.parse_delete, timeout)

    def delete_range(
        self,
        key: bytes | str,
        range_end: bytes | str,
        *,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        req = P.req_delete_range(key, range_end, prev_kv=prev_kv)
        return self.call(req, P.parse_delete_range, timeout)

    def delete_prefix(self, prefix: bytes | str, *, timeout: float | None = None) -> DeleteResult:
        p = P.to_bytes(prefix)
        return self.delete_range(p or b"\x00", P.prefix_end(p), timeout=timeout)

    def cas(
        self,
        key: bytes | str,
        new_value: bytes | str,
        *,
        value: bytes | str | None = None,
        mod_revision: int | None = None,
        absent: bool = False,
        timeout: float | None = None,
    ) -> CasResult:
        """Put ``new_value`` if the key's value is ``value`` / its mod revision is
        ``mod_revision`` (0: absent) / it is ``absent``. A mismatch is not an error:
        ``succeeded`` is False and ``current`` tells what is there."""
        req = P.req_cas(key, new_value, value=value, mod_revision=mod_revision, absent=absent)
        return self.call(req, P.parse_cas, timeout)

    def txn(
        self,
        compares: Iterable[kpb.Compare],
        success: Iterable[kpb.RequestOp] = (),
        failure: Iterable[kpb.RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """If every compare holds run ``success``, else ``failure`` (see
        :func:`raftd.client.compare`, :func:`op_put`...). One revision."""
        return self.call(P.req_txn(compares, success, failure), P.parse_txn, timeout)

    def barrier(self, *, timeout: float | None = None) -> int:
        """A linearizable no-op: returns once this daemon has applied everything committed
        before the call; returns the revision then."""
        return self.call(apb.Request(barrier=apb.BarrierRequest()), P.parse_revision, timeout)

    # -- cluster -----------------------------------------------------------------------
    def status(
        self,
        *,
        all_namespaces: bool = False,
        leader_commit: bool = False,
        timeout: float | None = None,
    ) -> list[GroupStatus]:
        """This daemon's view of the namespace (every namespace with ``all_namespaces``).
        ``leader_commit``: also ask the leader for its commit index (one ReadIndex round
        trip; fails with Unavailable / DeadlineExceeded when no leader answers)."""
        req = apb.Request(
            status=apb.StatusRequest(all_namespaces=all_namespaces, leader_commit=leader_commit)
        )
        return self.call(req, P.parse_status, timeout)

    def members(self, *, timeout: float | None = None) -> list[Member]:
        return self.call(apb.Request(members=apb.MembersRequest()), P.parse_members, timeout)

    def add_voter(
        self, peer_id: str, addrs: Iterable[str] = (), *, timeout: float | None = None
    ) -> list[Member]:
        return self.call(P.req_member("add_voter", peer_id, addrs), P.parse_members, timeout)

    def add_learner(
        self, peer_id: str, addrs: Iterable[str] = (), *, timeout: float | None = None
    ) -> list[Member]:
        return self.call(P.req_member("add_learner", peer_id, addrs), P.parse_members, timeout)

    def promote(self, peer_id: str, *, timeout: float | None = None) -> list[Member]:
        return self.call(P.req_member("promote", peer_id, ()), P.parse_members, timeout)

    def remove(self, peer_id: str, *, timeout: float | None = None) -> list[Member]:
        return self.call(P.req_member("remove", peer_id, ()), P.parse_members, timeout)

    def transfer_leader(self, target: str = "", *, timeout: float | None = None) -> str:
        """Move leadership to ``target`` (default: the most caught-up other voter);
        returns the new leader."""
        req = apb.Request(transfer_leader=apb.TransferLeaderRequest(target=target))
        return self.call(req, P.parse_transfer, timeout)

    # -- leases ------------------------------------------------------------------------
    def lease_grant(self, ttl: int, *, lease_id: int = 0, timeout: float | None = None) -> Lease:
        req = apb.Request(lease_grant=kpb.LeaseGrantRequest(ttl=ttl, id=lease_id))
        return self.call(req, P.parse_lease, timeout)

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Revoke the lease and delete its keys; returns how many keys were deleted."""
        req = apb.Request(lease_revoke=kpb.LeaseRevokeRequest(id=lease_id))
        return self.call(req, P.parse_revoke, timeout)

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Restart the lease's TTL; returns the TTL. NotFound if it expired."""
        req = apb.Request(lease_keepalive=apb.LeaseKeepAliveRequest(id=lease_id))
        return self.call(req, P.parse_keepalive, timeout)

    def lease_ttl(
        self, lease_id: int, *, keys: bool = False, timeout: float | None = None
    ) -> LeaseTTL:
        req = apb.Request(lease_ttl=apb.LeaseTimeToLiveRequest(id=lease_id, keys=keys))
        return self.call(req, P.parse_lease_ttl, timeout)

    def leases(self, *, timeout: float | None = None) -> list[LeaseInfo]:
        return self.call(apb.Request(lease_list=apb.LeaseListRequest()), P.parse_leases, timeout)

    # -- watch -------------------------------------------------------------------------
    def snapshot_save(
        self,
        out: Any,
        *,
        timeout: float = 600.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Stream a consistent backup of the namespace into the binary file ``out``.
        Returns ``(index, size)``. ``progress(done, total)`` is called per chunk."""
        conn = self._connection()
        req = apb.Request(namespace=self.namespace)
        req.snapshot.SetInParent()
        sink: queue.Queue[Any] = queue.Queue()
        rid = conn.request(req, sink)
        total = done = index = 0
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    item = sink.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError("backup did not finish within the timeout") from None
                if isinstance(item, BaseException):
                    raise item
                P.check(item)
                snap = item.snapshot
                if snap.size and not total:
                    total, index = snap.size, snap.index
                if snap.chunk:
                    out.write(snap.chunk)
                    done += len(snap.chunk)
                    if progress is not None:
                        progress(done, total)
                if snap.done:
                    if done != total:
                        raise ConnectionLost(f"backup truncated: {done} of {total} bytes")
                    return index, total
        finally:
            conn.forget(rid)

    def watch(
        self,
        key: bytes | str,
        range_end: bytes | str = b"",
        *,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
        resume: bool = True,
        resume_timeout: float = 30.0,
    ) -> Watch:
        """Watch ``key`` (or ``[key, range_end)``, or every key with prefix ``key``).
        Iterate the returned :class:`Watch` for events. With ``resume``, a lost
        connection is reopened (for up to ``resume_timeout``) and the watch continues from
        the revision after the last event seen; a revision the daemon no longer holds
        raises :class:`Compacted`."""
        k = P.to_bytes(key)
        end = P.to_bytes(range_end)
        if prefix:
            end = P.prefix_end(k) if k else b"\x00"
            k = k or b"\x00"
        w = Watch(self, k, end, start_revision, prev_kv, resume, resume_timeout)
        w.start()
        return w


class Watch:
    """An open watch: iterate for :class:`Event` objects; :meth:`cancel` to stop.
    ``revision`` is the revision of the last event delivered (or the start point)."""

    def __init__(
        self,
        client: Client,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        prev_kv: bool,
        resume: bool,
        resume_timeout: float,
    ) -> None:
        self.client = client
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        self.prev_kv = prev_kv
        self.resume = resume
        self.resume_timeout = resume_timeout
        self.revision = start_revision - 1 if start_revision > 0 else 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._conn: _Conn | None = None
        self._rid = 0
        self._buffer: list[Event] = []
        self._done = False

    def start(self) -> None:
        conn = self.client._connection()
        req = P.req_watch(
            self.key, self.range_end, start_revision=self.next_revision, prev_kv=self.prev_kv
        )
        req.namespace = self.client.namespace
        self._queue = queue.Queue()
        self._rid = conn.request(req, self._queue)
        self._conn = conn
        resp = self._take(self.client.connect_timeout + 10.0)
        if isinstance(resp, BaseException):
            raise resp
        P.check(resp)
        if resp.watch.created and self.next_revision <= 0:
            self.next_revision = resp.watch.header_revision + 1
            self.revision = resp.watch.header_revision

    def _take(self, timeout: float | None) -> apb.Response | BaseException:
        try:
            item: apb.Response | BaseException = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no watch event within the timeout") from None
        return item

    def __iter__(self) -> Iterator[Event]:
        while True:
            ev = self.next()
            if ev is None:
                return
            yield ev

    def next(self, timeout: float | None = None) -> Event | None:
        """The next event; None once the watch is cancelled. Raises ``TimeoutError``
        after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
            if self._done:
                return None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = self._take(left)
            if isinstance(item, ConnectionLost):
                if not self.resume:
                    raise item
                self._reconnect(item)
                continue
            if isinstance(item, BaseException):
                raise item
            if item.watch.canceled:
                self._done = True
                if self._conn is not None:
                    self._conn.forget(self._rid)
                if item.error.code != apb.Error.OK:
                    raise P.error_from_pb(item.error)
                return None
            if item.error.code != apb.Error.OK:
                raise P.error_from_pb(item.error)
            evs = P.events_of(item)
            if evs:
                self.revision = evs[-1].revision
                self.next_revision = self.revision + 1
            self._buffer.extend(evs)
        return self._buffer.pop(0)

    def _reconnect(self, cause: ConnectionLost) -> None:
        deadline = time.monotonic() + self.resume_timeout
        delay = 0.05
        while True:
            try:
                self.start()
                return
            except Compacted:
                raise
            except (ConnectionLost, TimeoutError, RaftdError) as exc:
                if time.monotonic() + delay > deadline:
                    raise ConnectionLost(f"watch could not resume: {exc}") from cause
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def cancel(self) -> None:
        """Stop the watch (the daemon confirms; pending events are dropped)."""
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn is None or conn.closed:
            return
        req = apb.Request(watch_cancel=apb.WatchCancelRequest(watch_id=self._rid))
        req.namespace = self.client.namespace
        fut: Future[apb.Response] = Future()
        with contextlib.suppress(RaftdError):
            conn.request(req, fut)
        conn.forget(self._rid)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
