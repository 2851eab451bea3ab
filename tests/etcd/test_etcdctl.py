"""etcdctl (a client nobody here wrote) against a real 3-node raftd cluster serving the
etcd v3 API on every node, through the leader and through followers.

The tests share one cluster; each uses its own keys. The last test kills the leader.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from raftd.testing.cluster import LocalCluster, Node, wait_until
from raftd.wire.pb.etcd import kv_pb2 as mvcc
from raftd.wire.pb.etcd import rpc_pb2 as epb
from tests.etcd.conftest import Etcdctl, etcd3_python, etcdctl_path, unb64

pytestmark = pytest.mark.slow


def ctl(*nodes: Node) -> Etcdctl:
    return Etcdctl(etcdctl_path(), [n.etcd_endpoint for n in nodes])


@pytest.fixture(scope="module")
def leader(etcd_cluster: LocalCluster) -> Node:
    return etcd_cluster.wait_leader()


@pytest.fixture(scope="module")
def follower(etcd_cluster: LocalCluster, leader: Node) -> Node:
    return next(n for n in etcd_cluster.nodes if n is not leader)


class Lines:
    """Collects a process's stdout lines in a thread, to wait on them with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, n: int, timeout: float = 15.0) -> list[str]:
        wait_until(lambda: len(self.lines) >= n, timeout, what=f"{n} output lines")
        return list(self.lines)

    def stop(self) -> str:
        """End the process and its children (a lock's command holds the pipe too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate(timeout=10)
        return err


@pytest.fixture
def procs() -> Iterator[list[Lines]]:
    started: list[Lines] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.stop()


def test_put_get_through_follower_and_leader(leader: Node, follower: Node) -> None:
    assert ctl(follower).out("put", "t1/color", "blue").strip() == "OK"
    # Linearizable get through the other node sees it at once.
    assert ctl(leader).out("get", "t1/color").split() == ["t1/color", "blue"]
    doc = ctl(follower).json("get", "t1/color")
    kv = doc["kvs"][0]
    assert unb64(kv["key"]) == "t1/color" and unb64(kv["value"]) == "blue"
    assert kv["version"] == 1 and kv["create_revision"] == kv["mod_revision"]
    assert doc["count"] == 1
    assert doc["header"]["revision"] >= kv["mod_revision"]
    assert doc["header"]["raft_term"] >= 1
    ctl(leader).out("put", "t1/color", "green")
    doc2 = ctl(leader).json("get", "t1/color")
    kv2 = doc2["kvs"][0]
    assert kv2["version"] == 2 and kv2["create_revision"] == kv["create_revision"]
    assert kv2["mod_revision"] > kv["mod_revision"]
    # Same cluster id everywhere, a distinct member id per node.
    assert doc2["header"]["cluster_id"] == doc["header"]["cluster_id"]
    assert doc2["header"]["member_id"] != doc["header"]["member_id"]


def test_prev_kv_and_serializable(leader: Node, follower: Node) -> None:
    c = ctl(follower)
    c.out("put", "t2/k", "v1")
    out = c.out("put", "t2/k", "v2", "--prev-kv").split()
    assert out == ["OK", "t2/k", "v1"]
    # A serializable read on a follower is the local state (eventually the same).
    wait_until(
        lambda: ctl(follower).out("get", "t2/k", "--consistency=s").split() == ["t2/k", "v2"],
        10,
        what="serializable read on the follower",
    )


def test_range_options(leader: Node, follower: Node) -> None:
    c = ctl(leader)
    for i, v in enumerate(["c", "a", "b", "d"]):
        c.out("put", f"t3/k{i}", v)
    c.out("put", "t3/k1", "a2")  # version 2
    c.out("put", "t3x", "outside")
    f = ctl(follower)
    assert f.out("get", "--prefix", "t3/", "--keys-only").split() == [
        "t3/k0",
        "t3/k1",
        "t3/k2",
        "t3/k3",
    ]
    doc = f.json("get", "--prefix", "t3/", "--limit", "2")
    assert [unb64(k["key"]) for k in doc["kvs"]] == ["t3/k0", "t3/k1"]
    assert doc["more"] is True and doc["count"] == 4
    by_value = f.out(
        "get", "--prefix", "t3/", "--sort-by=VALUE", "--order=DESCEND", "--print-value-only"
    )
    assert by_value.split() == ["d", "c", "b", "a2"]
    by_version = f.json(
        "get", "--prefix", "t3/", "--sort-by=VERSION", "--order=DESCEND", "--limit=1"
    )
    assert unb64(by_version["kvs"][0]["key"]) == "t3/k1"
    # --from-key: every key >= t3/k2, including t3x.
    keys = f.out("get", "--from-key", "t3/k2", "--keys-only").split()
    assert keys[:3] == ["t3/k2", "t3/k3", "t3x"]


def test_get_at_revision(leader: Node, follower: Node) -> None:
    c = ctl(leader)
    c.out("put", "t4/k", "old")
    rev_old = c.json("get", "t4/k")["kvs"][0]["mod_revision"]
    c.out("put", "t4/k", "new")
    c.out("put", "t4/other", "x")
    c.out("del", "t4/k")
    f = ctl(follower)
    # The state at rev_old, rebuilt from the recent changes, on another node.
    assert f.out("get", "t4/k", f"--rev={rev_old}").split() == ["t4/k", "old"]
    assert f.out("get", "--prefix", "t4/", f"--rev={rev_old}").split() == ["t4/k", "old"]
    assert f.out("get", "t4/k").strip() == ""
    err = f.fails("get", "t4/k", "--rev=100000000")
    assert "etcdserver: mvcc: required revision is a future revision" in err


def test_delete(leader: Node, follower: Node) -> None:
    c = ctl(follower)
    for k in ("a", "b", "c"):
        c.out("put", f"t5/{k}", k)
    assert c.out("del", "t5/a", "--prev-kv").split() == ["1", "t5/a", "a"]
    assert c.out("del", "--prefix", "t5/").split() == ["2"]
    assert c.out("del", "t5/none").split() == ["0"]
    assert ctl(leader).out("get", "--prefix", "t5/").strip() == ""


def test_txn_interactive(leader: Node, follower: Node) -> None:
    c = ctl(follower)
    c.out("put", "t6/flag", "on")
    script = 'value("t6/flag") = "on"\n\nput t6/result yes\nget t6/flag\n\nput t6/result no\n\n'
    out = c.out("txn", "-i", input=script)
    assert "SUCCESS" in out and "t6/flag\non" in out
    assert ctl(leader).out("get", "t6/result", "--print-value-only").strip() == "yes"
    fail = 'mod("t6/flag") < "1"\n\nput t6/result yes2\n\nput t6/result no\n\n'
    out = c.out("txn", "-i", input=fail)
    assert "FAILURE" in out
    assert ctl(leader).out("get", "t6/result", "--print-value-only").strip() == "no"
    rev = c.json("get", "t6/flag")["kvs"][0]
    ver = 'ver("t6/flag") = "1"\ncreate("t6/flag") = "' + str(rev["create_revision"]) + '"\n\n'
    out = c.out("txn", "-i", input=ver + "del t6/result\n\n\n")
    assert "SUCCESS" in out
    assert ctl(leader).out("get", "t6/result").strip() == ""


def test_txn_lease_compare(leader: Node, follower: Node) -> None:
    """Lease compares, over raw gRPC: etcdctl 3.4's ``lease("k") = "id"`` panics in
    the client before it sends anything (it hands clientv3 a string for the id)."""
    c = ctl(follower)
    lid = int(c.out("lease", "grant", "60").split()[1], 16)
    c.out("put", "t6l/k", "v", f"--lease={lid:x}")
    EC = epb.Compare
    with grpc.insecure_channel(follower.etcd_endpoint) as ch:
        txn = ch.unary_unary(
            "/etcdserverpb.KV/Txn",
            request_serializer=epb.TxnRequest.SerializeToString,
            response_deserializer=epb.TxnResponse.FromString,
        )

        def run(cmp: epb.Compare) -> str:
            put = epb.RequestOp(request_put=epb.PutRequest(key=b"t6l/res", value=b"held"))
            other = epb.RequestOp(request_put=epb.PutRequest(key=b"t6l/res", value=b"not"))
            resp = txn(epb.TxnRequest(compare=[cmp], success=[put], failure=[other]), timeout=15)
            got = ctl(leader).out("get", "t6l/res", "--print-value-only").strip()
            assert got == ("held" if resp.succeeded else "not")
            return got

        assert run(EC(key=b"t6l/k", target=EC.LEASE, result=EC.EQUAL, lease=lid)) == "held"
        assert run(EC(key=b"t6l/k", target=EC.LEASE, result=EC.NOT_EQUAL, lease=lid)) == "not"
        c.out("put", "t6l/k", "v2")  # a put without a lease detaches the key
        assert run(EC(key=b"t6l/k", target=EC.LEASE, result=EC.EQUAL, lease=lid)) == "not"
        assert run(EC(key=b"t6l/k", target=EC.LEASE, result=EC.EQUAL, lease=0)) == "held"
        # over a prefix: every key's lease must match
        c.out("put", "t6l/k2", "v", f"--lease={lid:x}")
        pre = {"key": b"t6l/k", "range_end": b"t6l/l"}
        assert run(EC(**pre, target=EC.LEASE, result=EC.EQUAL, lease=0)) == "not"  # type: ignore[arg-type]
        assert run(EC(**pre, target=EC.LEASE, result=EC.LESS, lease=lid + 1)) == "held"  # type: ignore[arg-type]
    c.out("lease", "revoke", f"{lid:x}")


def test_watch_prefix_prev_kv_via_follower(
    leader: Node, follower: Node, procs: list[Lines]
) -> None:
    w = Lines(ctl(follower).popen("watch", "--prefix", "t7/", "--prev-kv"))
    procs.append(w)
    c = ctl(leader)
    # The watch is registered once a write shows up; write until the first one does.
    wait_until(lambda: c.out("put", "t7/probe", "p") and "t7/probe" in w.lines, 15, what="watch up")
    c.out("put", "t7/a", "1")
    c.out("put", "t7/a", "2")
    c.out("del", "t7/a")
    wait_until(lambda: "DELETE" in w.lines[-5:], 15, what="the delete event")
    lines = w.lines[w.lines.index("t7/a") - 1 :]
    # PUT (new key: no prev), PUT with prev (prev key/value, key/value), DELETE with prev.
    assert lines == [
        "PUT", "t7/a", "1",
        "PUT", "t7/a", "1", "t7/a", "2",
        "DELETE", "t7/a", "2", "t7/a", "",
    ]  # fmt: skip


def test_watch_from_revision(leader: Node, follower: Node, procs: list[Lines]) -> None:
    c = ctl(leader)
    c.out("put", "t8/k", "first")
    rev = c.json("get", "t8/k")["kvs"][0]["mod_revision"]
    c.out("put", "t8/k", "second")
    c.out("del", "t8/k")
    w = Lines(ctl(follower).popen("watch", "t8/k", f"--rev={rev}"))
    procs.append(w)
    lines = w.wait_for(7)
    assert lines[:7] == ["PUT", "t8/k", "first", "PUT", "t8/k", "second", "DELETE"]


def test_lease_lifecycle(leader: Node, follower: Node) -> None:
    c = ctl(follower)
    out = c.out("lease", "grant", "60").split()
    assert out[0] == "lease" and out[2:4] == ["granted", "with"]
    lid = out[1]
    c.out("put", "t9/session", "alive", f"--lease={lid}")
    ttl = c.out("lease", "timetolive", lid, "--keys")
    assert "granted with TTL(60s)" in ttl and "attached keys([t9/session])" in ttl
    assert lid in ctl(leader).out("lease", "list")
    assert f"lease {lid} keepalived with TTL(60)" in c.out("lease", "keep-alive", "--once", lid)
    assert c.json("get", "t9/session")["kvs"][0]["lease"] == int(lid, 16)
    assert f"lease {lid} revoked" in c.out("lease", "revoke", lid)
    assert ctl(leader).out("get", "t9/session").strip() == ""
    assert "already expired" in c.out("lease", "timetolive", lid)
    err = c.fails("lease", "revoke", lid)
    assert "etcdserver: requested lease not found" in err
    err = c.fails("put", "t9/x", "y", f"--lease={lid}")
    assert "etcdserver: requested lease not found" in err


def test_lease_expires_without_keepalive(leader: Node, follower: Node) -> None:
    c = ctl(follower)
    lid = c.out("lease", "grant", "2").split()[1]
    c.out("put", "t10/ephemeral", "x", f"--lease={lid}")
    wait_until(
        lambda: ctl(leader).out("get", "t10/ephemeral").strip() == "",
        20,
        what="the key of an expired lease deleted",
    )
    assert "already expired" in c.out("lease", "timetolive", lid)


def test_ignore_value_and_lease(leader: Node, follower: Node) -> None:
    c = ctl(follower)
    lid = c.out("lease", "grant", "60").split()[1]
    c.out("put", "t11/k", "keep-me", f"--lease={lid}")
    c.out("put", "t11/k", "--ignore-value", "--ignore-lease")
    kv = ctl(leader).json("get", "t11/k")["kvs"][0]
    assert unb64(kv["value"]) == "keep-me" and kv["lease"] == int(lid, 16) and kv["version"] == 2
    err = c.fails("put", "t11/missing", "--ignore-value")
    assert "etcdserver: key not found" in err
    c.out("lease", "revoke", lid)


def test_lock_excludes(
    etcd_cluster: LocalCluster, leader: Node, follower: Node, tmp_path: Path
) -> None:
    first_end = tmp_path / "first_end"
    second_start = tmp_path / "second_start"
    holder = ctl(leader).popen(
        "lock", "t12/lock", "--", "sh", "-c", f"echo held; sleep 2; date +%s.%N > {first_end}"
    )
    h = Lines(holder)
    h.wait_for(1, 20)
    other = next(n for n in etcd_cluster.nodes if n is not leader and n is not follower)
    waiter = ctl(other).run(
        "lock", "t12/lock", "--", "sh", "-c", f"date +%s.%N > {second_start}", timeout=40
    )
    assert waiter.returncode == 0
    holder.wait(20)
    # The second holder started only after the first one finished.
    assert float(second_start.read_text()) >= float(first_end.read_text())


def test_elect(leader: Node, follower: Node, procs: list[Lines]) -> None:
    cand = Lines(ctl(follower).popen("elect", "t13/election", "alice"))
    procs.append(cand)
    cand.wait_for(2, 20)
    assert cand.lines[1] == "alice"
    obs = Lines(ctl(leader).popen("elect", "-l", "t13/election"))
    procs.append(obs)
    assert obs.wait_for(2, 20)[1] == "alice"


def test_member_list_and_endpoint_status(etcd_cluster: LocalCluster, leader: Node) -> None:
    c = Etcdctl(etcdctl_path(), etcd_cluster.etcd_endpoints())
    members = c.json("member", "list")["members"]
    assert sorted(m["name"] for m in members) == sorted(n.peer_id for n in etcd_cluster.nodes)
    for m in members:
        node = etcd_cluster.node_by_id(m["name"])
        assert node is not None
        assert m["peerURLs"] == [node.addr] or node.addr in m["peerURLs"]
        # Only the answering node knows its etcd endpoint (see the README).
        assert m.get("clientURLs", []) in ([], [f"http://{node.etcd_endpoint}"])
        assert not m.get("isLearner", False)
    assert sum(1 for m in members if m.get("clientURLs")) == 1
    ids = {m["ID"] for m in members}
    status = c.json("endpoint", "status")
    assert len(status) == 3
    leaders = {s["Status"]["leader"] for s in status}
    assert len(leaders) == 1 and leaders <= ids
    assert {s["Status"]["header"]["member_id"] for s in status} == ids
    lead = next(s for s in status if s["Status"]["header"]["member_id"] == s["Status"]["leader"])
    assert lead["Endpoint"] == leader.etcd_endpoint
    assert all(s["Status"]["version"] for s in status)
    assert all(s["Status"]["dbSize"] > 0 for s in status)
    health = c.run("endpoint", "health")
    assert health.stderr.count("is healthy") + health.stdout.count("is healthy") == 3


def test_compaction_defrag_alarm(leader: Node, follower: Node) -> None:
    c = ctl(follower)
    c.out("put", "t14/k", "v")
    rev = c.json("get", "t14/k")["header"]["revision"]
    assert f"compacted revision {rev}" in c.out("compaction", str(rev))
    err = c.fails("compaction", str(rev + 1000))
    assert "etcdserver: mvcc: required revision is a future revision" in err
    assert "Finished defragmenting" in c.out("defrag")
    assert c.out("alarm", "list").strip() == ""


def test_hashkv_agrees_across_nodes(etcd_cluster: LocalCluster, leader: Node) -> None:
    ctl(leader).out("put", "t21/k", "v")
    everyone = Etcdctl(etcdctl_path(), etcd_cluster.etcd_endpoints())

    def hashes() -> set[tuple[int, int]]:
        rows = everyone.json("endpoint", "hashkv")
        got = {(r["HashKV"]["hash"], r["HashKV"]["header"]["revision"]) for r in rows}
        return got if len(rows) == 3 else set()

    # Equal once every node applied the same revision (the hash covers every key).
    wait_until(lambda: len(hashes()) == 1, 15, what="equal hashes")
    ((h, rev),) = hashes()  # nothing writes in between: the tests run one at a time
    assert h != 0 and rev > 0


def test_snapshot_save_restores_with_raftd(
    etcd_cluster: LocalCluster, follower: Node, tmp_path: Path
) -> None:
    c = ctl(follower)
    c.out("put", "t15/k", "in-the-snapshot")
    snap = tmp_path / "snap.db"
    out = c.run("snapshot", "save", str(snap))
    assert "Snapshot saved" in out.stdout + out.stderr
    restored = tmp_path / "restored"
    p = subprocess.run(
        [
            etcd_cluster.python,
            "-m",
            "raftd",
            "snapshot",
            "restore",
            str(snap),
            "--data-dir",
            str(restored),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "restored /raft/default" in p.stdout
    # etcd's own tools refuse it: it is a raftd backup, not a bbolt file.
    assert c.run("snapshot", "status", str(snap), check=False).returncode != 0


def test_errors_and_auth(follower: Node) -> None:
    c = ctl(follower)
    assert "already expired" in c.out("lease", "timetolive", "1234abcd")
    err = c.fails("lease", "keep-alive", "--once", "1234abcd")
    assert "etcdserver: requested lease not found" in err  # clientv3: TTL 0
    # As with etcd without auth: the client hears "not enabled" and goes on without it.
    p = c.run("--user", "root:pw", "get", "k")
    assert "etcdserver: authentication is not enabled" in p.stderr


def test_python_etcd3_client(leader: Node, follower: Node) -> None:
    """python-etcd3 from PyPI (its own virtualenv: it needs protobuf 3), with its lock
    and watch helpers, against two different nodes."""
    python = etcd3_python()
    script = Path(__file__).with_name("etcd3_client.py")
    p = subprocess.run(
        [python, str(script), follower.etcd_endpoint, leader.etcd_endpoint],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["get"] == "1" and out["prefix"] == ["py/a", "py/b"]
    assert out["txn"] is True and out["txn_value"] == "yes"
    assert out["range_compares"] == [True, False, True, False]
    assert out["lease_granted_ttl"] == 30 and out["lease_keys"] == ["py/l"]
    assert out["after_revoke"] is None
    assert out["watch"] == [
        ["PutEvent", "py/w/1", "a"],
        ["PutEvent", "py/w/2", "b"],
        ["DeleteEvent", "py/w/1", ""],
    ]
    assert out["first_locked"] is True
    assert out["second_while_held"] is False
    assert out["second_after_release"] is True
    assert out["members"] == 3 and out["status_has_leader"] is True


class RawWatch:
    """A Watch stream opened with grpcio and raftd's own etcd protos (no etcd client in
    between), to check what etcdctl does not show: ids, filters, progress, cancel."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.requests: queue.Queue[epb.WatchRequest | None] = queue.Queue()
        call = self.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=epb.WatchRequest.SerializeToString,
            response_deserializer=epb.WatchResponse.FromString,
        )
        self.responses = call(iter(self.requests.get, None), timeout=60)

    def send(self, **kw: object) -> None:
        self.requests.put(epb.WatchRequest(**kw))  # type: ignore[arg-type]

    def next(self) -> epb.WatchResponse:
        return next(self.responses)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


