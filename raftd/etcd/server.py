"""The etcd v3 gRPC endpoint: grpcio's asyncio server in a thread of its own, bridged
into the daemon's trio loop.

Why grpcio: its C core does HTTP/2, TLS and flow control outside the GIL-bound Python
code, it is the maintained reference implementation, and it speaks to every etcd client
as etcd's own Go server does (keepalive pings, trailers, deadlines). The cost is one
thread hop each way per call (measured in the README).

Plumbing. :class:`EtcdGrpcServer` runs an asyncio loop in a daemon thread with a
``grpc.aio`` server whose generic handlers serve the etcd methods (no generated stubs:
the method table below names each path, e.g. ``/etcdserverpb.KV/Range``, with its
message types from ``raftd.wire.pb.etcd``). A call crosses into trio with
``TrioToken.run_sync_soon``, which spawns the handler in a nursery owned by the server;
the answer comes back with ``loop.call_soon_threadsafe``. Both directions batch: calls
posted while the other loop has not yet run the previous batch join it (one wake-up per
batch under load). Streams carry requests into a
trio memory channel and responses into an asyncio queue, with a bounded number of
responses in flight (a slow client slows its watch, not the daemon). A client that goes
away (or a gRPC deadline that passes) cancels the trio task. Shutdown (cancelling
:meth:`EtcdGrpcServer.run`) stops the gRPC server with a short grace and joins the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import trio

from raftd.etcd.endpoint import TlsFiles
from raftd.etcd.errors import EtcdError
from raftd.etcd.service import EtcdService
from raftd.wire.pb.etcd import rpc_pb2 as epb

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["EtcdGrpcServer", "TlsFiles"]

log = logging.getLogger("raftd.etcd")

#: Responses of one stream sent to gRPC but not yet written to the client.
STREAM_WINDOW = 64
#: Deadline of a unary call that came without one.
DEFAULT_TIMEOUT_S = 30.0
_END = object()

Unary = Callable[[Any, float], Awaitable[Any]]
Streaming = Callable[[Any, Callable[[Any], Awaitable[None]]], Awaitable[None]]


def _unary_methods(s: EtcdService) -> dict[str, tuple[Unary, Any]]:
    return {
        "/etcdserverpb.KV/Range": (s.range, epb.RangeRequest),
        "/etcdserverpb.KV/Put": (s.put, epb.PutRequest),
        "/etcdserverpb.KV/DeleteRange": (s.delete_range, epb.DeleteRangeRequest),
        "/etcdserverpb.KV/Txn": (s.txn, epb.TxnRequest),
        "/etcdserverpb.KV/Compact": (s.compact, epb.CompactionRequest),
        "/etcdserverpb.Lease/LeaseGrant": (s.lease_grant, epb.LeaseGrantRequest),
        "/etcdserverpb.Lease/LeaseRevoke": (s.lease_revoke, epb.LeaseRevokeRequest),
        "/etcdserverpb.Lease/LeaseTimeToLive": (s.lease_time_to_live, epb.LeaseTimeToLiveRequest),
        "/etcdserverpb.Lease/LeaseLeases": (s.lease_leases, epb.LeaseLeasesRequest),
        "/etcdserverpb.Cluster/MemberAdd": (s.member_add, epb.MemberAddRequest),
        "/etcdserverpb.Cluster/MemberRemove": (s.member_remove, epb.MemberRemoveRequest),
        "/etcdserverpb.Cluster/MemberUpdate": (s.member_update, epb.MemberUpdateRequest),
        "/etcdserverpb.Cluster/MemberList": (s.member_list, epb.MemberListRequest),
        "/etcdserverpb.Cluster/MemberPromote": (s.member_promote, epb.MemberPromoteRequest),
        "/etcdserverpb.Maintenance/Alarm": (s.alarm, epb.AlarmRequest),
        "/etcdserverpb.Maintenance/Status": (s.status, epb.StatusRequest),
        "/etcdserverpb.Maintenance/Defragment": (s.defragment, epb.DefragmentRequest),
        "/etcdserverpb.Maintenance/Hash": (s.hash, epb.HashRequest),
        "/etcdserverpb.Maintenance/HashKV": (s.hash_kv, epb.HashKVRequest),
        "/etcdserverpb.Maintenance/MoveLeader": (s.move_leader, epb.MoveLeaderRequest),
        "/etcdserverpb.Auth/Authenticate": (s.authenticate, epb.AuthenticateRequest),
    }


def _stream_methods(s: EtcdService) -> dict[str, tuple[Streaming, Any]]:
    return {
        "/etcdserverpb.Watch/Watch": (s.watch, epb.WatchRequest),
        "/etcdserverpb.Lease/LeaseKeepAlive": (s.lease_keepalive, epb.LeaseKeepAliveRequest),
    }


def _server_stream_methods(s: EtcdService) -> dict[str, tuple[Streaming, Any]]:
    return {"/etcdserverpb.Maintenance/Snapshot": (s.snapshot, epb.SnapshotRequest)}


class _Mailbox:
    """Calls handed from one thread to another loop, delivered in batches: under load
    the receiving loop wakes once per batch, not once per call."""

    def __init__(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        self._schedule = schedule
        self._lock = threading.Lock()
        self._items: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Have ``fn(*args)`` called on the receiving loop. Raises what the scheduling
        function raises when that loop has ended."""
        with self._lock:
            first = not self._items
            self._items.append((fn, args))
        if first:
            try:
                self._schedule(self._run)
            except BaseException:
                with self._lock:
                    self._items.clear()
                raise

    def _run(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for fn, args in items:
            try:
                fn(*args)
            except Exception:  # pragma: no cover - the callbacks do not raise
                log.exception("etcd bridge callback failed")


class _Call:
    """A unary call's cancellation state in trio (set and read in the trio thread)."""

    __slots__ = ("cancelled", "scope")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class _Stream:
    """A streaming call's state on both sides of the bridge."""

    def __init__(self, to_loop: _Mailbox) -> None:
        self.to_loop = to_loop
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.scope: trio.CancelScope | None = None
        self.cancelled = False
        self.send_ch: trio.MemorySendChannel[Any] | None = None
        self.recv_ch: trio.MemoryReceiveChannel[Any] | None = None
        self.credits: trio.Semaphore | None = None
        self.pending: list[Any] = []
        self.input_done = False

    # trio side (callbacks run in the trio thread)
    def feed(self, req: Any) -> None:
        if self.send_ch is None:
            self.pending.append(req)
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self.send_ch.send_nowait(req)

    def close_input(self) -> None:
        self.input_done = True
        if self.send_ch is not None:
            self.send_ch.close()

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()

    def release(self) -> None:
        if self.credits is not None:
            self.credits.release()

    def put(self, item: Any) -> None:
        # RuntimeError: the gRPC loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.to_loop.post(self.out.put_nowait, item)

    async def send(self, msg: Any) -> None:
        assert self.credits is not None
        await self.credits.acquire()
        self.put(msg)


class EtcdGrpcServer:
    """Serves ``service`` on ``host:port`` (see the module doc). ``port`` 0 picks a free
    one; :attr:`port` is the bound port once :meth:`run` has started."""

    def __init__(
        self,
        service: EtcdService,
        host: str,
        port: int,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.tls = tls
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._to_trio: _Mailbox | None = None
        self._to_loop: _Mailbox | None = None

    @property
    def target(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the gRPC thread, serve until cancelled, then stop it (bounded)."""
        self._token = trio.lowlevel.current_trio_token()
        self._to_trio = _Mailbox(self._token.run_sync_soon)
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._thread = threading.Thread(
                target=self._thread_main, args=(started,), name="raftd-etcd-grpc", daemon=True
            )
            self._thread.start()
            try:
                self.port = await trio.to_thread.run_sync(started.result, 10.0)
            except concurrent.futures.TimeoutError:
                raise OSError(f"etcd endpoint {self.target}: gRPC server did not start") from None
            log.info("etcd v3 API on %s%s", self.target, " (TLS)" if self.tls else "")
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await self._shutdown()

    async def _shutdown(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            await trio.to_thread.run_sync(thread.join, 5.0)
            if thread.is_alive():
                log.warning("etcd gRPC thread did not stop within 5 s")

    # -- the gRPC thread -------------------------------------------------------------------
    def _thread_main(self, started: concurrent.futures.Future[int]) -> None:
        try:
            asyncio.run(self._serve(started))
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            else:
                log.exception("etcd gRPC server failed")

    def _credentials(self) -> grpc.ServerCredentials | None:
        if self.tls is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.tls.key, self.tls.cert)],
            root_certificates=self.tls.client_ca,
            require_client_auth=self.tls.client_ca is not None,
        )

    async def _serve(self, started: concurrent.futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._to_loop = _Mailbox(self._loop.call_soon_threadsafe)
        self._stop = asyncio.Event()
        server = grpc.aio.server(
            options=[
                # etcd clients ping often (etcdctl: every 2 s); never GOAWAY them for it.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 1000),
                ("grpc.http2.max_ping_strikes", 0),
                ("grpc.max_receive_message_length", 4 << 20),
            ]
        )
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        svc = self.service
        for path, (fn, req_type) in _unary_methods(svc).items():
            handlers[path] = grpc.unary_unary_rpc_method_handler(
                self._unary_handler(fn),
                request_deserializer=req_type.FromString,
                response_serializer=_serialize,
            )
        for path, (sfn, req_type) in _stream_methods(svc).items():
            handlers[path] = grpc.stream_stream_rpc_method_handler(
                self._stream_handler(sfn),
                request_deserializer=req_type.FromString,
                response_serializer=_serialize,
            )
        for path, (sfn, req_type) in _server_stream_methods(svc).items():
            handlers[path] = grpc.unary_stream_rpc_method_handler(
                self._server_stream_handler(sfn),
                request_deserializer=req_type.FromString,
                response_serializer=_serialize,
            )
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path, h in handlers.items():
            service_name, method = path[1:].split("/")
            by_service.setdefault(service_name, {})[method] = h
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(name, hs) for name, hs in by_service.items()]
        )
        addr = self.target
        creds = self._credentials()
        try:
            port = (
                server.add_secure_port(addr, creds)
                if creds is not None
                else server.add_insecure_port(addr)
            )
        except RuntimeError as exc:
            raise OSError(f"etcd endpoint {addr}: cannot listen: {exc}") from None
        if port == 0:
            raise OSError(f"etcd endpoint {addr}: cannot listen (address in use?)")
        await server.start()
        started.set_result(port)
        try:
            await self._stop.wait()
        finally:
            await server.stop(0.5)

    # -- crossing into trio ----------------------------------------------------------------
    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run in the trio thread (via run_sync_soon): start ``fn(*args)``."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def _start_in_trio(self, fn: Callable[..., Awaitable[None]], *args: Any) -> bool:
        """Start ``fn(*args)`` in the server's trio nursery; False if trio has ended."""
        assert self._to_trio is not None
        try:
            self._to_trio.post(self._spawn, fn, *args)
            return True
        except trio.RunFinishedError:
            return False

    def _call_trio(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._to_trio is not None
        with contextlib.suppress(trio.RunFinishedError):
            self._to_trio.post(fn, *args)

    def _unary_handler(self, fn: Unary) -> Callable[[Any, Any], Awaitable[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[tuple[bool, Any]] = loop.create_future()
            assert self._to_loop is not None
            to_loop = self._to_loop
            st = _Call()
            remaining = context.time_remaining()
            timeout = DEFAULT_TIMEOUT_S if remaining is None else max(0.0, remaining)

            def deliver(ok: bool, value: Any) -> None:
                def resolve() -> None:
                    if not fut.done():
                        fut.set_result((ok, value))

                with contextlib.suppress(RuntimeError):  # the gRPC loop has ended
                    to_loop.post(resolve)

            if not self._start_in_trio(_run_unary, fn, request, timeout, deliver, st):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped")
            try:
                ok, value = await fut
            except asyncio.CancelledError:
                self._call_trio(st.cancel)
                raise
            if ok:
                return value
            await context.abort(value.code, value.message)

        return handler

    def _stream_handler(self, fn: Streaming) -> Callable[[Any, Any], Awaitable[None]]:
        async def handler(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            assert self._to_loop is not None
            st = _Stream(self._to_loop)
            if not self._start_in_trio(_run_stream, fn, st):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped")

            async def pump() -> None:
                try:
                    async for req in request_iterator:
                        self._call_trio(st.feed, req)
                finally:
                    self._call_trio(st.close_input)

            reader = asyncio.create_task(pump())
            try:
                await self._drain(st, context)
            finally:
                reader.cancel()
                self._call_trio(st.cancel)

        return handler

    def _server_stream_handler(self, fn: Streaming) -> Callable[[Any, Any], Awaitable[None]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> None:
            assert self._to_loop is not None
            st = _Stream(self._to_loop)

            async def single(requests: trio.MemoryReceiveChannel[Any], send: Any) -> None:
                async for req in requests:
                    await fn(req, send)
                    return

            if not self._start_in_trio(_run_stream, single, st):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: server stopped")
            self._call_trio(st.feed, request)
            self._call_trio(st.close_input)
            try:
                await self._drain(st, context)
            finally:
                self._call_trio(st.cancel)

        return handler

    async def _drain(self, st: _Stream, context: grpc.aio.ServicerContext) -> None:
        while True:
            item = await st.out.get()
            if item is _END:
                return
            if isinstance(item, EtcdError):
                await context.abort(item.code, item.message)
            await context.write(item)
            self._call_trio(st.release)


def _serialize(msg: Any) -> bytes:
    return msg.SerializeToString()  # type: ignore[no-any-return]


async def _run_unary(
    fn: Unary, request: Any, timeout_s: float, deliver: Callable[[bool, Any], None], st: _Call
) -> None:
    if st.cancelled:
        return
    with trio.CancelScope() as scope:
        st.scope = scope
        deadline = trio.current_time() + timeout_s
        try:
            with trio.move_on_at(deadline):
                deliver(True, await fn(request, deadline))
                return
            deliver(
                False, EtcdError(grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
            )
        except EtcdError as exc:
            deliver(False, exc)
        except Exception as exc:
            log.exception("etcd call failed")
            deliver(False, EtcdError(grpc.StatusCode.UNKNOWN, f"etcdserver: {exc}"))


async def _run_stream(fn: Streaming, st: _Stream) -> None:
    if st.cancelled:
        st.put(_END)
        return
    send_ch, recv_ch = trio.open_memory_channel[Any](math.inf)
    st.send_ch, st.recv_ch = send_ch, recv_ch
    st.credits = trio.Semaphore(STREAM_WINDOW)
    for req in st.pending:
        send_ch.send_nowait(req)
    st.pending.clear()
    if st.input_done:
        send_ch.close()
    result: Any = _END
    with trio.CancelScope() as scope:
        st.scope = scope
        try:
            async with recv_ch:
                await fn(recv_ch, st.send)
        except EtcdError as exc:
            result = exc
        except Exception as exc:
            log.exception("etcd stream failed")
            result = EtcdError(grpc.StatusCode.UNKNOWN, f"etcdserver: {exc}")
    st.put(result)
