"""Several daemons in one trio process, for tests: real libp2p hosts on 127.0.0.1 and
real LevelDB, with partitions injected in the transports (``isolate``/``heal``).

For process-level faults (kill -9, SIGSTOP, restarts) use the subprocess harness
(:mod:`raftd.testing.cluster`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from raftd.app.config import DaemonConfig
from raftd.app.daemon import Daemon
from raftd.app.presets import PRESETS
from raftd.core import Message
from raftd.runtime.group import Group
from raftd.testing.launch import free_port
from raftd.transport.host import load_or_create_identity, peer_id_of

if TYPE_CHECKING:
    from trio_typing import TaskStatus

NS = "/raft/test"
# Small snapshot cadence, so tests exercise snapshot catch-up quickly.
PRESETS["tiny"] = replace(
    PRESETS["local"], name="tiny", snapshot_entries=300, compaction_trailing=50
)


def _drop_all(pid: str, m: Message) -> bool:
    return False


def _drop_to(peer: str) -> Callable[[str, Message], bool]:
    return lambda pid, m: pid != peer


@dataclass
class Node:
    dir: Path
    port: int
    peer_id: str
    daemon: Daemon | None = None
    scope: trio.CancelScope | None = None

    def group(self, ns: str = NS) -> Group:
        assert self.daemon is not None
        return self.daemon.groups[ns]

    @property
    def socket(self) -> str:
        """The running daemon's API socket (for :func:`raftd.client.open_client`)."""
        assert self.daemon is not None
        return str(self.daemon.cfg.socket_path)


class Cluster:
    def __init__(
        self,
        base: Path,
        n: int,
        namespaces: list[str],
        preset: str,
        overrides: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        self.nodes: list[Node] = []
        self.namespaces = namespaces
        self.preset = preset
        self.overrides = overrides or (lambda i: {})
        for i in range(n):
            d = base / f"n{i}"
            d.mkdir(exist_ok=True)  # may hold a restored backup already
            self.nodes.append(Node(d, free_port(), peer_id_of(load_or_create_identity(d))))
        self.peers = [f"/ip4/127.0.0.1/tcp/{nd.port}/p2p/{nd.peer_id}" for nd in self.nodes]

    async def start(self, nursery: trio.Nursery, node: Node) -> None:
        fields: dict[str, Any] = dict(
            data_dir=node.dir,
            namespaces=self.namespaces,
            listen=[f"/ip4/127.0.0.1/tcp/{node.port}"],
            peers=self.peers,
            discovery=[],
            preset=self.preset,
        )
        fields.update(self.overrides(self.nodes.index(node)))
        cfg = DaemonConfig(**fields)
        node.daemon = Daemon(cfg)

        async def runner(task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                node.scope = scope
                assert node.daemon is not None
                await node.daemon.run(task_status=task_status)

        await nursery.start(runner)

    def isolate(self, node: Node) -> None:
        """Cut every Raft message to and from ``node`` (both directions, all groups)."""
        for n in self.live():
            assert n.daemon is not None
            for t in n.daemon.transports.values():
                t.set_filter(_drop_all if n is node else _drop_to(node.peer_id))

    def heal(self) -> None:
        for n in self.live():
            assert n.daemon is not None
            for t in n.daemon.transports.values():
                t.set_filter(None)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.daemon is not None]

    def other(self, node: Node) -> Node:
        """The first node that is not ``node`` (a follower, when ``node`` leads)."""
        return next(n for n in self.nodes if n is not node)

    async def leader(self, ns: str = NS, exclude: Node | None = None) -> Node:
        """The current leader (other than ``exclude``), waiting for one if needed."""
        with trio.fail_after(10):
            while True:
                for n in self.live():
                    if n is not exclude and n.group(ns).is_leader:
                        return n
                await self.wait_state_change(ns)

    async def wait_state_change(self, ns: str = NS) -> None:
        """Wait for any live node's next role or leader change in ``ns`` after this call.

        The events are taken before anything yields: a change that happens before the
        waiting tasks first run still wakes this wait (a lost wake-up otherwise, seen as
        a leader elected but never noticed)."""
        events = [n.group(ns).state_change_event() for n in self.live()]
        async with trio.open_nursery() as waiters:
            for ev in events:

                async def wake(e: trio.Event) -> None:
                    await e.wait()
                    waiters.cancel_scope.cancel()

                waiters.start_soon(wake, ev)


@asynccontextmanager
async def cluster(
    tmp_path: Path,
    n: int = 3,
    namespaces: list[str] | None = None,
    preset: str = "local",
    overrides: Callable[[int], dict[str, Any]] | None = None,
) -> AsyncIterator[tuple[Cluster, trio.Nursery]]:
    """``n`` daemons with static peers; ``overrides(i)`` adds DaemonConfig fields for
    node ``i``."""
    c = Cluster(tmp_path, n, namespaces or [NS], preset, overrides)
    async with trio.open_nursery() as nursery:
        for node in c.nodes:
            await c.start(nursery, node)
        yield c, nursery
        nursery.cancel_scope.cancel()
