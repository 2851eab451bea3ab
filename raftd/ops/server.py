"""The daemon's operations listener: ``/healthz``, ``/readyz`` and ``/metrics``.

Started by the app when ``--metrics HOST:PORT`` (env ``RAFTD_METRICS``) is set, reading
an :class:`~raftd.ops.source.OpsSource` the app builds::

    ops = OpsServer(source, *parse_listen_addr(addr))
    listeners = await ops.bind()  # OSError if the address cannot be bound
    await nursery.start(ops.serve, listeners)

Endpoints (``GET`` or ``HEAD``; anything else is 405, unknown paths 404):

- ``/healthz``: ``200 ok`` whenever the process serves HTTP (liveness).
- ``/readyz``: ``200`` with a JSON body when every namespace knows a leader and has
  applied within ``max_lag`` entries of the commit index it knows; ``503`` with the same
  JSON shape saying why not (also while shutting down). ``?max_lag=N`` overrides the
  bound for one probe. See :mod:`raftd.ops.health`.
- ``/metrics``: Prometheus text format 0.0.4 (OpenMetrics if the ``Accept`` header asks
  for it) from the server's own registry (:mod:`raftd.ops.metrics`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from raftd.ops.health import DEFAULT_MAX_LAG, Readiness, readiness
from raftd.ops.http import HttpLimits, HttpServer, Request, Response
from raftd.ops.metrics import make_registry
from raftd.ops.source import OpsSource

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["DEFAULT_METRICS_PORT", "OpsServer", "parse_listen_addr"]

log = logging.getLogger("raftd.ops")

DEFAULT_METRICS_PORT = 9420
"""The metrics port the container image and the examples use (``--metrics`` has no
default: the listener is off unless configured)."""

_JSON = "application/json"


def parse_listen_addr(addr: str) -> tuple[str, int]:
    """``host:port`` -> (host, port). ``[v6addr]:port`` for IPv6; an empty host (``:9420``)
    means every IPv4 address. Port 0 picks a free port. Raises ValueError."""
    host, sep, port_s = addr.rpartition(":")
    if not sep:
        raise ValueError(f"{addr!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{addr!r}: write IPv6 addresses in brackets, e.g. [::1]:9420")
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"{addr!r}: port {port_s!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{addr!r}: port {port} is out of range")
    return host or "0.0.0.0", port


@dataclass
class OpsServer:
    """The ops endpoints for one daemon (see the module docstring).

    ``run()`` returns through ``task_status`` once bound; :attr:`port` is then the bound
    port (useful with port 0)."""

    source: OpsSource
    host: str
    port: int
    max_lag: int = DEFAULT_MAX_LAG
    limits: HttpLimits = field(default_factory=HttpLimits)
    registry: CollectorRegistry | None = None
    http: HttpServer | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """:meth:`bind`, then serve until cancelled."""
        listeners = await self.bind()
        await self.serve(listeners, task_status=task_status)

    async def bind(self) -> list[trio.SocketListener]:
        """Build the registry and open the listening sockets; sets :attr:`port`.
        A bind failure raises OSError from here."""
        self.registry = make_registry(self.source, max_lag=self.max_lag)
        self.http = HttpServer(self.host, self.port, self.handle, self.limits)
        listeners = await self.http.bind()
        self.port = self.http.port
        return listeners

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert self.http is not None
        log.info("ops endpoints on %s (/healthz /readyz /metrics)", self.url)
        await self.http.serve(listeners, task_status=task_status)

    def readiness(self, max_lag: int | None = None) -> Readiness:
        """Readiness now; never ready while the daemon is shutting down."""
        src = self.source
        r = readiness(src.namespaces, src.groups, self.max_lag if max_lag is None else max_lag)
        if src.stopping():
            return Readiness(False, "shutting down", r.max_lag, r.namespaces)
        return r

    async def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == "/healthz":
            return Response(200, b"ok\n")
        if path == "/readyz":
            max_lag: int | None = None
            if "max_lag" in req.query:
                try:
                    max_lag = int(req.query["max_lag"])
                    if max_lag < 0:
                        raise ValueError
                except ValueError:
                    return Response(400, b"max_lag must be a non-negative integer\n")
            r = self.readiness(max_lag)
            body = json.dumps(r.as_dict(), sort_keys=True).encode() + b"\n"
            return Response(200 if r.ready else 503, body, _JSON)
        if path == "/metrics":
            assert self.registry is not None
            # Content negotiation as prometheus_client does it: the classic text format
            # (0.0.4) unless the scraper asks for OpenMetrics.
            encode, content_type = choose_encoder(req.header("accept") or "")
            return Response(200, encode(self.registry), content_type)
        if path == "/":
            return Response(200, b"raftd: /healthz /readyz /metrics\n")
        return Response(404, b"Not Found\n")
