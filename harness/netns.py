"""Multi-host test topologies built from Linux network namespaces (a docker-compose stand-in).

Each *host* is a network namespace with its own loopback and one veth per attached *bridge*;
each bridge is a Linux bridge with a private IPv4 /24. Processes run inside a host with
:meth:`Host.popen` (``ip netns exec``), and the test process itself can open sockets inside
a host with :meth:`Host.socket`. mDNS works across hosts on one bridge: every host has a
multicast route (``224.0.0.0/4 dev ethN``) and the bridges have multicast snooping off, so
multicast is flooded to every port.

Where the bridges live: by default in a per-topology *switch* namespace (``<tag>sw``);
with ``bridge_ns=False`` in the root namespace, as docker does. The switch namespace keeps
bridged frames away from the root namespace's firewall (with ``br_netfilter`` loaded,
frames bridged in the root namespace traverse its iptables ``FORWARD`` chain, whose policy
is ``DROP`` wherever Docker runs), from its network managers, and from its interface names.

Isolation contract:

* Hosts have no default route, only their bridge subnets (plus the multicast route), and
  IP forwarding off; a host attached to two bridges does not route between them.
* Bridges and switch-side veths carry no IP address (IPv6 disabled) and forwarding is off
  where they live, so the switch (or root) namespace takes no part in the traffic and
  routes nothing. Traffic never leaves the bridges (and each host's own loopback).

Naming: every resource name starts with a 9-character *tag*: a 3-letter prefix
(:data:`DEFAULT_PREFIX`), the owner's pid in base 36 (5 characters) and a per-process
sequence character. Bridges are ``<tag>b<j>`` and switch-side veths ``<tag>v<ii><j>`` (at
most 13 characters; the limit is 15), host namespaces ``<tag>-<label>``, the switch
namespace ``<tag>sw``. Inside a host the interfaces are ``eth0``, ``eth1``, ... (one per
bridge, in attachment order). Because the owner pid is in every name,
:func:`cleanup_stale` can tell leftovers of dead processes from live topologies.

Teardown (:meth:`Topology.close`) kills every process in the namespaces (SIGKILL to each
tracked process group, then every remaining pid in the namespace), deletes the veths, the
bridges and the namespaces, and verifies nothing with the tag remains. It runs on normal
exit and on exceptions; when the test process itself is killed, a small *reaper* process
(started per topology, in its own session) notices its pipe closing and does the same
teardown. :func:`cleanup_stale` removes anything a crashed run still left behind, and
:class:`Topology` calls it on start.

Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2; :func:`require_netns` checks, and
:func:`netns_or_skip` applies the test policy (skip, or fail under ``RAFTD_REQUIRE_NETNS=1``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import socket as _sock
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

from harness.repo import ROOT

if TYPE_CHECKING:
    import trio

__all__ = [
    "DEFAULT_PREFIX",
    "REQUIRE_ENV",
    "Bridge",
    "Host",
    "NetnsError",
    "Topology",
    "cleanup_stale",
    "list_resources",
    "netns_or_skip",
    "netns_required",
    "require_netns",
]

DEFAULT_PREFIX = "rdt"
"""Default 3-letter name prefix of every harness resource."""

REQUIRE_ENV = "RAFTD_REQUIRE_NETNS"
"""When this environment variable is truthy (``1``), missing netns support fails tests."""

NETNS_DIR = Path("/var/run/netns")
SUBNET_POOLS = ("10.213.0.0/16", "10.214.0.0/16", "10.215.0.0/16")
"""Where bridge subnets (/24 each) are taken from, avoiding anything routed on the machine."""

MCAST_NET = "224.0.0.0/4"
ALIAS_MARK = "raftd-netns"
_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT = 15.0
_PREFIX_RE = re.compile(r"^[a-z]{3}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_]{1,24}$")
_SWITCH_RE = re.compile(r"^[a-z]{3}[0-9a-z]{6}sw$")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_PROBE_SEQ = "z"
_TRUTHY = frozenset({"1", "true", "yes", "on"})

T = TypeVar("T")
_File = int | IO[Any] | None

# Tags of this process's live topologies (and the capability probe), so that cleanup_stale
# never removes them even though their owner pid (ours) is alive.
_ACTIVE_TAGS: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


class NetnsError(RuntimeError):
    """An ``ip`` command (or another namespace operation) failed."""


# --------------------------------------------------------------------------------------
# low-level helpers


@functools.cache
def _ip_bin() -> str:
    found = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise NetnsError("iproute2 'ip' binary not found")
    return found


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip [-n ns] args...``; raise :class:`NetnsError` with stderr on failure if check."""
    argv = [_ip_bin(), *(["-n", ns] if ns else []), *args]
    try:
        cp = subprocess.run(
            argv, capture_output=True, text=True, timeout=_IP_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"{' '.join(argv)}: timed out after {_IP_TIMEOUT}s") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {cp.stderr.strip() or cp.stdout.strip()}")
    return cp


