"""Address handling (raftd.discovery.addrs) and the peer table (raftd.discovery.table)."""

from __future__ import annotations

import ipaddress

from raftd.discovery.addrs import LocalNetworks, announce_addrs, ip_of, rank_addrs
from raftd.discovery.mdns import parse_txt, service_type, txt_properties
from raftd.discovery.table import PeerTable

IFS = [
    ipaddress.IPv4Interface("127.0.0.1/8"),
    ipaddress.IPv4Interface("10.1.0.2/24"),
    ipaddress.IPv4Interface("10.2.0.2/24"),
]


def test_wildcard_listen_addresses_expand_to_every_interface() -> None:
    got = announce_addrs(["/ip4/0.0.0.0/tcp/7420"], IFS)
    assert got == ["/ip4/10.1.0.2/tcp/7420", "/ip4/10.2.0.2/tcp/7420"]
    assert announce_addrs(["/ip4/127.0.0.1/tcp/1/p2p/Qm"], IFS) == ["/ip4/127.0.0.1/tcp/1"]
    # Nothing but loopback: loopback.
    lo = [ipaddress.IPv4Interface("127.0.0.1/8")]
    assert announce_addrs(["/ip4/0.0.0.0/tcp/9"], lo) == ["/ip4/127.0.0.1/tcp/9"]


def test_ranking_puts_reachable_subnets_first_and_drops_unusable() -> None:
    local = LocalNetworks((ipaddress.IPv4Network("10.2.0.0/24"),), loopback_ok=False)
    addrs = [
        "/ip4/10.1.0.3/tcp/7420",
        "/ip4/10.2.0.3/tcp/7420/p2p/Qm",
        "/ip4/127.0.0.1/tcp/7420",
        "/ip4/0.0.0.0/tcp/7420",
        "/ip6/fe80::1/tcp/7420",
        "/dns4/node3/tcp/7420",
    ]
    assert rank_addrs(addrs, local) == [
        "/ip4/10.2.0.3/tcp/7420",
        "/ip4/10.1.0.3/tcp/7420",
        "/dns4/node3/tcp/7420",
        "/ip6/fe80::1/tcp/7420",
    ]
    one_host = LocalNetworks((), loopback_ok=True)
    assert rank_addrs(["/ip4/127.0.0.1/tcp/5"], one_host) == ["/ip4/127.0.0.1/tcp/5"]
    assert ip_of("/dns4/x/tcp/1") is None


def test_mdns_service_types_are_valid_and_per_namespace() -> None:
    from zeroconf._utils.name import service_type_name

    a, b = service_type("/raft/a"), service_type("/raft/b")
    assert a != b
    for t in (a, b, service_type("/raft/" + "x" * 200)):
        assert service_type_name(t) == t
    props = txt_properties("12D3KooWA", ["/ip4/10.0.0.2/tcp/7420", "/ip4/10.1.0.2/tcp/7420"])
    assert parse_txt(dict(props)) == (
        "12D3KooWA",
        ["/ip4/10.0.0.2/tcp/7420", "/ip4/10.1.0.2/tcp/7420"],
    )
    assert parse_txt({b"id": b"x"}) is None
    assert parse_txt({b"a0": b"/ip4/1.2.3.4/tcp/1"}) is None


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_newer_information_wins_and_rumours_are_dated_back() -> None:
    clock = Clock()
    t = PeerTable("me", clock=clock)
    assert not t.observe_addrs("me", ["/ip4/1.1.1.1/tcp/1"], "mdns")  # never ourselves
    assert t.observe_addrs("p", ["/ip4/10.0.0.2/tcp/1"], "mdns")
    v = t.version
    # A rumour two seconds old does not override a fresh direct observation.
    t.observe_addrs("p", ["/ip4/10.0.0.9/tcp/1"], "pex", age=2.0)
    rec = t.get("p")
    assert rec is not None and rec.addrs == ["/ip4/10.0.0.2/tcp/1"]
    assert t.version == v + 1  # only the new source was recorded
    clock.t += 5
    t.observe_addrs("p", ["/ip4/10.0.0.3/tcp/1"], "pex", age=1.0)
    assert rec.addrs == ["/ip4/10.0.0.3/tcp/1"]
    # Info: older is ignored, newer replaces (and brings its addresses).
    assert t.observe_info("p", {"id": "p", "addrs": ["/ip4/10.0.0.4/tcp/1"]}, "direct")
    assert not t.observe_info("p", {"id": "p", "state": "old"}, "pex", age=3.0)
    assert rec.info is not None and rec.info.get("state") is None
    assert rec.addrs == ["/ip4/10.0.0.4/tcp/1"]


def test_failures_back_off_and_success_resets() -> None:
    clock = Clock()
    t = PeerTable("me", clock=clock)
    t.observe_addrs("p", ["/ip4/10.0.0.2/tcp/1"], "mdns")
    rec = t.get("p")
    assert rec is not None
    t.mark_failed("p", base=0.5, cap=2.0)
    assert rec.retry_at == 100.5
    for _ in range(10):
        t.mark_failed("p", base=0.5, cap=2.0)
    assert rec.retry_at == 102.0
    t.mark_direct("p", "/ip4/10.0.0.2/tcp/1/p2p/x")
    assert rec.failures == 0 and rec.good_addr == "/ip4/10.0.0.2/tcp/1" and rec.reachable(100, 1)
    clock.t += 700
    assert t.forget_older_than(600) == ["p"] and len(t) == 0
