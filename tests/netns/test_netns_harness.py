"""The network-namespace harness (harness.netns): isolation, multicast (what mDNS
needs), partitions, two-bridge partial connectivity, teardown and stale cleanup.

Every wait is a poll bounded by a deadline; the whole file runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from harness import netns
from harness.netns import Host, Topology, cleanup_stale, list_resources
from raftd.testing.launch import wait_until

ROOT = Path(__file__).resolve().parents[2]
PORT = 7000
GROUP, MPORT = "224.0.0.251", 5353  # the mDNS group and port
OUTSIDE = "198.51.100.1"  # TEST-NET-2: a destination outside every bridge
# Prefix of the crashed runs' leftovers: per test session, so that concurrent sessions
# (which may clean up stale leftovers at any time) do not remove ours mid-test.
CRASH_PREFIX = "k" + "".join(chr(97 + (os.getpid() // 26**i) % 26) for i in range(2))

MakeTopology = Callable[..., Topology]

ECHO_SERVER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
def serve(c):
    with c:
        while data := c.recv(65536):
            c.sendall(data)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# A "test run" that is SIGKILLed inside its topology (argv[1] == "1": with the reaper).
CRASHING_RUN = r"""
import os, signal, subprocess, sys
from harness.netns import Topology
t = Topology(2, prefix=sys.argv[2], reaper=sys.argv[1] == "1", clean_stale=False).__enter__()
p = t[0].popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(t.tag, p.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


# ------------------------------------------------------------------------------------
# helpers


def start_echo(host: Host, port: int = PORT) -> subprocess.Popen[bytes]:
    return host.popen([sys.executable, "-c", ECHO_SERVER, str(port)])


def roundtrip(client: Host, ip: str, port: int = PORT) -> None:
    payload = os.urandom(16)
    with client.connect(ip, port, timeout=2.0) as c:
        c.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = c.recv(64)
            assert chunk, "echo server closed the connection"
            got += chunk
    assert got == payload


def mcast_receiver(host: Host, bridge: str | None = None) -> socket.socket:
    """A UDP socket in ``host`` joined to the mDNS group on its interface to ``bridge``."""
    s = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", MPORT))
    ifaddr = host.ip if bridge is None else host.ip_on(bridge)
    mreq = socket.inet_aton(GROUP) + socket.inet_aton(ifaddr)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setblocking(False)
    return s


def mcast_sender(host: Host, bridge: str | None = None) -> socket.socket:
    """A UDP socket in ``host``; without ``bridge`` it relies on the multicast route."""
    s = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    if bridge is not None:
        s.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host.ip_on(bridge))
        )
    return s


