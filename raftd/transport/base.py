"""The transport contract one Raft group runtime talks to, and the parts every
implementation shares (protocol ids, counters, fault injection, snapshot sources, and
:class:`OutboxTransport`, the network-independent half of a transport).

Contract of a :class:`Transport` (one instance per Raft group, i.e. per namespace):

- ``send(peer_id, msg)`` never blocks and never raises for network reasons. Messages to
  one peer are delivered in the order they were sent, or dropped; never reordered or
  duplicated by the transport. Raft tolerates loss (it retransmits), so a full per-peer
  queue drops the message and counts it (``stats.dropped_queue_full``) rather than
  applying back-pressure: a slow peer must never block the others.
  The runtime's ordering duty (persist BEFORE send, etcd-io/raft's Ready contract) is
  not the transport's business: it sends whatever it is given, immediately.
- Inbound messages reach ``on_message(msg)`` (synchronous, called from a transport task;
  it must not block: hand the message to the node's inbox). The transport guarantees
  ``msg.frm`` is the authenticated sender and ``msg.to`` the local node, and never
  delivers local-only message types (HUP, BEAT, ...).
- ``on_unreachable(peer_id)`` is called when a dial or a write to that peer fails; the
  runtime forwards it to the core's ``report_unreachable`` (etcd-io/raft semantics: the
  leader drops the follower's replication back to probe state).
- Snapshots travel out of band: ``send_snapshot`` streams a file or chunk iterator to the
  peer and returns True only once the receiver verified and accepted it. The receiver's
  ``on_snapshot(peer_id, meta, path, message)`` is awaited with the verified file; it
  must consume the file (rename it into the snapshot store, or copy it) before
  returning, because the transport deletes whatever is left at ``path`` afterwards.
  ``message`` is the SNAP message (leader's term, sender, receiver) with empty
  ``snapshot.data``; rebuild the core message from it and the file.
- ``run(task_status=...)`` runs every background task in a nursery the transport owns;
  cancelling it closes all streams.
"""

from __future__ import annotations

import abc
import logging
import os
import random
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import trio

from raftd.core.types import LOCAL_MESSAGES, Message, MessageType, Snapshot, SnapshotMetadata

if TYPE_CHECKING:
    # trio-typing (a dependency of libp2p and multiaddr) installs ``trio-stubs``, which
    # shadow trio's own inline types for mypy and lack ``trio.TaskStatus``.
    from trio_typing import TaskStatus

__all__ = [
    "DEFAULT_SNAPSHOT_CHUNK",
    "KINDS",
    "FaultInjector",
    "MessageFilter",
    "OnMessage",
    "OnSnapshot",
    "OnUnreachable",
    "Outbox",
    "OutboxTransport",
    "PeerQueue",
    "SnapshotSource",
    "Transport",
    "TransportStats",
    "is_routable",
    "iter_snapshot_chunks",
    "next_backoff",
    "protocol_id",
    "snapshot_envelope",
]

# "form": the formation protocol (raftd.formation): peer exchange, join, leave.
Kind = Literal["raft", "snap", "cmd", "form"]
KINDS: tuple[Kind, ...] = ("raft", "snap", "cmd", "form")

DEFAULT_SNAPSHOT_CHUNK = 256 * 1024

OnMessage = Callable[[Message], None]
OnUnreachable = Callable[[str], None]
OnSnapshot = Callable[[str, SnapshotMetadata, Path, Message], Awaitable[None]]
#: ``filter(peer_id, msg) -> deliver?`` applied to outbound messages (tests only).
MessageFilter = Callable[[str, Message], bool]
#: A snapshot image: a file path, or an async iterator of byte chunks of any size.
SnapshotSource = AsyncIterable[bytes] | str | os.PathLike[str]

_NAMESPACE_RE = re.compile(r"(/[A-Za-z0-9._-]+)+")


