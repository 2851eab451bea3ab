"""Leader forwarding: the libp2p command protocol ``/raftd/1<ns>/cmd``.

A follower or learner that receives a write or an admin operation from a local client
forwards it to the leader as an API ``Request`` and gets the leader's ``Response`` back
(both ``raftd.v1`` messages of ``api.proto``). Frames are varint-length-delimited
protobufs (:mod:`raftd.wire.framing`).

Shape (each choice follows a pitfall measured in docs/libp2p.md):

- :class:`Forwarder` (the caller's side): ONE long-lived outbound stream per leader,
  opened lazily, pipelined (per-stream request ids), bounded (at most ``max_in_flight``
  requests outstanding per stream; the rest wait for a slot within their own deadline).
  One writer task per stream drains every queued request into one write (batching: one
  frame per write is ~80x slower on libp2p). One reader task per stream routes responses
  by id. Every dial and write is bounded; writes are shielded from outside cancellation
  (a write cut in half corrupts the Noise connection the Raft transport shares). A
  stream that fails fails every request on it with :class:`ForwardError`, whose
  ``sent`` says whether the request may have reached the leader.
- :class:`CmdHandler` (the leader's side): one handler per namespace, registered on the
  daemon's host; serves each inbound stream in the handler owner's nursery, runs up to
  ``max_in_flight`` requests of a stream concurrently (then stops reading: back-pressure),
  answers in completion order, and never lets an exception reach libp2p (an exception
  escaping a stream handler takes the whole host down).
- :class:`CmdStream` is the only place that reads or writes cmd frames. Its sealing hook
  (:class:`CmdSecurity`) is the identity by default. A sealing implementation (the AEAD
  envelope, :class:`EnvelopeSecurity`) makes each side write a "header" frame first: the
  initiator writes its header before its first request; the responder reads it, then
  writes its own header before its first response; every later frame is sealed.

Retrying is the caller's decision, not this module's: only writes that carry a
``client_id``/``seq`` (de-duplicated by the state machine) are safe to resend.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p.custom_types import TProtocol

from raftd.transport.base import protocol_id
from raftd.transport.directwrite import direct_writer, write_within
from raftd.transport.fastlock import take_all
from raftd.transport.host import refuse_streams
from raftd.transport.libp2p import FrameReader, parse_peer_id
from raftd.wire.framing import FrameError, encode_frame
from raftd.wire.pb import api_pb2 as apb

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from raftd.security.envelope import Envelope

__all__ = [
    "PLAIN",
    "CmdHandler",
    "CmdSecurity",
    "CmdStream",
    "CmdStreamError",
    "EnvelopeSecurity",
    "ForwardConfig",
    "ForwardError",
    "Forwarder",
    "PlainSecurity",
    "Sealing",
]

log = logging.getLogger("raftd.forward")

_E = apb.Error


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """Bounds of the command protocol. All times in seconds."""

    max_frame_size: int = 8 * 1024 * 1024  # API frames are <= 4 MiB, plus headroom
    max_in_flight: int = 256  # per stream, both sides
    dial_timeout: float = 2.0  # connect + protocol negotiation (+ header)
    write_timeout: float = 10.0  # one write; a stuck write resets the stream
    idle_timeout: float = 60.0  # a stream with no frame for this long is closed
    read_chunk: int = 64 * 1024
    close_timeout: float = 1.0


# -- the sealing hook ------------------------------------------------------------------


class Sealing(Protocol):
    """Seals one cmd stream's frames, both directions. Identity by default."""

    @property
    def header(self) -> bytes:
        """This side's first frame (only written when the security uses headers)."""
        ...

    def seal(self, plaintext: bytes) -> bytes:
        """The frame to write for ``plaintext``; frames are written in call order."""
        ...

    def open(self, frame: bytes) -> bytes:
        """The plaintext of the next frame read. Raises on a refused frame."""
        ...

    def accept_header(self, frame: bytes) -> None:
        """The initiator's check of the responder's header frame."""
        ...


