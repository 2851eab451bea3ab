"""Real ``raftd run`` processes on 127.0.0.1 with real libp2p (raftd.testing.cluster):
group formation from static peer lists, replication, kill -9 of the leader, rejoin and
catch-up of the old leader, catch-up of a follower by snapshot after compaction,
namespace isolation, ``raftd status -o json``, and graceful shutdown on SIGTERM.

Everything waits on conditions with deadlines (``wait_until``); nothing sleeps blindly.
The in-process versions of these scenarios are in tests/runtime/test_daemons_inprocess.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self, TypeVar

import pytest

from harness.bench.load import write_keys_sync
from harness.bench.meters import scrape_metric
from raftd.app.collector import YOUNG_THRESHOLD
from raftd.client import GroupStatus
from raftd.client import _proto as P
from raftd.testing.cluster import LocalCluster, Node, free_port, wait_until
from raftd.wire.pb import api_pb2 as apb

T = TypeVar("T")
NS = "/raft/default"
pytestmark = pytest.mark.slow


class EnvPresetNode(Node):
    """A node whose preset comes from ``RAFTD_PRESET`` in the cluster's env: ``raftd run
    --preset`` only accepts the public presets and a flag beats the environment."""

    def args(self) -> list[str]:
        args = super().args()
        i = args.index("--preset")
        return args[:i] + args[i + 2 :]


class EnvPresetCluster(LocalCluster):
    """A :class:`LocalCluster` running the test-only preset ``preset_env`` (e.g. ``e2e``:
    snapshots every 2,000 entries, 500 trailing) through ``RAFTD_PRESET``."""

    def __init__(self, n: int, *, preset_env: str, metrics: bool = False, **kw: Any) -> None:
        env = {**kw.pop("env", {}), "RAFTD_PRESET": preset_env}
        super().__init__(n, env=env, **kw)
        # Same data dirs (and so identities); only the command line differs.
        self.nodes = [EnvPresetNode(self, i) for i in range(1, n + 1)]
        #: node name -> its /metrics port (with ``metrics``)
        self.metrics_port: dict[str, int] = {}
        for node in self.nodes if metrics else ():
            self.metrics_port[node.name] = port = free_port()
            node.extra_args = ["--metrics", f"127.0.0.1:{port}"]

    def __enter__(self) -> Self:
        super().__enter__()
        return self

    def snapshots(self, node: Node, kind: str, ns: str = NS) -> float | None:
        """``raftd_snapshots_total{kind=...}`` of ``node`` (taken, installed, sent)."""
        port = self.metrics_port[node.name]
        return scrape_metric(port, "raftd_snapshots_total", {"namespace": ns, "kind": kind})


@pytest.fixture
def cluster3() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


def retry(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Call ``fn`` until it returns without raising (bounded by ``timeout``)."""
    box: list[T] = []

    def attempt() -> bool:
        box.append(fn())
        return True

    wait_until(attempt, timeout, what=what)
    return box[-1]


def wait_caught_up(node: Node, cluster: LocalCluster, timeout: float, ns: str = NS) -> GroupStatus:
    """Wait until ``node`` follows the current leader and has applied what the leader has
    applied; return its status."""

    def check() -> GroupStatus | None:
        lead = cluster.wait_leader(timeout=5.0, namespace=ns)
        target = lead.status(ns).applied
        st = node.status(ns)
        ok = st.role == "follower" and st.leader == lead.peer_id and st.applied >= target
        return st if ok else None

    try:
        return wait_until(check, timeout, interval=0.1, what=f"{node.name} caught up")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{node.log_tail()}") from exc


def raw_get(node: Node, key: str, ns: str, *, stale: bool = False) -> apb.Response:
    """The raw protocol response to a get (NOT_FOUND is an error code on the wire)."""
    with node.client(namespace=ns, timeout=5.0) as c:
        return c.call(P.req_get(key, stale=stale, min_revision=0), lambda r: r)


# -- formation and replication --------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5])
def test_group_forms_from_peer_list_and_replicates(n: int) -> None:
    with LocalCluster(n) as c:
        lead = c.wait_leader(timeout=30)
        ids = {node.peer_id for node in c.nodes}

        def all_know_the_leader() -> dict[str, GroupStatus] | None:
            # A follower learns the leader from its first heartbeat, which can come a
            # moment after another node already reports it.
            sts = c.statuses()
            return sts if all(s.leader == lead.peer_id for s in sts.values()) else None

        sts = wait_until(all_know_the_leader, 10, what="every node knows the leader")
        assert set(sts) == ids
        for st in sts.values():
            assert {m.id for m in st.members} == ids
            assert all(m.voter for m in st.members)
            assert st.leader == lead.peer_id
        writer = next(node for node in c.nodes if node is not lead)
        with writer.client(timeout=5.0) as cl:
            rev = cl.put("greeting", f"hello from {writer.name}").revision
            cl.put("second", "2")
        # Linearizable reads through every node see the acknowledged writes at once.
        for node in c.nodes:
            with node.client(timeout=5.0) as cl:
                kv = cl.get("greeting")
                assert kv is not None, node
                assert kv.value == f"hello from {writer.name}".encode()
                assert kv.mod_revision == rev
                second = cl.get("second")
                assert second is not None and second.value == b"2"