def protocol_id(namespace: str, kind: Kind) -> str:
    """The libp2p protocol id of one Raft group's stream kind.

    ``protocol_id("/raft/cron", "raft") == "/raftd/1/raft/cron/raft"``: the version
    digit comes first so one daemon can speak two versions side by side. ``namespace``
    is a ``/``-separated path of ``[A-Za-z0-9._-]`` segments.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {KINDS}")
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(
            f"bad namespace {namespace!r}: expected /segment[/segment...] of [A-Za-z0-9._-]"
        )
    return f"/raftd/1{namespace}/{kind}"


@dataclass
class TransportStats:
    """Counters, monotonic over the transport's life (for metrics and tests)."""

    sent: int = 0  # messages handed to the stream (written)
    received: int = 0  # messages delivered to on_message
    frames_sent: int = 0  # Batch frames written (one write each); sent/frames = batching
    frames_received: int = 0
    bytes_sent: int = 0  # frame bytes written, sealed, before libp2p's own framing
    bytes_received: int = 0
    dropped_queue_full: int = 0  # send() found the peer's queue full
    dropped_unreachable: int = 0  # discarded because the peer could not be reached
    dropped_fault: int = 0  # dropped by set_fault / set_filter
    dropped_invalid: int = 0  # not sendable (unknown peer id, self, too large)
    refused: int = 0  # inbound messages refused (spoofed frm, wrong to, local type)
    frames_rejected: int = 0  # inbound frames over the limit or malformed
    auth_failures: int = 0  # inbound streams refused by the envelope (key, bit flip, replay)
    unreachable_reports: int = 0
    snapshots_sent: int = 0
    snapshots_received: int = 0
    snapshots_failed: int = 0
    dropped_by_peer: dict[str, int] = field(default_factory=dict)  # queue-full, per peer

    def count_queue_drop(self, peer_id: str) -> None:
        self.dropped_queue_full += 1
        self.dropped_by_peer[peer_id] = self.dropped_by_peer.get(peer_id, 0) + 1

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}


class FaultInjector:
    """Seeded drop/delay decisions for outbound messages (there is no netem here).

    ``drop_rate`` is the probability to drop each message; ``delay_s`` a constant delay
    applied to every delivered message (constant, so per-peer order is preserved).
    """

    def __init__(self, drop_rate: float = 0.0, delay_s: float = 0.0, seed: int | None = None):
        if not 0.0 <= drop_rate <= 1.0:
            raise ValueError("drop_rate must be within [0, 1]")
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        self.drop_rate = drop_rate
        self.delay_s = delay_s
        self.rng = random.Random(seed)

    @property
    def active(self) -> bool:
        return self.drop_rate > 0 or self.delay_s > 0

    def should_drop(self) -> bool:
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate


def is_routable(msg: Message) -> bool:
    """True if ``msg`` may cross the network (local-only types never do)."""
    return msg.type not in LOCAL_MESSAGES


def snapshot_envelope(
    peer_id: str, local_id: str, meta: SnapshotMetadata, message: Message | None
) -> Message:
    """The SNAP message to announce with a streamed snapshot, without inline data."""
    if message is None:
        # Without the caller's message, the snapshot's own term is the best lower bound
        # of the leader's term we have.
        return Message(
            type=MessageType.SNAP,
            to=peer_id,
            frm=local_id,
            term=meta.term,
            snapshot=Snapshot(metadata=meta),
        )
    if message.type != MessageType.SNAP:
        raise ValueError(f"snapshot envelope must be a SNAP message, not {message.type.name}")
    return Message(
        type=MessageType.SNAP,
        to=message.to or peer_id,
        frm=message.frm or local_id,
        term=message.term,
        log_term=message.log_term,
        index=message.index,
        commit=message.commit,
        snapshot=Snapshot(metadata=meta),
        context=message.context,
    )


async def iter_snapshot_chunks(
    source: SnapshotSource, chunk_size: int = DEFAULT_SNAPSHOT_CHUNK
) -> AsyncIterator[bytes]:
    """Yield the snapshot image in chunks of at most ``chunk_size`` bytes.

    A path is read incrementally (never whole); an async iterator's chunks are split
    when larger than ``chunk_size`` (small ones are passed through as they come).
    """
    if isinstance(source, (str, os.PathLike)):
        async with await trio.open_file(os.fspath(source), "rb") as f:
            while True:
                chunk = await f.read(chunk_size)
                if not chunk:
                    return
                yield chunk
    else:
        async for chunk in source:
            for off in range(0, len(chunk), chunk_size):
                yield bytes(chunk[off : off + chunk_size])


class PeerQueue:
    """A bounded FIFO of messages for one peer, with a wake-up for its sender task.

    Cheaper than a trio memory channel for this use (the sender drains many at once,
    and a failed dial discards everything queued).
    """

    __slots__ = ("_event", "_q", "maxlen", "poked")

    def __init__(self, maxlen: int) -> None:
        if maxlen <= 0:
            raise ValueError("queue size must be > 0")
        self.maxlen = maxlen
        self._q: deque[Message] = deque()
        self._event = trio.Event()
        #: Set by :meth:`poke`: the sender should write something even if nothing is
        #: queued (a keepalive). The sender clears it.
        self.poked = False

    def __len__(self) -> int:
        return len(self._q)

    def put_nowait(self, msg: Message) -> bool:
        """Append ``msg``; False (and nothing queued) if the queue is full."""
        if len(self._q) >= self.maxlen:
            return False
        self._q.append(msg)
        self._event.set()
        return True

    def put_quiet(self, msg: Message) -> bool:
        """Append ``msg`` without waking the sender (the caller writes it, or wakes the
        sender with :meth:`poke`); False (and nothing queued) if the queue is full."""
        if len(self._q) >= self.maxlen:
            return False
        self._q.append(msg)
        return True

    def popleft(self) -> Message:
        return self._q.popleft()

    def peek(self) -> Message:
        return self._q[0]

    def clear(self) -> int:
        """Discard everything queued; return how many messages that was."""
        n = len(self._q)
        self._q.clear()
        return n

    def poke(self) -> None:
        """Wake the sender waiting in :meth:`wait_ready` although nothing is queued."""
        self.poked = True
        self._event.set()

    async def wait_nonempty(self) -> None:
        while not self._q:
            # Replace the event before waiting: put_nowait sets whichever is current,
            # and nothing can run between this check and the assignment.
            self._event = trio.Event()
            await self._event.wait()

    async def wait_ready(self) -> None:
        """Wait until a message is queued or :meth:`poke` is called."""
        while not self._q and not self.poked:
            self._event = trio.Event()
            await self._event.wait()