class CmdSecurity(Protocol):
    """Makes the :class:`Sealing` of each cmd stream."""

    @property
    def uses_headers(self) -> bool:
        """True: each side writes a header frame before anything else."""
        ...

    def initiator(self, namespace: str, *, local_peer: str, remote_peer: str) -> Sealing:
        """The dialing side's sealing (its header is written first)."""
        ...

    def responder(
        self, namespace: str, header: bytes, *, local_peer: str, remote_peer: str
    ) -> Sealing:
        """The answering side's sealing, given the initiator's header frame. Raises if
        the header is refused (the stream is then reset)."""
        ...


class _Identity:
    header = b""

    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, frame: bytes) -> bytes:
        return frame

    def accept_header(self, frame: bytes) -> None:
        return None


class PlainSecurity:
    """No sealing, no header frames (libp2p's Noise channel still encrypts the link)."""

    uses_headers = False

    def initiator(self, namespace: str, *, local_peer: str, remote_peer: str) -> Sealing:
        return _Identity()

    def responder(
        self, namespace: str, header: bytes, *, local_peer: str, remote_peer: str
    ) -> Sealing:
        return _Identity()


PLAIN = PlainSecurity()


class _DuplexSealing:
    def __init__(self, duplex: Any) -> None:
        self._d = duplex

    @property
    def header(self) -> bytes:
        return bytes(self._d.sealer.header)

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(self._d.sealer.seal(plaintext))

    def open(self, frame: bytes) -> bytes:
        return bytes(self._d.opener.open(frame))

    def accept_header(self, frame: bytes) -> None:
        self._d.opener.accept_header(frame)


class EnvelopeSecurity:
    """Seals cmd frames with the shared-key AEAD envelope (:mod:`raftd.security`):
    ``open_duplex`` on the dialing side, ``accept_duplex`` on the answering side."""

    uses_headers = True

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope

    def initiator(self, namespace: str, *, local_peer: str, remote_peer: str) -> Sealing:
        from raftd.security.envelope import open_duplex

        d = open_duplex(
            self.envelope, namespace, "cmd", local_peer=local_peer, remote_peer=remote_peer
        )
        return _DuplexSealing(d)

    def responder(
        self, namespace: str, header: bytes, *, local_peer: str, remote_peer: str
    ) -> Sealing:
        from raftd.security.envelope import accept_duplex

        d = accept_duplex(
            self.envelope,
            namespace,
            "cmd",
            header,
            local_peer=local_peer,
            remote_peer=remote_peer,
        )
        return _DuplexSealing(d)


# -- one stream --------------------------------------------------------------------------


class CmdStreamError(Exception):
    """The cmd stream failed (write error or timeout, bad frame, refused seal); it must
    be reset and not used again."""


