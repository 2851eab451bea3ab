"""The formation protocol endpoint of one namespace: ``/raftd/1<ns>/form``.

One request and one response per stream (formation traffic is about one exchange per
peer per second: never a hot path). Frames use the project's varint framing and the
daemon's security envelope (the ``cmd`` purpose: when the daemon has a shared key, both
directions are sealed, so a peer without the key can neither join nor feed rumours;
without a key the envelope passes frames through).

Dialing follows docs/libp2p.md: every dial and read is bounded; ``unblock_peer`` precedes a
deliberate redial (pitfall 2); the peerstore gets exactly one address per attempt,
stale ones cleared first (pitfall 3), trying the address that worked last, then the
peer's addresses ranked for reachability from here. The handler catches everything
(pitfall 4) and adopts each stream into the endpoint's own nursery.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from raftd.discovery.table import PeerTable
from raftd.formation.wire import MAX_FRAME, Message, WireError, decode, encode
from raftd.security.envelope import Envelope, EnvelopeError, accept_duplex, open_duplex
from raftd.transport.base import protocol_id
from raftd.transport.libp2p import FrameReader
from raftd.wire.framing import FrameError, encode_frame

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["FormEndpoint", "Handler"]

log = logging.getLogger("raftd.formation.rpc")

Handler = Callable[[str, Message], Awaitable[Message]]  # (remote peer id, request)

_MAX_SEALED = MAX_FRAME + 1024
_MAX_DIAL_ADDRS = 3
#: The envelope purpose reused for formation streams (security's StreamKind has no
#: "form"; the protocol id and per-stream salt keep streams of the two apart).
_SEAL_KIND: Final = "cmd"


class FormEndpoint:
    """Serve and call the formation protocol of one namespace (module docstring)."""

    def __init__(
        self,
        host: Any,
        namespace: str,
        *,
        local_id: str,
        envelope: Envelope,
        table: PeerTable,
        ranked: Callable[[Sequence[str]], list[str]],
        handler: Handler,
        dial_timeout: float = 2.0,
        read_timeout: float = 5.0,
        backoff_cap: float = 30.0,
    ) -> None:
        self.host = host
        self.namespace = namespace
        self.local_id = local_id
        self.envelope = envelope
        self.table = table
        self._ranked = ranked
        self._handler = handler
        self.dial_timeout = dial_timeout
        self.read_timeout = read_timeout
        self.backoff_cap = backoff_cap
        self.proto = TProtocol(protocol_id(namespace, "form"))
        self._nursery: trio.Nursery | None = None
        self.calls_ok = 0
        self.calls_failed = 0
        self.served = 0
        self.refused = 0

    # -- server ---------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.host.set_stream_handler(self.proto, self._on_stream)
                task_status.started()
                await trio.sleep_forever()
        finally:
            # The handler stays registered and resets streams from now on: removing it
            # races with a stream whose negotiation already picked the protocol, and
            # py-libp2p then raises KeyError inside the host (fatal for the daemon).
            self._nursery = None

    async def _on_stream(self, stream: Any) -> None:
        # libp2p's task: hand the stream to our nursery and return (pitfall 4).
        try:
            nursery = self._nursery
            if nursery is None:
                await _reset(stream)
                return
            nursery.start_soon(self._serve, stream)
        except Exception:
            log.exception("%s: cannot adopt a formation stream", self.namespace)
            await _reset(stream)

    async def _serve(self, stream: Any) -> None:
        remote = "?"
        ok = False
        try:
            remote = str(stream.muxed_conn.peer_id)
            reader = FrameReader(stream, _MAX_SEALED, 16 * 1024)
            header = frame = None
            with trio.move_on_after(self.read_timeout):
                header = await reader.read_frame()
                frame = await reader.read_frame() if header is not None else None
            if header is None or frame is None:
                return
            duplex = accept_duplex(
                self.envelope,
                self.namespace,
                _SEAL_KIND,
                header,
                local_peer=self.local_id,
                remote_peer=remote,
            )
            req = decode(duplex.opener.open(frame))
            self.table.mark_direct(remote)
            resp = await self._handler(remote, req)
            out = encode_frame(duplex.sealer.header) + encode_frame(
                duplex.sealer.seal(encode(resp))
            )
            with trio.move_on_after(self.read_timeout):
                await stream.write(out)
                ok = True
            self.served += 1
        except (EnvelopeError, WireError, FrameError) as exc:
            self.refused += 1
            log.warning("%s: refusing formation request from %s: %s", self.namespace, remote, exc)
        except trio.Cancelled:
            raise
        except Exception as exc:
            log.debug("%s: formation stream from %s failed: %r", self.namespace, remote, exc)
        finally:
            if ok:
                await _close(stream)
            else:
                await _reset(stream)

    # -- client ---------------------------------------------------------------------------
    def _candidates(self, peer_id: str) -> list[str]:
        rec = self.table.get(peer_id)
        if rec is None:
            return []
        out: list[str] = []
        if rec.good_addr:
            out.append(rec.good_addr)
        for a in self._ranked(rec.addrs):
            if a not in out:
                out.append(a)
        return out[:_MAX_DIAL_ADDRS]

    async def _connect(self, peer_id: str, pid: ID) -> tuple[bool, str | None]:
        network = self.host.get_network()
        if any(not c.is_closed for c in network.get_connections(pid)):
            return True, None
        store = self.host.get_peerstore()
        for addr in self._candidates(peer_id):
            with trio.move_on_after(self.dial_timeout):
                try:
                    network.unblock_peer(pid)
                    store.clear_addrs(pid)
                    store.add_addrs(pid, [multiaddr.Multiaddr(addr)], 0)
                    await network.dial_peer(pid)
                    return True, addr
                except Exception as exc:
                    log.debug("%s: dial %s at %s failed: %r", self.namespace, peer_id, addr, exc)
        return False, None

    async def call(self, peer_id: str, msg: Message, *, within: float) -> Message | None:
        """Send ``msg`` to ``peer_id`` and return its answer, or None if the peer could
        not be reached or answered nothing valid within ``within`` seconds. Never raises
        for network reasons."""
        if peer_id == self.local_id:
            return None
        try:
            pid = ID.from_base58(peer_id)
        except Exception:
            return None
        reply: Message | None = None
        stream: Any = None
        used: str | None = None
        with trio.move_on_after(within):
            try:
                connected, used = await self._connect(peer_id, pid)
                if not connected:
                    raise ConnectionError("unreachable")
                stream = await self.host.new_stream(pid, [self.proto])
                duplex = open_duplex(
                    self.envelope,
                    self.namespace,
                    _SEAL_KIND,
                    local_peer=self.local_id,
                    remote_peer=peer_id,
                )
                await stream.write(
                    encode_frame(duplex.sealer.header)
                    + encode_frame(duplex.sealer.seal(encode(msg)))
                )
                reader = FrameReader(stream, _MAX_SEALED, 16 * 1024)
                header = await reader.read_frame()
                frame = await reader.read_frame() if header is not None else None
                if header is not None and frame is not None:
                    duplex.opener.accept_header(header)
                    reply = decode(duplex.opener.open(frame))
            except (EnvelopeError, WireError, FrameError) as exc:
                log.warning("%s: bad formation reply from %s: %s", self.namespace, peer_id, exc)
            except Exception as exc:
                log.debug("%s: formation call to %s failed: %r", self.namespace, peer_id, exc)
        if stream is not None:
            await (_close(stream) if reply is not None else _reset(stream))
        if reply is not None:
            self.calls_ok += 1
            self.table.mark_direct(peer_id, used)
        else:
            # Unreachable, or it does not serve this namespace (a bootstrap entry point):
            # back off either way, so the exchange loop does not hammer it.
            self.calls_failed += 1
            self.table.mark_failed(peer_id, cap=self.backoff_cap)
        return reply


async def _close(stream: Any) -> None:
    with trio.move_on_after(1.0) as scope:
        scope.shield = True
        try:
            await stream.close()
            return
        except Exception:
            pass
    await _reset(stream)


async def _reset(stream: Any) -> None:
    with trio.move_on_after(1.0) as scope:
        scope.shield = True
        with contextlib.suppress(Exception):
            await stream.reset()
