"""The blocking client: one connection, reused and pipelined, safe to share between
threads. The protocol state is :class:`raftd.client._core.Connection` under one lock; a
reader thread feeds it and wakes the waiting callers; callers write their own frames."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from raftd.client import _proto as P
from raftd.client._core import MARGIN, Connection, Pending, prepare, wait_for
from raftd.client._ops import Call, Operations, SyncRunner
from raftd.client._proto import Compacted, ConnectionLost, Event, RaftdError
from raftd.client._watch import (
    RESUME_FIRST_DELAY,
    RESUME_MAX_DELAY,
    WatchState,
    resume_failed,
    watch_range,
)
from raftd.wire.pb import api_pb2 as apb

__all__ = ["Client", "Watch"]

T = TypeVar("T")


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


def _wake(ready: list[Pending]) -> None:
    """Wake the callers of entries that became ready: a call's future gets its result,
    a stream's event is set."""
    for p in ready:
        w = p.waker
        if isinstance(w, Future):
            if not w.done():
                if p.error is not None:
                    w.set_exception(p.error)
                else:
                    w.set_result(p.response)
        elif w is not None:
            w.set()


class _Conn:
    """One socket to the daemon with its reader thread."""

    def __init__(self, sock: socket.socket, max_frame_size: int) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()  # guards core
        self.core = Connection(max_frame_size)
        self.thread = threading.Thread(target=self._read_loop, name="raftd-client", daemon=True)
        self.thread.start()

    @property
    def closed(self) -> bool:
        return self.core.closed

    def request(self, req: apb.Request, fut: Future[apb.Response]) -> Pending:
        """Send ``req``; ``fut`` gets its response or error."""
        with self.lock:
            p = self.core.request(req, fut)
        self.flush()
        return p

    def stream(self, req: apb.Request, *, limit: int | None) -> Pending:
        """Send ``req``, answered by a stream; read it with :meth:`take`."""
        with self.lock:
            p = self.core.stream(req, threading.Event(), limit=limit)
        self.flush()
        return p

    def flush(self) -> None:
        """Write every queued frame. Under the send lock, so a caller that finds
        another one writing leaves its frames to it or sends them right after."""
        with self.send_lock:
            with self.lock:
                data = self.core.data_to_send()
            if not data:
                return
            try:
                self.sock.sendall(data)
                return
            except OSError as exc:
                reason = f"send failed: {exc}"
        # Outside the send lock: waking the callers runs their futures' callbacks.
        self._fail(reason)

    def take(self, p: Pending, timeout: float | None) -> apb.Response | ConnectionLost | None:
        """The next item of stream ``p`` (see ``Connection.take``); None after
        ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        event: threading.Event = p.waker
        while True:
            with self.lock:
                item = self.core.take(p)
                if item is None:
                    event.clear()  # under the lock: the reader sets it after adding
            if item is not None:
                if isinstance(item, ConnectionLost):
                    self.flush()  # a watch that overflowed queued its cancel
                return item
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not event.wait(left):
                return None

    def forget(self, p: Pending) -> None:
        with self.lock:
            self.core.forget(p)

    def timed_out(self, p: Pending, waited: float) -> RaftdError:
        with self.lock:
            return self.core.timed_out(p, waited)

    def cancel_watch(self, p: Pending) -> None:
        with self.lock:
            self.core.cancel_watch(p)
        self.flush()

    def _read_loop(self) -> None:
        try:
            while not self.core.closed:
                data = self.sock.recv(65536)
                with self.lock:
                    ready = self.core.receive_data(data)
                _wake(ready)
        except OSError as exc:
            self._fail(f"connection failed: {exc}")
        finally:
            self._fail("connection closed by the daemon")
            # Only this thread closes the socket. Closed from another thread, its file
            # descriptor number could be reused by a new connection while this thread
            # is between loading the number and entering recv(): it would then read,
            # and swallow, the new connection's response (seen as a request answered
            # by the daemon that the client never received).
            # Under the send lock for the same reason: a sendall() of another thread
            # must not write a request into a reused descriptor.
            with self.send_lock, contextlib.suppress(OSError):
                self.sock.close()

    def _fail(self, reason: str) -> None:
        with self.lock:
            ready = self.core.fail(reason)
        _wake(ready)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Fail what is pending and stop the reader, which closes the socket (see
        :meth:`_read_loop`): shutdown() wakes it with end-of-file at once."""
        self._fail("client closed")