def test_watch_ids_filters_progress_cancel(leader: Node, follower: Node) -> None:
    w = RawWatch(follower.etcd_endpoint)
    try:
        w.send(create_request=epb.WatchCreateRequest(key=b"t19/", range_end=b"t190"))
        first = w.next()
        assert first.created and first.watch_id == 0 and first.header.member_id
        noput = epb.WatchCreateRequest.NOPUT
        w.send(create_request=epb.WatchCreateRequest(key=b"t19/k", filters=[noput], prev_kv=True))
        second = w.next()
        assert second.created and second.watch_id == 1
        c = ctl(leader)
        c.out("put", "t19/k", "v")
        c.out("del", "t19/k")
        seen: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
        while len(seen[0]) < 2 or len(seen[1]) < 1:
            r = w.next()
            seen[r.watch_id].extend((e.type, e.prev_kv.value) for e in r.events)
        assert [t for t, _ in seen[0]] == [mvcc.Event.PUT, mvcc.Event.DELETE]
        assert seen[1] == [(mvcc.Event.DELETE, b"v")]  # NOPUT, with prev_kv
        w.send(progress_request=epb.WatchProgressRequest())
        p = w.next()
        assert p.watch_id == -1 and not p.events and p.header.revision >= 1
        w.send(cancel_request=epb.WatchCancelRequest(watch_id=0))
        cancelled = w.next()
        assert cancelled.canceled and cancelled.watch_id == 0
    finally:
        w.close()


