"""Every API operation through real daemons (3 processes, real libp2p, LevelDB and unix
sockets), with the sync and the trio client, from the leader and from followers (whose
writes are forwarded), plus pipelining and bad input."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import trio

from raftd.client import (
    Client,
    InvalidArgument,
    NotFound,
    UnknownNamespace,
    compare,
    op_delete,
    op_get,
    op_put,
    open_client,
)
from raftd.client.concurrency import (
    AsyncElection,
    AsyncLock,
    Election,
    Lock,
    Session,
    open_session,
)
from raftd.testing.cluster import LocalCluster, Node, make_identity, wait_until
from raftd.wire.framing import FrameDecoder, encode_frame, encode_varint
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb

pytestmark = pytest.mark.slow

C = apb.Error


def _nodes(cluster: LocalCluster) -> tuple[Node, list[Node]]:
    lead = cluster.wait_leader()
    return lead, [n for n in cluster.nodes if n is not lead]


def _exercise_sync(c: Client, tag: str) -> None:
    k = f"{tag}/k"
    r1 = c.put(k, "v1")
    kv = c.get(k)
    assert kv is not None and kv.value == b"v1" and kv.version == 1
    assert kv.create_revision == kv.mod_revision == r1.revision
    stale = c.get(k, stale=True)
    assert stale is not None and stale.value == b"v1"  # read-your-writes on this daemon
    p = c.put(k, "v2", prev_kv=True)
    assert p.prev is not None and p.prev.value == b"v1" and p.revision == r1.revision + 1
    assert c.get(f"{tag}/missing") is None
    for i in range(5):
        c.put(f"{tag}/r/{i}", str(i))
    rr = c.get_prefix(f"{tag}/r/")
    assert [kv.value for kv in rr.kvs] == [b"0", b"1", b"2", b"3", b"4"] and not rr.more
    lim = c.range(f"{tag}/r/", f"{tag}/r/3", limit=2)
    assert [kv.key for kv in lim.kvs] == [f"{tag}/r/0".encode(), f"{tag}/r/1".encode()]
    assert lim.more
    keys_only = c.get_prefix(f"{tag}/r/", keys_only=True)
    assert all(kv.value == b"" for kv in keys_only.kvs)
    # cas: value, mod revision, absence
    cur = c.get(k)
    assert cur is not None
    ok = c.cas(k, "v3", value="v2")
    assert ok.succeeded and ok.current is not None and ok.current.value == b"v2"
    bad = c.cas(k, "v4", value="v2")
    assert not bad.succeeded and bad.current is not None and bad.current.value == b"v3"
    got = c.get(k)
    assert got is not None
    assert c.cas(k, "v5", mod_revision=got.mod_revision).succeeded
    assert not c.cas(k, "v6", mod_revision=got.mod_revision).succeeded
    assert c.cas(f"{tag}/new", "x", absent=True).succeeded
    assert not c.cas(f"{tag}/new", "y", absent=True).succeeded
    # txn
    t = c.txn(
        [compare(k, "value", "=", "v5"), compare(f"{tag}/new", "version", "=", 1)],
        [op_put(f"{tag}/t", "yes"), op_get(k), op_delete(f"{tag}/new")],
        [op_put(f"{tag}/t", "no")],
    )
    assert t.succeeded and len(t.responses) == 3
    got_t = c.get(f"{tag}/t")
    assert got_t is not None and got_t.value == b"yes"
    t2 = c.txn([compare(k, "mod", "<", 1)], [op_put(f"{tag}/t", "x")], [op_get(f"{tag}/t")])
    assert not t2.succeeded
    # delete, delete range
    d = c.delete(f"{tag}/t")
    assert d.deleted == 1
    assert c.delete(f"{tag}/t").deleted == 0
    dr = c.delete_prefix(f"{tag}/r/")
    assert dr.deleted == 5 and c.get_prefix(f"{tag}/r/").kvs == []
    # barrier, status, members
    rev = c.barrier()
    assert rev >= dr.revision
    st = c.status()[0]
    assert st.namespace == "/raft/default" and st.leader and len(st.members) == 3
    assert all(m.addrs for m in st.members)
    assert {m.id for m in c.members()} == {m.id for m in st.members}
    # leases
    lease = c.lease_grant(30)
    c.put(f"{tag}/leased", "x", lease=lease.id)
    assert c.lease_keepalive(lease.id) == 30
    ttl = c.lease_ttl(lease.id, keys=True)
    assert ttl.granted_ttl == 30 and 25 <= ttl.ttl <= 30 and ttl.keys == [f"{tag}/leased".encode()]
    assert any(x.id == lease.id for x in c.leases())
    assert c.lease_revoke(lease.id) == 1
    assert c.get(f"{tag}/leased") is None
    with pytest.raises(NotFound):
        c.lease_keepalive(lease.id)
    with pytest.raises(NotFound):
        c.put(f"{tag}/x", "y", lease=lease.id)
    with pytest.raises(InvalidArgument):
        c.put("", "y")


def test_sync_client_every_op_via_leader_and_followers(cluster: LocalCluster) -> None:
    lead, followers = _nodes(cluster)
    for node in [lead, *followers]:
        with node.client() as c:
            _exercise_sync(c, f"sync-{node.name}")


def test_sync_client_is_thread_safe_and_pipelines(cluster: LocalCluster) -> None:
    _, followers = _nodes(cluster)
    with followers[0].client() as c:
        futs = [
            c.submit(apb.Request(put=kpb.PutRequest(key=b"p/%d" % i, value=b"x")))
            for i in range(50)
        ]
        assert all(f.result(10).error.code == C.OK for f in futs)
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                for j in range(20):
                    c.put(f"thr/{i}/{j}", "v")
                    assert c.get(f"thr/{i}/{j}") is not None
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert len(c.get_prefix("thr/").kvs) == 160


async def test_trio_client_every_op(cluster: LocalCluster) -> None:
    _, followers = _nodes(cluster)
    async with open_client(str(followers[0].socket), namespace="/raft/default") as c:
        r = await c.put("trio/a", "1")
        kv = await c.get("trio/a")
        assert kv is not None and kv.mod_revision == r.revision
        assert (await c.get("trio/a", stale=True)) is not None
        assert (await c.get("trio/none")) is None
        assert (await c.cas("trio/a", "2", value="1")).succeeded
        assert not (await c.cas("trio/a", "3", value="1")).succeeded
        t = await c.txn([compare("trio/a", "value", "=", "2")], [op_put("trio/b", "x")])
        assert t.succeeded
        assert len((await c.get_prefix("trio/")).kvs) == 2
        assert (await c.delete_prefix("trio/")).deleted == 2
        assert await c.barrier() >= t.revision
        assert (await c.status())[0].leader
        assert len(await c.members()) == 3
        lease = await c.lease_grant(20)
        assert await c.lease_keepalive(lease.id) == 20
        assert (await c.lease_ttl(lease.id)).granted_ttl == 20
        assert await c.lease_revoke(lease.id) == 0
        # Many concurrent requests on one connection.
        results: list[int] = []

        async def one(i: int) -> None:
            results.append((await c.put(f"trio/many/{i}", "v")).revision)

        async with trio.open_nursery() as n:
            for i in range(64):
                n.start_soon(one, i)
        assert len(set(results)) == 64
        # Watch
        async with c.watch("trio/w/", prefix=True) as w:
            for i in range(3):
                await c.put(f"trio/w/{i}", str(i))
            await c.delete("trio/w/1")
            got = []
            with trio.fail_after(10):
                async for ev in w:
                    got.append((ev.type, ev.kv.key))
                    if len(got) == 4:
                        break
        assert got == [
            ("put", b"trio/w/0"),
            ("put", b"trio/w/1"),
            ("put", b"trio/w/2"),
            ("delete", b"trio/w/1"),
        ]
        # Lock and election on sessions
        async with open_session(c, ttl=5) as s, AsyncLock(c, "trio-lock", s) as lk:
            assert lk.revision > 0
            assert (await c.get(lk.key)) is not None
        async with open_session(c, ttl=5) as s1, open_session(c, ttl=5) as s2:
            e1 = AsyncElection(c, "trio-svc", s1)
            e2 = AsyncElection(c, "trio-svc", s2)
            await e1.campaign("one")
            with trio.move_on_after(0.3) as blocked:
                await e2.campaign("two")
            assert blocked.cancelled_caught
            await e1.proclaim("one-b")
            leader = await e2.leader()
            assert leader is not None and leader.value == b"one-b"
            await e1.resign()
            with trio.fail_after(10):
                await e2.campaign("two")
            leader = await e1.leader()
            assert leader is not None and leader.value == b"two"
        # More admin and lease operations
        rr = await c.range("trio/many/", "trio/many0", limit=10)
        assert len(rr.kvs) == 10 and rr.more
        assert (await c.delete_range("trio/many/", "trio/many0")).deleted == 64
        assert (await c.delete("trio/w/0")).deleted == 1
        assert any(x.id == lease.id for x in await c.leases()) is False
        new_leader = await c.transfer_leader()
        assert new_leader
        with trio.fail_after(10):  # this follower learns of it at its next message
            while (await c.status())[0].leader != new_leader:  # noqa: ASYNC110 (remote state)
                await trio.sleep(0.05)


def test_status_leader_commit(cluster: LocalCluster) -> None:
    """``status`` with ``leader_commit`` reports the leader's commit index as of a
    ReadIndex round after the request, on the leader and on followers, for one or every
    namespace; without the flag it is 0 (and left out of ``as_dict``)."""
    lead, followers = _nodes(cluster)
    with lead.client() as c:
        c.put("lc/a", "1")
    for node in [lead, *followers]:
        with node.client() as c:
            plain = c.status()[0]
            assert plain.leader_commit == 0 and "leader_commit" not in plain.as_dict()
            before = lead.status().commit  # committed before the next request
            assert before > 0
            st = c.status(leader_commit=True)[0]
            assert st.leader_commit >= before, (node.name, st, before)
            assert st.as_dict()["leader_commit"] == st.leader_commit
            every = c.status(all_namespaces=True, leader_commit=True)
            assert len(every) == 1 and every[0].leader_commit >= before


async def test_trio_status_leader_commit(cluster: LocalCluster) -> None:
    lead, followers = _nodes(cluster)
    before = lead.status().commit
    async with open_client(str(followers[0].socket), namespace="/raft/default") as c:
        assert (await c.status())[0].leader_commit == 0
        assert (await c.status(leader_commit=True))[0].leader_commit >= before > 0


def test_watch_from_history_and_cancel(cluster: LocalCluster) -> None:
    _, followers = _nodes(cluster)
    with followers[1].client() as c:
        first = c.put("wh/a", "1").revision
        c.put("wh/b", "2")
        c.delete("wh/a")
        w = c.watch("wh/", prefix=True, start_revision=first, prev_kv=True)
        evs = [w.next(timeout=10) for _ in range(3)]
        assert [(e.type, e.kv.key, e.revision) for e in evs if e] == [
            ("put", b"wh/a", first),
            ("put", b"wh/b", first + 1),
            ("delete", b"wh/a", first + 2),
        ]
        assert evs[2] is not None and evs[2].prev is not None and evs[2].prev.value == b"1"
        c.put("wh/c", "3")
        e = w.next(timeout=10)
        assert e is not None and e.kv.key == b"wh/c"
        w.cancel()
        # An exact-key watch sees only its key.
        w2 = c.watch("wh/x")
        c.put("wh/y", "no")
        c.put("wh/x", "yes")
        e2 = w2.next(timeout=10)
        assert e2 is not None and e2.kv.key == b"wh/x"
        w2.cancel()


def test_pipelined_responses_come_back_out_of_order(cluster: LocalCluster) -> None:
    node = cluster.nodes[0]
    with _raw(node) as s:
        slow = apb.Request(
            id=1,
            min_revision=10**12,  # never reached: answered at its deadline
            timeout_ms=1500,
            consistency=apb.STALE,
            get=apb.GetRequest(key=b"any"),
        )
        fast = [
            apb.Request(id=i, consistency=apb.STALE, range=kpb.RangeRequest(key=b"x"))
            for i in range(2, 22)
        ]
        s.sendall(b"".join(encode_frame(r.SerializeToString()) for r in [slow, *fast]))
        dec = FrameDecoder(1 << 22)
        order: list[apb.Response] = []
        while len(order) < 21:
            data = s.recv(65536)
            assert data
            order.extend(apb.Response.FromString(f) for f in dec.feed(data))
    ids = [r.id for r in order]
    assert sorted(ids) == list(range(1, 22))
    assert ids[-1] == 1 and ids != sorted(ids)
    assert order[-1].error.code == C.DEADLINE_EXCEEDED


def _raw(node: Node) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(node.socket))  # blocking: waits while the accept queue is full
    s.settimeout(10)
    return s


def _responses(s: socket.socket, n: int) -> list[apb.Response]:
    dec = FrameDecoder(1 << 22)
    out: list[apb.Response] = []
    while len(out) < n:
        data = s.recv(65536)
        if not data:
            break
        out.extend(apb.Response.FromString(f) for f in dec.feed(data))
    return out


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _serves(node: Node) -> bool:
    # A generous deadline: right after 1,000 connections on a loaded 2-core machine the
    # first write can take longer than the 5 s server default; the point is that it works.
    with node.client() as c:
        c.put("alive", "yes", timeout=30.0)
        kv = c.get("alive", timeout=30.0)
        return kv is not None


def test_bad_input_is_answered_and_the_daemon_keeps_serving(cluster: LocalCluster) -> None:
    node = cluster.nodes[1]
    ok_req = apb.Request(id=9, consistency=apb.STALE, range=kpb.RangeRequest(key=b"a"))
    # 1. Garbage inside a well-formed frame: INVALID_ARGUMENT (id 0), connection goes on.
    with _raw(node) as s:
        s.sendall(
            encode_frame(b"\xff\xfe garbage \x00\x01") + encode_frame(ok_req.SerializeToString())
        )
        r = _responses(s, 2)
        assert r[0].id == 0 and r[0].error.code == C.INVALID_ARGUMENT
        assert r[1].id == 9 and r[1].error.code == C.OK
    # 2. A malformed length prefix (varint over 10 bytes): INVALID_ARGUMENT, then closed.
    with _raw(node) as s:
        s.sendall(b"\xff" * 11)
        r = _responses(s, 1)
        assert r[0].error.code == C.INVALID_ARGUMENT and _closed(s)
    # 3. An oversized frame (5 MiB announced): TOO_LARGE, then closed.
    with _raw(node) as s:
        s.sendall(encode_varint(5 * 1024 * 1024) + b"x" * 1000)
        r = _responses(s, 1)
        assert r[0].error.code == C.TOO_LARGE and _closed(s)
    # 4. A truncated frame, then the client goes away.
    with _raw(node) as s:
        s.sendall(encode_varint(100) + b"short")
    # 5. Unknown namespace, wrong-type field, no operation, a huge id.
    with _raw(node) as s:
        bad_ns = apb.Request(id=1, namespace="/raft/nope", get=apb.GetRequest(key=b"k"))
        wrong_type = bytes([0x08, 0x02, 0x5A, 0x02, 0x08, 0x01])  # put.key as a varint
        no_op = apb.Request(id=3)
        huge = apb.Request(id=2**64 - 1, consistency=apb.STALE, get=apb.GetRequest(key=b"k"))
        s.sendall(
            encode_frame(bad_ns.SerializeToString())
            + encode_frame(wrong_type)
            + encode_frame(no_op.SerializeToString())
            + encode_frame(huge.SerializeToString())
        )
        by_id = {x.id: x for x in _responses(s, 4)}
        assert by_id[1].error.code == C.UNKNOWN_NAMESPACE
        assert by_id[2].error.code == C.INVALID_ARGUMENT
        assert by_id[3].error.code == C.INVALID_ARGUMENT
        assert by_id[2**64 - 1].error.code in (C.OK, C.NOT_FOUND)
    with node.client(namespace="/raft/nope") as c, pytest.raises(UnknownNamespace):
        c.get("k")
    # 6. 1,000 connections opened and dropped (200 open at a time).
    for _ in range(5):
        socks = [_raw(node) for _ in range(200)]
        for i, s in enumerate(socks):
            if i % 2:
                s.sendall(encode_frame(ok_req.SerializeToString()))
            s.close()
    assert _serves(node)
    for other in cluster.nodes:
        assert _serves(other)


def test_lock_and_election_helpers(cluster: LocalCluster) -> None:
    _, followers = _nodes(cluster)
    a_client = followers[0].client()
    b_client = followers[1].client()
    try:
        a = Lock(a_client, "jobs", ttl=5)
        assert a.acquire(timeout=10)
        b = Lock(b_client, "jobs", ttl=5)
        assert not b.acquire(timeout=0.5)  # held by a
        got = threading.Event()

        def take() -> None:
            if b.acquire(timeout=20):
                got.set()

        t = threading.Thread(target=take)
        t.start()
        time.sleep(0.3)  # let b queue behind a (it must not win while a holds it)
        assert not got.is_set()
        first_rev = a.revision
        a.release()
        assert got.wait(10)
        t.join(10)
        assert b.revision > first_rev  # fencing token increases
        b.release()
        # Election
        with Session(a_client, ttl=5) as sa, Session(b_client, ttl=5) as sb:
            ea = Election(a_client, "svc", sa)
            eb = Election(b_client, "svc", sb)
            assert ea.campaign("node-a", timeout=10)
            assert not eb.campaign("node-b", timeout=0.3)
            leader = ea.leader()
            assert leader is not None and leader.value == b"node-a"
            ea.proclaim("node-a2")
            leader = eb.leader()
            assert leader is not None and leader.value == b"node-a2"
            ea.resign()
            assert eb.campaign("node-b", timeout=10)
            leader = ea.leader()
            assert leader is not None and leader.value == b"node-b"
            eb.resign()
    finally:
        a_client.close()
        b_client.close()


def test_transfer_leader_and_admin_errors(cluster: LocalCluster, tmp_path: Path) -> None:
    lead, followers = _nodes(cluster)
    target = followers[0]
    with followers[1].client() as c:
        assert c.transfer_leader(target.peer_id) == target.peer_id
        assert cluster.wait_leader() is target
        with pytest.raises(InvalidArgument):
            c.add_voter("not-a-peer-id")
        stranger = make_identity(tmp_path / "stranger")
        with pytest.raises(NotFound):
            c.promote(stranger)
        with pytest.raises(NotFound):
            c.remove(stranger)
        # Adding an existing voter is a no-op that answers the membership.
        assert len(c.add_voter(lead.peer_id)) == 3
        assert c.transfer_leader() != target.peer_id
    wait_until(lambda: cluster.wait_leader() is not target, 10, what="leader moved")


def test_protocol_md_minimal_client_runs(cluster: LocalCluster) -> None:
    """The raw-socket example in raftd/api/PROTOCOL.md works as written."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    import raftd.api

    doc = (Path(raftd.api.__file__).parent / "PROTOCOL.md").read_text()
    m = re.search(r"```python\n(.*?)```", doc, re.S)
    assert m is not None
    code = m.group(1).replace("/var/lib/raftd/raftd.sock", str(cluster.nodes[0].socket))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.split("\n")[:2])
    assert lines[0].startswith("1 put ") and lines[1].startswith("2 ")  # get or NOT_FOUND