class CmdStream:
    """Frame reading and writing of one cmd stream, through its :class:`Sealing`.

    ``send_many`` must have a single caller at a time (one writer task per stream);
    ``recv`` likewise (one reader task). Neither bounds time except the write, which is
    bounded by ``write_timeout`` and shielded from outside cancellation.
    """

    def __init__(
        self,
        stream: Any,
        sealing: Sealing,
        *,
        uses_headers: bool,
        peer_header_pending: bool,
        config: ForwardConfig,
    ) -> None:
        self.stream = stream
        self._sealing = sealing
        self._config = config
        self._reader = FrameReader(stream, config.max_frame_size, config.read_chunk)
        self._writer = direct_writer(stream)
        self._header_out = uses_headers  # our header still to be written
        self._header_in = peer_header_pending  # the peer's header still to be read
        self.failed = False

    @classmethod
    def initiate(
        cls,
        stream: Any,
        security: CmdSecurity,
        namespace: str,
        *,
        local_peer: str,
        remote_peer: str,
        config: ForwardConfig,
    ) -> CmdStream:
        """The dialing side: our header goes out with the first write, the responder's
        header is checked when the first frame arrives."""
        sealing = security.initiator(namespace, local_peer=local_peer, remote_peer=remote_peer)
        return cls(
            stream,
            sealing,
            uses_headers=security.uses_headers,
            peer_header_pending=security.uses_headers,
            config=config,
        )

    @classmethod
    async def accept(
        cls,
        stream: Any,
        security: CmdSecurity,
        namespace: str,
        *,
        local_peer: str,
        remote_peer: str,
        config: ForwardConfig,
    ) -> CmdStream:
        """The answering side: read the initiator's header first (bounded by
        ``dial_timeout``) when the security uses headers."""
        if not security.uses_headers:
            return cls(
                stream,
                security.responder(namespace, b"", local_peer=local_peer, remote_peer=remote_peer),
                uses_headers=False,
                peer_header_pending=False,
                config=config,
            )
        reader = FrameReader(stream, config.max_frame_size, config.read_chunk)
        header: bytes | None = None
        with trio.move_on_after(config.dial_timeout):
            header = await reader.read_frame()
        if header is None:
            raise CmdStreamError("no stream header from the initiator")
        try:
            sealing = security.responder(
                namespace, header, local_peer=local_peer, remote_peer=remote_peer
            )
        except Exception as exc:
            raise CmdStreamError(f"stream header refused: {exc}") from exc
        cs = cls(stream, sealing, uses_headers=True, peer_header_pending=False, config=config)
        cs._reader = reader  # it may hold frames read after the header
        return cs

    async def send_many(self, payloads: list[bytes]) -> None:
        """Seal and write ``payloads`` in ONE write. Raises :class:`CmdStreamError`."""
        if self.failed:
            raise CmdStreamError("stream already failed")
        parts: list[bytes] = []
        try:
            if self._header_out:
                parts.append(encode_frame(self._sealing.header))
                self._header_out = False
            for p in payloads:
                parts.append(encode_frame(self._sealing.seal(p)))
        except Exception as exc:
            self.failed = True
            raise CmdStreamError(f"cannot seal a frame: {exc}") from exc
        data = b"".join(parts)
        # Shielded (a write cancelled half-way corrupts the framing, and possibly the
        # Noise session under it): it gets write_timeout, then the stream is reset.
        try:
            if await write_within(self.stream, self._writer, data, self._config.write_timeout):
                return
        except Exception as exc:
            self.failed = True
            raise CmdStreamError(f"write failed: {_describe(exc)}") from exc
        self.failed = True
        raise CmdStreamError(f"write timed out after {self._config.write_timeout:.1f}s")

    async def recv(self) -> bytes | None:
        """The next frame's plaintext; None at a clean end of stream. Raises
        :class:`CmdStreamError` for a malformed, oversized or refused frame; lets libp2p
        stream errors (reset) propagate."""
        try:
            while True:
                frame = await self._reader.read_frame()
                if frame is None:
                    return None
                if self._header_in:
                    self._header_in = False
                    self._sealing.accept_header(frame)
                    continue
                return self._sealing.open(frame)
        except FrameError as exc:
            self.failed = True
            raise CmdStreamError(str(exc)) from exc
        except (trio.Cancelled, trio.TooSlowError):
            raise
        except Exception as exc:
            if _is_stream_end(exc):
                raise
            self.failed = True
            raise CmdStreamError(f"frame refused: {exc}") from exc

    async def close(self) -> None:
        with trio.move_on_after(self._config.close_timeout) as scope:
            scope.shield = True
            try:
                await self.stream.close()
                return
            except Exception:
                pass
        await self.reset()

    async def reset(self) -> None:
        self.failed = True
        with trio.move_on_after(self._config.close_timeout) as scope:
            scope.shield = True
            with contextlib.suppress(Exception):
                await self.stream.reset()


def _is_stream_end(exc: BaseException) -> bool:
    return type(exc).__name__ in ("StreamEOF", "StreamReset", "StreamClosed", "StreamError")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- caller's side -----------------------------------------------------------------------