def heard(sender: socket.socket, receivers: list[socket.socket], within: float) -> list[bool]:
    """Send a fresh token to the group every 50 ms until every receiver got it or ``within``
    seconds passed; which receivers heard it."""
    token = os.urandom(8)
    got = [False] * len(receivers)
    deadline = time.monotonic() + within
    while not all(got) and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # e.g. no route: the receivers hear nothing
            sender.sendto(token, (GROUP, MPORT))
        time.sleep(0.05)
        for i, r in enumerate(receivers):
            while True:
                try:
                    data = r.recv(2048)
                except BlockingIOError:
                    break
                got[i] = got[i] or data == token
    return got


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def system_names() -> tuple[str, str]:
    """Raw `ip netns list` and `ip -o link` output (root namespace)."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return ns.stdout, links.stdout


# ------------------------------------------------------------------------------------
# the skip/fail policy (runs everywhere, root or not)


def test_policy_skips_without_netns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "require_netns", lambda: "no netns here")
    monkeypatch.delenv(netns.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no netns here"):
        netns.netns_or_skip()


def test_policy_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "require_netns", lambda: "no netns here")
    monkeypatch.setenv(netns.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="no netns here"):
        netns.netns_or_skip()


def test_policy_passes_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "require_netns", lambda: None)
    monkeypatch.setenv(netns.REQUIRE_ENV, "1")
    netns.netns_or_skip()


# ------------------------------------------------------------------------------------
# one bridge


PLACEMENT = pytest.mark.parametrize("bridge_ns", [True, False], ids=["switch-ns", "root-ns"])


def ip_json(*args: str, ns: str | None = None) -> list[dict[str, object]]:
    argv = ["ip", *(["-n", ns] if ns else []), "-j", *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


@pytest.mark.netns
@pytest.mark.slow
@PLACEMENT
def test_one_bridge_tcp_and_private_loopback(make_topology: MakeTopology, bridge_ns: bool) -> None:
    t = make_topology(3, bridge_ns=bridge_ns)
    h0, h1, h2 = t
    assert len({h.ip for h in t}) == 3
    for name in [*(h.veth() for h in t), *(b.name for b in t.bridges.values())]:
        assert len(name) <= 15, name

    server = start_echo(h0)
    assert server.pid in h0.pids()  # `ip netns exec` execs: the pid is the server itself
    h1.wait_tcp(h0.ip, PORT, timeout=10)
    roundtrip(h1, h0.ip)
    roundtrip(h2, h0.ip)
    roundtrip(h0, "127.0.0.1")  # h0's own loopback has the server...
    with pytest.raises(ConnectionRefusedError):  # ...h1's loopback is a different one
        h1.connect("127.0.0.1", PORT, timeout=1.0)

    # A process (not just a socket of ours) inside h2 reaches h0 the same way.
    probe = f"import socket; socket.create_connection(({h0.ip!r}, {PORT}), timeout=2).close()"
    h2.run([sys.executable, "-c", probe])

    # Nothing but the bridge subnet is routable: no default route, nothing outside.
    routes = h1.run(["ip", "-4", "route"]).stdout
    assert "default" not in routes and str(t.bridges["br0"].network) in routes
    udp = h1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp, pytest.raises(OSError) as exc:
        udp.connect((OUTSIDE, 9))
    assert exc.value.errno == errno.ENETUNREACH

    # The bridge side takes no part: no addresses (IPv4 or IPv6) on bridges or ports.
    br = t.bridges["br0"]
    assert br.netns == t.switch and (t.switch is not None) == bridge_ns
    for link in [br.name, *(h.veth() for h in t)]:
        assert ip_json("addr", "show", "dev", link, ns=br.netns)[0]["addr_info"] == []
    if bridge_ns:  # nothing of ours in the root namespace but namespace names
        root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert t.tag not in root_links


@pytest.mark.netns
@pytest.mark.slow
def test_multicast_between_namespaces(make_topology: MakeTopology) -> None:
    t = make_topology(3)
    rx1, rx2 = mcast_receiver(t[1]), mcast_receiver(t[2])
    tx = mcast_sender(t[0])  # no IP_MULTICAST_IF: the 224.0.0.0/4 route picks eth0
    with rx1, rx2, tx:
        assert heard(tx, [rx1, rx2], within=3.0) == [True, True]


@pytest.mark.netns
@pytest.mark.slow
def test_ipv6_off_by_default_and_usable_when_on(make_topology: MakeTopology) -> None:
    off = make_topology(1)
    assert "inet6" not in off[0].run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    on = make_topology(2, ipv6=True)
    out = on[0].run(["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
    assert "fe80::" in out and "tentative" not in out  # DAD off: usable at once


# ------------------------------------------------------------------------------------
# partitions


@pytest.mark.netns
@pytest.mark.slow
@PLACEMENT
def test_link_down_partitions_and_link_up_heals(
    make_topology: MakeTopology, bridge_ns: bool
) -> None:
    t = make_topology(3, bridge_ns=bridge_ns)
    h0, h1, h2 = t
    start_echo(h0)
    h1.wait_tcp(h0.ip, PORT, timeout=10)
    established = h1.connect(h0.ip, PORT, timeout=0.3)
    rx1, rx2 = mcast_receiver(h1), mcast_receiver(h2)
    tx0, tx1 = mcast_sender(h0), mcast_sender(h1)
    with established, rx1, rx2, tx0, tx1:
        h0.link_down()
        assert not h0.is_up()
        started = time.monotonic()
        assert not h1.can_connect(h0.ip, PORT, timeout=0.5)
        assert time.monotonic() - started < 2.0
        established.sendall(b"x")  # the old connection stalls: no reply, no reset
        with pytest.raises(TimeoutError):
            established.recv(1)
        assert heard(tx0, [rx1, rx2], within=0.4) == [False, False]
        assert heard(tx1, [rx2], within=2.0) == [True]  # the rest still see each other
        # The host keeps its address and routes (flagged linkdown): a pulled cable.
        assert "224.0.0.0/4" in h0.run(["ip", "route"]).stdout

        h0.link_up()
        assert h0.is_up()
        h1.wait_tcp(h0.ip, PORT, timeout=5)
        established.settimeout(5.0)  # TCP retransmits: the old connection resumes
        assert established.recv(1) == b"x"
        assert heard(tx0, [rx1, rx2], within=3.0) == [True, True]

    # A namespace-side admin down drops its routes; link_up restores the multicast route.
    h2.run(["ip", "link", "set", "eth0", "down"])
    assert "224.0.0.0/4" not in h2.run(["ip", "route"]).stdout
    h2.link_up()
    assert "224.0.0.0/4 dev eth0" in h2.run(["ip", "route"]).stdout
    h2.wait_tcp(h0.ip, PORT, timeout=5)


@pytest.mark.netns
@pytest.mark.slow
def test_two_bridges_partial_connectivity(make_topology: MakeTopology) -> None:
    t = make_topology(["a", "b", "c"], bridges={"left": ["a", "b"], "right": ["b", "c"]})
    a, b, c = t["a"], t["b"], t["c"]
    assert (b.ifname("left"), b.ifname("right")) == ("eth0", "eth1")
    assert a.bridges == [t.bridges["left"]] and c.bridges == [t.bridges["right"]]
    start_echo(b)
    a.wait_tcp(b.ip_on("left"), PORT, timeout=10)
    c.wait_tcp(b.ip_on("right"), PORT, timeout=10)
    roundtrip(a, b.ip_on("left"))
    roundtrip(c, b.ip_on("right"))
    for target in (c.ip, b.ip_on("right")):  # a has no route into the right subnet
        with pytest.raises(OSError) as exc:
            a.connect(target, PORT, timeout=0.5)
        assert exc.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError):
        c.connect(a.ip, PORT, timeout=0.5)

    # Multicast stays on its bridge: b hears both sides, a and c never hear each other.
    rx_a, rx_b, rx_c = mcast_receiver(a), mcast_receiver(b, "left"), mcast_receiver(c)
    tx_a, tx_b_right = mcast_sender(a), mcast_sender(b, "right")
    with rx_a, rx_b, rx_c, tx_a, tx_b_right:
        assert heard(tx_a, [rx_b], within=3.0) == [True]
        assert heard(tx_a, [rx_c], within=0.4) == [False]
        assert heard(tx_b_right, [rx_c], within=3.0) == [True]
        assert heard(tx_b_right, [rx_a], within=0.4) == [False]

    t.partition([b])  # b off both bridges
    assert not b.is_up("left") and not b.is_up("right")
    assert not a.can_connect(b.ip_on("left"), PORT, timeout=0.3)
    assert not c.can_connect(b.ip_on("right"), PORT, timeout=0.3)
    t.heal()
    a.wait_tcp(b.ip_on("left"), PORT, timeout=5)
    c.wait_tcp(b.ip_on("right"), PORT, timeout=5)


# ------------------------------------------------------------------------------------
# teardown and stale cleanup


@pytest.mark.netns
@pytest.mark.slow
@PLACEMENT
def test_teardown_after_exception_leaves_nothing(need_netns: None, bridge_ns: bool) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    with pytest.raises(RuntimeError, match="boom"), Topology(2, bridge_ns=bridge_ns) as t:
        tag = t.tag
        procs.append(t[0].popen(["sleep", "60"]))
        stopped = t[1].popen(["sleep", "60"])
        t[1].pause(stopped)
        procs.append(stopped)
        t[1].run(["sh", "-c", "setsid sleep 60 >/dev/null 2>&1 &"])  # untracked, detached
        assert len(t[1].pids()) == 2
        assert len(t.resources()) == 2 + int(bridge_ns) + 1 + 2  # netns (+ switch), bridge, veths
        raise RuntimeError("boom")
    assert all(p.returncode is not None for p in procs)
    assert list_resources(tag) == []
    ns_out, link_out = system_names()
    assert tag not in ns_out and tag not in link_out


@pytest.mark.netns
@pytest.mark.slow
def test_failed_start_undoes_partial_build(
    need_netns: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Topology) -> None:
        raise OSError("injected failure inside the first namespace")

    monkeypatch.setattr(Topology, "_ns_sysctls", boom)
    t = Topology(3)
    with pytest.raises(OSError, match="injected"):
        t.start()
    assert t.tag and list_resources(t.tag) == []


@pytest.mark.netns
@pytest.mark.slow
def test_close_is_idempotent_and_kills_processes(need_netns: None) -> None:
    t = Topology(1)
    with t:
        p = t[0].popen(["sleep", "60"])
        t[0].pause(p)
        t[0].resume(p)
        assert p.poll() is None
    assert p.returncode == -signal.SIGKILL
    t.close()
    assert t.resources() == []


def _crash_run(with_reaper: bool) -> tuple[str, int]:
    cp = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, "1" if with_reaper else "0", CRASH_PREFIX],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert cp.returncode == -signal.SIGKILL, cp.stderr
    tag, pid = cp.stdout.split()
    return tag, int(pid)


@pytest.mark.netns
@pytest.mark.slow
def test_cleanup_stale_removes_leftovers_of_a_killed_run(need_netns: None) -> None:
    tag, sleeper = _crash_run(with_reaper=False)
    try:
        left = list_resources(tag)
        assert len(left) == 2 + 1 + 1 + 2 and not gone(sleeper)  # netns, switch, bridge, veths
        removed = cleanup_stale(CRASH_PREFIX)
        assert set(left) <= set(removed)
        assert list_resources(tag) == []
        wait_until(lambda: gone(sleeper), 5, interval=0.02, what="the orphaned process to die")
    finally:
        cleanup_stale(CRASH_PREFIX)


@pytest.mark.netns
@pytest.mark.slow
def test_reaper_cleans_up_after_a_killed_run(need_netns: None) -> None:
    tag, sleeper = _crash_run(with_reaper=True)
    try:
        wait_until(
            lambda: not list_resources(tag), 10, interval=0.02, what="the reaper to tear down"
        )
        wait_until(lambda: gone(sleeper), 5, interval=0.02, what="the orphaned process to die")
    finally:
        cleanup_stale(CRASH_PREFIX)


@pytest.mark.netns
@pytest.mark.slow
def test_cleanup_stale_spares_live_topologies(make_topology: MakeTopology) -> None:
    t = make_topology(2)
    before = t.resources()
    removed = cleanup_stale()  # our pid is alive and the tag is active
    assert not any(name.startswith(t.tag) for name in removed)
    assert t.resources() == before
    start_echo(t[0])
    t[1].wait_tcp(t[0].ip, PORT, timeout=10)
    roundtrip(t[1], t[0].ip)


# ------------------------------------------------------------------------------------
# trio helpers


@pytest.mark.netns
@pytest.mark.slow
async def test_trio_helpers(make_topology: MakeTopology) -> None:
    t = make_topology(2)
    start_echo(t[0])
    with trio.fail_after(10):
        await t[1].await_tcp(t[0].ip, PORT)
        s = t[1].trio_socket()
        with s:
            await s.connect((t[0].ip, PORT))
            await s.send(b"hi")
            assert await s.recv(2) == b"hi"
        cp = await t[1].arun(["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        assert t[1].ip in cp.stdout.decode()
