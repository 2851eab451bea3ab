"""The discovery side of one daemon: one :class:`PeerTable` per namespace and the sources
that feed them, each switchable (``--discovery mdns,dht,pubsub,pex``).

- ``mdns``: :class:`raftd.discovery.mdns.MdnsDiscovery` (LAN, zero configuration);
- ``dht``: :class:`raftd.discovery.dht.DhtDiscovery` (needs ``--bootstrap``);
- ``pubsub``: :class:`raftd.discovery.gossip.PubsubPresence` (presence and cluster
  announcements, relayed by the mesh);
- ``pex``: peer exchange, spoken by the formation protocol (this module only records
  whether it is on);
- ``--bootstrap`` entries: :class:`raftd.discovery.bootstrap.BootstrapDialer`.

Discovery maps peer ids to addresses (and carries each peer's self-description for the
formation layer); membership only ever changes through Raft.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from raftd.discovery.addrs import LocalNetworks, announce_addrs, rank_addrs
from raftd.discovery.bootstrap import BootstrapDialer
from raftd.discovery.errors import split_cancelled
from raftd.discovery.table import PeerTable

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from raftd.discovery.dht import DhtDiscovery
    from raftd.discovery.gossip import PubsubPresence
    from raftd.discovery.mdns import MdnsDiscovery

__all__ = ["KINDS", "DiscoveryHub"]

log = logging.getLogger("raftd.discovery")

KINDS = ("mdns", "dht", "pubsub", "pex")

Payload = Callable[[str], bytes | None]
OnPresence = Callable[[str, str, bytes], None]


class DiscoveryHub:
    """Tables and sources of one daemon (module docstring). Run it with
    ``await nursery.start(hub.run)``; every source runs in the hub's own nursery."""

    def __init__(
        self,
        host: Any,
        local_id: str,
        namespaces: Sequence[str],
        *,
        kinds: Sequence[str],
        bootstrap: Sequence[str] = (),
        listen_addrs: Sequence[str] = (),
        heartbeat_s: float = 1.0,
        dial_timeout: float = 3.0,
        presence_payload: Payload | None = None,
        on_presence: OnPresence | None = None,
        rng: random.Random | None = None,
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown discovery kinds {sorted(unknown)}")
        self.host = host
        self.local_id = local_id
        self.namespaces = list(namespaces)
        self.kinds = frozenset(kinds)
        self.bootstrap = list(bootstrap)
        self.heartbeat_s = heartbeat_s
        self.dial_timeout = dial_timeout
        self._rng = rng or random.Random()
        self.tables = {ns: PeerTable(local_id) for ns in self.namespaces}
        self._listen = list(listen_addrs)
        self.addrs = announce_addrs(self._listen)
        self.local = LocalNetworks.detect(self.addrs)
        self._presence_payload = presence_payload
        self._on_presence = on_presence
        #: Per namespace, 1 while formation sees a conflicting cluster (for metrics).
        self.namespace_conflicts: dict[str, int] = dict.fromkeys(self.namespaces, 0)
        self.mdns: MdnsDiscovery | None = None
        self.pubsub: PubsubPresence | None = None
        self.dht: DhtDiscovery | None = None
        self.dialer: BootstrapDialer | None = None

    @property
    def peers_seen(self) -> dict[str, int]:
        """Per namespace, how many peers the table holds (for metrics)."""
        return {ns: len(t) for ns, t in self.tables.items()}

    @property
    def pex(self) -> bool:
        """Whether peer exchange (third-party entries in the formation protocol) is on."""
        return "pex" in self.kinds

    def refresh_addrs(self) -> list[str]:
        """Re-expand the listen addresses (interfaces may have changed)."""
        self.addrs = announce_addrs(self._listen)
        self.local = LocalNetworks.detect(self.addrs)
        return self.addrs

    def ranked(self, addrs: Sequence[str]) -> list[str]:
        return rank_addrs(addrs, self.local)

    # -- source callbacks (trio thread) ---------------------------------------------------
    def _found(self, source: str) -> Callable[[str, str, list[str]], None]:
        def found(ns: str, peer_id: str, addrs: list[str]) -> None:
            table = self.tables.get(ns)
            if table is not None:
                table.observe_addrs(peer_id, addrs, source)

        return found

    def _bootstrap_connected(self, peer_id: str, addr: str) -> None:
        for table in self.tables.values():
            table.observe_addrs(peer_id, [addr], "bootstrap")

    def _presence(self, ns: str, origin: str, data: bytes) -> None:
        if self._on_presence is not None:
            self._on_presence(ns, origin, data)

    def _payload(self, ns: str) -> bytes | None:
        return self._presence_payload(ns) if self._presence_payload is not None else None

    # -- running ----------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if "mdns" in self.kinds:
                from raftd.discovery.mdns import MdnsDiscovery

                self.mdns = MdnsDiscovery(
                    self.local_id,
                    self.namespaces,
                    addrs=lambda: list(self.addrs),
                    on_found=self._found("mdns"),
                    reannounce_s=max(2.0, 5 * self.heartbeat_s),
                    rng=self._rng,
                )
                # Not awaited with start(): registering takes ~0.5 s, and nothing else
                # needs to wait for it.
                nursery.start_soon(self._guard, "mdns", self.mdns.run)
            if self.bootstrap:
                self.dialer = BootstrapDialer(
                    self.host,
                    self.bootstrap,
                    on_connected=self._bootstrap_connected,
                    dial_timeout=self.dial_timeout,
                    rng=self._rng,
                )
                await nursery.start(self.dialer.run)
            if "pubsub" in self.kinds:
                from raftd.discovery.gossip import PubsubPresence

                self.pubsub = PubsubPresence(
                    self.host,
                    self.namespaces,
                    payload=self._payload,
                    on_message=self._presence,
                    interval_s=5 * self.heartbeat_s,
                    heartbeat_s=self.heartbeat_s,
                    degree=3,
                    rng=self._rng,
                )
                nursery.start_soon(self._guard, "pubsub", self.pubsub.run)
            if "dht" in self.kinds:
                from raftd.discovery.dht import DhtDiscovery

                self.dht = DhtDiscovery(
                    self.host,
                    self.namespaces,
                    on_found=self._found("dht"),
                    interval_s=max(2.0, 5 * self.heartbeat_s),
                    rng=self._rng,
                )
                nursery.start_soon(self._guard, "dht", self.dht.run)
            task_status.started()
            await trio.sleep_forever()

    async def _guard(self, name: str, fn: Callable[..., Any]) -> None:
        """Run one source; if it fails, log it and keep the others (and the daemon)
        running: every source is an optimisation over the others. Cancellation passes
        through; failures that come with it (a library's services raising while they
        are being stopped) are logged, never allowed to fail the daemon's shutdown."""
        try:
            await fn()
        except BaseException as exc:
            cancelled, rest = split_cancelled(exc)
            if rest is not None:
                log.warning(
                    "discovery source %s failed; continuing without it",
                    name,
                    exc_info=(type(rest), rest, rest.__traceback__),
                )
            if cancelled is not None:
                raise cancelled from None
