"""One client connection to the daemon, sans I/O: the state both clients share.

A :class:`Connection` is fed the bytes read from the socket and hands back the bytes to
write; it never blocks, sleeps or touches a socket, so it is unit-tested alone. The sync
client (a reader thread, one lock around the connection) and the trio client (a reader
and a writer task) are I/O shells around it.

- **Request ids and the pending table.** :meth:`Connection.request` and
  :meth:`Connection.stream` give each request the next id (1, 2, ...), record a
  :class:`Pending` entry and queue its frame for :meth:`Connection.data_to_send`.
  Responses come back in completion order and are matched by id; a response to an id no
  longer pending (a request that timed out, a cancelled watch) is dropped.
- **Errors on id 0.** The daemon answers a frame it cannot attribute to a request with
  ``id = 0`` (an oversized or malformed frame, after which it closes the connection, or
  an undecodable request). The message is remembered and becomes the reason every pending
  request fails with when the connection ends; an id-0 error does not fail anything by
  itself, since the connection may still be usable.
- **Indeterminate writes.** When the connection ends, every pending request fails with
  :class:`ConnectionLost`; a write's error has ``indeterminate=True`` (it may have been
  applied), anything else ``False``. So does a write whose answer did not come in time
  (:meth:`Connection.timed_out`). A request refused because the connection is already
  closed was never sent: determinate.
- **Malformed input.** Bytes that are not a valid frame sequence, or a frame that is not
  a ``Response``, end the connection: pending requests fail with
  :class:`MalformedResponse` (a :class:`ConnectionLost`); nothing else is raised.
- **Streams and back-pressure.** A watch (or snapshot) keeps its entry until it ends; its
  responses queue in the entry, at most ``limit`` of them (watches: :data:`WATCH_BUFFER`).
  A response that finds the queue full ends the watch: its entry is dropped, a
  ``watch_cancel`` is queued for the daemon, and the queue ends, after what it already
  holds, with ``ConnectionLost("watch dropped: the client did not keep up")``, so a
  watcher that asked to resume does so from the revision after the last event it saw.
  A watch response with ``canceled`` set, and the end of the connection, end a stream
  too (the latter with the connection's error).

The caller attaches a ``waker`` (a future, an event...) to each entry; the connection
only stores it. :meth:`Connection.receive_data` and :meth:`Connection.fail` return the
entries that became ready, for the shell to wake. Not thread-safe: one lock or one task
owns a connection.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from google.protobuf.message import DecodeError

from raftd.client._proto import ConnectionLost, DeadlineExceeded, is_write
from raftd.wire.framing import FrameDecoder, FrameError, encode_frame
from raftd.wire.pb import api_pb2 as apb

__all__ = [
    "DEFAULT_WAIT",
    "MARGIN",
    "WATCH_BUFFER",
    "Connection",
    "MalformedResponse",
    "Pending",
    "prepare",
    "wait_for",
]

#: Responses a watch holds for a watcher that has not taken them yet.
WATCH_BUFFER: Final = 1024
#: Extra time a client waits beyond a request's deadline (the daemon answers at it).
MARGIN: Final = 2.0
#: The wait for a request sent without a deadline (the daemon's default is at most 30 s).
DEFAULT_WAIT: Final = 30.0

_OK: Final = apb.Error.OK


class MalformedResponse(ConnectionLost):
    """The daemon sent bytes that are not a valid frame, or a frame that is not a
    ``Response``: the connection cannot continue."""


def prepare(
    req: apb.Request, namespace: str, default_timeout: float | None, timeout: float | None
) -> float | None:
    """Fill in the request's namespace and deadline (``timeout``, else the client's
    ``default_timeout``); returns that deadline in seconds (None: the daemon's default)."""
    req.namespace = namespace
    t = default_timeout if timeout is None else timeout
    if t is not None:
        req.timeout_ms = max(1, int(t * 1000))
    return t


def wait_for(deadline: float | None) -> float:
    """How long a client waits for the answer to a request with this deadline."""
    return (deadline if deadline is not None else DEFAULT_WAIT) + MARGIN


class Pending:
    """One request in flight. A call ends with ``response`` or ``error`` set; a stream
    (``items`` not None) queues responses and ends with ``error`` set once drained.
    ``waker`` belongs to the I/O shell."""

    __slots__ = ("done", "error", "id", "items", "limit", "namespace", "response", "waker", "write")

    def __init__(
        self, rid: int, write: bool, waker: Any, items: deque[apb.Response] | None
    ) -> None:
        self.id = rid
        self.write = write
        self.waker = waker
        self.items = items
        self.limit: int | None = None
        self.namespace = ""
        self.response: apb.Response | None = None
        self.error: ConnectionLost | None = None
        self.done = False


class Connection:
    """The protocol state of one connection (see the module doc)."""

    __slots__ = ("_decoder", "_next_id", "_out", "closed", "error", "pending")

    def __init__(self, max_frame_size: int) -> None:
        self._decoder = FrameDecoder(max_frame_size)
        self._next_id = 1
        self._out: list[bytes] = []
        self.pending: dict[int, Pending] = {}
        self.closed = False
        #: Why the connection ended, or the last id-0 error while it is open.
        self.error = ""

    # -- sending ---------------------------------------------------------------------
    def request(self, req: apb.Request, waker: Any = None) -> Pending:
        """Register ``req`` (its ``id`` is set here) and queue it. Raises
        :class:`ConnectionLost` (determinate: nothing was sent) if the connection ended."""
        return self._register(req, waker, None)

    def stream(self, req: apb.Request, waker: Any = None, *, limit: int | None) -> Pending:
        """As :meth:`request`, for a request answered by many responses (watch,
        snapshot); ``limit``: how many may wait in its queue (None: no bound)."""
        p = self._register(req, waker, deque())
        p.limit = limit
        p.namespace = req.namespace
        return p

    def _register(self, req: apb.Request, waker: Any, items: deque[apb.Response] | None) -> Pending:
        if self.closed:
            raise ConnectionLost(self.error or "connection closed")
        rid = self._next_id
        self._next_id = rid + 1
        req.id = rid
        p = Pending(rid, is_write(req), waker, items)
        self.pending[rid] = p
        self._out.append(encode_frame(req.SerializeToString()))
        return p

    def cancel_watch(self, p: Pending) -> None:
        """Stop watch ``p``: forget it and queue a ``watch_cancel`` (if still open)."""
        self.forget(p)
        if not self.closed:
            req = apb.Request(
                namespace=p.namespace, watch_cancel=apb.WatchCancelRequest(watch_id=p.id)
            )
            self._register(req, None, None)

    def forget(self, p: Pending) -> None:
        """Drop ``p`` from the pending table: later responses to it are ignored."""
        self.pending.pop(p.id, None)

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def data_to_send(self) -> bytes:
        """Every frame queued since the last call, in one buffer (b"" if none)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def unsent(self, data: bytes) -> None:
        """Put back the tail of :meth:`data_to_send`'s buffer that could not be written:
        it goes out first, before any frame queued since."""
        if data:
            self._out.insert(0, data)

    # -- receiving -------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Pending]:
        """Feed bytes read from the socket (b"": the daemon closed it). Returns the
        entries that became ready: calls answered, streams with new items or ended."""
        if self.closed:
            return []
        if not data:
            return self.fail("connection closed by the daemon")
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            return self.fail(f"bad frame from the daemon: {exc}", MalformedResponse)
        ready: list[Pending] = []
        pending = self.pending
        for frame in frames:
            try:
                resp = apb.Response.FromString(frame)
            except DecodeError as exc:
                ready.extend(self.fail(f"bad response from the daemon: {exc}", MalformedResponse))
                return ready
            p = pending.get(resp.id)
            if p is None:
                if resp.id == 0 and resp.error.code != _OK:
                    name = apb.Error.Code.Name(resp.error.code)
                    self.error = f"{name}: {resp.error.message}"
                continue
            items = p.items
            if items is None:
                del pending[resp.id]
                p.response = resp
                p.done = True
            elif p.limit is not None and len(items) >= p.limit:
                self._overflow(p)
            else:
                items.append(resp)
                if resp.HasField("watch") and resp.watch.canceled:
                    del pending[resp.id]
                    self._end(p, ConnectionLost("watch cancelled"))
            ready.append(p)
        return ready

    def _overflow(self, p: Pending) -> None:
        # A watcher that does not keep up: end its watch; it resumes from its last
        # revision if it asked to.
        self.cancel_watch(p)
        self._end(p, ConnectionLost("watch dropped: the client did not keep up"))

    @staticmethod
    def _end(p: Pending, error: ConnectionLost) -> None:
        if not p.done:
            p.done = True
            p.error = error

    def fail(self, reason: str, kind: type[ConnectionLost] = ConnectionLost) -> list[Pending]:
        """End the connection (the socket failed or was closed, or the client closes):
        every pending request fails with ``kind`` (see the module doc for
        ``indeterminate``); returns them. An id-0 error seen earlier is the reason
        given. Later calls do nothing."""
        if self.closed:
            return []
        self.closed = True
        self.error = self.error or reason
        pending, self.pending = self.pending, {}
        self._out = []
        for p in pending.values():
            self._end(p, kind(self.error, indeterminate=p.write))
        return list(pending.values())

    # -- taking results --------------------------------------------------------------
    @staticmethod
    def take(p: Pending) -> apb.Response | ConnectionLost | None:
        """The next item of stream ``p``: a response, else its final error once it has
        ended, else None (wait for the shell's wake-up)."""
        assert p.items is not None
        if p.items:
            return p.items.popleft()
        return p.error

    def timed_out(self, p: Pending, waited: float) -> DeadlineExceeded:
        """Give up on call ``p`` (no answer within ``waited`` s): forget it and return
        the error to raise (indeterminate for a write)."""
        self.forget(p)
        return DeadlineExceeded(f"no response within {waited:.1f}s", indeterminate=p.write)
