"""Distributed lock and leader election on leases, as etcd's ``concurrency`` package.

- A :class:`Session` is a lease kept alive by a background keepalive (every TTL/3).
  When the session's holder dies, keepalives stop and the leader revokes the lease after
  its TTL, deleting the session's keys.
- :class:`Lock` (mutex): each contender creates ``<prefix><name>/<lease id hex>`` with its
  session's lease (if absent: a transaction on ``create_revision == 0``). The owner is the
  contender whose key has the lowest ``create_revision``; the others each watch the key
  just before theirs until it is deleted, then check again (no thundering herd).
- :class:`Election`: the same queue; the leader is the lowest ``create_revision`` under
  ``<prefix><name>/``, its value the leader's proclamation. ``campaign`` waits to become
  leader, ``proclaim`` updates the value while still leader, ``resign`` steps down,
  ``leader`` reads the current one.

Both have a blocking form (on :class:`raftd.client.Client`, keepalives in a thread) and a
trio form (``Async*``, on :class:`raftd.client.AsyncClient`).

Fencing: the lock key's ``create_revision`` (``Lock.revision``) increases with every new
owner; pass it to the protected resource and compare (``compare(key, "create", "=",
rev)`` in a transaction) to refuse a stale owner.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from raftd.client._proto import (
    KeyValue,
    NotFound,
    RaftdError,
    compare,
    op_get,
    op_put,
    prefix_end,
    to_bytes,
)
from raftd.client._sync import Client
from raftd.client._trio import AsyncClient

__all__ = [
    "AsyncElection",
    "AsyncLock",
    "AsyncSession",
    "Election",
    "Lock",
    "LockTimeout",
    "Session",
    "open_session",
]

LOCK_PREFIX = b"/raftd/lock/"
ELECTION_PREFIX = b"/raftd/election/"


class LockTimeout(RaftdError):
    code = "DEADLINE_EXCEEDED"


def _my_key(pfx: bytes, lease_id: int) -> bytes:
    return pfx + f"{lease_id:016x}".encode()


def _predecessor(kvs: list[KeyValue], my_rev: int) -> KeyValue | None:
    """The contender just ahead (highest create_revision below ours), if any."""
    ahead = [kv for kv in kvs if kv.create_revision < my_rev]
    return max(ahead, key=lambda kv: kv.create_revision) if ahead else None


# -- blocking --------------------------------------------------------------------------


class Session:
    """A lease with a keepalive thread. ``lost`` is set if a keepalive finds the lease
    gone (expired): everything held under it is lost."""

    def __init__(self, client: Client, ttl: int = 10, *, lease_id: int = 0) -> None:
        self.client = client
        self.lease = client.lease_grant(ttl, lease_id=lease_id)
        self.lease_id = self.lease.id
        self.ttl = self.lease.ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keepalive, name="raftd-lease", daemon=True)
        self._thread.start()

    def _keepalive(self) -> None:
        interval = max(0.2, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                self.client.lease_keepalive(self.lease_id, timeout=interval)
            except NotFound:
                self.lost.set()
                return
            except RaftdError:
                continue  # transient (leader change): try again next interval

    def close(self, *, revoke: bool = True) -> None:
        """Stop the keepalives and (by default) revoke the lease, deleting its keys."""
        self._stop.set()
        self._thread.join(timeout=5)
        if revoke and not self.lost.is_set():
            with contextlib.suppress(RaftdError):
                self.client.lease_revoke(self.lease_id)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Queue:
    """The contender queue shared by Lock and Election (blocking)."""

    def __init__(self, client: Client, pfx: bytes, session: Session) -> None:
        self.client = client
        self.pfx = pfx
        self.session = session
        self.key = _my_key(pfx, session.lease_id)
        self.revision = 0

    def enter(self, value: bytes) -> None:
        r = self.client.txn(
            [compare(self.key, "create", "=", 0)],
            [op_put(self.key, value, lease=self.session.lease_id)],
            [op_get(self.key)],
        )
        if r.succeeded:
            self.revision = r.revision
        else:
            got = r.responses[0]
            assert hasattr(got, "kvs")
            self.revision = got.kvs[0].create_revision

    def wait_first(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rr = self.client.range(self.pfx, prefix_end(self.pfx))
            ahead = _predecessor(rr.kvs, self.revision)
            if not any(kv.key == self.key for kv in rr.kvs):
                raise NotFound("our key is gone (session expired?)")
            if ahead is None:
                return True
            with self.client.watch(ahead.key, start_revision=rr.revision + 1) as w:
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    try:
                        ev = w.next(timeout=left)
                    except TimeoutError:
                        return False
                    if ev is None or ev.type == "delete":
                        break

    def leave(self) -> None:
        with contextlib.suppress(RaftdError):
            self.client.delete(self.key)
        self.revision = 0


class Lock:
    """A distributed mutex named ``name`` (see the module doc).

    ``with Lock(client, "jobs"):`` or ``acquire(timeout)``/``release()``. Without a
    ``session`` the lock makes (and closes) its own with ``ttl``.
    """

    def __init__(
        self,
        client: Client,
        name: bytes | str,
        *,
        session: Session | None = None,
        ttl: int = 10,
        prefix: bytes = LOCK_PREFIX,
    ) -> None:
        self.client = client
        self.name = to_bytes(name)
        self.pfx = prefix + self.name + b"/"
        self._own_session = session is None
        self.ttl = ttl
        self.session = session
        self._q: _Queue | None = None

    @property
    def key(self) -> bytes:
        return self._q.key if self._q else b""

    @property
    def revision(self) -> int:
        """The lock key's create_revision: a fencing token (see the module doc)."""
        return self._q.revision if self._q else 0

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock; False after ``timeout`` seconds (our key is removed)."""
        if self.session is None:
            self.session = Session(self.client, self.ttl)
        q = self._q = _Queue(self.client, self.pfx, self.session)
        q.enter(b"")
        try:
            ok = q.wait_first(timeout)
        except BaseException:
            q.leave()
            raise
        if not ok:
            q.leave()
            self._q = None
        return ok

    def release(self) -> None:
        if self._q is not None:
            self._q.leave()
            self._q = None
        if self._own_session and self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise LockTimeout("lock not acquired")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Election:
    """Leader election named ``name`` on a session (see the module doc)."""

    def __init__(
        self,
        client: Client,
        name: bytes | str,
        session: Session,
        *,
        prefix: bytes = ELECTION_PREFIX,
    ) -> None:
        self.client = client
        self.pfx = prefix + to_bytes(name) + b"/"
        self.session = session
        self._q = _Queue(client, self.pfx, session)

    def campaign(self, value: bytes | str, timeout: float | None = None) -> bool:
        """Enter the election with ``value``; return True once leader (False after
        ``timeout``, having left the election)."""
        self._q.enter(to_bytes(value))
        ok = self._q.wait_first(timeout)
        if not ok:
            self._q.leave()
        return ok

    def proclaim(self, value: bytes | str) -> None:
        """Change the leader's value; FailedPrecondition-like NotFound if not leader."""
        r = self.client.txn(
            [compare(self._q.key, "create", "=", self._q.revision)],
            [op_put(self._q.key, value, lease=self.session.lease_id)],
        )
        if not r.succeeded:
            raise NotFound("not the leader any more")

    def resign(self) -> None:
        self._q.leave()

    def leader(self) -> KeyValue | None:
        """The current leader's key-value (its value is the proclamation), or None."""
        rr = self.client.range(self.pfx, prefix_end(self.pfx))
        return min(rr.kvs, key=lambda kv: kv.create_revision) if rr.kvs else None


