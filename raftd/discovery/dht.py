"""Kademlia DHT discovery: provider records under a hash of the namespace.

Every daemon runs a KadDHT in server mode, seeds its routing table with the peers it is
connected to (the ``--bootstrap`` entries, and whoever else it met), *provides* the key
``multihash(sha256("raftd/1" + namespace))`` and looks up the other providers of it. For
a provider whose record carries no dialable address (py-libp2p publishes the listen
addresses as bound, e.g. 0.0.0.0), the peer's address is looked up with ``find_peer``.

The DHT needs at least one entry point to be useful: pair it with ``--bootstrap``. Its
records are not authenticated beyond the peer id (Noise checks it at dial time); like
every source here it only maps peer ids to addresses.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["DhtDiscovery", "dht_key"]

log = logging.getLogger("raftd.discovery.dht")

OnFound = Callable[[str, str, list[str]], None]  # (namespace, peer id, addrs)

_OP_TIMEOUT = 10.0


def dht_key(namespace: str) -> str:
    """The provider key of ``namespace``: a sha2-256 multihash, hex."""
    return "1220" + hashlib.sha256(b"raftd/1" + namespace.encode()).hexdigest()


def _usable(addr: str) -> bool:
    return "/0.0.0.0/" not in addr and "/::/" not in addr


class DhtDiscovery:
    """Provide and find the namespace keys until cancelled (module docstring)."""

    def __init__(
        self,
        host: Any,
        namespaces: Sequence[str],
        *,
        on_found: OnFound,
        interval_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.namespaces = list(namespaces)
        self._on_found = on_found
        self.interval_s = interval_s
        self._rng = rng or random.Random()
        self._local_id = str(host.get_id())
        self.found = 0
        self.errors = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
        from libp2p.tools.anyio_service import background_trio_service

        dht = KadDHT(self.host, DHTMode.SERVER)
        async with background_trio_service(dht):
            task_status.started()
            while True:
                await self._round(dht)
                await trio.sleep(self.interval_s * self._rng.uniform(0.8, 1.2))

    async def _round(self, dht: Any) -> None:
        network = self.host.get_network()
        for pid in list(network.get_connections_map()):
            with trio.move_on_after(_OP_TIMEOUT):
                try:
                    await dht.add_peer(pid)
                except Exception as exc:
                    log.debug("dht add_peer %s: %r", pid, exc)
        for ns in self.namespaces:
            key = dht_key(ns)
            with trio.move_on_after(_OP_TIMEOUT):
                try:
                    await dht.provide(key)
                except Exception as exc:
                    self.errors += 1
                    log.debug("dht provide %s: %r", ns, exc)
            providers: list[Any] = []
            with trio.move_on_after(_OP_TIMEOUT):
                try:
                    providers = await dht.find_providers(key, 50)
                except Exception as exc:
                    self.errors += 1
                    log.debug("dht find_providers %s: %r", ns, exc)
            for info in providers:
                await self._deliver(dht, ns, info)

    async def _deliver(self, dht: Any, ns: str, info: Any) -> None:
        pid = str(info.peer_id)
        if pid == self._local_id:
            return
        addrs = [str(a).split("/p2p/")[0] for a in info.addrs]
        addrs = [a for a in addrs if _usable(a)]
        if not addrs:
            with trio.move_on_after(_OP_TIMEOUT):
                try:
                    found = await dht.find_peer(info.peer_id)
                    if found is not None:
                        addrs = [str(a).split("/p2p/")[0] for a in found.addrs]
                        addrs = [a for a in addrs if _usable(a)]
                except Exception as exc:
                    log.debug("dht find_peer %s: %r", pid, exc)
        if not addrs:
            # Connected already? The connection's remote address is dialable.
            try:
                conns = self.host.get_network().get_connections(info.peer_id)
                for c in conns:
                    ma = getattr(c, "get_remote_address", lambda: None)()
                    if ma is not None:
                        addrs.append(str(ma))
            except Exception:
                pass
        if addrs:
            self.found += 1
            self._on_found(ns, pid, addrs)
