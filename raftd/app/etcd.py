"""Composition of the etcd v3 endpoint (``--etcd-listen``) into a running daemon.

Started by ``Daemon._serve`` after the local API (it serves through that API's
:class:`raftd.api.service.NamespaceService`), in the daemon's nursery; cancelled with it
at shutdown, which stops the gRPC server and joins its thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from raftd.etcd.endpoint import EndpointError, load_tls, parse_listen
from raftd.etcd.http2 import EtcdH2Server
from raftd.etcd.ids import cluster_id
from raftd.etcd.service import EtcdService

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from raftd.app.daemon import Daemon

__all__ = ["serve_etcd"]

log = logging.getLogger("raftd.etcd")


class _ClusterId:
    """The etcd cluster id of namespace ``ns``. With formation, it comes from the
    cluster record (fixed once the cluster has formed; before that, from the namespace
    alone); with a static ``--peer`` list, from that list, which every founder shares."""

    def __init__(self, daemon: Daemon, ns: str) -> None:
        self.daemon = daemon
        self.ns = ns
        self._fixed: int | None = None
        if daemon.formation is None:
            peers = sorted(p.rpartition("/p2p/")[2] for p in daemon.cfg.peers)
            self._fixed = cluster_id(ns, ",".join(peers))

    def __call__(self) -> int:
        if self._fixed is not None:
            return self._fixed
        f = self.daemon.formation
        nf = f.namespaces.get(self.ns) if f is not None else None
        rec = nf.record if nf is not None else None
        if rec is None:
            return cluster_id(self.ns)
        self._fixed = cluster_id(self.ns, str(rec.id))
        return self._fixed


async def serve_etcd(
    daemon: Daemon, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the etcd endpoint of ``daemon`` until cancelled (``nursery.start`` it after
    the API). A bad setting or an address that cannot be bound raises DaemonError."""
    from raftd.app.daemon import DaemonError

    cfg = daemon.cfg
    assert cfg.etcd_listen is not None
    ns = cfg.etcd_namespace or cfg.namespaces[0]
    try:
        host, port = parse_listen(cfg.etcd_listen)
        tls = None
        if cfg.etcd_cert_file is not None and cfg.etcd_key_file is not None:
            tls = load_tls(cfg.etcd_cert_file, cfg.etcd_key_file, cfg.etcd_trusted_ca_file)
    except EndpointError as exc:
        raise DaemonError(f"etcd endpoint: {exc}") from None
    assert daemon.api is not None, "serve_etcd starts after the API"
    svc = daemon.api.services[ns]
    scheme = "https" if tls is not None else "http"
    service = EtcdService(
        svc,
        cluster_id=_ClusterId(daemon, ns),
        client_urls=[],
        db_dirs=(cfg.data_dir / "db", cfg.data_dir / "state"),
    )
    server = EtcdH2Server(service, host, port, tls=tls)
    try:
        await server.run(task_status=_Started(task_status, service, server, scheme))
    except* OSError as eg:  # cannot listen (in use, no such address): a start-up error
        raise DaemonError(str(eg.exceptions[0])) from None


class _Started:
    """Fills in the endpoint's URL (the bound port) before reporting started."""

    def __init__(
        self, inner: TaskStatus[None], service: EtcdService, server: EtcdH2Server, scheme: str
    ) -> None:
        self.inner, self.service, self.server, self.scheme = inner, service, server, scheme

    def started(self, value: None = None) -> None:
        url = f"{self.scheme}://{self.server.target}"
        self.service.client_urls[:] = [url]
        log.info("etcd endpoint %s serves %s", url, self.service.svc.namespace)
        self.inner.started()