def _ip_json(*args: str, ns: str | None = None) -> list[dict[str, Any]]:
    out = _ip("-j", *args, ns=ns).stdout.strip()
    if not out:
        return []
    data = json.loads(out)
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _ip_json_quiet(*args: str, ns: str | None = None) -> list[dict[str, Any]]:
    """:func:`_ip_json`, or [] if the command fails (e.g. the namespace just vanished)."""
    try:
        return _ip_json(*args, ns=ns)
    except (NetnsError, ValueError):
        return []


def _b36(n: int, width: int) -> str:
    digits = ""
    while n:
        n, r = divmod(n, 36)
        digits = _B36[r] + digits
    digits = digits.rjust(width, "0")
    if len(digits) > width:
        raise ValueError(f"{n} does not fit in {width} base-36 digits")
    return digits


def _make_tag(prefix: str, pid: int, seq: str) -> str:
    return f"{prefix}{_b36(pid, 5)}{seq}"


def _parse_tag(name: str, prefix: str) -> tuple[str, int] | None:
    """(tag, owner pid) of a harness resource name with this prefix, else None."""
    m = re.match(rf"^({re.escape(prefix)}([0-9a-z]{{5}})[0-9a-z])", name)
    if m is None:
        return None
    return m.group(1), int(m.group(2), 36)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_sysctl(path: str, value: str) -> bool:
    """Write a /proc/sys file if it exists (e.g. IPv6 may be compiled out); True if written."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        return False
    return True


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _run_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a fresh thread that first joins network namespace ``ns``.

    Sockets created by ``fn`` stay in that namespace for their whole life, wherever they
    are used later. The thread exits afterwards, so the caller's namespace is untouched.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            error.append(NetnsError(f"namespace {ns!r} not found: {e}"))
            return
        try:
            if int(_libc().setns(fd, _CLONE_NEWNET)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            result.append(fn())
        except BaseException as e:
            error.append(e)
        finally:
            os.close(fd)

    th = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    th.start()
    th.join()
    if error:
        raise error[0]
    return result[0]


def _list_netns() -> list[str]:
    cp = _ip("netns", "list", check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def _list_links(ns: str | None = None) -> list[tuple[str, str]]:
    """(name, kind) of every link in ``ns`` (root if None); kind is '' when not reported.
    Empty if the namespace has vanished."""
    try:
        links = _ip_json("-d", "link", "show", ns=ns)
    except NetnsError:
        if ns is None:
            raise
        return []
    out: list[tuple[str, str]] = []
    for d in links:
        info = d.get("linkinfo") or {}
        out.append((str(d.get("ifname", "")), str(info.get("info_kind", ""))))
    return out


def _netns_pids(ns: str) -> list[int]:
    cp = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in cp.stdout.split() if x.isdigit()]


def _kill_netns_pids(ns: str, timeout: float = 5.0) -> None:
    """SIGKILL every process inside ``ns`` until none is left (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _netns_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {ns} survive SIGKILL")
        time.sleep(0.01)


def _remove_matching(match: Callable[[str], bool]) -> list[str]:
    """Kill processes in, and delete, every namespace and link whose name matches (links in
    the root namespace and inside matching namespaces, i.e. switch namespaces).

    Order: processes, veths (deleting one end removes the pair, including the end inside
    the host namespace, which namespace deletion would only remove asynchronously), bridges,
    namespaces. Already-missing resources are ignored. Returns the names removed.
    """
    removed: list[str] = []
    namespaces = [n for n in _list_netns() if match(n)]
    for ns in namespaces:
        _kill_netns_pids(ns)
    for where in [None, *namespaces]:
        links = [(n, k) for n, k in _list_links(where) if match(n)]
        for name, _kind in sorted(links, key=lambda nk: nk[1] == "bridge"):
            cp = _ip("link", "del", name, ns=where, check=False)
            if cp.returncode == 0:
                removed.append(name)
            elif any(n == name for n, _ in _list_links(where)):  # else someone else won
                raise NetnsError(f"ip link del {name}: {cp.stderr.strip()} (rc {cp.returncode})")
    for ns in namespaces:
        cp = _ip("netns", "del", ns, check=False)
        if cp.returncode == 0:
            removed.append(ns)
        elif ns in _list_netns():
            raise NetnsError(f"ip netns del {ns}: {cp.stderr.strip()}")
    return removed


def list_resources(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Names of namespaces, and of links in the root namespace or inside those namespaces
    (switch namespaces), that start with ``prefix`` (any owner).

    ``prefix`` may be a full topology tag (:attr:`Topology.tag`) to list one topology.
    """
    namespaces = [n for n in _list_netns() if n.startswith(prefix)]
    links = [n for ns in [None, *namespaces] for n, _ in _list_links(ns) if n.startswith(prefix)]
    return namespaces + links


def cleanup_stale(prefix: str = DEFAULT_PREFIX, *, force: bool = False) -> list[str]:
    """Remove leftovers of earlier runs: namespaces (and their processes), veths, bridges.

    A resource is stale when its name follows the harness scheme for ``prefix`` and its
    owner process (the pid encoded in the name) is gone, or the owner is this process but
    the topology is no longer active (e.g. a failed teardown, or an earlier process with the
    same pid). Live topologies of other processes are never touched unless ``force=True``
    (for manual use only: it removes everything with the prefix except this process's own
    live topologies). Returns the names removed. Safe to call concurrently with other
    harness users.
    """
    _check_prefix(prefix)
    me = os.getpid()
    with _ACTIVE_LOCK:
        active = set(_ACTIVE_TAGS)

    def stale(name: str) -> bool:
        parsed = _parse_tag(name, prefix)
        if parsed is None:
            return False
        tag, pid = parsed
        if force:
            return tag not in active
        if pid == me:
            return tag not in active
        return not _pid_alive(pid)

    return _remove_matching(stale)


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"prefix must be exactly 3 lowercase letters, got {prefix!r}")


# --------------------------------------------------------------------------------------
# capability check and test policy


def netns_required() -> bool:
    """True when ``RAFTD_REQUIRE_NETNS`` is truthy (``1``/``true``/``yes``/``on``): CI mode."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in _TRUTHY


@functools.cache
def _probe(prefix: str) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (platform is {sys.platform})"
    if os.geteuid() != 0:
        return f"network namespaces need root (euid is {os.geteuid()})"
    try:
        _ip_bin()
    except NetnsError as e:
        return str(e)
    tag = _make_tag(prefix, os.getpid(), _PROBE_SEQ)
    with _ACTIVE_LOCK:
        _ACTIVE_TAGS.add(tag)
    ns, br, veth = f"{tag}-probe", f"{tag}b0", f"{tag}v000"
    try:
        _remove_matching(lambda n: n.startswith(tag))  # an earlier process with our pid
        _ip("netns", "add", ns)
        _ip("link", "add", br, "type", "bridge", ns=ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", ns=ns)
        _ip("link", "set", veth, "master", br, ns=ns)
        _run_in_netns(ns, lambda: _sock.socket(_sock.AF_INET, _sock.SOCK_DGRAM).close())
    except (NetnsError, OSError) as e:
        return f"network namespaces unusable: {e}"
    finally:
        try:
            _remove_matching(lambda n: n.startswith(tag))
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE_TAGS.discard(tag)
    return None


def require_netns() -> str | None:
    """Why namespace tests cannot run here (not Linux, not root, no ``ip``, or creating a
    namespace, bridge and veth fails), or None when they can. The probe runs once per
    process and cleans up after itself."""
    return _probe(DEFAULT_PREFIX)


def netns_or_skip() -> None:
    """Apply the test policy for namespace tests; call at the start of a test or fixture.

    Returns when namespaces are usable. Otherwise skips the test with the reason, or, when
    ``RAFTD_REQUIRE_NETNS`` is truthy (CI), fails it (``pytest.fail``), so that a CI
    machine that lost the capability cannot go green by skipping.
    """
    import pytest

    reason = require_netns()
    if reason is None:
        return
    if netns_required():
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------------------
# subnet allocation


@contextlib.contextmanager
def _alloc_lock() -> Iterator[None]:
    """Machine-wide lock (flock) serialising subnet choice between harness processes."""
    d = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with open(d / "raftd-netns.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks the root namespace routes or has addresses in, plus subnets recorded
    (in the interface alias) on other live harness bridges, in the root namespace or in
    switch namespaces. (Only clashes within one topology would break anything: hosts have
    their own routing tables. Avoiding the rest keeps addresses unambiguous in logs.)"""
    nets: list[ipaddress.IPv4Network] = []
    for r in _ip_json("-4", "route", "show", "table", "all"):
        dst = str(r.get("dst", ""))
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dst, strict=False))
    for link in _ip_json("-4", "addr", "show"):
        for a in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    switches = [n for n in _list_netns() if _SWITCH_RE.match(n)]
    for link in [d for ns in [None, *switches] for d in _ip_json_quiet("link", "show", ns=ns)]:
        alias = str(link.get("ifalias", ""))
        if alias.startswith(ALIAS_MARK):
            for word in alias.split():
                if word.startswith("subnet="):
                    with contextlib.suppress(ValueError):
                        nets.append(ipaddress.IPv4Network(word.removeprefix("subnet=")))
    return nets


def _pick_subnets(count: int, salt: int) -> list[ipaddress.IPv4Network]:
    used = _used_networks()
    picked: list[ipaddress.IPv4Network] = []
    for pool in SUBNET_POOLS:
        cands = list(ipaddress.IPv4Network(pool).subnets(new_prefix=24))
        start = salt % len(cands)
        for cand in cands[start:] + cands[:start]:
            if any(cand.overlaps(u) for u in used) or cand in picked:
                continue
            picked.append(cand)
            if len(picked) == count:
                return picked
    raise NetnsError(f"no free /24 left in {SUBNET_POOLS}")


# --------------------------------------------------------------------------------------
# topology


@dataclass(frozen=True)
class Bridge:
    """A Linux bridge in the root namespace: one broadcast/multicast domain, one /24."""

    label: str
    name: str
    index: int
    network: ipaddress.IPv4Network
    hosts: tuple[str, ...]
    netns: str | None
    """Namespace the bridge lives in: the topology's switch namespace, or None (root)."""


@dataclass
class _Link:
    bridge: Bridge
    ifname: str  # inside the namespace
    veth: str  # switch-side end, attached to the bridge (in bridge.netns)
    ip: str
    metric: int
    up: bool = True


class Host:
    """One network namespace (a "container") of a :class:`Topology`.

    Bridge arguments (``bridge=``) accept a bridge label, a :class:`Bridge`, or None, which
    means the host's first bridge for address/name queries and *all* its bridges for
    :meth:`link_down` / :meth:`link_up`.
    """

    def __init__(self, topology: Topology, label: str, index: int, name: str) -> None:
        self.topology = topology
        self.label = label
        self.index = index
        self.name = name
        """The namespace name (for ``ip netns exec``)."""
        self._links: dict[str, _Link] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        """Every process started with :meth:`popen`, killed on topology exit."""

    def __repr__(self) -> str:
        return f"Host({self.label!r}, ns={self.name!r}, ips={self.ips})"

    # -- addressing -------------------------------------------------------------------

    def _link(self, bridge: str | Bridge | None) -> _Link:
        if bridge is None:
            return next(iter(self._links.values()))
        key = bridge.label if isinstance(bridge, Bridge) else bridge
        try:
            return self._links[key]
        except KeyError:
            raise KeyError(f"host {self.label} is not on bridge {key!r}") from None

    def _select(self, bridge: str | Bridge | None) -> list[_Link]:
        return list(self._links.values()) if bridge is None else [self._link(bridge)]

    @property
    def ip(self) -> str:
        """IPv4 address on the host's first bridge."""
        return self._link(None).ip

    @property
    def ips(self) -> dict[str, str]:
        """IPv4 address per bridge label."""
        return {k: v.ip for k, v in self._links.items()}

    def ip_on(self, bridge: str | Bridge) -> str:
        """IPv4 address on ``bridge``."""
        return self._link(bridge).ip

    def ifname(self, bridge: str | Bridge | None = None) -> str:
        """Interface name inside the namespace (``eth0``, ``eth1``...)."""
        return self._link(bridge).ifname

    def veth(self, bridge: str | Bridge | None = None) -> str:
        """Name of the switch-side end of the veth (the bridge port, in ``Bridge.netns``)."""
        return self._link(bridge).veth

    @property
    def bridges(self) -> list[Bridge]:
        return [lk.bridge for lk in self._links.values()]

    # -- partitions -------------------------------------------------------------------

    def link_down(self, bridge: str | Bridge | None = None) -> None:
        """Cut the host off ``bridge`` (all its bridges if None) by setting the switch-side
        veth down. Inside the namespace the interface loses carrier but keeps its address
        and routes (flagged ``linkdown``): sends are silently dropped, established TCP
        connections stall (no RST), new connects time out or fail with EHOSTUNREACH once
        ARP gives up (~3 s). Processes see a pulled cable, not a vanished interface."""
        for lk in self._select(bridge):
            _ip("link", "set", lk.veth, "down", ns=lk.bridge.netns)
            lk.up = False

    def link_up(self, bridge: str | Bridge | None = None, *, timeout: float = 5.0) -> None:
        """Undo :meth:`link_down` (idempotent). Also sets the namespace-side interface up and
        re-adds the multicast route (``ip route replace``), since routes on an interface that
        was administratively down are gone, then waits (bounded by ``timeout``) until the
        bridge port forwards and the namespace side has carrier."""
        for lk in self._select(bridge):
            _ip("link", "set", lk.veth, "up", ns=lk.bridge.netns)
            _ip("link", "set", lk.ifname, "up", ns=self.name)
            _ip(
                "route",
                "replace",
                MCAST_NET,
                "dev",
                lk.ifname,
                "metric",
                str(lk.metric),
                ns=self.name,
            )
            lk.up = True
        deadline = time.monotonic() + timeout
        for lk in self._select(bridge):
            while not self._forwarding(lk):
                if time.monotonic() > deadline:
                    raise NetnsError(f"{lk.veth} did not come back within {timeout}s")
                time.sleep(0.01)

    def _forwarding(self, lk: _Link) -> bool:
        """The bridge port forwards and the host side is operationally up."""
        port = _ip_json("-d", "link", "show", lk.veth, ns=lk.bridge.netns)
        info = (port[0].get("linkinfo") or {}).get("info_slave_data") or {} if port else {}
        oper = _ip_json("link", "show", lk.ifname, ns=self.name)
        return info.get("state") == "forwarding" and bool(oper) and oper[0].get("operstate") == "UP"

    def is_up(self, bridge: str | Bridge | None = None) -> bool:
        """Whether the host's link(s) to ``bridge`` (all bridges if None) are up."""
        return all(lk.up for lk in self._select(bridge))

    # -- processes --------------------------------------------------------------------

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside this namespace (``ip netns exec``)."""
        return [_ip_bin(), "netns", "exec", self.name, *argv]

    @staticmethod
    def _env(env: Mapping[str, str] | None) -> dict[str, str] | None:
        return None if env is None else {**os.environ, **env}

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: _File = subprocess.DEVNULL,
        stdout: _File = None,
        stderr: _File = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace and track it (killed on topology exit).

        ``env`` holds variables merged over the current environment. The process is the
        leader of a new session/process group (``ip netns exec`` execs, so ``proc.pid`` is
        the program itself); on return it is inside the namespace (it may still be
        starting up: wait for its own readiness signal). :meth:`kill`, :meth:`pause` and
        :meth:`resume` signal the whole group. Streams are bytes; stdin defaults to /dev/null.
        """
        proc = subprocess.Popen(
            self.exec_argv(argv),
            env=self._env(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            start_new_session=True,
        )
        self.procs.append(proc)
        self._wait_entered(proc)
        return proc

    def _wait_entered(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """Wait until ``proc`` has joined the namespace (or exited), so that on return it is
        visible to :meth:`pids` and a :meth:`pause` cannot freeze it outside the host."""
        target = os.stat(NETNS_DIR / self.name)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            try:
                st = os.stat(f"/proc/{proc.pid}/ns/net")
                if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                    return
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise NetnsError(f"pid {proc.pid} did not enter {self.name} in {timeout}s")
            time.sleep(0.001)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 10.0,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace; capture text stdout/stderr.

        Raises ``subprocess.CalledProcessError`` on a non-zero exit if ``check``, and
        ``subprocess.TimeoutExpired`` (after killing it) past ``timeout`` seconds."""
        return subprocess.run(
            self.exec_argv(argv),
            env=self._env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``proc``'s process group; no-op if it was already reaped."""
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def pause(self, proc: subprocess.Popen[bytes]) -> None:
        """Freeze ``proc``'s process group (SIGSTOP): a hung but still connected host."""
        self.kill(proc, signal.SIGSTOP)

    def resume(self, proc: subprocess.Popen[bytes]) -> None:
        """Continue a paused process group (SIGCONT)."""
        self.kill(proc, signal.SIGCONT)

    def pids(self) -> list[int]:
        """Pids of every process currently inside the namespace."""
        return _netns_pids(self.name)

    def _kill_all(self) -> None:
        for proc in self.procs:
            self.kill(proc, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        _kill_netns_pids(self.name)

    # -- in-process sockets -----------------------------------------------------------

    def in_netns(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on a helper thread inside this namespace and return its result."""
        return _run_in_netns(self.name, fn)

    def socket(
        self,
        family: int = _sock.AF_INET,
        type: int = _sock.SOCK_STREAM,
        proto: int = 0,
    ) -> _sock.socket:
        """A socket of the *test process* that lives in this namespace: bind/connect/join
        resolve against this host's interfaces and routes. The caller closes it."""
        return self.in_netns(lambda: _sock.socket(family, type, proto))

    def connect(self, ip: str, port: int, timeout: float = 1.0) -> _sock.socket:
        """A TCP connection from this host to ``ip:port`` (blocking, bounded by ``timeout``
        seconds, which stays set on the returned socket). Raises OSError on failure."""
        s = self.socket()
        s.settimeout(timeout)
        try:
            s.connect((ip, port))
        except BaseException:
            s.close()
            raise
        return s

    def can_connect(self, ip: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connect from this host to ``ip:port`` succeeds within ``timeout``."""
        try:
            self.connect(ip, port, timeout).close()
        except OSError:
            return False
        return True

    def wait_tcp(self, ip: str, port: int, timeout: float = 10.0) -> None:
        """Poll until ``ip:port`` accepts a connection from this host; TimeoutError after
        ``timeout`` seconds (with the last error)."""
        deadline = time.monotonic() + timeout
        last: OSError | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.label}: {ip}:{port} not reachable: {last!r}")
            try:
                self.connect(ip, port, min(0.5, left)).close()
                return
            except OSError as e:
                last = e
                time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    # -- trio helpers -----------------------------------------------------------------

    def trio_socket(
        self, family: int = _sock.AF_INET, type: int = _sock.SOCK_STREAM, proto: int = 0
    ) -> trio.socket.SocketType:
        """:meth:`socket`, wrapped as a trio socket."""
        import trio

        return trio.socket.from_stdlib_socket(self.socket(family, type, proto))

    async def arun(
        self, argv: Sequence[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Async :meth:`run` for trio (bytes output). Bound it with ``trio.fail_after``;
        on cancellation trio kills the process."""
        import trio

        return await trio.run_process(
            self.exec_argv(argv), capture_stdout=True, capture_stderr=True, check=check
        )

    async def await_tcp(self, ip: str, port: int, *, interval: float = 0.02) -> None:
        """Async :meth:`wait_tcp`: poll until ``ip:port`` accepts a TCP connection from this
        host. Unbounded by itself (trio style): wrap it in ``trio.fail_after``."""
        import trio

        while True:
            s = self.trio_socket()
            try:
                with trio.move_on_after(0.5):
                    await s.connect((ip, port))
                    return
            except OSError:
                pass
            finally:
                s.close()
            await trio.sleep(interval)


class Topology:
    """A set of hosts (namespaces) on one or more bridges; a context manager.

    ``Topology(3)`` puts hosts ``h0``, ``h1``, ``h2`` on one bridge ``br0``.
    ``Topology(["a", "b", "c"], bridges={"left": ["a", "b"], "right": ["b", "c"]})``
    builds partial connectivity: ``b`` gets ``eth0`` on ``left`` and ``eth1`` on ``right``;
    ``a`` and ``c`` each see only ``b``. Host *i* gets address ``.(i+2)`` in each of its
    bridges' /24 (``.1`` is left unused, as docker's gateway would be).

    On entry it removes stale leftovers (``clean_stale``), allocates a unique tag and
    collision-free subnets, creates everything, and starts the reaper (``reaper``). On exit,
    even on exceptions, it tears everything down (:meth:`close`). ``ipv6=False`` (default,
    like a docker network without IPv6) disables IPv6 on the veths; ``ipv6=True`` keeps
    link-local IPv6 with duplicate address detection off, so addresses are usable at once.
    ``bridge_ns=True`` (default) puts the bridges in a switch namespace (:attr:`switch`);
    ``False`` puts them in the root namespace (see the module docstring).
    """

    def __init__(
        self,
        hosts: int | Sequence[str] = 3,
        *,
        bridges: Mapping[str, Sequence[str]] | None = None,
        prefix: str = DEFAULT_PREFIX,
        ipv6: bool = False,
        reaper: bool = True,
        clean_stale: bool = True,
        bridge_ns: bool = True,
    ) -> None:
        _check_prefix(prefix)
        labels = [f"h{i}" for i in range(hosts)] if isinstance(hosts, int) else list(hosts)
        if not labels:
            raise ValueError("a topology needs at least one host")
        if len(labels) > 250:
            raise ValueError("at most 250 hosts")
        for lab in labels:
            if not _LABEL_RE.match(lab):
                raise ValueError(f"bad host label {lab!r} (want [A-Za-z0-9_]{{1,24}})")
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate host labels in {labels}")
        spec = dict(bridges) if bridges is not None else {"br0": labels}
        if not 1 <= len(spec) <= 36:
            raise ValueError("between 1 and 36 bridges")
        for br, members in spec.items():
            unknown = set(members) - set(labels)
            if unknown:
                raise ValueError(f"bridge {br!r} lists unknown hosts {sorted(unknown)}")
        orphans = set(labels) - {h for m in spec.values() for h in m}
        if orphans:
            raise ValueError(f"hosts on no bridge: {sorted(orphans)}")
        self.prefix = prefix
        self.ipv6 = ipv6
        self._labels = labels
        self._spec = {k: list(v) for k, v in spec.items()}
        self._use_reaper = reaper
        self._clean_stale = clean_stale
        self._bridge_ns = bridge_ns
        self.switch: str | None = None
        """Name of the switch namespace holding the bridges (None: root namespace)."""
        self.tag = ""
        """Common prefix of every resource name of this topology (set on start)."""
        self.hosts: list[Host] = []
        self.bridges: dict[str, Bridge] = {}
        self._reaper: subprocess.Popen[bytes] | None = None
        self._started = False
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Topology:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as e:  # do not mask the test's own exception
            warnings.warn(f"netns teardown failed: {e!r}", RuntimeWarning, stacklevel=2)

    def start(self) -> None:
        """Create the topology (see the class docstring). On failure, undo and re-raise."""
        if self._started:
            raise RuntimeError("topology already started")
        self._started = True
        if self._clean_stale:
            cleanup_stale(self.prefix)
        self.tag = self._allocate_tag()
        try:
            if self._use_reaper:
                self._start_reaper()
            self._build()
        except BaseException:
            self.close()
            raise

    def _allocate_tag(self) -> str:
        existing = list_resources(self.prefix)
        with _ACTIVE_LOCK:
            for seq in _B36:
                if seq == _PROBE_SEQ:
                    continue
                tag = _make_tag(self.prefix, os.getpid(), seq)
                if tag in _ACTIVE_TAGS or any(n.startswith(tag) for n in existing):
                    continue
                _ACTIVE_TAGS.add(tag)
                return tag
        raise NetnsError("too many live topologies in this process (35)")

    def _build(self) -> None:
        tag = self.tag
        sw = self.switch = f"{tag}sw" if self._bridge_ns else None
        with _alloc_lock():  # until the bridges carry their subnet aliases
            nets = _pick_subnets(len(self._spec), salt=os.getpid() * 7 + _B36.index(tag[-1]))
            if sw is not None:
                _ip("netns", "add", sw)
                _run_in_netns(sw, _switch_sysctls)
            for j, ((label, members), net) in enumerate(zip(self._spec.items(), nets, strict=True)):
                br = Bridge(label, f"{tag}b{_b36(j, 1)}", j, net, tuple(members), sw)
                _ip("link", "add", br.name, "type", "bridge", "mcast_snooping", "0", ns=sw)
                alias = f"{ALIAS_MARK} pid={os.getpid()} subnet={net}"
                _ip("link", "set", br.name, "alias", alias, ns=sw)
                self.bridges[label] = br
        for br in self.bridges.values():
            if sw is None:  # root namespace: per-interface, never machine-wide settings
                _write_sysctl(f"/proc/sys/net/ipv6/conf/{br.name}/disable_ipv6", "1")
                _write_sysctl(f"/proc/sys/net/ipv4/conf/{br.name}/forwarding", "0")
            _ip("link", "set", br.name, "up", ns=sw)
        for i, label in enumerate(self._labels):
            host = Host(self, label, i, f"{tag}-{label}")
            self.hosts.append(host)
            _ip("netns", "add", host.name)
            _run_in_netns(host.name, self._ns_sysctls)
            _ip("link", "set", "lo", "up", ns=host.name)
            attached = [br for br in self.bridges.values() if label in br.hosts]
            for k, br in enumerate(attached):
                lk = _Link(
                    bridge=br,
                    ifname=f"eth{k}",
                    veth=f"{tag}v{_b36(i, 2)}{_b36(br.index, 1)}",
                    ip=str(br.network.network_address + 2 + i),
                    metric=k,
                )
                _ip(
                    "link",
                    "add",
                    lk.veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    lk.ifname,
                    "netns",
                    host.name,
                    ns=sw,
                )
                if sw is None:
                    _write_sysctl(f"/proc/sys/net/ipv6/conf/{lk.veth}/disable_ipv6", "1")
                _ip("link", "set", lk.veth, "master", br.name, "up", ns=sw)
                _ip(
                    "addr", "add", f"{lk.ip}/{br.network.prefixlen}", "dev", lk.ifname, ns=host.name
                )
                _ip("link", "set", lk.ifname, "up", ns=host.name)
                _ip("route", "replace", MCAST_NET, "dev", lk.ifname, "metric", str(k), ns=host.name)
                host._links[br.label] = lk

    def _ns_sysctls(self) -> None:
        """Runs inside a new namespace before its veths exist ("default" applies to them)."""
        _write_sysctl("/proc/sys/net/ipv4/ip_forward", "0")
        if self.ipv6:
            _write_sysctl("/proc/sys/net/ipv6/conf/default/accept_dad", "0")
            _write_sysctl("/proc/sys/net/ipv6/conf/default/accept_ra", "0")
        else:
            _write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")

    def _start_reaper(self) -> None:
        root = str(ROOT)
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from harness.netns import _reaper_main; _reaper_main(sys.argv[2])"
        )
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", code, root, self.tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _stop_reaper(self) -> None:
        r, self._reaper = self._reaper, None
        if r is None:
            return
        assert r.stdin is not None
        with contextlib.suppress(OSError):
            r.stdin.write(b"done")
            r.stdin.close()
        try:
            r.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            r.kill()
            r.wait()

    def close(self) -> None:
        """Tear everything down: kill all processes in the namespaces, delete veths, bridges
        and namespaces, then verify nothing named with :attr:`tag` remains (NetnsError if
        something does). Idempotent."""
        if self._closed or not self.tag:
            self._closed = True
            return
        self._closed = True
        errors: list[BaseException] = []
        for host in self.hosts:
            try:
                host._kill_all()
            except Exception as e:
                errors.append(e)
        try:
            _remove_matching(lambda n: n.startswith(self.tag))
        except Exception as e:
            errors.append(e)
        left = list_resources(self.tag)
        if not left:
            self._stop_reaper()  # else leave it running: it retries when we exit
            with _ACTIVE_LOCK:
                _ACTIVE_TAGS.discard(self.tag)
        if left or errors:
            raise NetnsError(f"teardown of {self.tag} incomplete: left {left}, errors {errors}")

    # -- access and partitions --------------------------------------------------------

    def __getitem__(self, key: int | str) -> Host:
        if isinstance(key, int):
            return self.hosts[key]
        for h in self.hosts:
            if h.label == key:
                return h
        raise KeyError(key)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def _host(self, h: Host | str) -> Host:
        return h if isinstance(h, Host) else self[h]

    def partition(self, hosts: Iterable[Host | str]) -> None:
        """Isolate each given host from every bridge (:meth:`Host.link_down` on all its
        links). Each isolated host is alone; the others stay connected."""
        for h in hosts:
            self._host(h).link_down()

    def heal(self) -> None:
        """Bring every downed link back up (:meth:`Host.link_up`), multicast routes too."""
        for h in self.hosts:
            for br in [lk.bridge for lk in h._links.values() if not lk.up]:
                h.link_up(br)

    def resources(self) -> list[str]:
        """Names of this topology's namespaces and links that currently exist."""
        return list_resources(self.tag) if self.tag else []

    def describe(self) -> str:
        """A human-readable table of hosts, namespaces, interfaces and addresses."""
        where = f"switch netns {self.switch}" if self.switch else "root netns"
        lines = [f"topology {self.tag} (bridges in {where})"]
        for br in self.bridges.values():
            lines.append(f"  bridge {br.label} = {br.name} {br.network} hosts={list(br.hosts)}")
        for h in self.hosts:
            links = ", ".join(
                f"{lk.ifname}={lk.ip} ({lk.bridge.label} via {lk.veth}{'' if lk.up else ', DOWN'})"
                for lk in h._links.values()
            )
            lines.append(f"  host {h.label}: netns {h.name}: {links}")
        return "\n".join(lines)


def _switch_sysctls() -> None:
    """Runs inside a new switch namespace: no routing, no IPv6, no bridge netfilter hooks
    (a new namespace starts with bridge-nf-call-iptables=1 when br_netfilter is loaded)."""
    _write_sysctl("/proc/sys/net/ipv4/ip_forward", "0")
    _write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")
    _write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
    for table in ("iptables", "ip6tables", "arptables"):
        _write_sysctl(f"/proc/sys/net/bridge/bridge-nf-call-{table}", "0")


def _reaper_main(tag: str) -> None:
    """Body of the reaper process: wait for the owner to close our stdin; if it did not
    first write ``done`` (it was killed), remove everything named with ``tag``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    data = sys.stdin.buffer.read()
    if data == b"done":
        return
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        try:
            _remove_matching(lambda n: n.startswith(tag))
            if not list_resources(tag):
                return
        except Exception:
            pass
        time.sleep(0.2)


# --------------------------------------------------------------------------------------
# demo / manual tool (scripts/netns-demo)

_MDNS_PEER = r"""
import socket, sys, time
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, Zeroconf
label, ip, wanted, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
kind = "_raftd-demo._tcp.local."
t0 = time.monotonic()
zc = Zeroconf(ip_version=IPVersion.V4Only)
zc.register_service(ServiceInfo(kind, f"{label}.{kind}", addresses=[socket.inet_aton(ip)],
                                port=4001))
seen = {}
class Listener:
    def add_service(self, zc, kind, name):
        seen.setdefault(name.split(".")[0], round(time.monotonic() - t0, 2))
    def update_service(self, *args): pass
    def remove_service(self, *args): pass
ServiceBrowser(zc, kind, Listener())
while len(seen) < wanted and time.monotonic() - t0 < budget:
    time.sleep(0.05)
print(label, "saw", sorted(seen.items()), flush=True)
time.sleep(1.0)  # stay announced while slower peers finish browsing
zc.close()
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/netns-demo``: build a topology, print it, optionally check mDNS discovery
    (python-zeroconf) between the hosts, optionally hold it for manual use; or clean up."""
    import argparse

    ap = argparse.ArgumentParser(prog="netns-demo", description=main.__doc__)
    ap.add_argument("--hosts", type=int, default=3, help="hosts on one bridge (default 3)")
    ap.add_argument(
        "--two-bridges", action="store_true", help="a-b on 'left', b-c on 'right' instead"
    )
    ap.add_argument("--mdns", action="store_true", help="run a zeroconf peer in every host")
    ap.add_argument("--hold", action="store_true", help="keep the topology until Ctrl-C")
    ap.add_argument("--cleanup", action="store_true", help="only remove stale leftovers")
    ap.add_argument("--force", action="store_true", help="with --cleanup: live ones too")
    args = ap.parse_args(argv)
    reason = require_netns()
    if reason is not None:
        print(f"netns-demo: {reason}", file=sys.stderr)
        return 2
    if args.cleanup:
        removed = cleanup_stale(force=args.force)
        print("removed:", " ".join(removed) if removed else "nothing")
        return 0
    topo = (
        Topology(["a", "b", "c"], bridges={"left": ["a", "b"], "right": ["b", "c"]})
        if args.two_bridges
        else Topology(args.hosts)
    )
    with topo:
        print(topo.describe(), flush=True)
        if args.mdns:
            procs = []
            for h in topo:
                peers = {p for br in h.bridges for p in br.hosts}
                procs.append(
                    h.popen(
                        [sys.executable, "-c", _MDNS_PEER, h.label, h.ip, str(len(peers)), "10"],
                        stdout=subprocess.PIPE,
                    )
                )
            for p in procs:
                out, _ = p.communicate(timeout=30)
                print(out.decode().strip())
        if args.hold:
            print("holding; try: ip netns exec <netns> <cmd>. Ctrl-C tears down.", flush=True)

            def stop(signum: int, frame: object) -> None:
                raise KeyboardInterrupt

            # Explicit handlers: a background job of a non-interactive shell ignores SIGINT.
            signal.signal(signal.SIGINT, stop)
            signal.signal(signal.SIGTERM, stop)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
