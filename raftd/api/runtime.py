"""The API layer of a running daemon: per namespace a :class:`NamespaceService`, a
:class:`Forwarder` and a :class:`CmdHandler` (leader forwarding over
``/raftd/1<ns>/cmd``) and a :class:`LeaseClock`; then one :class:`ApiServer` for the
local socket (and optional TCP listener).

``Daemon._serve`` starts it with ``await nursery.start(serve_api, daemon)`` once its
groups run. Configuration comes from the daemon's :class:`DaemonConfig`: ``socket_path``,
``api_tcp``, ``api_token_file``.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from raftd.api.server import ApiConfigError, ApiServer, ApiServerConfig
from raftd.api.service import NamespaceService
from raftd.runtime.forward import (
    PLAIN,
    CmdHandler,
    CmdSecurity,
    EnvelopeSecurity,
    ForwardConfig,
    Forwarder,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from raftd.app.daemon import Daemon

__all__ = ["ApiRuntime", "load_token", "serve_api"]

log = logging.getLogger("raftd.api")


def load_token(path: Path) -> str:
    """Read the API token (surrounding whitespace stripped). Raises ApiConfigError if
    the file is unreadable or empty; warns if others may read it."""
    try:
        st = os.stat(path)
        token = path.read_text().strip()
    except OSError as exc:
        raise ApiConfigError(f"api_token_file {path}: {exc.strerror}") from None
    if not token:
        raise ApiConfigError(f"api_token_file {path} is empty")
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.warning("api_token_file %s is readable by others: chmod 600 it", path)
    return token


class ApiRuntime:
    """The API side of one daemon (see the module doc)."""

    def __init__(self, daemon: Daemon, *, security: CmdSecurity | None = None) -> None:
        self.daemon = daemon
        if security is None:
            # Seal cmd frames like the Raft streams: the daemon's envelope (a keyed one
            # when --key-file is set; the null one writes a 1-byte header and passes
            # frames through, so keyed and unkeyed nodes refuse each other clearly).
            env = getattr(daemon, "envelope", None)
            security = EnvelopeSecurity(env) if env is not None else PLAIN
        self.security = security
        self.services: dict[str, NamespaceService] = {}
        self.forwarders: dict[str, Forwarder] = {}
        self.handlers: dict[str, CmdHandler] = {}
        self.server: ApiServer | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        d = self.daemon
        cfg = d.cfg
        fcfg = ForwardConfig(dial_timeout=cfg.timing.dial_timeout_s)
        token = load_token(cfg.api_token_file) if cfg.api_token_file is not None else None
        async with trio.open_nursery() as nursery:
            for ns, group in d.groups.items():
                transport = d.transports[ns]
                fwd = Forwarder(
                    d.host,
                    ns,
                    local_peer=d.peer_id,
                    peer_addrs=transport.peer_addrs,
                    security=self.security,
                    config=fcfg,
                )
                svc = NamespaceService(
                    group,
                    transport=transport,
                    forwarder=fwd,
                    local_addrs=lambda: list(d.addrs),
                    preset=cfg.timing,
                )
                handler = CmdHandler(
                    d.host,
                    ns,
                    local_peer=d.peer_id,
                    execute=svc.handle_forwarded,
                    is_member=_member_check(svc),
                    security=self.security,
                    config=fcfg,
                )
                self.services[ns] = svc
                self.forwarders[ns] = fwd
                self.handlers[ns] = handler
                await nursery.start(fwd.run)
                await nursery.start(handler.run)
                await nursery.start(svc.leases.run)
            self.server = ApiServer(
                self.services,
                ApiServerConfig(socket_path=cfg.socket_path, tcp=cfg.api_tcp, token=token),
            )
            await nursery.start(self.server.run)
            task_status.started()


def _member_check(svc: NamespaceService) -> Any:
    def is_member(peer: str) -> bool:
        cs = svc.group.conf
        return peer in cs.voters or peer in cs.learners

    return is_member


async def serve_api(
    daemon: Daemon, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the API side of ``daemon`` until cancelled (``nursery.start`` it). A bad API
    configuration raises :class:`raftd.app.daemon.DaemonError`."""
    from raftd.app.daemon import DaemonError

    rt = ApiRuntime(daemon)
    daemon.api = rt  # type: ignore[attr-defined]
    try:
        await rt.run(task_status=task_status)
    except ApiConfigError as exc:
        raise DaemonError(str(exc)) from exc
