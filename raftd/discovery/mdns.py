"""mDNS discovery (DNS-SD over multicast) for a LAN or a docker-compose network.

One DNS-SD service type per namespace, ``_rd-<10 hex of sha256(namespace)>._tcp.local.``,
so daemons of different namespaces never even see each other's records. The instance
name is the peer id; the TXT record holds ``id=<peer id>`` and ``a0``, ``a1``, ... with
the daemon's concrete listen multiaddrs. Nothing else: mDNS only maps peer ids to
addresses. Records are unauthenticated (anyone on the LAN can send them); the peer id is
checked by Noise when the address is dialed.

Threads: python-zeroconf runs its own asyncio loop on a thread, and calls the browser
handlers on one thread per browser. Blocking zeroconf calls (start, register, close) run
in trio worker threads; handler results are handed to trio with
``TrioToken.run_sync_soon`` (never blocks the zeroconf thread, and is safe if trio has
already finished). Only IPv4, bound to the interfaces that carry our addresses (all
non-loopback IPv4 interfaces when listening on 0.0.0.0), never every interface blindly.

Zeroconf's browser backs its queries off to once an hour, so a peer that appears later
(a link that comes back, a late container) would be noticed late. Every daemon therefore
re-announces its records every ``reannounce_s`` seconds (with jitter): one multicast
packet per namespace, which every browser on the link processes as new or updated.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from raftd.discovery.addrs import ip_of

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["MdnsDiscovery", "service_type"]

log = logging.getLogger("raftd.discovery.mdns")

OnFound = Callable[[str, str, list[str]], None]  # (namespace, peer id, addrs)

_MAX_ADDRS = 8
_RESOLVE_TIMEOUT_MS = 1500
_CLOSE_TIMEOUT = 2.0


def service_type(namespace: str) -> str:
    """The DNS-SD service type of a namespace (a service name of at most 15 characters,
    RFC 6335)."""
    digest = hashlib.sha256(b"raftd/1" + namespace.encode()).hexdigest()[:10]
    return f"_rd-{digest}._tcp.local."


def txt_properties(peer_id: str, addrs: Sequence[str]) -> dict[bytes, bytes]:
    props = {b"id": peer_id.encode()}
    for i, a in enumerate(addrs[:_MAX_ADDRS]):
        props[f"a{i}".encode()] = a.encode()
    return props


def parse_txt(props: dict[bytes, bytes | None]) -> tuple[str, list[str]] | None:
    """(peer id, addrs) from a TXT record, or None if it is not ours / malformed."""
    raw = props.get(b"id")
    if not raw:
        return None
    try:
        peer_id = raw.decode()
    except UnicodeDecodeError:
        return None
    addrs: list[str] = []
    for i in range(_MAX_ADDRS):
        v = props.get(f"a{i}".encode())
        if not v:
            break
        try:
            a = v.decode()
        except UnicodeDecodeError:
            continue
        if a.startswith("/") and len(a) < 256:
            addrs.append(a)
    if not addrs or len(peer_id) > 128:
        return None
    return peer_id, addrs


class MdnsDiscovery:
    """Announce this daemon and browse for others, per namespace (module docstring)."""

    def __init__(
        self,
        peer_id: str,
        namespaces: Sequence[str],
        *,
        addrs: Callable[[], list[str]],
        on_found: OnFound,
        reannounce_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.namespaces = list(namespaces)
        self._addrs = addrs
        self._on_found = on_found
        self.reannounce_s = reannounce_s
        self._rng = rng or random.Random()
        self._types = {service_type(ns): ns for ns in self.namespaces}
        self._token: trio.lowlevel.TrioToken | None = None
        self.found = 0  # records delivered (tests, status)
        self.errors = 0

    # -- zeroconf thread side --------------------------------------------------------------
    def _on_state_change(self, **kw: Any) -> None:
        """Browser thread: resolve the record, hand (ns, peer, addrs) to trio."""
        try:
            from zeroconf import ServiceStateChange

            if kw.get("state_change") is ServiceStateChange.Removed:
                return  # staleness is the table's business, not a goodbye packet's
            zc = kw["zeroconf"]
            stype = kw["service_type"]
            name = kw["name"]
            ns = self._types.get(stype)
            if ns is None or name.startswith(self.peer_id + "."):
                return
            info = zc.get_service_info(stype, name, timeout=_RESOLVE_TIMEOUT_MS)
            if info is None:
                return
            parsed = parse_txt(dict(info.properties))
            if parsed is None or parsed[0] == self.peer_id:
                return
            token = self._token
            if token is not None:
                token.run_sync_soon(self._deliver, ns, parsed[0], parsed[1])
        except trio.RunFinishedError:
            pass
        except Exception as exc:  # never let the zeroconf thread die on us
            self.errors += 1
            log.debug("mDNS record handling failed: %r", exc)

    def _deliver(self, ns: str, peer_id: str, addrs: list[str]) -> None:
        self.found += 1
        try:
            self._on_found(ns, peer_id, addrs)
        except Exception:
            log.exception("mDNS on_found failed")

    # -- trio side -------------------------------------------------------------------------
    def _interfaces(self, addrs: list[str]) -> list[str]:
        ips = []
        for a in addrs:
            ip = ip_of(a)
            if ip is not None and ":" not in ip and not ip.startswith("127."):
                ips.append(ip)
        return sorted(set(ips))

    def _service_info(self, ns: str, addrs: list[str], ips: list[str]) -> Any:
        from zeroconf import ServiceInfo

        port = 0
        for a in addrs:
            parts = a.split("/")
            if len(parts) >= 5 and parts[3] == "tcp" and parts[4].isdigit():
                port = int(parts[4])
                break
        stype = service_type(ns)
        return ServiceInfo(
            stype,
            f"{self.peer_id}.{stype}",
            port=port,
            properties=txt_properties(self.peer_id, addrs),
            server=f"rd-{self.peer_id[-12:].lower()}.local.",
            addresses=[socket.inet_aton(ip) for ip in ips],
        )

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce and browse until cancelled. Without a usable IPv4 interface (e.g.
        listening on loopback only) it logs why and idles: the other sources still work."""
        from zeroconf import IPVersion, ServiceBrowser, Zeroconf

        self._token = trio.lowlevel.current_trio_token()
        addrs = self._addrs()
        ips = self._interfaces(addrs)
        if not ips:
            log.warning("mDNS disabled: no non-loopback IPv4 address to announce")
            task_status.started()
            await trio.sleep_forever()
        try:
            zc = await trio.to_thread.run_sync(
                lambda: Zeroconf(interfaces=ips, ip_version=IPVersion.V4Only)
            )
        except OSError as exc:
            log.warning("mDNS disabled: cannot open multicast sockets: %s", exc)
            task_status.started()
            await trio.sleep_forever()
        infos: dict[str, Any] = {}
        browsers: list[Any] = []
        try:
            # Browse first: peers that registered before us answer our queries while
            # our own registration is still being announced.
            for stype in self._types:
                browsers.append(
                    await trio.to_thread.run_sync(
                        lambda t=stype: ServiceBrowser(zc, t, handlers=[self._on_state_change])
                    )
                )
            async with trio.open_nursery() as n:
                for ns in self.namespaces:
                    infos[ns] = self._service_info(ns, addrs, ips)
                    # cooperating_responders: skip the ~1 s name probing; the instance
                    # name is our peer id, unique by construction.
                    n.start_soon(
                        trio.to_thread.run_sync,
                        lambda i=infos[ns]: zc.register_service(i, None, False, True),
                    )
            log.info("mDNS: announcing %s on %s", ", ".join(addrs), ", ".join(ips))
            task_status.started()
            while True:
                await trio.sleep(self.reannounce_s * self._rng.uniform(0.8, 1.2))
                fresh = self._addrs()
                if fresh != addrs:
                    addrs = fresh
                    for ns in self.namespaces:
                        infos[ns] = self._service_info(ns, addrs, ips)
                        await trio.to_thread.run_sync(zc.update_service, infos[ns])
                    continue
                for info in infos.values():
                    zc.send(zc.generate_service_broadcast(info, None))  # thread-safe
        finally:
            self._token = None
            with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
                scope.shield = True
                await trio.to_thread.run_sync(  # type: ignore[call-arg]  # stale trio stubs
                    _close_zeroconf, zc, browsers, abandon_on_cancel=True
                )


def _close_zeroconf(zc: Any, browsers: list[Any]) -> None:
    for b in browsers:
        with contextlib.suppress(Exception):
            b.cancel()
    with contextlib.suppress(Exception):
        zc.close()