# -- kill -9 of the leader, then its restart ----------------------------------------


def test_leader_kill9_failover_then_old_leader_rejoins_and_catches_up(
    cluster3: LocalCluster,
) -> None:
    c = cluster3
    old = c.wait_leader()
    with old.client(timeout=5.0) as cl:
        for i in range(20):
            cl.put(f"before/{i}", str(i))
    old_term = old.status().term

    t0 = time.monotonic()
    old.kill()
    new = c.wait_leader(timeout=15, exclude=[old])
    elected = time.monotonic() - t0
    st = new.status()
    assert st.term > old_term
    assert st.leader == new.peer_id != old.peer_id
    survivor = next(n for n in c.nodes if n is not old and n is not new)

    # Writes resume: through the new leader and through the other survivor (forwarded).
    with survivor.client(timeout=2.0) as cl:
        retry(lambda: cl.put("during", "written while the old leader was down"), 20, "a write")
        for i in range(50):
            cl.put(f"down/{i}", str(i))
    print(f"new leader {new.name} elected {elected:.2f}s after the kill")

    # The old leader comes back with the same data dir: it rejoins as a follower of the
    # new leader and catches up.
    old.start()
    st_old = wait_caught_up(old, c, timeout=30)
    assert st_old.term >= st.term
    with old.client(timeout=5.0) as cl:
        kv = cl.get("during", stale=True)
        assert kv is not None and kv.value == b"written while the old leader was down"
        last = cl.get("down/49", stale=True)
        assert last is not None and last.value == b"49"
        assert len(cl.get_prefix("down/", stale=True).kvs) == 50
        assert len(cl.get_prefix("before/", stale=True).kvs) == 20


# -- a follower that missed 10,000 writes catches up by snapshot --------------------


def test_follower_down_during_10k_writes_catches_up_by_snapshot() -> None:
    entries = 10_000
    with EnvPresetCluster(3, preset_env="e2e", metrics=True) as c:
        lead = c.wait_leader(timeout=30)
        lagger = next(n for n in c.nodes if n is not lead)
        with lagger.client(timeout=5.0) as cl:
            cl.put("before", "1")
        wait_caught_up(lagger, c, timeout=15)
        lagger.kill()
        lead = c.wait_leader(timeout=15)

        t0 = time.monotonic()
        res = write_keys_sync([str(lead.socket)], entries, prefix="bulk/", clients=128, conns=8)
        took = time.monotonic() - t0
        assert res.errs == 0 and len(res.latencies) == entries
        print(f"{entries} writes with one follower down in {took:.1f}s ({entries / took:.0f}/s)")

        # The leader snapshotted and compacted its log well past the lagger.
        lead = c.wait_leader()
        # (e2e preset: one every 2,000 entries; `local` would take at most one here)
        taken = c.snapshots(lead, "taken")
        assert taken is not None and taken >= 3, taken
        lead_applied = lead.status().applied
        assert lead_applied > entries

        t1 = time.monotonic()
        lagger.start()
        st = wait_caught_up(lagger, c, timeout=60)
        print(f"{lagger.name} caught up in {time.monotonic() - t1:.1f}s (applied {st.applied})")
        assert st.applied >= lead_applied
        # The counter moves when the group's loop has finished the install, a moment
        # after the restored state (and so the applied index) shows in its status.
        wait_until(
            lambda: (c.snapshots(lagger, "installed") or 0) >= 1,
            10,
            what=f"{lagger.name} counted a snapshot install",
        )
        with lagger.client(timeout=10.0) as cl:
            kv = cl.get(f"bulk/{entries - 1:08d}", stale=True)
            assert kv is not None and kv.value == b"x" * 100
            assert len(cl.get_prefix("bulk/", keys_only=True, stale=True).kvs) == entries
            assert cl.get("before", stale=True) is not None
        # Each daemon process runs with the collector's settings (raftd/app/collector.py).
        for node in c.nodes:
            port = c.metrics_port[node.name]
            assert scrape_metric(port, "raftd_gc_young_threshold", {}) == YOUNG_THRESHOLD
            frozen = scrape_metric(port, "raftd_gc_frozen_objects", {})
            assert frozen is not None and frozen > 10_000, frozen


# -- two namespaces on the same daemons; raftd status -o json -----------------------


NS_A, NS_B = "/raft/a", "/raft/b"
STATUS_FIELDS = {"id", "namespace", "role", "term", "leader", "commit", "applied", "members"}


