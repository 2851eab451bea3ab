"""Addresses: which of our listen addresses to announce, and which of a peer's to dial.

Two facts drive this module:

- A daemon usually listens on ``/ip4/0.0.0.0/tcp/7420``, which nobody can dial. Peers must
  be told the concrete address of every interface instead (:func:`announce_addrs`).
- py-libp2p dials only one TCP address per peer, and a wrong first address makes the dial
  fail (docs/libp2p.md, pitfall 3). A multi-homed peer (two networks, as in docker-compose
  with two networks) announces addresses of which only some are reachable from a given
  node, so each node orders a peer's addresses itself (:func:`rank_addrs`): addresses in
  a directly connected subnet first, loopback only when we ourselves use loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "LocalNetworks",
    "announce_addrs",
    "ip_of",
    "local_ipv4_interfaces",
    "rank_addrs",
]

_ANY4 = "0.0.0.0"


def ip_of(addr: str) -> str | None:
    """The IP address of an ``/ip4/...`` or ``/ip6/...`` multiaddr string, else None."""
    parts = addr.split("/")
    if len(parts) >= 3 and parts[1] in ("ip4", "ip6"):
        return parts[2]
    return None


def local_ipv4_interfaces() -> list[ipaddress.IPv4Interface]:
    """IPv4 addresses (with prefix) of every local interface, loopback included.

    Uses ``ifaddr`` (a dependency of zeroconf); an empty list if enumeration fails.
    """
    try:
        import ifaddr
    except ImportError:  # pragma: no cover - zeroconf always brings it
        return []
    out: list[ipaddress.IPv4Interface] = []
    try:
        adapters = ifaddr.get_adapters()
    except OSError:
        return []
    for adapter in adapters:
        for ip in adapter.ips:
            if isinstance(ip.ip, str):  # IPv4 (IPv6 comes as a tuple)
                try:
                    out.append(ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}"))
                except ValueError:
                    continue
    return out


def announce_addrs(
    listen_addrs: Sequence[str],
    interfaces: Sequence[ipaddress.IPv4Interface] | None = None,
) -> list[str]:
    """The addresses to tell peers: ``listen_addrs`` with ``/ip4/0.0.0.0`` expanded to
    every non-loopback IPv4 interface (or loopback if there is nothing else), any
    ``/p2p/...`` suffix dropped, duplicates removed, order kept."""
    ifs = list(interfaces) if interfaces is not None else local_ipv4_interfaces()
    out: list[str] = []
    for addr in listen_addrs:
        head = addr.split("/p2p/")[0]
        if ip_of(head) == _ANY4:
            rest = head.split("/", 3)[3] if head.count("/") >= 3 else ""
            ips = [str(i.ip) for i in ifs if not i.ip.is_loopback]
            if not ips:
                ips = [str(i.ip) for i in ifs if i.ip.is_loopback] or ["127.0.0.1"]
            for ip in ips:
                cand = f"/ip4/{ip}/{rest}" if rest else f"/ip4/{ip}"
                if cand not in out:
                    out.append(cand)
        elif head not in out:
            out.append(head)
    return out


@dataclass(frozen=True, slots=True)
class LocalNetworks:
    """What :func:`rank_addrs` needs to know about this node."""

    networks: tuple[ipaddress.IPv4Network, ...]
    loopback_ok: bool  # we announce loopback addresses ourselves (one-host setups)

    @classmethod
    def detect(cls, own_addrs: Iterable[str]) -> LocalNetworks:
        nets = tuple(i.network for i in local_ipv4_interfaces() if not i.ip.is_loopback)
        loop = any(_is_loopback(ip_of(a)) for a in own_addrs)
        return cls(nets, loop)


def _is_loopback(ip: str | None) -> bool:
    if ip is None:
        return False
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def rank_addrs(addrs: Iterable[str], local: LocalNetworks, *, limit: int = 8) -> list[str]:
    """Order a peer's addresses for dialing: those inside one of our subnets first, then
    other routable ones, then IPv6; loopback only if ``local.loopback_ok``; unspecified
    addresses (0.0.0.0) never. Stable within a rank; at most ``limit`` results."""
    ranked: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for i, addr in enumerate(addrs):
        addr = addr.split("/p2p/")[0]
        if addr in seen:
            continue
        seen.add(addr)
        ip = ip_of(addr)
        if ip is None:
            ranked.append((2, i, addr))  # dns and the like
            continue
        try:
            parsed = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if parsed.is_unspecified:
            continue
        if parsed.is_loopback:
            if local.loopback_ok:
                ranked.append((0, i, addr))
            continue
        if isinstance(parsed, ipaddress.IPv6Address):
            ranked.append((3, i, addr))
        elif any(parsed in n for n in local.networks):
            ranked.append((0, i, addr))
        else:
            ranked.append((1, i, addr))
    ranked.sort()
    return [a for _, _, a in ranked[:limit]]
