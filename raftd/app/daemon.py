"""``raftd run``: one libp2p host, one Raft group per namespace, the local API socket.

Lifecycle: open the data dir (identity key, LevelDB), start the host, start every group
(bootstrapping it from the static peer list when it is new), serve the API, and on
SIGTERM/SIGINT shut down cleanly: each group that leads hands leadership to its most
caught-up voter, in-flight requests finish or fail with a clear error, storage is flushed
and closed, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from raftd.app.config import DaemonConfig
from raftd.app.keys import load_ring
from raftd.app.shutdown import GRACE_S
from raftd.core import NONE, NodeId, StateType
from raftd.kv.machine import KVStateMachine
from raftd.runtime.group import Group, GroupUnavailable, default_rng
from raftd.runtime.watchdog import LoopWatchdog
from raftd.security.envelope import Envelope, KeyedEnvelope, NullEnvelope, make_envelope
from raftd.security.keys import KeyLoadError, load_psk
from raftd.storage.leveldb import LevelDB
from raftd.transport.host import listen_addrs_of, load_or_create_identity, open_host, peer_id_of
from raftd.transport.libp2p import Libp2pTransport, Libp2pTransportConfig

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from raftd.api.runtime import ApiRuntime
    from raftd.formation.service import Formation
    from raftd.ops.server import OpsServer
    from raftd.ops.source import OpsSource

log = logging.getLogger("raftd.daemon")


class DaemonError(Exception):
    """The daemon cannot start; the message says why."""


def split_peer_addr(addr: str) -> tuple[str, str]:
    """``/ip4/1.2.3.4/tcp/7420/p2p/<id>`` -> (peer id, address without /p2p)."""
    head, sep, pid = addr.rpartition("/p2p/")
    if not sep or not pid or "/" in pid:
        raise DaemonError(f"peer address {addr!r} must end in /p2p/<peer id>")
    return pid, head


@dataclass
class Daemon:
    """One raftd process. ``run()`` until cancelled or ``stop()``."""

    cfg: DaemonConfig
    groups: dict[str, Group] = field(default_factory=dict)
    transports: dict[str, Libp2pTransport] = field(default_factory=dict)
    peer_id: NodeId = NONE
    addrs: list[str] = field(default_factory=list)
    host: Any = None
    db: LevelDB | None = None
    envelope: Envelope = field(default_factory=NullEnvelope)
    _stop: trio.Event = field(default_factory=trio.Event)
    #: The services the daemon composes, set as ``run()`` starts them: formation only
    #: when discovery runs the groups, ops only with ``--metrics``.
    formation: Formation | None = None
    api: ApiRuntime | None = None
    ops: OpsServer | None = None
    watchdog: LoopWatchdog = field(default_factory=LoopWatchdog)

    #: What the daemon is doing, for logs (the shutdown guard reports it).
    phase: str = "starting"
    #: Called once when the daemon serves (the process runner settles its garbage
    #: collector there).
    on_started: Callable[[], None] | None = None
    #: Called once when a signal asks for shutdown (the process runner arms its
    #: shutdown bound there; in-process daemons have none).
    on_shutdown_requested: Callable[[], None] | None = None
    #: Seconds this daemon's process has been running (the process runner reads it from
    #: /proc); formation counts a fresh node's first bootstrap window from the process
    #: start. In-process daemons count from their own start.
    started_ago: Callable[[], float] = lambda: 0.0

    def stop(self) -> None:
        """Ask for a graceful shutdown (as SIGTERM does)."""
        self._stop.set()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        kp = load_or_create_identity(cfg.data_dir)
        self.peer_id = peer_id_of(kp)
        psk = None
        try:
            if cfg.psk_file is not None:
                psk = load_psk(cfg.psk_file)
            ring = load_ring(cfg)
        except KeyLoadError as exc:
            raise DaemonError(f"key: {exc}") from None
        self.envelope = make_envelope(ring)
        if ring is not None:
            log.info("shared key loaded: %s", ", ".join(ring.accepted_ids))
        self.db = db = LevelDB(cfg.data_dir)
        try:
            async with open_host(kp, cfg.listen, psk=psk) as host:
                self.host = host
                self.addrs = listen_addrs_of(host)
                log.info("peer id %s listening on %s", self.peer_id, ", ".join(self.addrs))
                await self._serve(host, db, task_status)
        finally:
            db.close()
            log.info("stopped")

    def _make_group(self, host: Any, db: LevelDB, ns: str) -> Group:
        p = self.cfg.timing
        tcfg = Libp2pTransportConfig(
            dial_timeout=p.dial_timeout_s,
            snapshot_dir=str(db.snapshot_dir(ns)),
        )
        transport = Libp2pTransport(host, ns, config=tcfg, envelope=self.envelope)
        self.transports[ns] = transport
        group = Group(
            namespace=ns,
            node_id=self.peer_id,
            storage=db.group(ns),
            sm=KVStateMachine.leveldb(db, ns, sync=False),
            transport=transport,
            preset=p,
            rng=default_rng(self.peer_id, ns),
            watchdog=self.watchdog,
        )
        self.groups[ns] = group
        return group

    async def _serve(self, host: Any, db: LevelDB, task_status: TaskStatus[None]) -> None:
        cfg = self.cfg
        static: list[tuple[str, str]] = [split_peer_addr(a) for a in cfg.peers]
        # Without a static peer list, discovery-first formation decides when each group
        # bootstraps, joins or dissolves, and runs the groups.
        formation_on = not static and bool(cfg.discovery or cfg.bootstrap)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watchdog.run)
            for ns in cfg.namespaces:
                group = self._make_group(host, db, ns)
                transport = self.transports[ns]
                for pid, addr in static:
                    if pid != self.peer_id:
                        transport.add_peer_addrs(pid, [addr])
                if group.is_empty() and static:
                    voters = sorted({self.peer_id} | {pid for pid, _ in static})
                    group.bootstrap(voters)
                elif group.is_empty() and not formation_on:
                    group.bootstrap([self.peer_id])
                await nursery.start(transport.run)
                if not formation_on:
                    await nursery.start(run_group, group)
            if formation_on:
                from raftd.formation.service import Formation

                self.formation = Formation(
                    settings=cfg,
                    host=host,
                    peer_id=self.peer_id,
                    groups=self.groups,
                    transports=self.transports,
                    db=db,
                    envelope=self.envelope,
                    started_ago=self.started_ago(),
                )
                await nursery.start(self.formation.run)
            # The local API server and leader forwarding.
            from raftd.api.runtime import ApiRuntime

            self.api = ApiRuntime(
                settings=cfg,
                host=host,
                peer_id=self.peer_id,
                groups=self.groups,
                transports=self.transports,
                local_addrs=lambda: list(self.addrs),
                envelope=self.envelope,
            )
            await nursery.start(_serve_api, self.api)
            # The etcd v3 endpoint, when --etcd-listen is set.
            if cfg.etcd_listen is not None:
                from raftd.app.etcd import serve_etcd

                await nursery.start(serve_etcd, self)
            # /healthz, /readyz, /metrics when --metrics is set.
            if cfg.metrics:
                await nursery.start(self._serve_ops, cfg.metrics)
            if self.on_started is not None:
                self.on_started()
            task_status.started()
            pidfile = cfg.data_dir / "raftd.pid"
            pidfile.write_text(f"{os.getpid()}\n")
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                nursery.start_soon(self._watch_signals, signals)
                self.phase = "serving"
                await self._stop.wait()
            self.phase = "handing leadership over"
            await self._graceful_shutdown()
            self.phase = "stopping tasks and closing storage"
            nursery.cancel_scope.cancel()

    def ops_source(self) -> OpsSource:
        """What the ops endpoints read: this daemon's groups, transports and watchdog,
        and the counters its API and formation keep."""
        from raftd.ops.source import OpsSource

        def forwarded_calls(ns: str) -> int:
            fwd = self.api.forwarders.get(ns) if self.api is not None else None
            return fwd.stats["calls"] if fwd is not None else 0

        def discovery_peers(ns: str) -> int:
            f = self.formation
            return f.hub.peers_seen.get(ns, 0) if f is not None else 0

        def formation_events(ns: str) -> Mapping[str, int]:
            nf = self.formation.namespaces.get(ns) if self.formation is not None else None
            return nf.stats.as_dict() if nf is not None else {}

        return OpsSource(
            peer_id=self.peer_id,
            namespaces=self.cfg.namespaces,
            groups=self.groups,
            transports=self.transports,
            watchdog=self.watchdog,
            stopping=self._stop.is_set,
            forwarded_calls=forwarded_calls,
            discovery_peers=discovery_peers,
            formation_events=formation_events,
        )

    async def _serve_ops(
        self, addr: str, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the ops listener on ``addr`` (sets :attr:`ops`). A bad address or a failed
        bind raises :class:`DaemonError` from ``start``."""
        from raftd.ops.server import OpsServer, parse_listen_addr

        try:
            host, port = parse_listen_addr(addr)
        except ValueError as exc:
            raise DaemonError(f"metrics: {exc}") from None
        self.ops = server = OpsServer(self.ops_source(), host, port)
        try:
            listeners = await server.bind()
        except OSError as exc:
            raise DaemonError(f"metrics: cannot listen on {addr}: {exc.strerror or exc}") from None
        await server.serve(listeners, task_status=task_status)

    async def _watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                self.reload()
                continue
            log.info("received %s: shutting down", signal.Signals(signum).name)
            if self.on_shutdown_requested is not None:
                self.on_shutdown_requested()
            self._stop.set()
            return

    def reload(self) -> bool:
        """Re-read the key files (SIGHUP, ``raftd reload``). False if it failed; the old
        keys then stay in force."""
        try:
            ring = load_ring(self.cfg)
        except KeyLoadError as exc:
            log.error("reload failed, keeping the current keys: %s", exc)
            return False
        env = self.envelope
        if isinstance(env, KeyedEnvelope) and ring is not None:
            env.reload(ring)
            for t in self.transports.values():
                t.readvertise()
            log.info("keys reloaded: %s", ", ".join(ring.accepted_ids))
            return True
        if ring is None and not env.encrypted:
            log.info("reload: no key configured, nothing to do")
            return True
        log.error("reload cannot switch encryption on or off: restart the daemon")
        return False

    async def _graceful_shutdown(self) -> None:
        """Hand leadership over before leaving (bounded by two election timeouts)."""
        # --leave-on-shutdown leaves every cluster first, within half the grace the
        # shutdown bound leaves beyond the hand-over: the rest is for flushing and
        # closing. (Every node stopped at once cannot leave: nobody is left to remove it.)
        if self.cfg.leave_on_shutdown and self.formation is not None:
            await self.formation.leave_all(min(self.cfg.timing.request_timeout_s, GRACE_S / 2))
        timeout = 2 * self.cfg.timing.election_s
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as n:
                for g in self.groups.values():
                    n.start_soon(_hand_over, g)


async def _serve_api(
    api: ApiRuntime, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the API side until cancelled; a bad API setting raises :class:`DaemonError`."""
    from raftd.api.server import ApiConfigError

    try:
        await api.run(task_status=task_status)
    except ApiConfigError as exc:
        raise DaemonError(str(exc)) from exc


async def run_group(
    group: Group, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run one group; a storage failure (disk full, I/O error) stops that group only.

    The failed group no longer acknowledges anything (its API answers UNAVAILABLE, and
    its peers elect another leader since its heartbeats stop); the daemon keeps serving
    its other namespaces. Restart the daemon once the disk is fixed.
    """
    try:
        await group.run(task_status=task_status)
    except* GroupUnavailable as eg:
        log.error("%s: group stopped: %s", group.namespace, eg.exceptions[0])


async def _hand_over(g: Group) -> None:
    if g.role != StateType.LEADER or g.node is None:
        return
    target = g.node.most_caught_up_voter()
    if target is None:
        return
    log.info("%s: transferring leadership to %s before shutdown", g.namespace, target)
    g.transfer_leader(target)
    while g.role == StateType.LEADER:
        await g.wait_state_change()