def status_json(node: Node, *args: str) -> Any:
    cmd = [sys.executable, "-m", "raftd", "status", "-o", "json", "--socket", str(node.socket)]
    out = subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check_status_schema(doc: Any, node: Node, ids: set[str], namespaces: Sequence[str]) -> None:
    assert isinstance(doc, list)
    assert [d["namespace"] for d in doc] == list(namespaces)
    for d in doc:
        assert isinstance(d, dict)
        assert set(d) >= STATUS_FIELDS, set(d)
        assert d["id"] == node.peer_id
        assert d["role"] in ("leader", "follower", "candidate", "pre-candidate", "learner")
        for k in ("term", "commit", "applied"):
            assert isinstance(d[k], int) and not isinstance(d[k], bool) and d[k] >= 0, k
        assert d["applied"] <= d["commit"]
        assert isinstance(d["leader"], str) and d["leader"] in ids
        assert isinstance(d["members"], list)
        assert {m["id"] for m in d["members"]} == ids
        for m in d["members"]:
            assert set(m) == {"id", "voter", "addrs"}
            assert isinstance(m["id"], str) and m["voter"] is True
            assert isinstance(m["addrs"], list) and all(isinstance(a, str) for a in m["addrs"])


def test_namespaces_are_isolated_and_status_json() -> None:
    with LocalCluster(3, namespaces=[NS_A, NS_B]) as c:
        la = c.wait_leader(namespace=NS_A)
        lb = c.wait_leader(namespace=NS_B)
        with la.client(namespace=NS_A, timeout=5.0) as cl:
            cl.put("only-a", "1")
        with lb.client(namespace=NS_B, timeout=5.0) as cl:
            cl.put("only-b", "2")
        for node in c.nodes:
            assert raw_get(node, "only-a", NS_A).error.code == apb.Error.OK
            assert raw_get(node, "only-a", NS_B).error.code == apb.Error.NOT_FOUND
            assert raw_get(node, "only-b", NS_B).error.code == apb.Error.OK
            assert raw_get(node, "only-b", NS_A).error.code == apb.Error.NOT_FOUND

        # Each namespace has its own leader and term: move /raft/a's leadership away
        # from /raft/b's leader; /raft/b does not notice.
        before_b = lb.status(NS_B)
        target = next(n for n in c.nodes if n is not lb and n is not la)
        with la.client(namespace=NS_A, timeout=10.0) as cl:
            cl.transfer_leader(target.peer_id)

        def a_led_by_target() -> Node | None:
            n = c.wait_leader(namespace=NS_A, timeout=5)
            return n if n is target else None

        la2 = wait_until(a_led_by_target, 20, what="/raft/a led by the transfer target")
        st_a = la2.status(NS_A)
        st_b = c.wait_leader(namespace=NS_B).status(NS_B)
        assert st_a.leader == target.peer_id != st_b.leader == lb.peer_id
        assert (st_b.leader, st_b.term) == (before_b.leader, before_b.term)
        assert st_a.term > 0 and st_a.namespace == NS_A and st_b.namespace == NS_B

        # raftd status -o json: one object per namespace with the documented fields.
        ids = {n.peer_id for n in c.nodes}
        for node in c.nodes:
            doc = status_json(node)
            check_status_schema(doc, node, ids, [NS_A, NS_B])
            by_ns = {d["namespace"]: d for d in doc}
            assert by_ns[NS_A]["leader"] == target.peer_id
            assert by_ns[NS_B]["leader"] == lb.peer_id
        one = status_json(target, "--namespace", NS_A)
        check_status_schema(one, target, ids, [NS_A])
        assert one[0]["role"] == "leader"


# -- SIGTERM of the leader: hand-over and exit 0 ------------------------------------


def test_sigterm_of_the_leader_hands_over_and_exits_0(cluster3: LocalCluster) -> None:
    c = cluster3
    lead = c.wait_leader()
    others = [n for n in c.nodes if n is not lead]
    with others[0].client(timeout=5.0) as cl:
        cl.put("before-sigterm", "1")
    wait_caught_up(others[0], c, timeout=10)
    wait_caught_up(others[1], c, timeout=10)
    term = lead.status().term

    t0 = time.monotonic()
    rc = lead.terminate(timeout=20)
    took = time.monotonic() - t0
    assert rc == 0, lead.log_tail()
    log = lead.log_path.read_text(errors="replace")
    assert "transferring leadership to" in log, lead.log_tail()
    new = c.wait_leader(timeout=10, exclude=[lead])
    assert new.status().term > term
    print(f"SIGTERM to exit: {took:.2f}s; new leader {new.name}")
    with others[1].client(timeout=5.0) as cl:
        r = retry(lambda: cl.put("after-sigterm", "2"), 20, "a write after the hand-over")
        assert r.revision > 0
        kv = cl.get("before-sigterm")
        assert kv is not None and kv.value == b"1"
