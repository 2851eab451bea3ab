"""An in-memory twin of the libp2p transport, for runtime unit tests.

Same contract (:mod:`raftd.transport.base`): non-blocking ``send`` into bounded per-peer
queues, per-peer FIFO delivery by one sender task per peer, ``on_unreachable`` when the
target is not running or the link is cut, snapshots spooled through a temp file and
verified, fault injection. It needs no sockets and works under trio's ``MockClock``.

    net = MemoryNetwork()
    a = net.transport("a", "/raft/test", on_message=...)
    b = net.transport("b", "/raft/test", on_message=...)
    async with trio.open_nursery() as n:
        await n.start(a.run)
        await n.start(b.run)
        a.send("b", msg)
        net.cut("a", "b"); net.isolate("c"); net.heal()
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio
import trio.lowlevel

from raftd.core.types import Message, SnapshotMetadata
from raftd.transport.base import (
    OnMessage,
    OnSnapshot,
    OnUnreachable,
    Outbox,
    OutboxTransport,
    PeerQueue,
    SnapshotSource,
    TransportStats,
    is_routable,
    iter_snapshot_chunks,
    next_backoff,
    snapshot_envelope,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # see raftd.transport.base

__all__ = ["MemoryNetwork", "MemoryTransport"]

log = logging.getLogger("raftd.transport.memory")


class MemoryNetwork:
    """A switch connecting :class:`MemoryTransport` instances by node id, per namespace.

    Links are symmetric; ``cut``/``isolate`` make deliveries fail (reported unreachable
    to the sender, as a failed dial would be), ``heal`` restores everything.
    """

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str], MemoryTransport] = {}
        self._cut: set[frozenset[str]] = set()
        self._isolated: set[str] = set()

    def transport(
        self,
        node_id: str,
        namespace: str = "/raft/test",
        *,
        on_message: OnMessage | None = None,
        on_unreachable: OnUnreachable | None = None,
        on_snapshot: OnSnapshot | None = None,
        queue_size: int = 4096,
        snapshot_dir: str | None = None,
        rng: random.Random | None = None,
    ) -> MemoryTransport:
        """Create the transport of ``node_id`` in ``namespace`` (replacing any old one,
        as a restarted node would)."""
        t = MemoryTransport(
            self,
            node_id,
            namespace,
            on_message=on_message,
            on_unreachable=on_unreachable,
            on_snapshot=on_snapshot,
            queue_size=queue_size,
            snapshot_dir=snapshot_dir,
            rng=rng,
        )
        self._nodes[(namespace, node_id)] = t
        return t

    def cut(self, a: str, b: str) -> None:
        self._cut.add(frozenset((a, b)))

    def isolate(self, node_id: str) -> None:
        self._isolated.add(node_id)

    def heal(self) -> None:
        self._cut.clear()
        self._isolated.clear()

    def linked(self, a: str, b: str) -> bool:
        return (
            a not in self._isolated
            and b not in self._isolated
            and frozenset((a, b)) not in self._cut
        )

    def _target(self, namespace: str, src: str, dst: str) -> MemoryTransport | None:
        t = self._nodes.get((namespace, dst))
        if t is None or not t.running or not self.linked(src, dst):
            return None
        return t


class MemoryTransport(OutboxTransport):
    """One node's transport on a :class:`MemoryNetwork` (see the module docstring)."""

    def __init__(
        self,
        network: MemoryNetwork,
        node_id: str,
        namespace: str,
        *,
        on_message: OnMessage | None = None,
        on_unreachable: OnUnreachable | None = None,
        on_snapshot: OnSnapshot | None = None,
        queue_size: int = 4096,
        snapshot_dir: str | None = None,
        rng: random.Random | None = None,
        backoff_min: float = 0.05,
        backoff_max: float = 2.0,
    ) -> None:
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.on_snapshot = on_snapshot
        self._net = network
        self._local_id = node_id
        self._namespace = namespace
        self._stats = TransportStats()
        self._outbox = Outbox(self._stats, queue_size, self._on_new_queue, log)
        self._addrs: dict[str, list[str]] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._snapshot_dir = snapshot_dir
        self._rng = rng or random.Random(0)
        self._backoff = (backoff_min, backoff_max)

    @property
    def running(self) -> bool:
        return self._nursery is not None

    def add_peer_addrs(self, peer_id: str, addrs: Sequence[str]) -> None:
        self._addrs[peer_id] = list(addrs)
        self._outbox.queue(peer_id)

    def peer_addrs(self, peer_id: str) -> list[str]:
        return list(self._addrs.get(peer_id, []))

    def remove_peer(self, peer_id: str) -> None:
        self._addrs.pop(peer_id, None)
        scope = self._scopes.pop(peer_id, None)
        if scope is not None:
            scope.cancel()
        self._outbox.forget(peer_id)

    def send(self, peer_id: str, msg: Message) -> None:
        if peer_id == self._local_id or not is_routable(msg):
            self._stats.dropped_invalid += 1
            return
        self._outbox.submit(peer_id, msg)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._nursery is not None:
            raise RuntimeError("transport is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._outbox.run_delay_line)
                for peer_id in list(self._outbox.queues):
                    self._start_sender(peer_id)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._scopes.clear()

    def _on_new_queue(self, peer_id: str) -> None:
        self._start_sender(peer_id)

    def _start_sender(self, peer_id: str) -> None:
        if self._nursery is not None and peer_id not in self._scopes:
            scope = self._scopes[peer_id] = trio.CancelScope()
            self._nursery.start_soon(self._sender, peer_id, scope)

    async def _sender(self, peer_id: str, scope: trio.CancelScope) -> None:
        queue: PeerQueue = self._outbox.queue(peer_id)
        lo, hi = self._backoff
        backoff = lo
        with scope:
            while True:
                await queue.wait_nonempty()
                target = self._net._target(self._namespace, self._local_id, peer_id)
                if target is None:
                    self._stats.dropped_unreachable += queue.clear()
                    self._report_unreachable(peer_id)
                    sleep_for, backoff = next_backoff(backoff, lo, hi, self._rng)
                    await trio.sleep(sleep_for)
                    continue
                backoff = lo
                batch = [queue.popleft() for _ in range(len(queue))]
                self._stats.sent += len(batch)
                self._stats.frames_sent += 1
                target._deliver(self._local_id, batch)
                # One batch per scheduling turn, like one write per batch on a stream.
                await trio.lowlevel.checkpoint()

    def _report_unreachable(self, peer_id: str) -> None:
        self._stats.unreachable_reports += 1
        if self.on_unreachable is not None:
            try:
                self.on_unreachable(peer_id)
            except Exception:
                log.exception("on_unreachable(%s) raised", peer_id)

    def _deliver(self, remote: str, batch: list[Message]) -> None:
        cb = self.on_message
        for msg in batch:
            if msg.frm != remote or msg.to != self._local_id or not is_routable(msg):
                self._stats.refused += 1
                continue
            self._stats.received += 1
            if cb is not None:
                try:
                    cb(msg)
                except Exception:
                    log.exception("on_message raised")

    async def _send_snapshot(
        self, peer_id: str, meta: SnapshotMetadata, source: SnapshotSource, message: Message | None
    ) -> bool:
        target = self._net._target(self._namespace, self._local_id, peer_id)
        envelope = snapshot_envelope(peer_id, self._local_id, meta, message)
        return target is not None and await target._receive_snapshot(
            self._local_id, meta, envelope, source
        )

    async def _receive_snapshot(
        self, remote: str, meta: SnapshotMetadata, envelope: Message, source: SnapshotSource
    ) -> bool:
        if envelope.frm != remote or envelope.to != self._local_id or self.on_snapshot is None:
            self._stats.refused += 1
            return False
        fd, name = tempfile.mkstemp(prefix="raftd-snap-", suffix=".part", dir=self._snapshot_dir)
        path = Path(name)
        try:
            # Spool chunk by chunk, as the real receiver does (never the whole image).
            with os.fdopen(fd, "wb") as f:
                async for chunk in iter_snapshot_chunks(source):
                    f.write(chunk)
            self._stats.snapshots_received += 1
            await self.on_snapshot(remote, meta, path, envelope)
            return True
        except Exception:
            log.exception("snapshot from %s failed", remote)
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                await trio.Path(path).unlink()