class Outbox:
    """The outbound half both transports share: filter, fault injection, a delay line,
    and one bounded :class:`PeerQueue` per peer.

    ``submit`` is synchronous and never blocks. With a delay active, messages wait in a
    single FIFO delay line (so per-peer order holds) that :meth:`run_delay_line` drains.
    """

    def __init__(
        self,
        stats: TransportStats,
        queue_size: int,
        on_new_queue: Callable[[str], None],
        logger: logging.Logger,
    ) -> None:
        self.stats = stats
        self.queue_size = queue_size
        self.queues: dict[str, PeerQueue] = {}
        self._on_new_queue = on_new_queue
        self._log = logger
        self.fault: FaultInjector | None = None
        self.filter: MessageFilter | None = None
        self._delayed: deque[tuple[float, str, Message]] = deque()
        self._delay_event = trio.Event()
        self._full_logged: set[str] = set()

    def queue(self, peer_id: str) -> PeerQueue:
        q = self.queues.get(peer_id)
        if q is None:
            q = self.queues[peer_id] = PeerQueue(self.queue_size)
            self._on_new_queue(peer_id)
        return q

    def forget(self, peer_id: str) -> None:
        q = self.queues.pop(peer_id, None)
        if q is not None:
            q.clear()
        self._full_logged.discard(peer_id)

    def pending(self, peer_id: str) -> int:
        q = self.queues.get(peer_id)
        return len(q) if q is not None else 0

    def submit(self, peer_id: str, msg: Message) -> None:
        if self.filter is not None and not self.filter(peer_id, msg):
            self.stats.dropped_fault += 1
            return
        fault = self.fault
        if fault is not None:
            if fault.should_drop():
                self.stats.dropped_fault += 1
                return
            if fault.delay_s > 0:
                self._delayed.append((trio.current_time() + fault.delay_s, peer_id, msg))
                self._delay_event.set()
                return
        self.enqueue(peer_id, msg)

    def enqueue(self, peer_id: str, msg: Message, *, quiet: bool = False) -> None:
        """Queue ``msg`` for ``peer_id`` past the filter and the faults (``quiet``: without
        waking its sender, see :meth:`PeerQueue.put_quiet`); count and log a full queue."""
        q = self.queue(peer_id)
        if q.put_quiet(msg) if quiet else q.put_nowait(msg):
            self._full_logged.discard(peer_id)
            return
        self.stats.count_queue_drop(peer_id)
        if peer_id not in self._full_logged:
            # Once per episode: a stalled peer would otherwise log every heartbeat.
            self._full_logged.add(peer_id)
            self._log.warning(
                "send queue to %s full (%d messages): dropping until it drains",
                peer_id,
                self.queue_size,
            )

    def set_fault(self, drop_rate: float, delay_s: float, seed: int | None) -> None:
        fault = FaultInjector(drop_rate, delay_s, seed)
        self.fault = fault if fault.active else None

    async def run_delay_line(self) -> None:
        """Forward delayed messages to their queues when due. Runs until cancelled."""
        while True:
            while not self._delayed:
                self._delay_event = trio.Event()
                await self._delay_event.wait()
            due, peer_id, msg = self._delayed[0]
            now = trio.current_time()
            if due > now:
                await trio.sleep(due - now)
                continue
            self._delayed.popleft()
            self.enqueue(peer_id, msg)


def next_backoff(current: float, lo: float, hi: float, rng: random.Random) -> tuple[float, float]:
    """Exponential backoff with "full jitter" (AWS architecture blog): sleep a uniform
    time in ``[lo, current]``, then double ``current`` up to ``hi``.

    Returns ``(sleep_for, next_current)``. Jitter keeps a cluster's reconnects from
    synchronizing after a shared failure.
    """
    current = min(max(current, lo), hi)
    sleep_for = rng.uniform(lo, current) if current > lo else lo
    return sleep_for, min(current * 2, hi)


