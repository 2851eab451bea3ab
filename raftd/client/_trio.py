"""The trio client: one connection per client, reused and pipelined. The protocol state
is :class:`raftd.client._core.Connection`; a writer task sends what it queued (many
requests in one write), a reader task feeds it and wakes the waiting tasks, and a timer
task wakes a call whose answer has not come by its deadline.

A call made while no other waits on the connection, no other caller it answered is
about to run, and the writer is idle, writes its frame itself, at once: a caller that
works one call at a time (the usual application) then costs the writer's scheduler
round and task switch less, about a fifth of the client's CPU per call. Calls that come
together still leave in one write by the writer.

A call parks its task on a :class:`_Wake` and its deadline goes into the connection's
heap. An event and a cancel scope per call would cost a third of the client's CPU per
request under load, and the client shares the machine with its daemon. A call is still
cancelled by any enclosing cancel scope, as any trio checkpoint is.

Use it as an async context manager, which owns the background tasks::

    async with raftd.client.open_client() as c:
        await c.put("k", "v")
"""

# ``timeout=`` arguments are the request's deadline *sent to the daemon* (which answers
# by then); waiting is bounded by trio cancel scopes as usual.
# ruff: noqa: ASYNC109

from __future__ import annotations

import contextlib
import heapq
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from raftd.client import _proto as P
from raftd.client._core import MARGIN, Connection, Pending, prepare, wait_for
from raftd.client._ops import AsyncRunner, Call, Operations
from raftd.client._proto import Compacted, ConnectionLost, Event, RaftdError
from raftd.client._watch import (
    RESUME_FIRST_DELAY,
    RESUME_MAX_DELAY,
    WatchState,
    resume_failed,
    watch_range,
)
from raftd.netio.sockio import SocketIO
from raftd.wire.pb import api_pb2 as apb

__all__ = ["AsyncClient", "AsyncWatch", "open_client"]

T = TypeVar("T")


def _wake(ready: list[Pending]) -> None:
    for p in ready:
        if p.waker is not None:
            p.waker.set()


