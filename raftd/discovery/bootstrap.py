"""``--bootstrap`` entry points: addresses to dial into the mesh, NOT a member list.

Each entry (``/ip4/.../tcp/.../p2p/<id>``) is dialed until connected, again whenever the
connection drops (exponential backoff with jitter, every dial bounded). A connected entry
is reported to every namespace's table as a peer to exchange with; if it serves the
namespace, peer exchange then spreads everything it knows, and the connection also seeds
the DHT and the GossipSub mesh. An entry that does not serve the namespace is only an
entry point: formation never treats it as a member or a founder candidate.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import multiaddr
import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["BootstrapDialer", "parse_entry"]

log = logging.getLogger("raftd.discovery.bootstrap")

OnConnected = Callable[[str, str], None]  # (peer id, address without /p2p)


def parse_entry(entry: str) -> tuple[str, str]:
    """``/ip4/1.2.3.4/tcp/7420/p2p/<id>`` -> (peer id, address). Raises ValueError."""
    head, sep, pid = entry.rpartition("/p2p/")
    if not sep or not pid or "/" in pid or not head:
        raise ValueError(f"bootstrap address {entry!r} must end in /p2p/<peer id>")
    multiaddr.Multiaddr(head)  # raises on garbage
    return pid, head


class BootstrapDialer:
    """Keep a connection to every bootstrap entry (module docstring)."""

    def __init__(
        self,
        host: Any,
        entries: Sequence[str],
        *,
        on_connected: OnConnected,
        dial_timeout: float = 3.0,
        check_s: float = 1.0,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self._on_connected = on_connected
        self.dial_timeout = dial_timeout
        self.check_s = check_s
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self.entries: list[tuple[str, str]] = []
        local = str(host.get_id())
        for e in entries:
            try:
                pid, addr = parse_entry(e)
            except ValueError as exc:
                log.error("%s", exc)
                continue
            if pid != local:
                self.entries.append((pid, addr))
        self.connected: set[str] = set()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for pid, addr in self.entries:
                nursery.start_soon(self._keep, pid, addr)
            task_status.started()
            await trio.sleep_forever()

    async def _keep(self, peer_id: str, addr: str) -> None:
        from libp2p.peer.id import ID

        pid = ID.from_base58(peer_id)
        network = self.host.get_network()
        backoff = 0.5
        while True:
            live = any(not c.is_closed for c in network.get_connections(pid))
            if live:
                if peer_id not in self.connected:
                    self.connected.add(peer_id)
                    self._on_connected(peer_id, addr)
                backoff = 0.5
                await trio.sleep(self.check_s)
                continue
            self.connected.discard(peer_id)
            ok = False
            with trio.move_on_after(self.dial_timeout):
                try:
                    network.unblock_peer(pid)  # pitfall 2: no 60 s negative cache
                    store = self.host.get_peerstore()
                    store.clear_addrs(pid)  # pitfall 3: only one address is dialed
                    store.add_addrs(pid, [multiaddr.Multiaddr(addr)], 0)
                    await network.dial_peer(pid)
                    ok = True
                except Exception as exc:
                    log.debug("bootstrap %s unreachable: %r", addr, exc)
            if ok:
                log.info("connected to bootstrap peer %s", peer_id)
                continue
            await trio.sleep(self._rng.uniform(0.5, 1.0) * backoff)
            backoff = min(self.backoff_max, backoff * 2)