class Transport(Protocol):
    """What a group runtime needs from a transport (see the module docstring)."""

    on_message: OnMessage | None
    on_unreachable: OnUnreachable | None
    on_snapshot: OnSnapshot | None

    @property
    def local_id(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def stats(self) -> TransportStats: ...

    def add_peer_addrs(self, peer_id: str, addrs: Sequence[str]) -> None:
        """Replace the known addresses of ``peer_id`` (multiaddr strings)."""
        ...

    def remove_peer(self, peer_id: str) -> None:
        """Forget a peer: stop its sender, discard its queue and addresses."""
        ...

    def send(self, peer_id: str, msg: Message) -> None:
        """Queue ``msg`` for ``peer_id``; never blocks (drops and counts when full).
        Between :meth:`hold` and :meth:`flush`, the message may wait for ``flush``."""
        ...

    def hold(self) -> None:
        """Start a batch of sends: until :meth:`flush`, queued messages may wait for it
        (so it can write them from the caller's task, without waking a sender)."""
        ...

    def flush(self) -> None:
        """End the batch :meth:`hold` started: write what it queued where that needs no
        wait, from the caller's task, and wake the senders of the rest. Never blocks,
        never raises for network reasons."""
        ...

    def pending(self, peer_id: str) -> int:
        """Messages queued for ``peer_id`` and not yet written."""
        ...

    async def send_snapshot(
        self,
        peer_id: str,
        meta: SnapshotMetadata,
        source: SnapshotSource,
        *,
        message: Message | None = None,
    ) -> bool:
        """Stream a snapshot; True once the receiver verified and accepted it."""
        ...

    def set_fault(
        self, drop_rate: float = 0.0, delay_s: float = 0.0, seed: int | None = None
    ) -> None:
        """Drop/delay outbound messages (tests). ``set_fault()`` clears it."""
        ...

    def set_filter(self, fn: MessageFilter | None) -> None:
        """Outbound filter ``fn(peer_id, msg) -> deliver?`` (tests). None clears it."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; ``task_status.started()`` once ready to serve."""
        ...


class OutboxTransport(abc.ABC):
    """The half of a :class:`Transport` that does not depend on the network, shared by
    :class:`~raftd.transport.libp2p.Libp2pTransport` and
    :class:`~raftd.transport.memory.MemoryTransport`: identity, counters, the per-peer
    :class:`Outbox` and what reads or tunes it, and the snapshot counters.

    A subclass sets the callbacks, ``_local_id``, ``_namespace``, ``_stats`` and
    ``_outbox`` in its ``__init__``, starts a peer's sender in ``_on_new_queue``, and
    moves the snapshot in :meth:`_send_snapshot`.
    """

    on_message: OnMessage | None
    on_unreachable: OnUnreachable | None
    on_snapshot: OnSnapshot | None
    _local_id: str
    _namespace: str
    _stats: TransportStats
    _outbox: Outbox

    @property
    def local_id(self) -> str:
        return self._local_id

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def stats(self) -> TransportStats:
        return self._stats

    def pending(self, peer_id: str) -> int:
        return self._outbox.pending(peer_id)

    def hold(self) -> None:  # noqa: B027 - a default, not an abstract step
        """Nothing to do: every queued message wakes its sender at once."""

    def flush(self) -> None:  # noqa: B027 - a default, not an abstract step
        """Nothing to do: every queued message already woke its sender."""

    def set_fault(
        self, drop_rate: float = 0.0, delay_s: float = 0.0, seed: int | None = None
    ) -> None:
        """Drop each outbound message with probability ``drop_rate`` and delay every
        delivered one by ``delay_s`` (seeded; per-peer order kept). No args: clear."""
        self._outbox.set_fault(drop_rate, delay_s, seed)

    def set_filter(self, fn: MessageFilter | None) -> None:
        self._outbox.filter = fn

    async def send_snapshot(
        self,
        peer_id: str,
        meta: SnapshotMetadata,
        source: SnapshotSource,
        *,
        message: Message | None = None,
    ) -> bool:
        """Stream a snapshot image to ``peer_id`` (:meth:`_send_snapshot`) and count the
        outcome in ``stats``; True once the receiver verified and accepted it."""
        ok = await self._send_snapshot(peer_id, meta, source, message)
        if ok:
            self._stats.snapshots_sent += 1
        else:
            self._stats.snapshots_failed += 1
        return ok

    @abc.abstractmethod
    def _on_new_queue(self, peer_id: str) -> None:
        """The outbox made a queue for ``peer_id``: start its sender (if running)."""

    @abc.abstractmethod
    async def _send_snapshot(
        self, peer_id: str, meta: SnapshotMetadata, source: SnapshotSource, message: Message | None
    ) -> bool:
        """Move the snapshot; True once the receiver verified and accepted it. Never
        raises for network reasons."""