# -- trio --------------------------------------------------------------------------------


class AsyncSession:
    """The trio :class:`Session`; make it with :func:`open_session`."""

    def __init__(self, client: AsyncClient, lease_id: int, ttl: int) -> None:
        self.client = client
        self.lease_id = lease_id
        self.ttl = ttl
        self.lost = trio.Event()

    async def _keepalive(self) -> None:
        interval = max(0.2, self.ttl / 3)
        while True:
            await trio.sleep(interval)
            try:
                await self.client.lease_keepalive(self.lease_id, timeout=interval)
            except NotFound:
                self.lost.set()
                return
            except RaftdError:
                continue


@asynccontextmanager
async def open_session(client: AsyncClient, ttl: int = 10) -> AsyncIterator[AsyncSession]:
    """A lease kept alive while the block runs, revoked at its end."""
    lease = await client.lease_grant(ttl)
    session = AsyncSession(client, lease.id, lease.ttl)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session._keepalive)
        try:
            yield session
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                if not session.lost.is_set():
                    with contextlib.suppress(RaftdError):
                        await client.lease_revoke(lease.id)


class _AsyncQueue:
    def __init__(self, client: AsyncClient, pfx: bytes, session: AsyncSession) -> None:
        self.client = client
        self.pfx = pfx
        self.session = session
        self.key = _my_key(pfx, session.lease_id)
        self.revision = 0

    async def enter(self, value: bytes) -> None:
        r = await self.client.txn(
            [compare(self.key, "create", "=", 0)],
            [op_put(self.key, value, lease=self.session.lease_id)],
            [op_get(self.key)],
        )
        if r.succeeded:
            self.revision = r.revision
        else:
            got: Any = r.responses[0]
            self.revision = got.kvs[0].create_revision

    async def wait_first(self) -> None:
        while True:
            rr = await self.client.range(self.pfx, prefix_end(self.pfx))
            if not any(kv.key == self.key for kv in rr.kvs):
                raise NotFound("our key is gone (session expired?)")
            ahead = _predecessor(rr.kvs, self.revision)
            if ahead is None:
                return
            async with self.client.watch(ahead.key, start_revision=rr.revision + 1) as w:
                async for ev in w:
                    if ev.type == "delete":
                        break

    async def leave(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(RaftdError):
            await self.client.delete(self.key)
        self.revision = 0


class AsyncLock:
    """The trio :class:`Lock` on a session: ``async with AsyncLock(c, "jobs", s):``.
    Bound the wait with trio's timeouts around ``acquire``."""

    def __init__(
        self,
        client: AsyncClient,
        name: bytes | str,
        session: AsyncSession,
        *,
        prefix: bytes = LOCK_PREFIX,
    ) -> None:
        self.pfx = prefix + to_bytes(name) + b"/"
        self._q = _AsyncQueue(client, self.pfx, session)

    @property
    def key(self) -> bytes:
        return self._q.key

    @property
    def revision(self) -> int:
        return self._q.revision

    async def acquire(self) -> None:
        await self._q.enter(b"")
        try:
            await self._q.wait_first()
        except BaseException:
            await self._q.leave()
            raise

    async def release(self) -> None:
        await self._q.leave()

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class AsyncElection:
    """The trio :class:`Election`."""

    def __init__(
        self,
        client: AsyncClient,
        name: bytes | str,
        session: AsyncSession,
        *,
        prefix: bytes = ELECTION_PREFIX,
    ) -> None:
        self.client = client
        self.pfx = prefix + to_bytes(name) + b"/"
        self.session = session
        self._q = _AsyncQueue(client, self.pfx, session)

    async def campaign(self, value: bytes | str) -> None:
        await self._q.enter(to_bytes(value))
        try:
            await self._q.wait_first()
        except BaseException:
            await self._q.leave()
            raise

    async def proclaim(self, value: bytes | str) -> None:
        r = await self.client.txn(
            [compare(self._q.key, "create", "=", self._q.revision)],
            [op_put(self._q.key, value, lease=self.session.lease_id)],
        )
        if not r.succeeded:
            raise NotFound("not the leader any more")

    async def resign(self) -> None:
        await self._q.leave()

    async def leader(self) -> KeyValue | None:
        rr = await self.client.range(self.pfx, prefix_end(self.pfx))
        return min(rr.kvs, key=lambda kv: kv.create_revision) if rr.kvs else None
