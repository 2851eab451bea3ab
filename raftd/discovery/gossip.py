"""GossipSub presence: every daemon publishes its self-description on one topic per
namespace, ``raftd/1<namespace>/presence``, at once when it changes and every
``interval_s`` (5 s) otherwise, and reads the others'. The router's heartbeat is ~1 s.

Messages are signed by the publisher's libp2p key (``strict_signing``), so the origin peer
id is authentic; the body is whatever the formation layer hands over (its JSON node
info). The mesh relays: in an A-B-C line where A and C never connect, B forwards A's
presence to C. GossipSub only reaches peers we are connected to, so it complements the
other sources (which make the connections) rather than replacing them.

py-libp2p defaults that do not fit (docs/libp2p.md): the heartbeat is 120 s (set to ~1 s)
and the per-peer, per-topic rate limit is 10 messages/s, which a relaying peer exceeds in
a 20-node mesh (raised here).

Cost (measured, 9 daemons on 2 cores): py-libp2p's GossipSub is expensive: publishing
every second with the usual mesh degree 6 took about a quarter of each daemon's CPU in
muxer and Noise frames, enough to stall event loops past the Raft election timeout and
slow formation threefold. Hence a small mesh (degree 3 from the hub) and a 5 s periodic
publication (state changes are published at once, and peer exchange carries the same
information anyway).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from raftd.discovery.errors import split_cancelled
from raftd.transport.host import refuse_streams

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["PubsubPresence", "topic_of"]

log = logging.getLogger("raftd.discovery.pubsub")

Payload = Callable[[str], bytes | None]  # namespace -> message to publish (None: skip)
OnMessage = Callable[[str, str, bytes], None]  # (namespace, origin peer id, data)

_MAX_MESSAGE = 64 * 1024
_PUBLISH_TIMEOUT = 2.0


def topic_of(namespace: str) -> str:
    return f"raftd/1{namespace}/presence"


class PubsubPresence:
    """Runs one GossipSub router for the daemon and one presence topic per namespace."""

    def __init__(
        self,
        host: Any,
        namespaces: Sequence[str],
        *,
        payload: Payload,
        on_message: OnMessage,
        interval_s: float = 5.0,
        heartbeat_s: float = 1.0,
        degree: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.namespaces = list(namespaces)
        self._payload = payload
        self._on_message = on_message
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.degree = degree
        self._rng = rng or random.Random()
        self._local_id = str(host.get_id())
        self._pubsub: Any = None
        self.published = 0
        self.received = 0
        self.errors = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
        from libp2p.pubsub.pubsub import Pubsub
        from libp2p.tools.anyio_service import background_trio_service

        gs = GossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=self.degree,
            degree_low=max(1, self.degree - 1),
            degree_high=self.degree * 2,
            heartbeat_interval=max(1, round(self.heartbeat_s)),
            max_messages_per_topic_per_second=200.0,
        )
        ps = Pubsub(self.host, gs, strict_signing=True)
        # Pubsub registered its own stream handler; wrap it so nothing escapes into the
        # host (pitfall 4). Needed in practice: a read loop that receives a message just
        # after the service stopped schedules a task on its closed nursery, and the
        # RuntimeError would take the whole host (and the daemon's exit status) down.
        for proto in gs.get_protocols():
            self.host.set_stream_handler(proto, self._guarded(ps.stream_handler))
        async with background_trio_service(ps), background_trio_service(gs):
            try:
                with trio.fail_after(10):
                    await ps.wait_until_ready()
                self._pubsub = ps
                async with trio.open_nursery() as nursery:
                    for ns in self.namespaces:
                        sub = await ps.subscribe(topic_of(ns))
                        nursery.start_soon(self._read, ns, sub)
                        nursery.start_soon(self._publish_loop, ns)
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._pubsub = None
                # Refuse pubsub streams before the services stop: a stopped service would
                # raise inside the host (pitfall 4).
                for proto in gs.get_protocols():
                    with contextlib.suppress(Exception):
                        refuse_streams(self.host, proto)

    @staticmethod
    def _guarded(handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        async def guarded(stream: Any) -> None:
            try:
                await handler(stream)
            except BaseException as exc:
                passthrough, failure = split_cancelled(exc)
                if failure is not None:
                    log.debug("pubsub stream handler ended: %r", failure)
                    with contextlib.suppress(Exception):
                        await stream.reset()
                if passthrough is not None:
                    raise passthrough from None

        return guarded

    async def publish_now(self, namespace: str) -> None:
        """Publish our presence at once (on a state change), bounded."""
        ps = self._pubsub
        data = self._payload(namespace)
        if ps is None or data is None:
            return
        with trio.move_on_after(_PUBLISH_TIMEOUT):
            try:
                await ps.publish(topic_of(namespace), data)
                self.published += 1
            except Exception as exc:
                self.errors += 1
                log.debug("publish on %s failed: %r", namespace, exc)

    async def _publish_loop(self, namespace: str) -> None:
        while True:
            await self.publish_now(namespace)
            await trio.sleep(self.interval_s * self._rng.uniform(0.8, 1.2))

    async def _read(self, namespace: str, sub: Any) -> None:
        from libp2p.peer.id import ID

        while True:
            msg = await sub.get()
            try:
                origin = str(ID(msg.from_id))
                if origin == self._local_id or len(msg.data) > _MAX_MESSAGE:
                    continue
                self.received += 1
                self._on_message(namespace, origin, bytes(msg.data))
            except Exception as exc:
                self.errors += 1
                log.debug("bad presence message on %s: %r", namespace, exc)
