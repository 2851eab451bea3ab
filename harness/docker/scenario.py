"""scripts/docker-test: raftd's image and compose clusters on a real Docker engine.

1. The engine (installed and started when missing, see engine.py), the base image
   (debootstrap, cached by name), the wheelhouse (``pip wheel`` here) and the image, built
   offline with BuildKit and no network (images.py). The image runs as non-root,
   ``raftd --version`` works, and its own HEALTHCHECK turns healthy.
2. For each compose file (3 nodes, then 5), with ``--no-build`` on that image:
   ``up``: the nodes form one cluster by discovery alone, seen in ``raftd status -o
   json`` in every node container; the nodes turn healthy; each example app writes and
   reads through its node's socket volume (socket owned by 10001, mode 0600).
3. ``restart node2``: exit status 0 on SIGTERM, same identity, caught up
   (``raftd catch-up``). node1 is made leader, then ``kill -s KILL node1``: a new
   leader, the other apps keep writing, writes through other nodes are acknowledged;
   ``start node1``: it catches up and holds those writes locally. No container has a
   connection to an address outside the compose subnet (or loopback).
4. ``stop`` (every container exits 0), ``down``, ``up``: the same identities form the
   cluster again and every acknowledged key is there with its value, the apps' counters
   resume; ``down -v`` removes containers, volumes and the network.

With ``--online`` it also builds the image the default way, from the package index
(host network, the host's CA bundle as the ``ca-bundle`` secret). Prints the figures
(image size, formation and recovery times) at the end. Exit status:
0 passed, 1 failed, 77 Docker cannot be had here (the reason is printed).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from harness.compose.specs import parse_yaml

from .engine import Docker, DockerUnavailable, engine, log
from .images import (
    REPO,
    base_python,
    build_image,
    build_image_online,
    ensure_base_image,
    image_info,
    make_wheelhouse,
)

EXIT_UNAVAILABLE = 77
IMAGE = "raftd:latest"  # the name the compose files use
BASE_IMAGE = "raftd-base:bookworm"
ONLINE_IMAGE = "raftd:docker-test-online"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PROJECT = "raftdtest"
COMPOSE_FILES = (REPO / "daemon" / "docker-compose.yml", REPO / "daemon" / "docker-compose.5.yml")
SOCKET = "/run/raftd/raftd.sock"
KEY_PREFIX = "docker-test/"

T = TypeVar("T")


class Failed(AssertionError):
    """A check of the scenario failed (the message says which)."""


class Terminated(RuntimeError):
    """SIGTERM arrived; raised in the main thread so that cleanup runs."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failed(msg)


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, every: float = 0.3) -> T:
    """Poll ``fn`` until it returns something other than None/False; fail after
    ``timeout`` seconds with the last exception, if any."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            v = fn()
            if v is not None and v is not False:
                return v
        except (subprocess.SubprocessError, ValueError, KeyError, Failed) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last}")
        time.sleep(every)


@dataclass
class Figures:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, value: str) -> None:
        log(f"{label}: {value}")
        self.rows.append((label, value))


@dataclass
class Cluster:
    """One compose file run under the project name :data:`PROJECT`."""

    d: Docker
    file: Path
    figures: Figures
    acked: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = parse_yaml(self.file.read_text(), str(self.file))
        services: dict[str, Any] = spec["services"]
        self.nodes = sorted(s for s in services if s.startswith("node"))
        self.apps = sorted(s for s in services if s.startswith("app"))
        net = spec["networks"]["raft"]
        check(net.get("internal") is True, f"{self.file.name}: the raft network is not internal")
        self.subnet = ipaddress.ip_network(net["ipam"]["config"][0]["subnet"])
        self.n = len(self.nodes)
        self.tag = f"{self.n} nodes"

    # -- commands -------------------------------------------------------------------------

    def compose(self, *args: str, timeout: float = 300) -> str:
        argv = [*self.d.compose, "-p", PROJECT, "-f", str(self.file), *args]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if cp.returncode != 0:
            raise Failed(f"{' '.join(argv)} exited {cp.returncode}: {cp.stderr.strip()[-2000:]}")
        return cp.stdout

    def cid(self, service: str) -> str:
        """The container of ``service`` (running or not), or '' if there is none."""
        out = self.d.run(
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).stdout.split()
        check(len(out) <= 1, f"{service}: {len(out)} containers")
        return out[0] if out else ""

    def inspect(self, service: str) -> dict[str, Any]:
        info: list[dict[str, Any]] = json.loads(self.d.run("inspect", self.cid(service)).stdout)
        return info[0]

    def exec(self, service: str, *argv: str, timeout: float = 30) -> str:
        cid = self.cid(service)
        check(bool(cid), f"{service}: no container")
        cp = self.d.run("exec", cid, *argv, check=False, timeout=timeout)
        if cp.returncode != 0:
            raise Failed(f"{service}: {' '.join(argv)} exited {cp.returncode}: {cp.stderr.strip()}")
        return cp.stdout

    def status(self, service: str) -> dict[str, Any]:
        (st,) = json.loads(self.exec(service, "raftd", "status", "-o", "json", "--timeout", "3"))
        return dict(st)

    def put(self, service: str, key: str, value: str) -> None:
        self.exec(service, "raftd", "put", key, value, "-o", "json", "--timeout", "10")
        self.acked[key] = value

    def app_writes(self, app: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The app's acknowledged write+read rounds (JSON log lines) after ``since``."""
        cp = self.d.run("logs", self.cid(app))
        out = []
        for line in cp.stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            check(rec.get("level") != "error", f"{app} logged an error: {line}")
            if rec.get("msg") == "wrote and read back" and rec["ts"] > since:
                out.append(rec)
        return out

    # -- conditions -----------------------------------------------------------------------

    def formed(self) -> dict[str, str] | None:
        """Peer id of each node if every node sees the same leader and the same ``n``
        voters, and these are exactly the nodes' ids; else None."""
        ids: dict[str, str] = {}
        leaders: set[str] = set()
        voters: set[frozenset[str]] = set()
        for node in self.nodes:
            if not self.cid(node):
                return None
            st = self.status(node)
            ids[node] = st["id"]
            leaders.add(st["leader"])
            voters.add(frozenset(m["id"] for m in st["members"] if m["voter"]))
        if len(leaders) != 1 or "" in leaders or len(voters) != 1:
            return None
        (members,) = voters
        return ids if members == set(ids.values()) and len(members) == self.n else None

    def started_at(self, service: str) -> float:
        """Wall-clock start of the service's container (``State.StartedAt``)."""
        raw = str(self.inspect(service)["State"]["StartedAt"])  # RFC 3339, ns, Z
        m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", raw)
        check(m is not None, f"{service}: StartedAt {raw!r}")
        assert m is not None
        frac = (m.group(2) or ".0")[:7]
        zone = "+00:00" if m.group(3) == "Z" else m.group(3)
        return datetime.fromisoformat(m.group(1) + frac + zone).timestamp()

    def is_healthy(self, service: str) -> bool:
        return self.health(service) == "healthy"

    def app_wrote(self, app: str, count: int, since: float) -> bool:
        return len(self.app_writes(app, since)) >= count

    def app_passed(self, app: str, value: int) -> bool:
        """Whether the app has written a counter value above ``value``."""
        return any(int(w["value"]) > value for w in self.app_writes(app))

    def leader_of(self, node: str) -> str:
        return str(self.status(node)["leader"])

    def health(self, service: str) -> str:
        return str(self.inspect(service)["State"].get("Health", {}).get("Status", "none"))

    def exit_code(self, service: str) -> int:
        return int(self.inspect(service)["State"]["ExitCode"])

    def die_codes(self, service: str, since: float) -> list[int]:
        """Exit statuses of the service's container since the wall-clock ``since``."""
        out = self.d.run(
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{time.time():.3f}",
            "--filter",
            f"container={self.cid(service)}",
            "--filter",
            "event=die",
            "--format",
            "{{.Actor.Attributes.exitCode}}",
        ).stdout.split()
        return [int(c) for c in out]

    def remote_addrs(self, service: str) -> set[str]:
        """Remote IPv4/IPv6 addresses of the container's TCP and UDP sockets."""
        addrs: set[str] = set()
        for table in ("tcp", "udp", "tcp6", "udp6"):
            text = self.exec(service, "cat", f"/proc/net/{table}")
            for line in text.splitlines()[1:]:
                remote = line.split()[2]
                hexip = remote.split(":")[0]
                raw = bytes.fromhex(hexip)
                if len(raw) == 4:
                    ip = ipaddress.IPv4Address(raw[::-1])
                else:
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    ip6 = ipaddress.IPv6Address(b"".join(words))
                    addrs.add(str(ip6.ipv4_mapped or ip6))
                    continue
                addrs.add(str(ip))
        return addrs

    # -- the scenario ---------------------------------------------------------------------

    def run(self) -> None:
        log(f"=== {self.file.name} ({self.tag}) ===")
        self.purge()  # leftovers of an interrupted run, of this or the other file
        dangling = self.dangling_volumes()
        try:
            ids = self.up_and_form("up")
            self.check_running_cluster()
            self.restart_node2(ids)
            self.kill_and_start_node1(ids)
            self.check_network()
            self.down_up(ids)
        except BaseException:
            self.dump()
            self.purge()
            raise
        self.down_v()
        leaked = self.dangling_volumes() - dangling
        check(not leaked, f"{len(leaked)} anonymous volumes left behind: {sorted(leaked)}")

    def dangling_volumes(self) -> set[str]:
        """Volumes no container uses (anonymous ones carry no project label)."""
        return set(self.d.run("volume", "ls", "-q", "--filter", "dangling=true").stdout.split())

    def project_objects(self) -> dict[str, list[str]]:
        """Containers, volumes and networks labelled with the project."""
        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            "container": self.d.run("ps", "-aq", "--filter", label).stdout.split(),
            "volume": self.d.run("volume", "ls", "-q", "--filter", label).stdout.split(),
            "network": self.d.run("network", "ls", "-q", "--filter", label).stdout.split(),
        }

    def purge(self) -> None:
        """Remove everything of the project, whichever compose file made it."""
        left = self.project_objects()
        if left["container"]:
            self.d.run("rm", "-f", "-v", *left["container"], timeout=300)
        if left["volume"]:
            self.d.run("volume", "rm", "-f", *left["volume"])
        if left["network"]:
            self.d.run("network", "rm", *left["network"])

    def dump(self) -> None:
        """What a failure needs: container states and the last log lines."""
        argv = [*self.d.compose, "-p", PROJECT, "-f", str(self.file)]
        for args in (["ps"], ["logs", "--no-color", "--tail", "30"]):
            cp = subprocess.run([*argv, *args], capture_output=True, text=True, check=False)
            print(cp.stdout[-20000:], file=sys.stderr)

    def up_and_form(self, label: str) -> dict[str, str]:
        """``up -d`` (in a thread: it returns only once the apps' nodes are healthy) while
        polling formation; the figure is from the start of ``up`` to one formed cluster."""
        errors: list[BaseException] = []

        def up() -> None:
            try:
                self.compose("up", "-d", "--no-build")
            except BaseException as exc:
                errors.append(exc)

        t0 = time.monotonic()
        th = threading.Thread(target=up)
        th.start()
        try:
            ids = wait_for(f"{self.tag} to form", self.formed, 240)
            formed_wall = time.time()
        finally:
            th.join(360)
        if errors:
            raise errors[0]
        dt = time.monotonic() - t0
        last_start = max(self.started_at(n) for n in self.nodes)
        self.figures.add(
            f"{self.tag}: {label} to formed cluster",
            f"{dt:.1f}s ({formed_wall - last_start:.1f}s after the last node started)",
        )
        return ids

    def check_running_cluster(self) -> None:
        for node in self.nodes:
            wait_for(f"{node} healthy", functools.partial(self.is_healthy, node), 120)
        st = self.exec("node1", "stat", "-c", "%u:%g %a", SOCKET).strip()
        check(st == "10001:10001 600", f"socket owner/mode is {st}, want 10001:10001 600")
        for app in self.apps:
            user = self.inspect(app)["Config"]["User"]
            check(user == "raftd:raftd", f"{app} runs as {user!r}")
            wait_for(
                f"{app} writing through its socket",
                functools.partial(self.app_wrote, app, 2, 0.0),
                120,
            )
        for i, node in enumerate(self.nodes):
            self.put(node, f"{KEY_PREFIX}up/{i}", f"via {node}")
        log(f"{self.tag}: formed, healthy, apps writing, {len(self.acked)} keys acknowledged")

    def restart_node2(self, ids: dict[str, str]) -> None:
        since = time.time()
        t0 = time.monotonic()
        self.compose("restart", "node2")
        self.exec("node2", "raftd", "catch-up", "--timeout", "120", "-o", "json", timeout=150)
        dt = time.monotonic() - t0
        codes = wait_for("node2's die event", lambda: self.die_codes("node2", since) or None, 30)
        check(codes == [0], f"node2 exited {codes} on restart (SIGTERM), want [0]")
        check(self.status("node2")["id"] == ids["node2"], "node2 changed identity")
        self.figures.add(f"{self.tag}: restart node2 until caught up", f"{dt:.1f}s")
        self.put("node2", f"{KEY_PREFIX}after-restart", "node2")

    def kill_and_start_node1(self, ids: dict[str, str]) -> None:
        # node1 leads first, so that killing it needs a new leader.
        leader = self.leader_of("node1")
        if leader != ids["node1"]:
            holder = next(n for n, i in ids.items() if i == leader)
            self.exec(holder, "raftd", "transfer", ids["node1"], "--timeout", "20")
            wait_for("node1 to lead", lambda: self.status("node1")["role"] == "leader", 120)
        kill_wall = time.time()
        t0 = time.monotonic()
        self.compose("kill", "-s", "KILL", "node1")
        state = self.inspect("node1")["State"]
        check(not state["Running"] and state["ExitCode"] == 137, f"node1 after KILL: {state}")
        others = self.nodes[1:]

        def new_leader() -> str | None:
            lead = {self.leader_of(n) for n in others}
            (one,) = lead if len(lead) == 1 else ("",)
            return one if one and one != ids["node1"] else None

        leader = wait_for("a new leader without node1", new_leader, 120)
        self.figures.add(
            f"{self.tag}: KILL leader node1 until new leader", f"{time.monotonic() - t0:.1f}s"
        )
        # Kept short: the leader's membership automation demotes a voter dead for the
        # preset's dead_voter_timeout_s (10 s with `local`) and removes a learner gone for
        # max(30 s, 3 x that), and a removed node does not rejoin on its own.
        for i, node in enumerate(others):
            self.put(node, f"{KEY_PREFIX}node1-down/{i}", f"via {node}")
        for app in self.apps[1:]:
            wait_for(
                f"{app} writing without node1",
                functools.partial(self.app_wrote, app, 1, kill_wall),
                120,
            )
        check(not self.inspect("node1")["State"]["Running"], "node1 came back by itself")
        outage = time.time() - kill_wall
        log(f"{self.tag}: new leader {leader[-8:]}; apps and puts continue without node1")
        members = {m["id"] for m in self.status(others[0])["members"]}
        check(
            ids["node1"] in members,
            f"node1 was removed from the cluster while down ({outage:.0f}s, load: "
            f"{Path('/proc/loadavg').read_text().strip()}); a removed node does not rejoin",
        )

        t0 = time.monotonic()
        self.compose("start", "node1")
        self.exec("node1", "raftd", "catch-up", "--timeout", "120", "-o", "json", timeout=150)
        self.figures.add(
            f"{self.tag}: start node1 until caught up", f"{time.monotonic() - t0:.1f}s"
        )
        local = json.loads(
            self.exec("node1", "raftd", "keys", f"{KEY_PREFIX}node1-down/", "--stale", "-o", "json")
        )
        have = {kv["key"] for kv in local["kvs"]}
        missing = {k for k in self.acked if k.startswith(f"{KEY_PREFIX}node1-down/")} - have
        check(not missing, f"node1 caught up without {sorted(missing)}")

    def check_network(self) -> None:
        net = json.loads(self.d.run("network", "inspect", f"{PROJECT}_raft").stdout)[0]
        check(net["Internal"] is True, "the compose network is not internal")
        subnets = [c["Subnet"] for c in net["IPAM"]["Config"]]
        check(subnets == [str(self.subnet)], f"network subnets {subnets}, want {self.subnet}")
        for node in self.nodes:
            for addr in self.remote_addrs(node):
                ip = ipaddress.ip_address(addr)
                ok = ip.is_unspecified or ip.is_loopback or ip in self.subnet
                ok = ok or str(ip) == "224.0.0.251"  # mDNS
                check(ok, f"{node} has a socket connected to {ip}, outside {self.subnet}")
        log(f"{self.tag}: network internal, {self.subnet}, no connection leaves it")

    def down_up(self, ids: dict[str, str]) -> None:
        counters = {}
        for app in self.apps:
            writes = self.app_writes(app)
            check(bool(writes), f"{app} never wrote")
            counters[app] = int(writes[-1]["value"])
        self.compose("stop", timeout=240)
        codes = {s: self.exit_code(s) for s in [*self.nodes, *self.apps]}
        check(set(codes.values()) == {0}, f"exit statuses on stop: {codes}")
        self.compose("down")
        vols = set(self.project_objects()["volume"])
        want = {f"{PROJECT}_{n}-{k}" for n in self.nodes for k in ("data", "sock")}
        check(vols == want, f"after down: volumes {sorted(vols)}, want {sorted(want)}")
        again = self.up_and_form("down + up")
        check(again == ids, f"identities changed across down/up: {ids} -> {again}")
        got = json.loads(self.exec("node1", "raftd", "keys", KEY_PREFIX, "--values", "-o", "json"))
        have = {kv["key"]: kv["value"] for kv in got["kvs"]}
        lost = {k: v for k, v in self.acked.items() if have.get(k) != v}
        check(not lost, f"acknowledged keys lost or changed across down/up: {lost}")
        for app, last in counters.items():
            value = self.exec("node1", "raftd", "get", f"apps/{app}/counter").strip()
            check(int(value) >= last, f"apps/{app}/counter = {value} < acknowledged {last}")
            wait_for(
                f"{app} resuming",
                functools.partial(self.app_passed, app, last),
                120,
            )
        log(f"{self.tag}: {len(self.acked)} acknowledged keys and {len(counters)} counters kept")

    def down_v(self) -> None:
        self.compose("down", "-v")
        left = self.project_objects()
        check(not any(left.values()), f"left after down -v: {left}")


