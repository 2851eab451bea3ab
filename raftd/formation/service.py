"""The daemon-level formation service: discovery plus one
:class:`raftd.formation.node.NamespaceFormation` per namespace, and the status file.

The app creates it when discovery is configured (``--discovery`` not ``none``, or
``--bootstrap`` given) from narrow inputs (the groups, unstarted, and their transports,
the host, the database, the envelope and a config slice: :class:`FormationSettings`),
and starts it with
``await nursery.start(formation.run)``: from then on the formation decides when each
group bootstraps, joins, runs, or dissolves.

``<data-dir>/status.json`` (rewritten atomically when something changes, at most ten
times a second) is this daemon's view of every namespace: the group's status plus the
formation fields (phase, cluster id, writes, ``conflict``). The same dict is available
in-process as :meth:`Formation.namespace_status` (for the API's ``raftd status``) and
the counters as :meth:`Formation.metrics` (for ``/metrics``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from raftd.discovery.hub import DiscoveryHub
from raftd.formation.config import FormationConfig
from raftd.formation.config import FormationSettings as TimingSettings
from raftd.formation.node import NamespaceFormation
from raftd.runtime.group import Group
from raftd.security.envelope import Envelope
from raftd.storage.leveldb import LevelDB
from raftd.transport.host import listen_addrs_of
from raftd.transport.libp2p import Libp2pTransport

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["STATUS_FILE", "Formation", "FormationSettings", "formation_enabled"]

log = logging.getLogger("raftd.formation")

STATUS_FILE = "status.json"
_STATUS_INTERVAL = 0.1


def formation_enabled(discovery: list[str], bootstrap: list[str]) -> bool:
    """Formation runs when there is any way to learn about peers."""
    return bool(discovery) or bool(bootstrap)


class FormationSettings(TimingSettings, Protocol):
    """The slice of the daemon's configuration formation reads (``DaemonConfig`` has
    it)."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def discovery(self) -> Sequence[str]: ...

    @property
    def bootstrap(self) -> Sequence[str]: ...


class Formation:
    """Discovery and formation for every namespace of one daemon (module docstring)."""

    def __init__(
        self,
        *,
        settings: FormationSettings,
        host: Any,
        peer_id: str,
        groups: Mapping[str, Group],
        transports: Mapping[str, Libp2pTransport],
        db: LevelDB,
        envelope: Envelope,
        started_ago: float = 0.0,
    ) -> None:
        """``started_ago``: how long the process ran before this formation was built; a
        fresh node's first bootstrap window counts from the process start."""
        cfg = settings
        self.peer_id = peer_id
        self.config = FormationConfig.of(cfg)
        self._rng = random.Random(os.urandom(8))
        self.hub = DiscoveryHub(
            host,
            peer_id,
            list(groups),
            kinds=list(cfg.discovery),
            bootstrap=list(cfg.bootstrap),
            listen_addrs=listen_addrs_of(host),
            heartbeat_s=self.config.heartbeat_s,
            dial_timeout=self.config.dial_timeout_s,
            presence_payload=self._presence_payload,
            on_presence=self._on_presence,
            rng=self._rng,
        )
        self.namespaces: dict[str, NamespaceFormation] = {}
        for ns, group in groups.items():
            self.namespaces[ns] = NamespaceFormation(
                namespace=ns,
                group=group,
                transport=transports[ns],
                hub=self.hub,
                db=db,
                data_dir=cfg.data_dir,
                envelope=envelope,
                config=self.config,
                rng=self._rng,
                on_change=self._mark_dirty,
                started_ago=started_ago,
            )
        self.status_path: Path = cfg.data_dir / STATUS_FILE
        self._dirty = trio.Event()

    # -- hub callbacks --------------------------------------------------------------------
    def _presence_payload(self, ns: str) -> bytes | None:
        nf = self.namespaces.get(ns)
        return nf.presence_payload() if nf is not None else None

    def _on_presence(self, ns: str, origin: str, data: bytes) -> None:
        nf = self.namespaces.get(ns)
        if nf is not None:
            nf.on_presence(origin, data)

    def _mark_dirty(self) -> None:
        self._dirty.set()

    # -- running --------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.hub.run)
            for nf in self.namespaces.values():
                await nursery.start(nf.run)
            self.write_status()
            nursery.start_soon(self._status_loop)
            task_status.started()

    async def _status_loop(self) -> None:
        last = ""
        while True:
            with trio.move_on_after(1.0):
                await self._dirty.wait()
            self._dirty = trio.Event()
            try:
                last = self.write_status(last)
            except OSError as exc:
                log.warning("cannot write %s: %s", self.status_path, exc)
            await trio.sleep(_STATUS_INTERVAL)

    async def leave_all(self, within: float) -> None:
        """``--leave-on-shutdown``: leave every namespace's cluster (bounded by
        ``within`` seconds)."""
        with trio.move_on_after(within):
            async with trio.open_nursery() as n:
                for nf in self.namespaces.values():
                    n.start_soon(nf.leave, within)

    # -- status ---------------------------------------------------------------------------
    def namespace_status(self, ns: str) -> dict[str, Any]:
        """``group.status()`` plus the formation fields, for one namespace."""
        nf = self.namespaces[ns]
        g = nf.group
        st = g.status()
        rec = nf.record
        now = nf.table.now()
        st.update(
            {
                "revision": g.sm.revision(),
                "phase": nf.phase,
                "cluster_id": rec.id if rec is not None else "",
                "founded_ms": rec.founded_ms if rec is not None else 0,
                "writes": nf.writes,
                "conflict": nf.conflict,
                "decision": nf.decision,
                "peers": {
                    r.peer_id: {
                        "addrs": r.addrs,
                        "sources": sorted(r.sources),
                        "reachable": r.reachable(now, nf.cfg.stale_s),
                        "state": (r.info or {}).get("state", ""),
                        "cluster": (r.info or {}).get("cluster", ""),
                    }
                    for r in nf.table.records()
                },
                "formation": nf.stats.as_dict(),
            }
        )
        return st

    def metrics(self) -> dict[str, dict[str, int]]:
        """Per namespace: the formation counters and gauges (``conflict`` is 0 or 1)."""
        return {ns: nf.stats.as_dict() for ns, nf in self.namespaces.items()}

    def status(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "addrs": list(self.hub.addrs),
            "pid": os.getpid(),
            "namespaces": {ns: self.namespace_status(ns) for ns in self.namespaces},
        }

    def write_status(self, last: str = "") -> str:
        """Write the status file if its content changed (atomic rename); returns the
        content written (or ``last``)."""
        doc = self.status()
        body = json.dumps(doc, sort_keys=True)
        if body == last:
            return last
        doc["written_ms"] = time.time_ns() // 1_000_000
        tmp = self.status_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True, indent=1))
        os.replace(tmp, self.status_path)
        return body
