"""Test helpers: real libp2p nodes on 127.0.0.1 and condition waits (never bare sleeps)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from raftd.core.types import Entry, Message, MessageType, SnapshotMetadata
from raftd.transport.host import listen_addrs_of, load_or_create_identity, open_host
from raftd.transport.libp2p import Libp2pTransport, Libp2pTransportConfig

NS = "/raft/test"


@dataclass
class Received:
    peer_id: str
    meta: SnapshotMetadata
    message: Message
    size: int
    sha256: str


@dataclass
class Recorder:
    """Callback sink that wakes waiters on every event."""

    messages: list[Message] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    snapshots: list[Received] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def on_message(self, msg: Message) -> None:
        self.messages.append(msg)
        self.poke()

    def on_unreachable(self, peer_id: str) -> None:
        self.unreachable.append(peer_id)
        self.poke()

    async def on_snapshot(
        self, peer_id: str, meta: SnapshotMetadata, path: Path, message: Message
    ) -> None:
        h = hashlib.sha256()
        size = 0
        async with await trio.open_file(path, "rb") as f:
            while chunk := await f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        self.snapshots.append(Received(peer_id, meta, message, size, h.hexdigest()))
        self.poke()

    def from_peer(self, peer_id: str) -> list[Message]:
        return [m for m in self.messages if m.frm == peer_id]

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        while not pred():
            await self._changed.wait()


async def send_paced(node: Node, to: str, msgs: list[Message], high_water: int = 2048) -> None:
    """Send without overrunning the bounded queue (which would drop): yield to the
    sender task whenever the queue is past ``high_water``."""
    for m in msgs:
        while node.transport.pending(to) >= high_water:  # noqa: ASYNC110  # no event to wait on
            await trio.sleep(0.001)
        node.transport.send(to, m)


async def wait_until(pred: Callable[[], bool], interval: float = 0.01) -> None:
    """Poll a condition that no callback signals (e.g. a counter); bound it with
    ``trio.fail_after`` in the caller."""
    while not pred():  # noqa: ASYNC110  # polling is the point: nothing signals these
        await trio.sleep(interval)


@dataclass
class Node:
    name: str
    host: Any
    transport: Libp2pTransport
    rec: Recorder
    data_dir: Path

    @property
    def id(self) -> str:
        return self.transport.local_id

    @property
    def addrs(self) -> list[str]:
        return listen_addrs_of(self.host)

    @property
    def port(self) -> int:
        return int(self.addrs[0].rsplit("/", 1)[1])


@asynccontextmanager
async def libp2p_node(
    base: Path,
    name: str,
    *,
    port: int = 0,
    config: Libp2pTransportConfig | None = None,
    rec: Recorder | None = None,
) -> AsyncIterator[Node]:
    """A host with a persistent identity under ``base/name`` and a running transport."""
    data_dir = base / name
    kp = load_or_create_identity(data_dir)
    rec = rec or Recorder()
    async with open_host(kp, [f"/ip4/127.0.0.1/tcp/{port}"]) as host:
        t = Libp2pTransport(
            host,
            NS,
            on_message=rec.on_message,
            on_unreachable=rec.on_unreachable,
            on_snapshot=rec.on_snapshot,
            config=config,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(t.run)
            yield Node(name, host, t, rec, data_dir)
            nursery.cancel_scope.cancel()


def introduce(*nodes: Node) -> None:
    """Fill every node's address book with every other node's addresses."""
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.transport.add_peer_addrs(b.id, b.addrs)


def app(src: Node | str, dst: Node | str, index: int, data: bytes = b"") -> Message:
    frm = src if isinstance(src, str) else src.id
    to = dst if isinstance(dst, str) else dst.id
    entries = (Entry(term=1, index=index, data=data),) if data else ()
    return Message(MessageType.APP, to=to, frm=frm, term=1, index=index, entries=entries)


def quiet() -> None:
    logging.getLogger("libp2p").setLevel(logging.ERROR)