def test_member_add_promote_remove_move_leader(etcd_cluster: LocalCluster, follower: Node) -> None:
    c = ctl(follower)
    n4 = etcd_cluster.add_node()  # empty, waits to be added
    try:
        # etcdctl only lets http(s)://HOST:PORT through: the peer id rides in ?p2p=.
        url = f"http://127.0.0.1:{n4.port}?p2p={n4.peer_id}"
        out = c.out("member", "add", "n4", "--learner", f"--peer-urls={url}")
        assert "added to cluster" in out
        m = next(m for m in c.json("member", "list")["members"] if m["name"] == n4.peer_id)
        assert m["isLearner"] and m["peerURLs"] == [n4.addr]
        mid = format(m["ID"], "x")
        wait_until(
            lambda: ctl(n4).run("get", "t17/x", "--consistency=s", check=False).returncode == 0,
            30,
            what="the learner serving",
        )
        assert "promoted" in c.out("member", "promote", mid)
        m = next(m for m in c.json("member", "list")["members"] if m["name"] == n4.peer_id)
        assert not m.get("isLearner", False)
        err = c.fails("member", "promote", mid)
        assert "etcdserver: can only promote a learner member" in err
        assert "removed from cluster" in c.out("member", "remove", mid)
        names = [m["name"] for m in c.json("member", "list")["members"]]
        assert sorted(names) == sorted(n.peer_id for n in etcd_cluster.nodes[:3])
        assert "etcdserver: member not found" in c.fails("member", "remove", mid)
        assert "member URLs are invalid" in c.fails(
            "member", "add", "x", "--peer-urls=http://10.0.0.1:2380"
        )
    finally:
        n4.terminate()
        etcd_cluster.nodes.remove(n4)
    # move-leader needs the leader's endpoint among the given ones (etcdctl checks).
    everyone = Etcdctl(etcdctl_path(), etcd_cluster.etcd_endpoints())
    lead = etcd_cluster.wait_leader()
    target = next(n for n in etcd_cluster.nodes if n is not lead)
    tid = format(
        next(
            m["ID"]
            for m in everyone.json("member", "list")["members"]
            if m["name"] == target.peer_id
        ),
        "x",
    )
    assert "Leadership transferred" in everyone.out("move-leader", tid)
    assert etcd_cluster.wait_leader() is target