def check_image(d: Docker, figures: Figures) -> None:
    info = image_info(d, IMAGE)
    config: dict[str, Any] = info["Config"]  # type: ignore[assignment]
    check(config["User"] not in ("", "root", "0"), f"image user {config['User']!r}")
    check(config["Healthcheck"]["Test"] == ["CMD", "raftd-healthcheck"], "HEALTHCHECK")
    version = d.run("run", "--rm", "--network=none", IMAGE, "raftd", "--version").stdout
    check(version.startswith("raftd, version "), f"raftd --version printed {version!r}")
    size = int(info["Size"])  # type: ignore[call-overload]
    figures.add("image size", f"{size / 1e6:.0f} MB ({version.strip()})")
    # The Dockerfile's own HEALTHCHECK (10 s interval) on a lone node with no network.
    cid = d.run("run", "-d", "--network=none", IMAGE).stdout.strip()
    try:
        t0 = time.monotonic()

        def healthy() -> bool:
            st = json.loads(d.run("inspect", cid).stdout)[0]["State"]
            check(st["Running"], f"lone container stopped: {st}")
            return bool(st.get("Health", {}).get("Status") == "healthy")

        wait_for("the image's HEALTHCHECK", healthy, 120, every=1)
        log(f"image HEALTHCHECK healthy after {time.monotonic() - t0:.1f}s")
        d.run("stop", cid, timeout=60)
        code = json.loads(d.run("inspect", cid).stdout)[0]["State"]["ExitCode"]
        check(code == 0, f"lone container exited {code} on docker stop (SIGTERM)")
    finally:
        d.run("rm", "-f", "-v", cid, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/docker-test", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--compose",
        action="append",
        type=Path,
        help="compose file(s) to run (default: both in daemon/)",
    )
    ap.add_argument(
        "--online",
        action="store_true",
        help="also build the default way, from the package index (needs the network; the "
        "host's CA bundle is handed to the build as a secret)",
    )
    args = ap.parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise Terminated("terminated (SIGTERM)")  # unwinds: clusters removed, engine stopped

    signal.signal(signal.SIGTERM, on_sigterm)
    figures = Figures()
    t_all = time.monotonic()
    try:
        with engine(Path("/var/tmp/raftd-docker-test-dockerd.log")) as d:
            t0 = time.monotonic()
            made = ensure_base_image(d, BASE_IMAGE)
            if made:
                figures.add("base image (debootstrap + import)", f"{time.monotonic() - t0:.0f}s")
            py = base_python(d, BASE_IMAGE)
            here = f"{sys.version_info[0]}.{sys.version_info[1]}"
            check(py == here, f"{BASE_IMAGE} has Python {py}, the wheelhouse is built for {here}")
            t0 = time.monotonic()
            make_wheelhouse()
            figures.add("wheelhouse (pip wheel)", f"{time.monotonic() - t0:.0f}s")
            t0 = time.monotonic()
            build_image(d, IMAGE, BASE_IMAGE)
            figures.add("image build (offline, no network)", f"{time.monotonic() - t0:.0f}s")
            check_image(d, figures)
            if args.online:
                t0 = time.monotonic()
                build_image_online(d, ONLINE_IMAGE, BASE_IMAGE, CA_BUNDLE)
                version = d.run("run", "--rm", "--network=none", ONLINE_IMAGE, "raftd", "--version")
                check(version.stdout.startswith("raftd, version "), "online image: --version")
                size = int(image_info(d, ONLINE_IMAGE)["Size"])  # type: ignore[call-overload]
                figures.add(
                    "image build (package index)",
                    f"{time.monotonic() - t0:.0f}s, {size / 1e6:.0f} MB",
                )
                d.run("rmi", ONLINE_IMAGE)
            for f in args.compose or COMPOSE_FILES:
                Cluster(d, f.resolve(), figures).run()
    except DockerUnavailable as exc:
        print(f"docker-test: SKIP: Docker unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (Failed, RuntimeError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"docker-test: FAILED: {exc}\n{detail}".rstrip(), file=sys.stderr)
        return 1
    figures.add("docker-test total", f"{time.monotonic() - t_all:.0f}s")
    print("\nfigures:")
    for label, value in figures.rows:
        print(f"  {label:<45} {value}")
    print("docker-test: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
