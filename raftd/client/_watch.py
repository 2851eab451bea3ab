"""What a watch has seen and what it asks for next, sans I/O: shared by
:class:`raftd.client.Watch` and :class:`raftd.client.AsyncWatch`, which only wait."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from raftd.client._core import WATCH_BUFFER, Pending
from raftd.client._proto import (
    ConnectionLost,
    Event,
    RaftdError,
    check,
    error_from_pb,
    events_of,
    prefix_end,
    req_watch,
    to_bytes,
)
from raftd.wire.pb import api_pb2 as apb

__all__ = ["RESUME_FIRST_DELAY", "RESUME_MAX_DELAY", "WatchState", "resume_failed", "watch_range"]

#: Backoff between attempts to resume a watch after its connection failed.
RESUME_FIRST_DELAY = 0.05
RESUME_MAX_DELAY = 1.0


def watch_range(key: bytes | str, range_end: bytes | str, prefix: bool) -> tuple[bytes, bytes]:
    """The ``[key, range_end)`` a watch covers; ``prefix``: every key starting with
    ``key`` (every key if ``key`` is empty)."""
    k = to_bytes(key)
    end = to_bytes(range_end)
    if prefix:
        end = prefix_end(k) if k else b"\x00"
        k = k or b"\x00"
    return k, end


C = TypeVar("C")


class WatchState(Generic[C]):
    """The watch's position: ``revision`` is the revision of the last event delivered
    (or the start point), ``next_revision`` the one to (re)start from. The clients'
    watch classes extend it with the waiting; ``client`` is theirs."""

    def __init__(
        self,
        client: C,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        prev_kv: bool,
        resume: bool,
        resume_timeout: float,
        buffer: int = WATCH_BUFFER,
    ) -> None:
        self.client = client
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        self.prev_kv = prev_kv
        self.resume = resume
        self.resume_timeout = resume_timeout
        self.revision = start_revision - 1 if start_revision > 0 else 0
        self._events: deque[Event] = deque()
        self._done = False
        #: How many responses may wait unread (see :mod:`raftd.client._core`).
        self.buffer = buffer
        #: The connection entry of the stream being read (the clients set it).
        self._stream: Pending | None = None

    def _request(self, namespace: str) -> apb.Request:
        """The watch request that (re)starts the watch where it stands."""
        req = req_watch(
            self.key, self.range_end, start_revision=self.next_revision, prev_kv=self.prev_kv
        )
        req.namespace = namespace
        return req

    def _started(self, first: apb.Response | ConnectionLost) -> None:
        """The first answer to :meth:`_request`: raises its error; a watch from "now"
        learns the revision it starts after."""
        if isinstance(first, BaseException):
            raise first
        check(first)
        if first.watch.created and self.next_revision <= 0:
            self.next_revision = first.watch.header_revision + 1
            self.revision = first.watch.header_revision

    def _absorb(self, item: apb.Response | ConnectionLost) -> ConnectionLost | None:
        """Take one item of the watch's stream: events go to :attr:`_events`; a cancel
        sets :attr:`_done`; errors are raised. Returns the error when the connection (or
        the watch, see :mod:`raftd.client._core`) was lost and the watch should resume;
        raises it instead without ``resume``."""
        if isinstance(item, ConnectionLost):
            if not self.resume:
                raise item
            return item
        if item.watch.canceled:
            self._done = True
            if item.error.code != apb.Error.OK:
                raise error_from_pb(item.error)
            return None
        if item.error.code != apb.Error.OK:
            raise error_from_pb(item.error)
        evs = events_of(item)
        if evs:
            self.revision = evs[-1].revision
            self.next_revision = self.revision + 1
            self._events.extend(evs)
        return None


def resume_failed(last: RaftdError | TimeoutError | None) -> ConnectionLost:
    """The error of a watch that could not resume within its ``resume_timeout``
    (``last``: the last attempt's error)."""
    detail = f": {last}" if last is not None else ""
    return ConnectionLost(f"watch could not resume{detail}")
