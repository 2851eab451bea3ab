"""The API layer of a running daemon: per namespace a :class:`NamespaceService`, a
:class:`Forwarder` and a :class:`CmdHandler` (leader forwarding over
``/raftd/1<ns>/cmd``) and a :class:`LeaseClock`; then one :class:`ApiServer` for the
local socket (and optional TCP listener).

The app builds it from narrow inputs (the groups and their transports, the libp2p host,
the envelope, a config slice: :class:`ApiSettings`) and starts it with
``await nursery.start(api.run)`` once its groups run.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from raftd.api.server import ApiConfigError, ApiServer, ApiServerConfig
from raftd.api.service import NamespaceService
from raftd.runtime.forward import (
    CmdHandler,
    CmdSecurity,
    EnvelopeSecurity,
    ForwardConfig,
    Forwarder,
)
from raftd.runtime.group import Group
from raftd.runtime.presets import Preset
from raftd.security.envelope import Envelope
from raftd.transport.libp2p import Libp2pTransport

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["ApiRuntime", "ApiSettings", "load_token"]

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


class ApiSettings(Protocol):
    """The slice of the daemon's configuration the API reads (``DaemonConfig`` has it)."""

    @property
    def timing(self) -> Preset: ...

    @property
    def socket_path(self) -> Path: ...

    @property
    def api_tcp(self) -> str | None: ...

    @property
    def api_token_file(self) -> Path | None: ...


class ApiRuntime:
    """The API side of one daemon (see the module doc). ``groups`` and ``transports``
    (by namespace) are read when :meth:`run` starts; ``local_addrs`` gives this node's
    listen addresses when asked. A bad API setting raises :class:`ApiConfigError` from
    :meth:`run` before it reports started."""

    def __init__(
        self,
        *,
        settings: ApiSettings,
        host: Any,
        peer_id: str,
        groups: Mapping[str, Group],
        transports: Mapping[str, Libp2pTransport],
        local_addrs: Callable[[], list[str]],
        envelope: Envelope,
        security: CmdSecurity | None = None,
    ) -> None:
        self.settings = settings
        self.host = host
        self.peer_id = peer_id
        self.groups = groups
        self.transports = transports
        self.local_addrs = local_addrs
        # Seal cmd frames like the Raft streams: the daemon's envelope (a keyed one when
        # --key-file is set; the null one writes a 1-byte header and passes frames
        # through, so keyed and unkeyed nodes refuse each other clearly).
        self.security = security if security is not None else EnvelopeSecurity(envelope)
        self.services: dict[str, NamespaceService] = {}
        self.forwarders: dict[str, Forwarder] = {}
        self.handlers: dict[str, CmdHandler] = {}
        self.server: ApiServer | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.settings
        fcfg = ForwardConfig(dial_timeout=cfg.timing.dial_timeout_s)
        token = load_token(cfg.api_token_file) if cfg.api_token_file is not None else None
        async with trio.open_nursery() as nursery:
            for ns, group in self.groups.items():
                transport = self.transports[ns]
                fwd = Forwarder(
                    self.host,
                    ns,
                    local_peer=self.peer_id,
                    peer_addrs=transport.peer_addrs,
                    security=self.security,
                    config=fcfg,
                )
                svc = NamespaceService(
                    group,
                    transport=transport,
                    forwarder=fwd,
                    local_addrs=self.local_addrs,
                    preset=cfg.timing,
                )
                handler = CmdHandler(
                    self.host,
                    ns,
                    local_peer=self.peer_id,
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