class ForwardError(Exception):
    """A forwarded request got no response. ``sent``: the request may have reached the
    leader (so a write may have been applied)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class _Slot:
    __slots__ = ("error", "event", "payload", "response", "sent")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.event = trio.Event()
        self.response: apb.Response | None = None
        self.error: ForwardError | None = None
        self.sent = False

    def fail(self, error: ForwardError) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()


class _Conn:
    """One outbound cmd stream to one peer."""

    def __init__(self, peer: str, stream: CmdStream, max_in_flight: int) -> None:
        self.peer = peer
        self.stream = stream
        self.pending: dict[int, _Slot] = {}
        self.queue: list[_Slot] = []
        self.wake = trio.Event()
        self.slots = trio.Semaphore(max_in_flight)
        self.next_id = 1
        self.closed = False
        self.scope = trio.CancelScope()

    def fail_all(self, reason: str) -> None:
        self.closed = True
        for slot in list(self.pending.values()):
            slot.fail(ForwardError(reason, sent=slot.sent))
        self.pending.clear()
        self.queue.clear()
        self.wake.set()


class Forwarder:
    """Sends requests to another daemon of the same namespace (see the module doc).

    ``peer_addrs(peer_id)`` gives the addresses to dial when there is no connection yet
    (the Raft transport's address book). Run it with ``await nursery.start(f.run)``.
    """

    def __init__(
        self,
        host: Any,
        namespace: str,
        *,
        local_peer: str,
        peer_addrs: Callable[[str], list[str]],
        security: CmdSecurity = PLAIN,
        config: ForwardConfig | None = None,
    ) -> None:
        self.host = host
        self.namespace = namespace
        self.local_peer = local_peer
        self.peer_addrs = peer_addrs
        self.security = security
        self.config = config or ForwardConfig()
        self._proto = TProtocol(protocol_id(namespace, "cmd"))
        self._conns: dict[str, _Conn] = {}
        self._dialing: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self.stats = {"calls": 0, "dials": 0, "dial_failures": 0, "stream_failures": 0}

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for conn in list(self._conns.values()):
                conn.fail_all("forwarder stopped")
            self._conns.clear()

    async def call(self, peer: str, request: apb.Request) -> apb.Response:
        """Send ``request`` to ``peer`` and return its response. The caller bounds the
        time (cancel the call to give up). ``request.id`` is replaced by a stream-local
        id. Raises :class:`ForwardError`."""
        self.stats["calls"] += 1
        conn = await self._connection(peer)
        async with conn.slots:
            if conn.closed:
                raise ForwardError(f"stream to {peer} closed", sent=False)
            rid = conn.next_id
            conn.next_id += 1
            req = apb.Request()
            req.CopyFrom(request)
            req.id = rid
            slot = _Slot(req.SerializeToString())
            conn.pending[rid] = slot
            conn.queue.append(slot)
            conn.wake.set()
            try:
                await slot.event.wait()
            finally:
                conn.pending.pop(rid, None)
                if not slot.event.is_set():
                    # Given up (cancelled): drop it if it was not written yet.
                    with contextlib.suppress(ValueError):
                        conn.queue.remove(slot)
            if slot.error is not None:
                raise slot.error
            assert slot.response is not None
            return slot.response

    async def _connection(self, peer: str) -> _Conn:
        conn = self._conns.get(peer)
        if conn is not None and not conn.closed:
            return conn
        lock = self._dialing.setdefault(peer, trio.Lock())
        async with lock:
            conn = self._conns.get(peer)
            if conn is not None and not conn.closed:
                return conn
            nursery = self._nursery
            if nursery is None:
                raise ForwardError("forwarder is not running", sent=False)
            stream = await self._dial(peer)
            conn = _Conn(peer, stream, self.config.max_in_flight)
            self._conns[peer] = conn
            nursery.start_soon(self._run_conn, conn, name=f"raftd-fwd-{peer[-8:]}")
            return conn

    async def _dial(self, peer: str) -> CmdStream:
        cfg = self.config
        self.stats["dials"] += 1
        try:
            pid = parse_peer_id(peer)
        except ValueError as exc:
            raise ForwardError(str(exc), sent=False) from exc
        network = self.host.get_network()
        raw: Any = None
        error = "timed out"
        with trio.move_on_after(cfg.dial_timeout):
            try:
                connected = False
                with contextlib.suppress(Exception):
                    connected = any(not c.is_closed for c in network.get_connections(pid))
                if not connected:
                    addrs = self.peer_addrs(peer)
                    network.unblock_peer(pid)  # pitfall 2: our callers pace redials
                    if addrs:
                        store = self.host.get_peerstore()
                        store.clear_addrs(pid)  # pitfall 3: only one address is dialed
                        store.add_addrs(pid, [multiaddr.Multiaddr(a) for a in addrs], 0)
                    await network.dial_peer(pid)
                raw = await self.host.new_stream(pid, [self._proto])
            except Exception as exc:
                error = _describe(exc)
        if raw is None:
            self.stats["dial_failures"] += 1
            raise ForwardError(f"cannot open {self._proto} to {peer}: {error}", sent=False)
        return CmdStream.initiate(
            raw,
            self.security,
            self.namespace,
            local_peer=self.local_peer,
            remote_peer=peer,
            config=cfg,
        )

    async def _run_conn(self, conn: _Conn) -> None:
        reason = "stream closed"
        try:
            with conn.scope:
                async with trio.open_nursery() as n:
                    n.start_soon(self._writer, conn, n.cancel_scope)
                    reason = await self._reader(conn)
                    n.cancel_scope.cancel()
        except Exception as exc:  # never let a stream failure escape into the nursery
            reason = _describe(exc)
        finally:
            if self._conns.get(conn.peer) is conn:
                del self._conns[conn.peer]
            if conn.pending:
                self.stats["stream_failures"] += 1
                log.info("%s: cmd stream to %s failed: %s", self.namespace, conn.peer, reason)
            conn.fail_all(f"stream to {conn.peer} failed: {reason}")
            if conn.stream.failed:
                await conn.stream.reset()
            else:
                await conn.stream.close()

    async def _writer(self, conn: _Conn, scope: trio.CancelScope) -> None:
        while True:
            while not conn.queue:
                conn.wake = trio.Event()
                await conn.wake.wait()
                if conn.closed:
                    return
            batch, conn.queue = conn.queue, []
            for slot in batch:
                slot.sent = True
            try:
                await conn.stream.send_many([s.payload for s in batch])
            except CmdStreamError as exc:
                conn.fail_all(f"write to {conn.peer} failed: {exc}")
                scope.cancel()
                return

    async def _reader(self, conn: _Conn) -> str:
        cfg = self.config
        while True:
            frame: bytes | None = None
            with trio.move_on_after(cfg.idle_timeout) as idle:
                try:
                    frame = await conn.stream.recv()
                except CmdStreamError as exc:
                    return str(exc)
                except Exception as exc:
                    return _describe(exc)
            if idle.cancelled_caught:
                return f"no frame for {cfg.idle_timeout:.0f}s"
            if frame is None:
                return "closed by the peer"
            try:
                resp = apb.Response.FromString(frame)
            except DecodeError:
                conn.stream.failed = True
                return "undecodable response"
            slot = conn.pending.get(resp.id)
            if slot is not None and not slot.event.is_set():
                slot.response = resp
                slot.event.set()


# -- answering side ----------------------------------------------------------------------

#: ``execute(request, remote_peer) -> response``: runs a forwarded request on this node
#: without forwarding it again (answers NOT_LEADER when this node does not lead).
Execute = Callable[[apb.Request, str], Awaitable[apb.Response]]


class CmdHandler:
    """Serves ``/raftd/1<ns>/cmd`` on the daemon's host (see the module doc).

    ``is_member(peer)`` gates every stream: only members of the group may forward.
    Run it with ``await nursery.start(handler.run)``; it registers the protocol handler
    and removes it when cancelled.
    """

    def __init__(
        self,
        host: Any,
        namespace: str,
        *,
        local_peer: str,
        execute: Execute,
        is_member: Callable[[str], bool],
        security: CmdSecurity = PLAIN,
        config: ForwardConfig | None = None,
    ) -> None:
        self.host = host
        self.namespace = namespace
        self.local_peer = local_peer
        self.execute = execute
        self.is_member = is_member
        self.security = security
        self.config = config or ForwardConfig()
        self._proto = TProtocol(protocol_id(namespace, "cmd"))
        self._nursery: trio.Nursery | None = None
        self.stats = {"streams": 0, "requests": 0, "refused": 0}

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.host.set_stream_handler(self._proto, self._handle)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with contextlib.suppress(Exception):
                refuse_streams(self.host, self._proto)

    async def _handle(self, stream: Any) -> None:
        # Called by libp2p: hand over to our nursery at once, never raise.
        try:
            nursery = self._nursery
            if nursery is None:
                await stream.reset()
                return
            nursery.start_soon(self._serve, stream)
        except Exception:
            log.exception("cannot adopt a cmd stream")
            with contextlib.suppress(Exception):
                await stream.reset()

    async def _serve(self, raw: Any) -> None:
        cfg = self.config
        remote = "?"
        cs: CmdStream | None = None
        try:
            remote = str(raw.muxed_conn.peer_id)
            self.stats["streams"] += 1
            if not self.is_member(remote):
                self.stats["refused"] += 1
                log.warning("%s: refusing cmd stream from non-member %s", self.namespace, remote)
                with contextlib.suppress(Exception):
                    await raw.reset()
                return
            cs = await CmdStream.accept(
                raw,
                self.security,
                self.namespace,
                local_peer=self.local_peer,
                remote_peer=remote,
                config=cfg,
            )
            await self._serve_stream(cs, remote)
        except Exception as exc:
            log.info("%s: cmd stream from %s ended: %s", self.namespace, remote, _describe(exc))
            if cs is not None:
                cs.failed = True
        finally:
            if cs is not None:
                if cs.failed:
                    await cs.reset()
                else:
                    await cs.close()
            else:
                with trio.move_on_after(cfg.close_timeout) as scope:
                    scope.shield = True
                    with contextlib.suppress(Exception):
                        await raw.reset()

    async def _serve_stream(self, cs: CmdStream, remote: str) -> None:
        cfg = self.config
        out: list[bytes] = []
        in_flight = trio.Semaphore(cfg.max_in_flight)
        wake = [trio.Event()]
        closing = [False]

        def push(payload: bytes) -> None:
            out.append(payload)
            wake[0].set()

        async def writer() -> None:
            while True:
                while not out:
                    if closing[0]:
                        return
                    wake[0] = trio.Event()
                    await wake[0].wait()
                batch = out[:]
                out.clear()
                await cs.send_many(batch)  # CmdStreamError ends the stream

        async def one(req: apb.Request) -> None:
            try:
                try:
                    resp = await self.execute(req, remote)
                except Exception as exc:  # a bug: answer rather than hang the caller
                    log.exception("%s: forwarded request failed", self.namespace)
                    resp = apb.Response(error=_E(code=_E.INTERNAL, message=_describe(exc)))
                resp.id = req.id
                push(resp.SerializeToString())
            finally:
                in_flight.release()

        async with trio.open_nursery() as n:
            n.start_soon(writer)
            while True:
                frame: bytes | None = None
                with trio.move_on_after(cfg.idle_timeout) as idle:
                    frame = await cs.recv()
                if idle.cancelled_caught:
                    if in_flight.value == cfg.max_in_flight and not out:
                        break  # idle: close; the caller redials when it needs to
                    continue
                if frame is None:
                    break
                try:
                    req = apb.Request.FromString(frame)
                except DecodeError:
                    push(
                        apb.Response(
                            id=0, error=_E(code=_E.INVALID_ARGUMENT, message="undecodable request")
                        ).SerializeToString()
                    )
                    continue
                if req.namespace and req.namespace != self.namespace:
                    err = _E(code=_E.UNKNOWN_NAMESPACE, message="namespace differs from stream")
                    push(apb.Response(id=req.id, error=err).SerializeToString())
                    continue
                self.stats["requests"] += 1
                await in_flight.acquire()  # back-pressure: stop reading when full
                n.start_soon(one, req)
            # End of input: let the requests in flight answer, flush, stop the writer.
            await take_all(in_flight, cfg.max_in_flight)
            closing[0] = True
            wake[0].set()