def test_member_update_replaces_addresses(etcd_cluster: LocalCluster, follower: Node) -> None:
    """MemberUpdate is ``raftd member add`` of the member again with addresses: every
    other member then has exactly those (etcd replaces a member's peer URLs too)."""
    c = ctl(follower)
    target = next(n for n in etcd_cluster.nodes if n is not follower)
    mid = format(
        next(m["ID"] for m in c.json("member", "list")["members"] if m["name"] == target.peer_id),
        "x",
    )
    extra = f"/ip4/127.0.0.1/tcp/9/p2p/{target.peer_id}"
    urls = f"http://127.0.0.1:{target.port}?p2p={target.peer_id},http://127.0.0.1:9?p2p={target.peer_id}"
    assert "updated in cluster" in c.out("member", "update", mid, f"--peer-urls={urls}")

    def listed(n: Node) -> list[str]:
        for m in ctl(n).json("member", "list")["members"]:
            if m["name"] == target.peer_id:
                return list(m["peerURLs"])
        raise AssertionError(f"{target.peer_id} missing from {n.name}'s member list")

    for n in etcd_cluster.nodes:
        if n is not target:  # a node lists its own listen addresses
            wait_until(lambda n=n: extra in listed(n), 15, what=f"{n.name} lists {extra}")  # type: ignore[misc]
            assert sorted(listed(n)) == sorted([target.addr, extra])
    other = next(n for n in etcd_cluster.nodes if n is not target)
    bad = f"--peer-urls=http://127.0.0.1:9?p2p={other.peer_id}"
    assert "member URLs are invalid" in c.fails("member", "update", mid, bad)
    assert "etcdserver: member not found" in c.fails("member", "update", "1234", bad)
    names = sorted(m["name"] for m in c.json("member", "list")["members"])
    assert names == sorted(n.peer_id for n in etcd_cluster.nodes)
    c.out("put", "t17u/after", "ok")  # the cluster still works
    assert ctl(target).out("get", "t17u/after", "--print-value-only").strip() == "ok"