class _Waking:
    """How many callers of one connection were woken and have not run yet."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _Wake:
    """The waker of one call: :meth:`wait` parks the calling task until :meth:`set` (an
    answer, the connection's end or the call's deadline). ``set`` may come before the
    wait and may come more than once; the task is rescheduled at most once. If the
    waiting task is cancelled, a later ``set`` does nothing. ``waking`` counts the
    callers rescheduled and not yet resumed (a rescheduled task always resumes)."""

    __slots__ = ("fired", "task", "waking")

    def __init__(self, waking: _Waking) -> None:
        self.fired = False
        self.task: trio.lowlevel.Task | None = None
        self.waking = waking

    def set(self) -> None:
        self.fired = True
        task = self.task
        if task is not None:
            self.task = None
            self.waking.count += 1
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self.fired:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        self.waking.count -= 1


class _AsyncConn:
    """One stream to the daemon; :meth:`run` is its reader, writer and deadline timer."""

    def __init__(self, stream: trio.abc.Stream, max_frame_size: int) -> None:
        self.stream = stream
        self.io = SocketIO(stream)
        self.core = Connection(max_frame_size)
        self.wake = trio.Event()  # the writer's: frames are queued
        self.done = trio.Event()
        # Calls by deadline: (deadline, id, entry). Settled entries (answered, failed, or
        # forgotten by a caller that gave up) leave lazily, from the top at each new call
        # (the oldest call is usually settled first, so the heap holds about the calls in
        # flight) and at the timer's wake-ups.
        self.deadlines: list[tuple[float, int, Pending]] = []
        self._timer_at = math.inf  # when the timer wakes next (inf: when told)
        self._timer_wake = trio.Event()
        # A caller may write only while the writer waits for work (so their bytes never
        # interleave).
        self._writer_idle = False
        # Callers woken together (one read answered them all) call again together: the
        # writer sends their frames in one write.
        self._waking = _Waking()

    @property
    def closed(self) -> bool:
        return self.core.closed

    def call(self, req: apb.Request, wait: float) -> Pending:
        """Queue ``req``, answered within ``wait`` seconds from now or timed out: await
        the entry's ``waker``; an entry with neither ``response`` nor ``error`` then
        timed out."""
        p = self.core.request(req, _Wake(self._waking))
        if self._writer_idle and not self._waking.count and len(self.core.pending) == 1:
            self._write_now()
        else:
            self.wake.set()
        at = trio.current_time() + wait
        heap, pending = self.deadlines, self.core.pending
        while heap and (heap[0][2].done or heap[0][1] not in pending):
            heapq.heappop(heap)
        heapq.heappush(heap, (at, p.id, p))
        if at < self._timer_at:
            self._timer_at = at
            self._timer_wake.set()
        return p

    def _write_now(self) -> None:
        """Write the queued frames from the calling task. What the socket does not take
        at once (a full buffer, a stream without a socket of its own, or an error, which
        the writer's own send then meets and reports) is left to the writer, ahead of
        anything queued later."""
        data = self.core.data_to_send()
        try:
            n = self.io.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            n = 0
        if n < len(data):
            self.core.unsent(data[n:])
            self.wake.set()

    def stream_request(self, req: apb.Request, limit: int | None) -> Pending:
        p = self.core.stream(req, None, limit=limit)
        self.wake.set()
        return p

    async def take(self, p: Pending) -> apb.Response | ConnectionLost:
        """The next item of stream ``p`` (see ``Connection.take``)."""
        while (item := self.core.take(p)) is None:
            p.waker = trio.Event()
            await p.waker.wait()
        return item

    def cancel_watch(self, p: Pending) -> None:
        self.core.cancel_watch(p)
        self.wake.set()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._writer)
                n.start_soon(self._timer)
                await self._reader()
                n.cancel_scope.cancel()
        except Exception as exc:
            self._fail(f"connection failed: {exc!r}")
        finally:
            self._fail("connection closed by the daemon")
            with contextlib.suppress(Exception):
                await trio.aclose_forcefully(self.stream)
            self.done.set()

    async def _writer(self) -> None:
        core = self.core
        while True:
            while not core.has_output:
                self.wake = trio.Event()
                self._writer_idle = True
                try:
                    await self.wake.wait()
                finally:
                    self._writer_idle = False
                if core.closed:
                    return
            await self.io.send_all(core.data_to_send())

    async def _reader(self) -> None:
        core = self.core
        while not core.closed:
            try:
                data = await self.io.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._fail(f"connection failed: {exc!r}")
                return
            _wake(core.receive_data(data))
            if core.has_output:  # a watch that overflowed queued its cancel
                self.wake.set()

    async def _timer(self) -> None:
        """Wake each call still unanswered at its deadline (the caller then gives up on
        it). Sleeps until the earliest deadline, or until a call with an earlier one."""
        heap = self.deadlines
        while True:
            now = trio.current_time()
            pending = self.core.pending  # replaced when the connection fails
            while heap and (heap[0][2].done or heap[0][1] not in pending or heap[0][0] <= now):
                _, rid, p = heapq.heappop(heap)
                if not p.done and rid in pending:
                    p.waker.set()
            self._timer_at = heap[0][0] if heap else math.inf
            self._timer_wake = trio.Event()
            with trio.move_on_at(self._timer_at):
                await self._timer_wake.wait()

    def _fail(self, reason: str) -> None:
        _wake(self.core.fail(reason))
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


class AsyncClient(Operations, AsyncRunner):
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
            auth = apb.Request(auth=apb.AuthRequest(token=self.token))
            p = conn.call(auth, self.connect_timeout + MARGIN)
            await p.waker.wait()
            if p.error is not None:
                raise p.error
            if p.response is None:
                conn._fail("no answer to auth")
                raise ConnectionLost("no answer to auth")
            P.check(p.response)
        return conn

    async def _connection(self) -> _AsyncConn:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            return self._conn

    async def call(
        self, req: apb.Request, parse: Callable[[apb.Response], T], timeout: float | None = None
    ) -> T:
        """Send ``req``, wait for its response, parse it (raising its error)."""
        return await self._run(Call(req, parse, timeout))

    async def _run(self, call: Call[T]) -> T:
        t = prepare(call.request, self.namespace, self.timeout, call.timeout)
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        wait = wait_for(t)
        p = conn.call(call.request, wait)
        try:
            await p.waker.wait()
        finally:
            if not p.done:  # timed out or cancelled: a late answer is dropped
                conn.core.forget(p)
        if p.error is not None:
            raise p.error
        if p.response is None:
            raise conn.core.timed_out(p, wait)
        return call.parse(p.response)

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
        k, end = watch_range(key, range_end, prefix)
        w = AsyncWatch(self, k, end, start_revision, prev_kv, resume, resume_timeout)
        await w.start()
        try:
            yield w
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await w.cancel()


class AsyncWatch(WatchState[AsyncClient]):
    """An open watch of :class:`AsyncClient`: ``async for`` yields :class:`Event`."""

    _conn: _AsyncConn | None = None

    async def start(self) -> None:
        conn = await self.client._connection()
        p = conn.stream_request(self._request(self.client.namespace), self.buffer)
        self._conn, self._stream = conn, p
        self._started(await self._take(self.client.connect_timeout + 10.0))

    async def _take(self, timeout: float = math.inf) -> apb.Response | ConnectionLost:
        assert self._conn is not None and self._stream is not None
        with trio.move_on_after(timeout):
            return await self._conn.take(self._stream)
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
            lost = self._absorb(await self._take())
            if lost is not None:
                await self._reconnect(lost)
        return self._events.popleft()

    async def _reconnect(self, cause: ConnectionLost) -> None:
        delay = RESUME_FIRST_DELAY
        last: RaftdError | TimeoutError | None = None
        with trio.move_on_after(self.resume_timeout):
            while True:
                try:
                    await self.start()
                    return
                except Compacted:
                    raise
                except (RaftdError, TimeoutError) as exc:
                    last = exc
                await trio.sleep(delay)
                delay = min(delay * 2, RESUME_MAX_DELAY)
        raise resume_failed(last) from cause

    async def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        conn, p = self._conn, self._stream
        if conn is not None and p is not None:
            conn.cancel_watch(p)


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
