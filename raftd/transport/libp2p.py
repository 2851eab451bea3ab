"""The Raft transport over libp2p streams, for one Raft group (namespace).

Shape (each choice follows a measured pitfall in docs/libp2p.md):

- Outbound: one bounded queue and one sender task per peer. The sender owns ONE
  long-lived stream on ``/raftd/1<ns>/raft`` (the only writer on it: pitfall 5), drains
  everything queued into one ``Batch`` frame per write (batching: ~430k msg/s vs ~5k at
  one frame per write), and redials with exponential backoff and jitter when the stream
  breaks. Every dial and write is bounded (pitfall 8), ``unblock_peer`` precedes every
  dial (pitfall 2) and stale addresses are cleared first (pitfall 3). A failed dial or
  write discards what is queued for that peer and reports it unreachable: Raft resends.
  When idle, the sender writes an empty Batch as keepalive so the receiver's idle
  timeout only fires on dead or frozen peers.
- Inbound: the stream handler hands each stream to a task in the transport's nursery,
  which reads 64 KiB chunks into a :class:`FrameDecoder` (pitfall 7), bounds every read
  with an idle timeout, resets the stream on an oversized or malformed frame, refuses
  messages whose ``frm`` is not the authenticated remote peer, and catches everything
  (pitfall 4: an exception escaping a handler kills the host).
- Snapshots: ``/raftd/1<ns>/snap``, one stream per transfer: a header frame (the SNAP
  message without data), chunk frames of ~256 KiB written with flow control (each write
  awaits the Yamux window), a trailer with size and sha256; the receiver spools chunks to
  a temp file as they arrive, verifies, awaits ``on_snapshot`` and answers with an ack.

Peer ids are base58 strings, which are also the Raft node ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from raftd.core.types import Message, MessageType, SnapshotMetadata
from raftd.security.envelope import (
    Envelope,
    EnvelopeError,
    FrameOpener,
    FrameSealer,
    NullEnvelope,
)
from raftd.security.keys import NoCommonKey
from raftd.transport import tcpread, yamuxpush
from raftd.transport.base import (
    DEFAULT_SNAPSHOT_CHUNK,
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
    protocol_id,
    snapshot_envelope,
)
from raftd.transport.directwrite import (
    DirectWriter,
    direct_writer,
    finish_within,
    write_within,
)
from raftd.transport.host import refuse_streams
from raftd.wire.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    encode_frame,
    encode_varint,
)
from raftd.wire.pb import raft_pb2 as pb
from raftd.wire.raft import (
    MessageEncoder,
    WireError,
    decode_batch,
    message_from_pb,
    message_to_pb,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus  # see raftd.transport.base

__all__ = ["FrameReader", "Libp2pTransport", "Libp2pTransportConfig", "parse_peer_id"]

log = logging.getLogger("raftd.transport")

#: Tag byte of ``Batch.messages`` (field 1, wire type 2): lets the sender build a Batch
#: from individually encoded messages, so it knows each one's size while draining.
_BATCH_FIELD_TAG = b"\x0a"

#: Bytes a frame may hold beyond a snapshot chunk (oneof tag, lengths).
_SNAP_FRAME_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class Libp2pTransportConfig:
    """Tunables. Defaults suit a LAN cluster with ~100 ms heartbeats."""

    queue_size: int = 4096  # messages per peer before send() drops
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE  # inbound limit; larger frames reset
    max_batch_bytes: int = 1024 * 1024  # soft cap of one outbound frame (one write)
    read_chunk: int = 64 * 1024
    dial_timeout: float = 3.0  # connect + stream negotiation
    write_timeout: float = 10.0
    idle_timeout: float = 30.0  # inbound raft stream with no frame at all
    keepalive_interval: float = 10.0  # must stay well under the peer's idle_timeout
    backoff_min: float = 0.05
    backoff_max: float = 2.0
    close_timeout: float = 1.0
    snapshot_chunk_size: int = DEFAULT_SNAPSHOT_CHUNK
    snapshot_max_chunk: int = 4 * 1024 * 1024  # inbound limit per chunk frame
    snapshot_timeout: float = 600.0  # whole transfer, either side
    snapshot_read_timeout: float = 15.0  # per frame on the receiver, and for the ack
    snapshot_dir: str | None = None  # temp files; same filesystem as the store is best
    max_inbound_snapshots: int = 2


class FrameReader:
    """Buffered frame reader over a libp2p stream (pitfall 7: never
    ``read_varint_prefixed_bytes``). Reads ``chunk`` bytes at a time.

    ``read_frame()`` returns the next payload, or None at a clean end of stream (EOF on
    a frame boundary). It raises :class:`FrameError` for a bad or oversized prefix, or
    a stream truncated inside a frame, and lets libp2p stream errors propagate. It does
    not bound time itself: callers wrap it in ``trio.move_on_after``; a cancelled read
    loses no data (measured), so the reader stays usable.
    """

    def __init__(self, stream: Any, max_frame_size: int, chunk: int = 64 * 1024) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(max_frame_size)
        self._frames: list[bytes] = []
        self._chunk = chunk
        self._eof = False

    @property
    def pending_frame_size(self) -> int | None:
        return self._decoder.pending_frame_size

    @property
    def decoder(self) -> FrameDecoder:
        """The decoder, holding any partial frame read so far (to hand the stream on)."""
        return self._decoder

    def take_decoded(self) -> list[bytes]:
        """The frames already decoded but not yet returned, in order (and forgets them)."""
        frames, self._frames = self._frames[::-1], []
        return frames

    async def read_frame(self) -> bytes | None:
        while not self._frames:
            if self._eof:
                return None
            try:
                data = await self._stream.read(self._chunk)
            except StreamEOF:
                data = b""
            if not data:
                self._eof = True
                if not self._decoder.at_boundary:
                    raise FrameError(
                        f"stream ended inside a frame ({self._decoder.buffered} bytes buffered)"
                    )
                return None
            self._frames = self._decoder.feed(data)
            self._frames.reverse()  # pop() from the end, in arrival order
        return self._frames.pop()


#: How many dial timeouts a stream negotiation may take on a connection that keeps
#: receiving (the bound doubles per such timeout, back to one on success).
_MAX_OPEN_PATIENCE = 4


class _Idle:
    """What a sender parked with an open stream lends :meth:`Libp2pTransport.flush`: the
    queue it waits on, its stream's direct writer and sealer, and the key generation the
    stream was opened in."""

    __slots__ = ("generation", "queue", "sealer", "unflushed", "writer")

    def __init__(
        self, queue: PeerQueue, writer: DirectWriter, sealer: FrameSealer, gen: int
    ) -> None:
        self.queue = queue
        self.writer = writer
        self.sealer = sealer
        self.generation = gen
        #: Messages were queued quietly and await :meth:`Libp2pTransport.flush`.
        self.unflushed = False


class _Handoff:
    """A frame :meth:`Libp2pTransport.flush` sealed but could not finish writing, left to
    the sender: the whole frame (the direct write would have waited), the tail of a
    frame written in part (the stream's write locks are held until it is sent), or the
    error the write raised."""

    __slots__ = ("count", "data", "nbytes")

    def __init__(self, data: bytes | memoryview | Exception, count: int, nbytes: int) -> None:
        self.data = data
        self.count = count
        self.nbytes = nbytes


class _Peer:
    """Outbound state for one peer (owned by its sender task)."""

    __slots__ = (
        "addrs",
        "failures",
        "handoff",
        "id",
        "idle",
        "last_write",
        "open_timeout",
        "pid",
        "scope",
        "started",
    )

    def __init__(self, peer_id: str, pid: ID) -> None:
        self.id = peer_id
        self.pid = pid
        self.addrs: list[str] = []
        self.scope = trio.CancelScope()
        self.started = False
        self.failures = 0  # consecutive failed dials (for log levels)
        #: Bound on opening a stream over an existing connection; 0: the dial timeout.
        #: Grows while the peer proves alive but slow (see ``_open_stream``).
        self.open_timeout = 0.0
        #: ``time.monotonic()`` of the last frame written on the open raft stream; None
        #: while there is no stream (nothing to keep alive).
        self.last_write: float | None = None
        #: Set while the sender waits for messages with an open stream (see ``flush``).
        self.idle: _Idle | None = None
        #: What ``flush`` left the sender to finish.
        self.handoff: _Handoff | None = None


class Libp2pTransport(OutboxTransport):
    """Raft transport for one namespace over a running libp2p host (see module doc).

    The host is shared by every group of the daemon and owned by the caller (create it
    with :func:`raftd.transport.host.create_host`); this object registers its two
    protocol handlers in :meth:`run` and removes them when ``run`` ends.
    """

    def __init__(
        self,
        host: Any,
        namespace: str,
        *,
        on_message: OnMessage | None = None,
        on_unreachable: OnUnreachable | None = None,
        on_snapshot: OnSnapshot | None = None,
        config: Libp2pTransportConfig | None = None,
        rng: random.Random | None = None,
        envelope: Envelope | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.on_snapshot = on_snapshot
        self.config = cfg = config or Libp2pTransportConfig()
        if cfg.keepalive_interval >= cfg.idle_timeout:
            raise ValueError("keepalive_interval must be shorter than idle_timeout")
        self._host = host
        self._namespace = namespace
        self._raft_proto = TProtocol(protocol_id(namespace, "raft"))
        self._snap_proto = TProtocol(protocol_id(namespace, "snap"))
        self._local_id = str(host.get_id())
        self._rng = rng or random.Random()
        self._stats = TransportStats()
        self._peers: dict[str, _Peer] = {}
        self._outbox = Outbox(self._stats, cfg.queue_size, self._on_new_queue, log)
        # The leader's appends to its followers carry the same entries: encoded once.
        self._encoder = MessageEncoder()
        self._nursery: trio.Nursery | None = None
        self._snap_slots = trio.Semaphore(cfg.max_inbound_snapshots)
        self._logged: set[tuple[str, ...]] = set()
        # Every stream starts with an envelope header frame; with a shared key each frame
        # is sealed (AES-256-GCM, raftd.security.envelope), otherwise it passes through.
        self.envelope: Envelope = envelope if envelope is not None else NullEnvelope()
        # Key ids each peer advertised on its inbound streams (authenticated): the
        # sender picks the newest key the peer accepts (key rotation).
        self._peer_accepts: dict[str, frozenset[str] | None] = {}
        # Bumped by readvertise(): senders reopen their stream, so the new header tells
        # each peer which keys we now accept (key rotation step 1).
        self._generation = 0
        #: Inbound raft streams read by push (raftd.transport.yamuxpush) where the
        #: connection allows it; False reads them through the stream as before.
        self.push_reads = True
        #: Between hold() and flush(): sends to a parked sender are queued quietly.
        self._holding = False
        #: Peers whose idle sender has messages queued quietly, for ``flush``.
        self._unflushed: list[_Peer] = []

    # --- properties --------------------------------------------------------------------

    @property
    def host(self) -> Any:
        return self._host

    # --- address book --------------------------------------------------------------------

    def add_peer_addrs(self, peer_id: str, addrs: Sequence[str]) -> None:
        """Replace the known addresses of ``peer_id``.

        ``addrs`` are multiaddr strings, with or without a ``/p2p/<id>`` suffix (which
        must then name ``peer_id``). Raises ValueError on an invalid peer id or address:
        the caller (config, discovery) should learn about it, not the dial loop.
        """
        peer = self._peer(peer_id)
        clean: list[str] = []
        for a in addrs:
            ma = multiaddr.Multiaddr(a)  # raises ValueError (ParseError) on garbage
            named = ma.get_peer_id()
            if named is not None:
                if str(named) != peer_id:
                    raise ValueError(f"address {a} names peer {named}, not {peer_id}")
                ma = ma.decapsulate_code(multiaddr.protocols.P_P2P)
            clean.append(str(ma))
        peer.addrs = clean

    def peer_addrs(self, peer_id: str) -> list[str]:
        peer = self._peers.get(peer_id)
        return list(peer.addrs) if peer is not None else []

    def remove_peer(self, peer_id: str) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None:
            peer.scope.cancel()
        self._outbox.forget(peer_id)

    # --- sending -------------------------------------------------------------------------

    def send(self, peer_id: str, msg: Message) -> None:
        """Queue ``msg`` for ``peer_id``. Never blocks, never raises for network reasons.

        Drops (and counts) when the peer's queue is full, when ``peer_id`` is not a valid
        peer id or is this node, and when ``msg`` is a local-only type.
        """
        if peer_id == self._local_id or not is_routable(msg):
            self._stats.dropped_invalid += 1
            self._log_once(
                ("send", peer_id, msg.type.name),
                "refusing to send %s to %s (self or local-only type)",
                msg.type.name,
                peer_id,
            )
            return
        peer = self._peers.get(peer_id)
        if peer is None:
            try:
                peer = self._peer(peer_id)
            except ValueError as exc:
                self._stats.dropped_invalid += 1
                log.error("cannot send to %r: %s", peer_id, exc)
                return
        idle = peer.idle
        outbox = self._outbox
        if (
            not self._holding
            or idle is None
            or outbox.filter is not None
            or outbox.fault is not None
        ):
            outbox.submit(peer_id, msg)
            return
        # The sender is parked: flush() writes this from the caller's task, which saves
        # the sender a wake-up per batch.
        outbox.enqueue(peer_id, msg, quiet=True)
        if not idle.unflushed:
            idle.unflushed = True
            self._unflushed.append(peer)

    def hold(self) -> None:
        """Start a batch of sends (see :meth:`flush`)."""
        self._holding = True

    def flush(self) -> None:
        """End the batch :meth:`hold` started. What it queued for each parked sender is
        written now as one frame when the stream's direct write needs no wait
        (:meth:`DirectWriter.write_nowait`), in the same order and with the same effects
        as the sender's own write. Otherwise (a lock held, the window or the socket
        full, a key to change, more than a frame's worth queued, a write error) the
        sender is woken, and handed any frame already sealed (:class:`_Handoff`)."""
        self._holding = False
        peers, self._unflushed = self._unflushed, []
        for peer in peers:
            idle = peer.idle
            if idle is None or not idle.unflushed:
                continue  # the sender is awake: it drains the queue itself
            idle.unflushed = False
            self._write_for_idle(peer, idle)

    def _write_for_idle(self, peer: _Peer, idle: _Idle) -> None:
        queue, sealer = idle.queue, idle.sealer
        if idle.generation == self._generation and not sealer.stale(
            self.envelope.ring, self._peer_accepts.get(peer.id)
        ):
            payload, count = self._drain(peer.id, queue, sealer)
            if count:
                frame = b""
                try:
                    frame = encode_frame(sealer.seal(payload))
                    rest = idle.writer.write_nowait(frame)
                except Exception as exc:  # a failed write: the sender resets the stream
                    peer.handoff = _Handoff(exc, count, len(frame))
                else:
                    if rest is True:
                        self._sent(peer, count, len(frame))
                    else:
                        data = frame if rest is False else rest
                        peer.handoff = _Handoff(data, count, len(frame))
            if peer.handoff is None and not len(queue):
                return
        peer.idle = None
        queue.poke()

    def _peer(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            if peer_id == self._local_id:
                raise ValueError("cannot add self as a peer")
            peer = self._peers[peer_id] = _Peer(peer_id, parse_peer_id(peer_id))
            self._outbox.queue(peer_id)  # starts the sender if running
        return peer

    def _log_once(self, key: tuple[str, ...], fmt: str, *args: object) -> None:
        # Misbehaviour repeats at message rate; one line per kind is enough. Bounded,
        # since a hostile peer chooses the strings in the key.
        if key in self._logged:
            return
        if len(self._logged) >= 1024:
            self._logged.clear()
        self._logged.add(key)
        log.warning(fmt, *args)

    def _on_new_queue(self, peer_id: str) -> None:
        peer = self._peers.get(peer_id)
        if peer is not None:
            self._start_sender(peer)

    def _start_sender(self, peer: _Peer) -> None:
        if self._nursery is not None and not peer.started:
            peer.started = True
            self._nursery.start_soon(self._sender, peer, name=f"raftd-send-{peer.id[-8:]}")

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve this group's protocols and run the senders until cancelled."""
        if self._nursery is not None:
            raise RuntimeError("transport is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._host.set_stream_handler(self._raft_proto, self._handle_raft_stream)
                self._host.set_stream_handler(self._snap_proto, self._handle_snap_stream)
                nursery.start_soon(self._outbox.run_delay_line)
                nursery.start_soon(self._keepalive)
                for peer in list(self._peers.values()):
                    self._start_sender(peer)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for peer in self._peers.values():
                peer.started = False
                peer.scope = trio.CancelScope()
            for proto in (self._raft_proto, self._snap_proto):
                with contextlib.suppress(Exception):
                    refuse_streams(self._host, proto)

    # --- outbound ------------------------------------------------------------------------

    async def _keepalive(self) -> None:
        """Poke the sender of every peer whose raft stream has been idle for
        ``keepalive_interval``: it then writes an empty Batch, so the receiver's idle
        timeout only fires on dead or frozen peers. One task for all peers, instead of a
        timeout around every sender's wait for its queue."""
        interval = self.config.keepalive_interval
        while True:
            now = time.monotonic()
            wait = interval
            for peer in list(self._peers.values()):
                last = peer.last_write
                if last is None:
                    continue
                idle = now - last
                if idle >= interval:
                    self._outbox.queue(peer.id).poke()
                else:
                    wait = min(wait, interval - idle)
            await trio.sleep(wait)

    async def _sender(self, peer: _Peer) -> None:
        """The one writer of ``peer``'s raft stream: drain, batch, write, reconnect."""
        queue = self._outbox.queue(peer.id)
        stream: Any = None
        writer: DirectWriter | None = None
        sealer: FrameSealer | None = None
        generation = self._generation
        backoff = self.config.backoff_min
        try:
            with peer.scope:
                while True:
                    if not len(queue):
                        if stream is None:
                            await queue.wait_nonempty()
                        else:
                            if writer is not None and sealer is not None:
                                peer.idle = _Idle(queue, writer, sealer, generation)
                            try:
                                await queue.wait_ready()
                            finally:
                                peer.idle = None
                            handoff, peer.handoff = peer.handoff, None
                            if handoff is not None:
                                if await self._write(stream, handoff.data, peer, writer):
                                    queue.poked = False
                                    self._sent(peer, handoff.count, handoff.nbytes)
                                else:
                                    await self._drop(peer, stream, queue, handoff.count)
                                    stream = writer = None
                                continue
                        if not len(queue):
                            queue.poked = False
                            # Idle: a keepalive keeps the peer's idle timeout quiet.
                            if stream is not None and sealer is not None:
                                if await self._write(
                                    stream, encode_frame(sealer.seal(b"")), peer, writer
                                ):
                                    peer.last_write = time.monotonic()
                                else:
                                    await self._reset(stream)
                                    stream = writer = peer.last_write = None
                            continue
                    if (
                        stream is not None
                        and sealer is not None
                        and (
                            generation != self._generation
                            or sealer.stale(self.envelope.ring, self._peer_accepts.get(peer.id))
                        )
                    ):
                        # A newer key became usable (rotation), or ours was retired.
                        await self._close(stream)
                        stream = writer = peer.last_write = None
                    if stream is None:
                        stream, writer, sealer, generation, backoff = await self._connect(
                            peer, backoff
                        )
                        if stream is None:
                            continue
                    payload, count = self._drain(peer.id, queue, sealer)
                    if not count:
                        continue
                    assert sealer is not None
                    frame = encode_frame(sealer.seal(payload))
                    if await self._write(stream, frame, peer, writer):
                        queue.poked = False
                        self._sent(peer, count, len(frame))
                        if len(queue):
                            # More is queued already: let other tasks run first (a
                            # direct write reaches no checkpoint).
                            await trio.lowlevel.checkpoint()
                    else:
                        await self._drop(peer, stream, queue, count)
                        stream = writer = None
        finally:
            peer.idle = None
            handoff, peer.handoff = peer.handoff, None
            if handoff is not None and isinstance(handoff.data, memoryview):
                # Cancelled with the tail of a frame handed over: it must still be sent
                # (the connection's write locks are held, and other streams share it).
                with trio.CancelScope(shield=True):
                    await self._write(stream, handoff.data, peer, writer)
            peer.last_write = None
            if stream is not None:
                await self._close(stream)

    def _sent(self, peer: _Peer, count: int, nbytes: int) -> None:
        """Count a frame of ``count`` messages and ``nbytes`` bytes written whole."""
        peer.last_write = time.monotonic()
        self._stats.sent += count
        self._stats.frames_sent += 1
        self._stats.bytes_sent += nbytes

    async def _drop(self, peer: _Peer, stream: Any, queue: PeerQueue, count: int) -> None:
        """After a failed write of ``count`` messages: discard them and what is queued,
        reset the stream (the caller forgets it) and report the peer unreachable."""
        self._stats.dropped_unreachable += count + queue.clear()
        await self._reset(stream)
        peer.last_write = None
        self._report_unreachable(peer.id)

    async def _connect(
        self, peer: _Peer, backoff: float
    ) -> tuple[Any, DirectWriter | None, FrameSealer | None, int, float]:
        """Open the raft stream to ``peer`` and write the sealer's header: the stream,
        its direct writer, the sealer, the key generation the sealer was made in and the
        next backoff. On failure, discard what is queued, report the peer unreachable,
        sleep the backoff and return no stream."""
        cfg = self.config
        # Log the first failure of an outage, not every redial.
        level = logging.WARNING if peer.failures == 0 else logging.DEBUG
        stream = await self._open_stream(peer, self._raft_proto, level)
        sealer: FrameSealer | None = None
        writer: DirectWriter | None = None
        generation = self._generation  # read after the dial: the sealer's key ring
        if stream is not None:
            sealer = self._make_sealer(peer.id, "raft")
            writer = direct_writer(stream)
            if sealer is None or not await self._write(
                stream, encode_frame(sealer.header), peer, writer
            ):
                await self._reset(stream)
                stream = None
        if stream is None:
            peer.failures += 1
            self._stats.dropped_unreachable += self._outbox.queue(peer.id).clear()
            self._report_unreachable(peer.id)
            sleep_for, backoff = next_backoff(backoff, cfg.backoff_min, cfg.backoff_max, self._rng)
            await trio.sleep(sleep_for)
            return None, None, None, generation, backoff
        if peer.failures:
            log.info("connected to %s after %d failed dials", peer.id, peer.failures)
        peer.failures = 0
        peer.last_write = time.monotonic()
        return stream, writer, sealer, generation, cfg.backoff_min

    def _drain(
        self, peer_id: str, queue: Any, sealer: FrameSealer | None = None
    ) -> tuple[bytes, int]:
        """Pop queued messages into one Batch payload of at most ~max_batch_bytes (the
        caller seals and frames it)."""
        limit = self.config.max_batch_bytes
        hard_limit = self.config.max_frame_size - 64  # room for the envelope
        parts: list[bytes] = []
        size = 0
        count = 0
        while len(queue):
            msg = queue.peek()
            try:
                body = self._encoder.encode(msg)
            except WireError as exc:
                queue.popleft()
                self._stats.dropped_invalid += 1
                log.error("cannot encode %s to %s: %s", msg.type.name, peer_id, exc)
                continue
            part = _BATCH_FIELD_TAG + encode_varint(len(body)) + body
            if size + len(part) > hard_limit - 16:
                if not parts:
                    # The receiver would reset the stream for it: refuse it here.
                    queue.popleft()
                    self._stats.dropped_invalid += 1
                    log.error(
                        "dropping %s to %s: %d bytes exceed the frame limit %d",
                        msg.type.name,
                        peer_id,
                        len(part),
                        hard_limit,
                    )
                    continue
                break
            if parts and size + len(part) > limit:
                break
            queue.popleft()
            parts.append(part)
            size += len(part)
            count += 1
        if not count:
            return b"", 0
        return b"".join(parts), count

    def readvertise(self) -> None:
        """Reopen every outbound stream (after a key reload), so each peer learns from
        the new stream header which keys this node accepts now. Takes effect at each
        sender's next write (Raft heartbeats keep them frequent)."""
        self._generation += 1

    def _make_sealer(self, peer_id: str, kind: Any) -> FrameSealer | None:
        """A sealer for a new outbound stream, or None (logged) if the peer accepts none
        of our keys."""
        try:
            return self.envelope.sealer(
                self._namespace,
                kind,
                local_peer=self._local_id,
                remote_peer=peer_id,
                peer_accepts=self._peer_accepts.get(peer_id),
            )
        except NoCommonKey as exc:
            # What the peer advertised may be stale (it reloads too, and idle streams
            # keep old headers): try our current key; the peer refuses it if it must.
            self._log_once(("nokey", peer_id), "no common key with %s: %s", peer_id, exc)
            try:
                return self.envelope.sealer(
                    self._namespace, kind, local_peer=self._local_id, remote_peer=peer_id
                )
            except NoCommonKey:
                return None

    def _make_opener(self, remote: str, kind: Any) -> FrameOpener:
        return self.envelope.opener(
            self._namespace, kind, local_peer=self._local_id, remote_peer=remote
        )

    async def _write(
        self,
        stream: Any,
        data: bytes | memoryview | Exception,
        peer: _Peer,
        writer: DirectWriter | None = None,
    ) -> bool:
        """Write ``data`` within ``write_timeout``, shielded from outside cancellation
        (:func:`~raftd.transport.directwrite.write_within`; with ``writer``, the stream's
        :class:`DirectWriter`, a write that need not wait costs no cancel scope). False
        on any failure (the caller resets the stream, since a partial write leaves the
        framing corrupt). A memoryview is the tail of a frame ``writer`` wrote in part,
        with the stream's write locks still held; an exception is a failed direct write
        (both from :class:`_Handoff`).

        A timed-out write also aborts every connection to the peer: the cancelled write
        may have consumed a Noise nonce or sent part of an encrypted frame, after which
        the whole connection is garbage (measured: every later stream on it hung).
        ``stream.write`` must therefore never be cancelled from outside this method.
        """
        try:
            if isinstance(data, Exception):
                raise data
            if isinstance(data, memoryview):
                assert writer is not None
                done = await finish_within(writer, data, self.config.write_timeout)
            else:
                done = await write_within(stream, writer, data, self.config.write_timeout)
            if done:
                return True
        except Exception as exc:  # StreamReset/StreamClosed/StreamError/MuxedStream*
            log.info("write to %s failed: %s", peer.id, _describe(exc))
            return False
        log.warning(
            "write to %s timed out after %.1fs: dropping the connection",
            peer.id,
            self.config.write_timeout,
        )
        await self._abort_connections(peer)
        return False

    async def _abort_connections(self, peer: _Peer) -> None:
        """Close every connection to ``peer`` at the socket, without writing anything.

        A polite close writes a Yamux GO_AWAY, which blocks on the very socket that is
        stuck; aborting the TCP socket makes the muxer's reader fail, and the swarm
        then drops the connection and every stream on it.
        """
        network = self._host.get_network()
        try:
            conns = list(network.get_connections(peer.pid))
        except Exception:
            return
        for conn in conns:
            with trio.move_on_after(self.config.close_timeout) as scope:
                scope.shield = True
                try:
                    sock = _socket_stream_of(conn)
                    if sock is not None:
                        await sock.aclose()
                    else:
                        await conn.close()
                except Exception as exc:
                    log.debug("aborting connection to %s: %s", peer.id, _describe(exc))

    async def _open_stream(
        self, peer: _Peer, proto: TProtocol, level: int = logging.WARNING
    ) -> Any:
        """Open a stream to ``peer`` on ``proto``, dialing if needed, within
        ``dial_timeout``. Returns None on failure (logged at ``level``)."""
        network = self._host.get_network()
        connected = _has_live_connection(network, peer.pid)
        started = trio.current_time()
        bound = self.config.dial_timeout
        if connected and peer.open_timeout > bound:
            bound = peer.open_timeout
        with trio.move_on_after(bound):
            try:
                if not connected:
                    # Deliberate redial: our own backoff paces dials, so the swarm's
                    # 60 s negative cache only gets in the way (pitfall 2).
                    network.unblock_peer(peer.pid)
                    if peer.addrs:
                        # Only one address is dialed, and a stale one first makes the
                        # dial fail: replace, don't merge (pitfall 3). ttl=0: no expiry.
                        store = self._host.get_peerstore()
                        store.clear_addrs(peer.pid)
                        store.add_addrs(peer.pid, [multiaddr.Multiaddr(a) for a in peer.addrs], 0)
                    # Dial explicitly: new_stream() does not dial while the swarm still
                    # lists a dead connection to the peer ("No valid connections").
                    await network.dial_peer(peer.pid)
                stream = await self._host.new_stream(peer.pid, [proto])
                peer.open_timeout = 0.0
                return stream
            except Exception as exc:
                log.log(level, "cannot open %s to %s: %s", proto, peer.id, _describe(exc))
                return None
        alive = connected and _received_since(network, peer.pid, started)
        log.log(
            level,
            "opening %s to %s timed out after %.1fs%s",
            proto,
            peer.id,
            bound,
            (
                (
                    " on a connection still receiving: keeping it"
                    if alive
                    else " on an existing connection: dropping it"
                )
                if connected
                else ""
            ),
        )
        if alive:
            # A peer that kept sending is alive but slow (a starved host): dropping the
            # connection would only add a handshake to its load. Keep it, and give the
            # next attempt more time (up to _MAX_OPEN_PATIENCE dial timeouts), or a
            # peer that always needs a little longer than the bound is never reached.
            peer.open_timeout = min(bound * 2, self.config.dial_timeout * _MAX_OPEN_PATIENCE)
        elif connected:
            # Negotiation hung on a connection that looks alive and on which nothing
            # arrived meanwhile: a frozen peer, or one corrupted by a cancelled write.
            # Redial from scratch next time.
            peer.open_timeout = 0.0
            await self._abort_connections(peer)
        return None

    def _report_unreachable(self, peer_id: str) -> None:
        self._stats.unreachable_reports += 1
        cb = self.on_unreachable
        if cb is not None:
            try:
                cb(peer_id)
            except Exception:
                log.exception("on_unreachable(%s) raised", peer_id)

    async def _close(self, stream: Any) -> None:
        # Shielded: runs in finally blocks of cancelled tasks; bounded: a frozen peer
        # must not stall shutdown.
        with trio.move_on_after(self.config.close_timeout) as scope:
            scope.shield = True  # (trio-stubs lack move_on_after's shield argument)
            try:
                await stream.close()
                return
            except Exception:
                pass
        await self._reset(stream)

    async def _reset(self, stream: Any) -> None:
        with trio.move_on_after(self.config.close_timeout) as scope:
            scope.shield = True
            with contextlib.suppress(Exception):
                await stream.reset()

    # --- inbound raft stream -------------------------------------------------------------

    async def _handle_raft_stream(self, stream: Any) -> None:
        # Runs in libp2p's task: move the stream into our nursery so run() owns it.
        await self._adopt(stream, self._serve_raft)

    async def _adopt(self, stream: Any, serve: Any) -> None:
        try:
            nursery = self._nursery
            if nursery is None:
                await self._reset(stream)
                return
            nursery.start_soon(serve, stream)
        except Exception:
            log.exception("cannot adopt inbound stream")
            await self._reset(stream)

    async def _serve_raft(self, stream: Any) -> None:
        cfg = self.config
        remote = "?"
        reset = lost = False
        try:
            remote = str(stream.muxed_conn.peer_id)
            reader = FrameReader(stream, cfg.max_frame_size, cfg.read_chunk)
            opener = self._make_opener(remote, "raft")
            header: bytes | None = None
            with trio.move_on_after(cfg.idle_timeout):
                header = await reader.read_frame()
            if header is None:  # EOF or no header in time
                reset = True
                return
            opener.accept_header(header)  # EnvelopeError: reset below
            self._peer_accepts[remote] = opener.peer_accepts

            def on_frame(frame: bytes) -> None:
                self._stats.bytes_received += len(frame)
                self._deliver_frame(remote, opener.open(frame))

            if self.push_reads and yamuxpush.supported(stream):
                # Frames go from the connection's read loop straight to the group.
                for frame in reader.take_decoded():
                    on_frame(frame)
                ended = await yamuxpush.PushReader(stream, reader.decoder, on_frame).run(
                    cfg.idle_timeout
                )
                if ended == "idle":
                    log.info(
                        "raft stream from %s idle for %.0fs: closing", remote, cfg.idle_timeout
                    )
                    reset = True
                lost = True
                return
            while True:
                with trio.move_on_after(cfg.idle_timeout):
                    got = await reader.read_frame()
                    if got is None:
                        lost = True  # EOF: the peer closed it, or its process died
                        return
                    on_frame(got)
                    continue
                log.info("raft stream from %s idle for %.0fs: closing", remote, cfg.idle_timeout)
                reset = lost = True
                return
        except FrameTooLarge as exc:
            self._stats.frames_rejected += 1
            log.warning(
                "peer %s sent a %d-byte frame on %s (limit %d): resetting the stream",
                remote,
                exc.size,
                self._raft_proto,
                exc.limit,
            )
            reset = True
        except (FrameError, WireError) as exc:
            self._stats.frames_rejected += 1
            log.warning("malformed frame from %s on %s: %s", remote, self._raft_proto, exc)
            reset = True
        except EnvelopeError as exc:
            # Wrong key, no key, a flipped bit, a replay: refuse the stream, keep serving.
            self._stats.frames_rejected += 1
            self._stats.auth_failures += 1
            self._log_once(("env", remote, type(exc).__name__), "refusing raft stream: %s", exc)
            reset = True
        except trio.Cancelled:
            raise
        except Exception as exc:
            # StreamReset / StreamError and anything unexpected: never let it reach the
            # host (pitfall 4).
            log.debug("raft stream from %s ended: %r", remote, exc)
            reset = lost = True
        finally:
            if reset:
                await self._reset(stream)
            else:
                await self._close(stream)
            if lost:
                # A broken inbound stream is the fastest sign that the peer is gone (a
                # killed process resets it within ~20 ms); the runtime may campaign sooner
                # if it was our leader.
                self._report_unreachable(remote)

    def _deliver_frame(self, remote: str, frame: bytes) -> None:
        msgs = decode_batch(frame)  # WireError propagates: the stream is reset
        if not msgs:
            return  # keepalive
        self._stats.frames_received += 1
        for msg in msgs:
            problem = self._check_inbound(remote, msg)
            if problem is not None:
                # Refuse the whole frame: a correct peer never sends any of these.
                self._stats.refused += len(msgs)
                self._log_once(
                    ("refuse", remote, problem), "refusing frame from %s: %s", remote, problem
                )
                return
        cb = self.on_message
        for msg in msgs:
            self._stats.received += 1
            if cb is not None:
                try:
                    cb(msg)
                except Exception:
                    log.exception("on_message raised for %s from %s", msg.type.name, remote)

    def _check_inbound(self, remote: str, msg: Message) -> str | None:
        if msg.frm != remote:
            return f"message claims frm={msg.frm!r} (spoofed)"
        if msg.to != self._local_id:
            return f"message addressed to {msg.to!r}, not this node"
        if not is_routable(msg):
            return f"local-only message type {msg.type.name}"
        return None

    # --- snapshots: sender ---------------------------------------------------------------

    async def _send_snapshot(
        self, peer_id: str, meta: SnapshotMetadata, source: SnapshotSource, message: Message | None
    ) -> bool:
        """Stream a snapshot image to ``peer_id``; True once the receiver has verified
        the sha256 and its ``on_snapshot`` accepted it (:meth:`send_snapshot` counts it).

        ``source`` is a file path (read incrementally) or an async iterator of chunks.
        ``message`` is the core's SNAP message (its ``snapshot.data`` is ignored); it
        carries the leader's term to the receiver. Bounded by ``snapshot_timeout`` as a
        whole and ``write_timeout`` per chunk; never raises for network reasons. Runs in
        the caller's task (the runtime reports SNAP_STATUS from the result).
        """
        cfg = self.config
        try:
            peer = self._peer(peer_id)
            header = pb.SnapshotHeader(
                message=message_to_pb(snapshot_envelope(peer_id, self._local_id, meta, message))
            )
            if isinstance(source, (str, os.PathLike)):
                header.size_hint = (await trio.Path(os.fspath(source)).stat()).st_size
        except (ValueError, OSError) as exc:
            log.error("cannot send snapshot to %s: %s", peer_id, exc)
            return False
        ok = False
        stream: Any = None
        with trio.move_on_after(cfg.snapshot_timeout) as scope:
            try:
                stream = await self._open_stream(peer, self._snap_proto)
                if stream is not None:
                    ok = await self._stream_snapshot(stream, peer, header, source)
            except Exception as exc:
                log.warning("snapshot to %s failed: %r", peer_id, exc)
        if scope.cancelled_caught:
            log.warning("snapshot to %s timed out after %.0fs", peer_id, cfg.snapshot_timeout)
        if stream is not None:
            if ok:
                await self._close(stream)
            else:
                await self._reset(stream)
        return ok

    async def _stream_snapshot(
        self, stream: Any, peer: _Peer, header: pb.SnapshotHeader, source: SnapshotSource
    ) -> bool:
        cfg = self.config
        peer_id = peer.id
        sealer = self._make_sealer(peer_id, "snap")
        if sealer is None:
            return False
        seal = sealer.seal
        frame = pb.SnapshotFrame(header=header)
        first = encode_frame(sealer.header) + encode_frame(seal(frame.SerializeToString()))
        if not await self._write(stream, first, peer):
            return False
        digest = hashlib.sha256()
        size = 0
        async for chunk in iter_snapshot_chunks(source, cfg.snapshot_chunk_size):
            if not chunk:
                continue
            digest.update(chunk)
            size += len(chunk)
            # Each write awaits the Yamux window: this is the flow control.
            data = encode_frame(seal(pb.SnapshotFrame(chunk=chunk).SerializeToString()))
            if not await self._write(stream, data, peer):
                return False
        trailer = pb.SnapshotFrame(trailer=pb.SnapshotTrailer(size=size, sha256=digest.digest()))
        if not await self._write(stream, encode_frame(seal(trailer.SerializeToString())), peer):
            return False
        reader = FrameReader(stream, 64 * 1024, 4096)
        opener = self._make_opener(peer_id, "snap")
        ack_header: bytes | None = None
        ack_bytes: bytes | None = None
        with trio.move_on_after(cfg.snapshot_read_timeout + cfg.snapshot_timeout / 10):
            # The receiver acks after on_snapshot returns; allow it some time.
            ack_header = await reader.read_frame()
            if ack_header is not None:
                ack_bytes = await reader.read_frame()
        if ack_header is None or ack_bytes is None:
            log.warning("snapshot to %s: no acknowledgement", peer_id)
            return False
        try:
            opener.accept_header(ack_header)
            ack = pb.SnapshotAck.FromString(opener.open(ack_bytes))
        except EnvelopeError as exc:
            self._stats.auth_failures += 1
            log.warning("snapshot to %s: acknowledgement refused: %s", peer_id, exc)
            return False
        if not ack.ok:
            log.warning("snapshot to %s refused: %s", peer_id, ack.error)
        return bool(ack.ok)

    # --- snapshots: receiver -------------------------------------------------------------

    async def _handle_snap_stream(self, stream: Any) -> None:
        await self._adopt(stream, self._serve_snap)

    async def _serve_snap(self, stream: Any) -> None:
        cfg = self.config
        remote = "?"
        path: Path | None = None
        acked = False
        try:
            remote = str(stream.muxed_conn.peer_id)
            try:
                self._snap_slots.acquire_nowait()
            except trio.WouldBlock:
                # Refuse rather than queue: a sender stalled on our window for long
                # enough would time out its write and drop the whole connection.
                log.warning("refusing snapshot from %s: too many transfers", remote)
                self._stats.snapshots_failed += 1
                acked = await self._send_ack(stream, remote, "busy: too many snapshot transfers")
                return
            try:
                with trio.move_on_after(cfg.snapshot_timeout) as scope:
                    path, error = await self._receive_snapshot(stream, remote)
                    if error:
                        self._stats.snapshots_failed += 1
                    acked = await self._send_ack(stream, remote, error)
            finally:
                self._snap_slots.release()
            if scope.cancelled_caught:
                log.warning("snapshot from %s timed out after %.0fs", remote, cfg.snapshot_timeout)
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("snapshot stream from %s failed", remote)
        finally:
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()  # the callback moved it away, or it is garbage
            if acked:
                await self._close(stream)
            else:
                await self._reset(stream)

    async def _receive_snapshot(self, stream: Any, remote: str) -> tuple[Path | None, str]:
        """Spool one snapshot to a temp file and hand it to ``on_snapshot``.

        Returns ``(temp path or None, error)``; ``error`` is empty on success.
        """
        cfg = self.config
        reader = FrameReader(stream, cfg.snapshot_max_chunk + _SNAP_FRAME_OVERHEAD, cfg.read_chunk)
        opener = self._make_opener(remote, "snap")

        async def next_raw() -> bytes | None:
            raw: bytes | None = None
            with trio.move_on_after(cfg.snapshot_read_timeout) as sc:
                raw = await reader.read_frame()
            if sc.cancelled_caught:
                raise TimeoutError(f"no snapshot data for {cfg.snapshot_read_timeout:.0f}s")
            return raw

        async def next_frame() -> pb.SnapshotFrame | None:
            raw = await next_raw()
            return None if raw is None else pb.SnapshotFrame.FromString(opener.open(raw))

        try:
            env_header = await next_raw()
            if env_header is None:
                return None, "stream ended before the envelope header"
            opener.accept_header(env_header)
            self._peer_accepts[remote] = opener.peer_accepts
            first = await next_frame()
            if first is None or first.WhichOneof("kind") != "header":
                return None, "expected a snapshot header"
            msg = message_from_pb(first.header.message)
            problem = self._check_inbound(remote, msg)
            if problem is None and (msg.type != MessageType.SNAP or msg.snapshot is None):
                problem = "header is not a SNAP message with metadata"
            if problem is not None:
                self._stats.refused += 1
                log.warning("refusing snapshot from %s: %s", remote, problem)
                return None, problem
            assert msg.snapshot is not None
            meta = msg.snapshot.metadata
            directory = cfg.snapshot_dir or tempfile.gettempdir()
            fd, name = tempfile.mkstemp(prefix="raftd-snap-", suffix=".part", dir=directory)
            path = Path(name)
        except EnvelopeError as exc:
            self._stats.auth_failures += 1
            self._log_once(("env", remote, "snap"), "refusing snapshot stream: %s", exc)
            return None, "envelope refused"
        except (FrameError, WireError, TimeoutError, ValueError, OSError) as exc:
            log.warning("cannot start snapshot from %s: %s", remote, exc)
            return None, f"cannot start: {exc}"

        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as raw_file:
                f = trio.wrap_file(raw_file)
                while True:
                    frame = await next_frame()
                    if frame is None:
                        return path, "stream ended before the trailer"
                    kind = frame.WhichOneof("kind")
                    if kind == "chunk":
                        digest.update(frame.chunk)
                        size += len(frame.chunk)
                        await f.write(frame.chunk)  # in a worker thread: never whole
                        continue
                    if kind != "trailer":
                        return path, f"unexpected {kind} frame"
                    if frame.trailer.size != size or frame.trailer.sha256 != digest.digest():
                        log.warning(
                            "snapshot from %s corrupt: %d bytes, trailer says %d (or sha differs)",
                            remote,
                            size,
                            frame.trailer.size,
                        )
                        return path, "size or sha256 mismatch"
                    await f.flush()
                    await trio.to_thread.run_sync(os.fsync, raw_file.fileno())
                    break
        except EnvelopeError as exc:
            self._stats.auth_failures += 1
            log.warning("snapshot from %s refused after %d bytes: %s", remote, size, exc)
            return path, "envelope refused"
        except (FrameError, WireError, TimeoutError, ValueError, OSError) as exc:
            log.warning("snapshot from %s failed after %d bytes: %s", remote, size, exc)
            return path, str(exc)

        self._stats.snapshots_received += 1
        cb = self.on_snapshot
        if cb is None:
            return path, "receiver has no snapshot handler"
        try:
            await cb(remote, meta, path, msg)
        except Exception as exc:
            log.exception("on_snapshot from %s raised", remote)
            return path, f"handler failed: {exc}"
        log.info(
            "snapshot index=%d term=%d (%d bytes) from %s accepted",
            meta.index,
            meta.term,
            size,
            remote,
        )
        return path, ""

    async def _send_ack(self, stream: Any, remote: str, error: str) -> bool:
        ack = pb.SnapshotAck(ok=not error, error=error)
        peer = self._peers.get(remote)
        if peer is None:
            try:
                peer = _Peer(remote, parse_peer_id(remote))
            except ValueError:
                return False
        sealer = self._make_sealer(remote, "snap")
        if sealer is None:
            return False
        data = encode_frame(sealer.header) + encode_frame(sealer.seal(ack.SerializeToString()))
        return await self._write(stream, data, peer)


def _describe(exc: BaseException) -> str:
    # libp2p raises many exceptions with empty messages; the type is then the message.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def parse_peer_id(peer_id: str) -> ID:
    """Parse a base58 peer id, checking it is a well-formed multihash.

    ``ID.from_base58`` accepts any base58 text (``"nope"`` decodes to 3 bytes), so a typo
    would become a peer nobody can ever dial. Raises ValueError.
    """
    try:
        pid = ID.from_base58(peer_id)
        raw = pid.to_bytes()
    except Exception as exc:
        raise ValueError(f"invalid peer id {peer_id!r}: not base58") from exc
    # <hash code: identity 0x00 or sha2-256 0x12> <digest length (one varint byte)> <digest>
    if len(raw) < 3 or raw[0] not in (0x00, 0x12) or raw[1] != len(raw) - 2 or raw[1] >= 0x80:
        raise ValueError(f"invalid peer id {peer_id!r}: not a multihash")
    if str(pid) != peer_id:
        raise ValueError(f"invalid peer id {peer_id!r}: not in canonical base58")
    return pid


def _layer_of(conn: Any, cls: type) -> Any:
    """The first object of type ``cls`` down the layers of a swarm connection (SwarmConn
    -> Yamux -> SecureSession -> NoiseTransportReadWriter -> RawConnection ->
    TrioTCPStream -> trio.SocketStream), or None if the layers differ (another
    transport or libp2p version)."""
    obj = conn
    for _ in range(10):
        if isinstance(obj, cls):
            return obj
        for attr in ("muxed_conn", "secured_conn", "conn", "stream"):
            nxt = getattr(obj, attr, None)
            if nxt is not None and nxt is not obj:
                obj = nxt
                break
        else:
            return None
    return None


def _socket_stream_of(conn: Any) -> trio.SocketStream | None:
    """The TCP socket under a swarm connection, or None (see :func:`_layer_of`)."""
    sock: trio.SocketStream | None = _layer_of(conn, trio.SocketStream)
    return sock


def _received_since(network: Any, pid: ID, since: float) -> bool:
    """Whether bytes arrived from ``pid`` on a live connection at or after ``since``
    (``trio.current_time()``)."""
    try:
        conns = [c for c in network.get_connections(pid) if not c.is_closed]
    except Exception:
        return False
    for conn in conns:
        at = tcpread.last_received(_layer_of(conn, TrioTCPStream))
        if at is not None and at >= since:
            return True
    return False


def _has_live_connection(network: Any, pid: ID) -> bool:
    try:
        return any(not c.is_closed for c in network.get_connections(pid))
    except Exception:
        return False