def test_lock_passes_on_when_the_holders_node_dies(
    etcd_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The lock holder's only node is killed (its keep-alives stop): a waiter on another
    node gets the lock once the session lease expires, not before."""
    ttl = 3
    lead = etcd_cluster.wait_leader()
    holder_node, waiter_node = (n for n in etcd_cluster.nodes if n is not lead)
    holder = Lines(
        ctl(holder_node).popen(
            "lock", f"--ttl={ttl}", "t18/lock", "--", "sh", "-c", "echo held; sleep 120"
        )
    )
    try:
        holder.wait_for(1, 20)
        got = tmp_path / "got"
        waiter = ctl(waiter_node).popen(
            "lock", f"--ttl={ttl}", "t18/lock", "--", "sh", "-c", f"date +%s.%N > {got}"
        )
        # The waiter is queued once its own key is under the lock's prefix.
        wait_until(
            lambda: len(ctl(lead).out("get", "--prefix", "t18/lock/", "--keys-only").split()) == 2,
            15,
            what="the waiter queued",
        )
        assert not got.exists()
        killed_at = time.time()
        holder_node.kill()
        assert waiter.wait(30) == 0
        # The last keep-alive was at most ttl/3 before the kill: the lease cannot have
        # expired sooner than 2/3 of the TTL after it.
        assert float(got.read_text()) >= killed_at + 2 * ttl / 3 - 0.05
    finally:
        holder.stop()
        holder_node.start()
        etcd_cluster.wait_leader()


def test_watch_survives_leader_kill(etcd_cluster: LocalCluster, procs: list[Lines]) -> None:
    """Kill the leader during a watch pointed at every endpoint: the watch continues on
    another node from the right revision, no event lost or repeated."""
    leader = etcd_cluster.wait_leader()
    # The watch connects to the leader's endpoint first (etcdctl picks the first one).
    order = [leader, *(n for n in etcd_cluster.nodes if n is not leader)]
    w = Lines(
        Etcdctl(etcdctl_path(), [n.etcd_endpoint for n in order]).popen("watch", "--prefix", "t16/")
    )
    procs.append(w)
    writer = ctl(*order[1:])
    wait_until(
        lambda: writer.out("put", "t16/probe", "x") and len(w.lines) >= 3, 15, what="watch up"
    )
    sent = []
    for i in range(5):
        writer.out("put", "t16/k", str(i))
        sent.append(str(i))
    leader.kill()
    etcd_cluster.wait_leader(exclude=[leader])
    for i in range(5, 10):
        writer.out("put", "t16/k", str(i))
        sent.append(str(i))

    def values() -> list[str]:
        ls = list(w.lines)
        return [ls[j + 2] for j in range(len(ls) - 2) if ls[j : j + 2] == ["PUT", "t16/k"]]

    wait_until(lambda: len(values()) >= len(sent), 30, what="the events after the leader kill")
    assert values() == sent  # every event once, in order
    leader.start()
    etcd_cluster.wait_leader()