class Client(Operations, SyncRunner):
    """A blocking raftd client (see :mod:`raftd.client`).

    ``socket``: a unix socket path or ``tcp://host:port`` (default ``$RAFTD_SOCKET``, then
    ``/var/lib/raftd/raftd.sock``); ``namespace`` (default ``$RAFTD_NAMESPACE``, then the
    daemon's first); ``timeout``: per-request deadline in seconds sent to the daemon
    (None: the daemon's default); ``token``: the API token for a TCP listener (default
    ``$RAFTD_API_TOKEN`` or the file named by ``$RAFTD_API_TOKEN_FILE``).

    The connection opens at the first request and reopens after a failure. Requests from
    several threads share it and are pipelined. :meth:`submit` returns a future for
    explicit pipelining from one thread. The key-value, cluster and lease methods are
    :class:`raftd.client._ops.Operations`, shared with :class:`AsyncClient`.
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
                P.check(fut.result(self.connect_timeout + MARGIN))
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

    def submit(self, req: apb.Request, timeout: float | None = None) -> Future[apb.Response]:
        """Send ``req`` (its id and namespace are filled in) and return a future of the
        raw response. The future fails with :class:`ConnectionLost` if the connection
        does."""
        prepare(req, self.namespace, self.timeout, timeout)
        fut: Future[apb.Response] = Future()
        self._connection().request(req, fut)
        return fut

    def call(
        self, req: apb.Request, parse: Callable[[apb.Response], T], timeout: float | None = None
    ) -> T:
        """Send ``req``, wait for the response and parse it (raising its error)."""
        return self._run(Call(req, parse, timeout))

    def _run(self, call: Call[T]) -> T:
        t = prepare(call.request, self.namespace, self.timeout, call.timeout)
        fut: Future[apb.Response] = Future()
        conn = self._connection()
        p = conn.request(call.request, fut)
        wait = wait_for(t)
        try:
            resp = fut.result(wait)
        except FutureTimeout:
            raise conn.timed_out(p, wait) from None
        return call.parse(resp)

    # -- streams -----------------------------------------------------------------------
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
        # Unbounded: the daemon sends a backup at the pace of the socket, and a full
        # queue would have to abort it.
        p = conn.stream(req, limit=None)
        total = done = index = 0
        deadline = time.monotonic() + timeout
        try:
            while True:
                item = conn.take(p, max(0.0, deadline - time.monotonic()))
                if item is None:
                    raise TimeoutError("backup did not finish within the timeout")
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
            conn.forget(p)

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
        raises :class:`Compacted`. A watcher that leaves more than 1,024 responses
        unread is dropped by the client and resumes the same way (see
        :mod:`raftd.client._core`)."""
        k, end = watch_range(key, range_end, prefix)
        w = Watch(self, k, end, start_revision, prev_kv, resume, resume_timeout)
        w.start()
        return w


class Watch(WatchState[Client]):
    """An open watch: iterate for :class:`Event` objects; :meth:`cancel` to stop.
    ``revision`` is the revision of the last event delivered (or the start point);
    ``buffer``: how many responses may wait unread (see :meth:`Client.watch`)."""

    _conn: _Conn | None = None

    def start(self) -> None:
        conn = self.client._connection()
        p = conn.stream(self._request(self.client.namespace), limit=self.buffer)
        self._conn, self._stream = conn, p
        first = conn.take(p, self.client.connect_timeout + 10.0)
        if first is None:
            raise TimeoutError("no watch event within the timeout")
        self._started(first)

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
        while not self._events:
            if self._done:
                return None
            assert self._conn is not None and self._stream is not None
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = self._conn.take(self._stream, left)
            if item is None:
                raise TimeoutError("no watch event within the timeout")
            lost = self._absorb(item)
            if lost is not None:
                self._reconnect(lost)
        return self._events.popleft()

    def _reconnect(self, cause: ConnectionLost) -> None:
        deadline = time.monotonic() + self.resume_timeout
        delay = RESUME_FIRST_DELAY
        while True:
            try:
                self.start()
                return
            except Compacted:
                raise
            except (TimeoutError, RaftdError) as exc:
                if time.monotonic() + delay > deadline:
                    raise resume_failed(exc) from cause
            time.sleep(delay)
            delay = min(delay * 2, RESUME_MAX_DELAY)

    def cancel(self) -> None:
        """Stop the watch (the daemon confirms; pending events are dropped)."""
        if self._done:
            return
        self._done = True
        conn, p = self._conn, self._stream
        if conn is not None and p is not None:
            conn.cancel_watch(p)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
