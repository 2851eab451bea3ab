"""State machine features used by the API: leases (grant, attach, revoke, snapshot,
restart) and the watch event history, on the memory twin and on LevelDB."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd.kv.machine import KVStateMachine
from raftd.kv.watch import DELETE, PUT, EventHistory, KeyEvent
from raftd.storage.leveldb import LevelDB
from raftd.wire.pb import kv_pb2 as pb

NS = "/raft/t"


class _Box:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.db: LevelDB | None = None
        self.sm = self.open()
        self.index = 0

    def open(self) -> KVStateMachine:
        if self.kind == "memory":
            return KVStateMachine.memory()
        if self.db is not None:
            self.db.close()
        self.db = LevelDB(self.tmp / "db")
        return KVStateMachine.leveldb(self.db, NS)

    def apply(self, cmd: pb.Command) -> pb.CommandResult:
        self.index += 1
        res = self.sm.apply(self.index, cmd.SerializeToString())
        assert res.result is not None
        return res.result

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


@pytest.fixture(params=["memory", "leveldb"])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Box]:
    b = _Box(request.param, tmp_path)
    yield b
    b.close()


def put(key: bytes, value: bytes, lease: int = 0) -> pb.Command:
    return pb.Command(put=pb.PutRequest(key=key, value=value, lease=lease))


def grant(ttl: int, lid: int = 0) -> pb.Command:
    return pb.Command(lease_grant=pb.LeaseGrantRequest(ttl=ttl, id=lid))


def revoke(lid: int) -> pb.Command:
    return pb.Command(lease_revoke=pb.LeaseRevokeRequest(id=lid))


def test_grant_attach_revoke(box: _Box) -> None:
    r = box.apply(grant(10))
    assert r.status == pb.CommandResult.OK
    lid = r.lease_grant.id
    assert lid == box.index  # id 0 -> the entry's index
    assert box.apply(put(b"a", b"1", lid)).status == pb.CommandResult.OK
    assert box.apply(put(b"b", b"2", lid)).status == pb.CommandResult.OK
    assert box.apply(put(b"c", b"3")).status == pb.CommandResult.OK
    kv = box.sm.get(b"a")
    assert kv is not None and kv.lease == lid
    lease = box.sm.lease(lid)
    assert lease is not None and lease.keys == (b"a", b"b")
    # A put without a lease detaches the key.
    box.apply(put(b"b", b"2b"))
    lease = box.sm.lease(lid)
    assert lease is not None and lease.keys == (b"a",)
    rev_before = box.sm.revision()
    r = box.apply(revoke(lid))
    assert r.status == pb.CommandResult.OK and r.lease_revoke.deleted == 1
    assert box.sm.revision() == rev_before + 1
    assert box.sm.get(b"a") is None and box.sm.get(b"b") is not None
    assert box.sm.lease(lid) is None
    assert box.apply(revoke(lid)).status == pb.CommandResult.LEASE_NOT_FOUND


def test_lease_errors(box: _Box) -> None:
    assert box.apply(put(b"a", b"1", 77)).status == pb.CommandResult.LEASE_NOT_FOUND
    assert box.sm.get(b"a") is None
    assert box.apply(grant(0)).status == pb.CommandResult.INVALID
    assert box.apply(grant(5, 42)).lease_grant.id == 42
    assert box.apply(grant(5, 42)).status == pb.CommandResult.INVALID  # exists
    # A txn with a put on a missing lease fails as a whole, before any effect.
    txn = pb.Command(
        txn=pb.TxnRequest(
            success=[
                pb.RequestOp(put=pb.PutRequest(key=b"x", value=b"1")),
                pb.RequestOp(put=pb.PutRequest(key=b"y", value=b"1", lease=9)),
            ]
        )
    )
    assert box.apply(txn).status == pb.CommandResult.LEASE_NOT_FOUND
    assert box.sm.get(b"x") is None


def test_leases_survive_restart_and_snapshot(box: _Box, tmp_path: Path) -> None:
    lid = box.apply(grant(7)).lease_grant.id
    box.apply(put(b"k1", b"v", lid))
    box.apply(put(b"k2", b"v", lid))
    if box.kind == "leveldb":
        box.sm = box.open()
        lease = box.sm.lease(lid)
        assert lease is not None and lease.ttl == 7 and lease.keys == (b"k1", b"k2")
        kv = box.sm.get(b"k1")
        assert kv is not None and kv.lease == lid
    buf = io.BytesIO()
    box.sm.snapshot_data(buf)
    other = KVStateMachine.memory()
    buf.seek(0)
    other.restore(buf)
    lease = other.lease(lid)
    assert lease is not None and lease.keys == (b"k1", b"k2")
    kv = other.get(b"k2")
    assert kv is not None and kv.lease == lid
    assert other.history.floor == other.revision() + 1


def test_snapshot_without_leases_keeps_the_old_format(box: _Box) -> None:
    box.apply(put(b"a", b"1"))
    buf = io.BytesIO()
    box.sm.snapshot_data(buf)
    data = buf.getvalue()
    assert b"J" not in data[-17:-16] and data[-17:-16] == b"E"


def test_events_recorded_in_history(box: _Box) -> None:
    seen: list[int] = []
    box.sm.add_listener(lambda: seen.append(box.sm.revision()))
    box.apply(put(b"a", b"1"))
    box.apply(put(b"a", b"2"))
    box.apply(pb.Command(delete=pb.DeleteRequest(key=b"a")))
    box.apply(pb.Command(delete=pb.DeleteRequest(key=b"missing")))  # no change, no event
    evs, nxt = box.sm.history.read(1, b"a", b"a\x00")
    assert [(e.revision, e.type) for e in evs] == [(1, PUT), (2, PUT), (3, DELETE)]
    assert evs[1].prev is not None and evs[1].prev.value == b"1"
    assert nxt == 4
    assert seen == [1, 2, 3]


def _ev(rev: int, key: bytes = b"k", size: int = 0) -> KeyEvent:
    from raftd.kv.backend import KeyRecord

    return KeyEvent(rev, PUT, key, KeyRecord(b"x" * size, rev, rev, 1), None)


def test_history_bounds_drop_whole_revisions() -> None:
    h = EventHistory(0, max_events=5)
    h.append([_ev(1), _ev(1, b"j")])
    h.append([_ev(2), _ev(2, b"j"), _ev(2, b"i")])
    assert h.floor == 1 and len(h) == 5
    h.append([_ev(3)])  # over by one: revision 1 goes, whole
    assert h.floor == 2 and len(h) == 4
    with pytest.raises(LookupError):
        h.read(1, b"", None)
    evs, nxt = h.read(2, b"", None, limit=1)
    assert [e.revision for e in evs] == [2, 2, 2] and nxt == 3
    h2 = EventHistory(10, max_events=100, max_bytes=1000)
    h2.append([_ev(11, size=600)])
    h2.append([_ev(12, size=600)])
    assert h2.floor == 12
    h2.reset(50)
    assert h2.floor == 51 and len(h2) == 0 and h2.read(51, b"", None) == ([], 51)


def test_history_refuses_going_back() -> None:
    h = EventHistory(5)
    with pytest.raises(ValueError):
        h.append([_ev(5)])
