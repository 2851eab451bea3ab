"""The KV state machine: operations, revisions, transactions, exactly-once, snapshots."""

from __future__ import annotations

import io
import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.kv import commands as C
from raftd.kv.machine import ApplyResult, KVStateMachine, put_result_bytes
from raftd.kv.snapfmt import SnapshotFormatError
from raftd.storage.base import StorageWriteError
from raftd.wire.pb import kv_pb2 as pb
from raftd.wire.ranges import prefix_end
from tests.storage.helpers import seed_from_env

from .conftest import ApplyFault, Machine

OK = pb.CommandResult.OK


class Driver:
    """Feeds commands at consecutive log indexes."""

    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.index = sm.applied_index()

    def __call__(self, data: bytes) -> pb.CommandResult:
        r = self.apply(data)
        assert r.result is not None
        return r.result

    def apply(self, data: bytes) -> ApplyResult:
        self.index += 1
        return self.sm.apply(self.index, data)


def kv(sm: KVStateMachine, key: bytes) -> tuple[bytes, int, int, int] | None:
    r = sm.get(key)
    return None if r is None else (r.value, r.create_revision, r.mod_revision, r.version)


# -- basic operations ------------------------------------------------------------------
def test_put_get_revisions_versions(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    assert do(C.put(b"a", b"1")).revision == 1
    assert do(C.put(b"b", b"2")).revision == 2
    r = do(C.encode(pb.Command(put=pb.PutRequest(key=b"a", value=b"3", prev_kv=True))))
    assert r.revision == 3 and r.put.prev_kv.value == b"1"
    assert kv(sm, b"a") == (b"3", 1, 3, 2)
    assert kv(sm, b"b") == (b"2", 2, 2, 1)
    assert kv(sm, b"zz") is None
    sm = machine.restart()
    assert (sm.applied_index(), sm.revision()) == (3, 3)
    assert kv(sm, b"a") == (b"3", 1, 3, 2)


def test_delete_and_recreate(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    do(C.put(b"a", b"1"))
    do(C.put(b"a", b"2"))
    r = do(C.delete(b"a"))
    assert r.delete.deleted and r.revision == 3
    r = do(C.delete(b"a"))  # nothing to delete: no new revision
    assert not r.delete.deleted and r.revision == 3
    do(C.put(b"a", b"new"))
    assert kv(sm, b"a") == (b"new", 4, 4, 1)


def test_delete_range_and_range(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    for k in [b"a", b"app/1", b"app/2", b"app/3", b"apq", b"b"]:
        do(C.put(k, k.upper()))
    rr = sm.range(b"app/", prefix_end(b"app/"))
    assert [x.key for x in rr.kvs] == [b"app/1", b"app/2", b"app/3"] and not rr.more
    rr = sm.range(b"app/", prefix_end(b"app/"), limit=2)
    assert [x.key for x in rr.kvs] == [b"app/1", b"app/2"] and rr.more
    assert [x.key for x in sm.range(b"apq", b"\x00").kvs] == [b"apq", b"b"]
    assert [x.key for x in sm.range(b"a").kvs] == [b"a"]
    r = do(C.delete_range(b"app/", prefix_end(b"app/")))
    assert r.delete_range.deleted == 3 and r.revision == 7
    assert [x.key for x in sm.range(b"\x01", b"\x00").kvs] == [b"a", b"apq", b"b"]


def test_prefix_end() -> None:
    assert prefix_end(b"abc") == b"abd"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"


# -- compare-and-swap ------------------------------------------------------------------
def test_cas_on_value_revision_and_absence(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    r = do(C.cas(b"k", b"v1", absent=True))
    assert r.cas.succeeded and kv(sm, b"k") == (b"v1", 1, 1, 1)
    r = do(C.cas(b"k", b"v2", absent=True))
    assert not r.cas.succeeded and r.cas.current.value == b"v1" and r.revision == 1
    r = do(C.cas(b"k", b"v2", value=b"nope"))
    assert not r.cas.succeeded
    r = do(C.cas(b"k", b"v2", value=b"v1"))
    assert r.cas.succeeded and r.revision == 2
    r = do(C.cas(b"k", b"v3", mod_revision=1))
    assert not r.cas.succeeded and r.cas.current.mod_revision == 2
    r = do(C.cas(b"k", b"v3", mod_revision=2))
    assert r.cas.succeeded and kv(sm, b"k") == (b"v3", 1, 3, 3)
    r = do(C.cas(b"missing", b"x", mod_revision=0))  # mod_revision 0 == absent
    assert r.cas.succeeded


# -- transactions ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "result", "operand", "expect"),
    [
        ("value", "=", b"v2", True),
        ("value", "!=", b"v2", False),
        ("value", ">", b"v1", True),
        ("value", "<", b"v1", False),
        ("version", "=", 2, True),
        ("version", ">", 2, False),
        ("version", "<", 3, True),
        ("create", "=", 1, True),
        ("create", "!=", 1, False),
        ("mod", "=", 3, True),
        ("mod", "<", 3, False),
        ("mod", ">", 2, True),
    ],
)
def test_txn_compares(
    machine: Machine, target: str, result: str, operand: int | bytes, expect: bool
) -> None:
    sm = machine.sm
    do = Driver(sm)
    do(C.put(b"k", b"v1"))
    do(C.put(b"other", b"o"))
    do(C.put(b"k", b"v2"))  # k: value v2, create 1, mod 3, version 2
    r = do(
        C.txn(
            [C.compare(b"k", target, result, operand)],
            [C.op_put(b"res", b"then")],
            [C.op_put(b"res", b"else")],
        )
    )
    assert r.txn.succeeded is expect
    assert kv(sm, b"res") is not None
    assert sm.get(b"res").value == (b"then" if expect else b"else")  # type: ignore[union-attr]


def test_txn_on_missing_key(machine: Machine) -> None:
    do = Driver(machine.sm)
    # As etcd: value compares on a missing key fail; version/create/mod compare as 0.
    r = do(C.txn([C.compare(b"nope", "value", "!=", b"x")], [C.op_put(b"a", b"1")]))
    assert not r.txn.succeeded and r.revision == 0
    r = do(C.txn([C.compare(b"nope", "version", "=", 0)], [C.op_put(b"a", b"1")]))
    assert r.txn.succeeded and r.revision == 1


def test_txn_lease_and_range_compares(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    assert do(C.encode(pb.Command(lease_grant=pb.LeaseGrantRequest(ttl=60, id=7)))).status == OK
    do(C.encode(pb.Command(put=pb.PutRequest(key=b"r/a", value=b"1", lease=7))))
    do(C.put(b"r/b", b"2"))  # r/a: lease 7, mod 1; r/b: no lease, mod 2

    def holds(*cs: pb.Compare) -> bool:
        r = do(C.txn(list(cs), [C.op_get(b"r/a")]))
        assert r.status == OK
        return r.txn.succeeded

    eq, gt, lt, ne = pb.Compare.EQUAL, pb.Compare.GREATER, pb.Compare.LESS, pb.Compare.NOT_EQUAL
    lease, mod, value = pb.Compare.LEASE, pb.Compare.MOD, pb.Compare.VALUE
    assert holds(pb.Compare(key=b"r/a", target=lease, result=eq, lease=7))
    assert not holds(pb.Compare(key=b"r/b", target=lease, result=eq, lease=7))
    assert holds(pb.Compare(key=b"r/b", target=lease, result=eq, lease=0))
    assert holds(pb.Compare(key=b"nope", target=lease, result=eq, lease=0))
    # over a range: every key must satisfy it
    rng = {"key": b"r/", "range_end": b"r0"}
    assert holds(pb.Compare(**rng, target=mod, result=lt, mod_revision=3))  # type: ignore[arg-type]
    assert not holds(pb.Compare(**rng, target=mod, result=gt, mod_revision=1))  # type: ignore[arg-type]
    assert not holds(pb.Compare(**rng, target=lease, result=eq, lease=7))  # type: ignore[arg-type]
    assert holds(pb.Compare(**rng, target=value, result=ne, value=b"3"))  # type: ignore[arg-type]
    # an empty range compares a missing key: a value compare fails, others see 0
    empty = {"key": b"s/", "range_end": b"s0"}
    assert holds(pb.Compare(**empty, target=mod, result=eq, mod_revision=0))  # type: ignore[arg-type]
    assert not holds(pb.Compare(**empty, target=value, result=ne, value=b"x"))  # type: ignore[arg-type]
    # "\0" as range_end: every key from `key` on
    assert not holds(pb.Compare(key=b"r/b", range_end=b"\0", target=mod, result=lt, mod_revision=2))
    assert holds(pb.Compare(key=b"r/b", range_end=b"\0", target=mod, result=lt, mod_revision=3))


def test_txn_ops_run_in_order_and_share_one_revision(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    do(C.put(b"x/1", b"old"))
    r = do(
        C.txn(
            [C.compare(b"x/1", "version", "=", 1)],
            [
                C.op_put(b"x/2", b"two"),
                C.op_get(b"x/", prefix_end(b"x/")),
                C.op_delete(b"x/1"),
                C.op_get(b"x/", prefix_end(b"x/")),
                C.op_put(b"x/3", b"three"),
                C.op_delete_range(b"x/3", b"x/4"),
                C.op_put(b"x/2", b"two again"),
            ],
        )
    )
    assert r.txn.succeeded and r.revision == 2
    got = [list(x.range.kvs) for x in r.txn.responses if x.WhichOneof("response") == "range"]
    assert [k.key for k in got[0]] == [b"x/1", b"x/2"]
    assert [k.key for k in got[1]] == [b"x/2"]
    assert got[1][0].mod_revision == 2 and got[1][0].version == 1
    assert kv(sm, b"x/2") == (b"two again", 2, 2, 2)
    assert kv(sm, b"x/3") is None and kv(sm, b"x/1") is None


def test_read_only_txn_does_not_bump_revision(machine: Machine) -> None:
    do = Driver(machine.sm)
    do(C.put(b"a", b"1"))
    r = do(C.txn([], [C.op_get(b"a")]))
    assert r.revision == 1 and r.txn.responses[0].range.kvs[0].value == b"1"


# -- invalid input ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff garbage",
        C.encode(pb.Command(), client_id=b"c", seq=1),
        C.put(b"", b"empty key"),
        C.encode(pb.Command(cas=pb.CompareAndSwapRequest(key=b"k", new_value=b"v"))),
        C.txn([C.compare(b"a", "version", "=", 0)], [C.op_put(b"ok", b"1"), C.op_put(b"", b"")]),
        C.put(b"k", b"v", client_id=b"c", seq=0),
    ],
)
def test_invalid_commands_are_results_not_exceptions(machine: Machine, data: bytes) -> None:
    sm = machine.sm
    do = Driver(sm)
    r = do(data)
    assert r.status == pb.CommandResult.INVALID and r.error
    assert sm.applied_index() == 1 and sm.revision() == 0
    assert sm.range(b"\x00", b"\x00").kvs == []


# -- exactly-once ----------------------------------------------------------------------
def test_duplicate_returns_cached_result_without_reapplying(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    first = do.apply(C.put(b"k", b"v", client_id=b"cli", seq=1))
    assert not first.duplicate
    do(C.put(b"other", b"x"))
    sm = machine.restart()
    do = Driver(sm)
    again = do.apply(C.put(b"k", b"v", client_id=b"cli", seq=1))
    assert again.duplicate and again.result == first.result
    assert kv(sm, b"k") == (b"v", 1, 1, 1)  # not applied twice
    assert sm.revision() == 2
    nxt = do.apply(C.put(b"k", b"w", client_id=b"cli", seq=2))
    assert not nxt.duplicate and kv(sm, b"k") == (b"w", 1, 3, 2)
    stale = do(C.put(b"k", b"old", client_id=b"cli", seq=1))
    assert stale.status == pb.CommandResult.STALE_SEQUENCE
    assert kv(sm, b"k") == (b"w", 1, 3, 2)
    # Sessions are per client.
    assert not do.apply(C.put(b"k", b"z", client_id=b"other", seq=1)).duplicate
    session = sm.session(b"cli")
    assert session is not None and session.last_seq == 2


def test_duplicate_within_one_batch(machine: Machine) -> None:
    sm = machine.sm
    cmd = C.put(b"k", b"v", client_id=b"c", seq=7)
    out = sm.apply_many([(1, cmd), (2, cmd), (3, b""), (4, cmd)])
    assert [r.duplicate for r in out] == [False, True, False, True]
    assert out[2].result is None
    assert kv(sm, b"k") == (b"v", 1, 1, 1) and sm.applied_index() == 4


# -- apply bookkeeping -----------------------------------------------------------------
def test_apply_index_rules(machine: Machine) -> None:
    sm = machine.sm
    sm.apply_many([(1, C.put(b"a", b"1")), (2, b""), (3, C.put(b"b", b"2"))])
    assert sm.applied_index() == 3
    # Already applied: skipped, never applied twice.
    out = sm.apply_many([(2, C.put(b"a", b"again")), (3, C.put(b"a", b"again")), (4, b"")])
    assert [r.skipped for r in out] == [True, True, False]
    assert kv(sm, b"a") == (b"1", 1, 1, 1)
    with pytest.raises(ValueError, match="gap"):
        sm.apply_many([(5, b""), (7, b"")])
    assert sm.applied_index() == 4  # nothing of the bad batch was applied
    sm = machine.restart()
    assert sm.applied_index() == 4 and sm.revision() == 2


def test_failed_commit_leaves_state_unchanged(tmp_path: os.PathLike[str]) -> None:
    m = Machine("leveldb", tmp_path)  # type: ignore[arg-type]
    fault = ApplyFault()
    sm = m.open(fault)
    do = Driver(sm)
    do(C.put(b"a", b"1"))
    fault.armed = True
    with pytest.raises(StorageWriteError):
        do(C.put(b"a", b"2"))
    assert sm.applied_index() == 1 and sm.revision() == 1
    assert kv(sm, b"a") == (b"1", 1, 1, 1)
    fault.armed = False
    sm = m.restart()
    assert sm.applied_index() == 1 and kv(sm, b"a") == (b"1", 1, 1, 1)
    m.close()


# -- snapshots -------------------------------------------------------------------------
def random_workload(rng: random.Random, n: int) -> list[bytes]:
    keys = [b"k%02d" % i for i in range(30)]
    out = []
    for i in range(n):
        k = rng.choice(keys)
        cid = rng.choice([b"", b"c1", b"c2"])
        seq = i + 1 if cid else 0
        x = rng.random()
        if x < 0.4:
            out.append(C.put(k, rng.randbytes(rng.randint(0, 20)), client_id=cid, seq=seq))
        elif x < 0.5:
            out.append(C.delete(k, client_id=cid, seq=seq))
        elif x < 0.55:
            out.append(C.delete_range(k, rng.choice(keys), client_id=cid, seq=seq))
        elif x < 0.7:
            out.append(C.cas(k, b"cas", mod_revision=rng.randint(0, i + 1)))
        elif x < 0.8:
            out.append(out[rng.randrange(len(out))] if out else b"")  # retries
        elif x < 0.85:
            out.append(b"")
        else:
            out.append(
                C.txn(
                    [C.compare(k, "version", rng.choice(["=", "<", ">"]), rng.randint(0, 3))],
                    [C.op_put(rng.choice(keys), b"t"), C.op_get(k, b"\x00", 3)],
                    [C.op_delete_range(k, prefix_end(k))],
                    client_id=cid,
                    seq=seq,
                )
            )
    return out


def snapshot_bytes(sm: KVStateMachine) -> bytes:
    buf = io.BytesIO()
    sm.snapshot_data(buf)
    return buf.getvalue()


def test_memory_and_leveldb_are_deterministic_twins(tmp_path: os.PathLike[str]) -> None:
    """The same log gives byte-identical results and snapshots on both backends."""
    work = random_workload(random.Random(seed_from_env()), 400)
    mem = KVStateMachine.memory()
    m = Machine("leveldb", tmp_path)  # type: ignore[arg-type]
    disk = m.sm
    for lo in range(0, len(work), 37):
        batch = [(i + 1, d) for i, d in enumerate(work[lo : lo + 37], start=lo)]
        a = mem.apply_many(batch)
        b = disk.apply_many(batch)
        assert a == b
    assert snapshot_bytes(mem) == snapshot_bytes(disk)
    assert snapshot_bytes(m.restart()) == snapshot_bytes(mem)
    m.close()


def test_snapshot_restore_roundtrip(machine: Machine) -> None:
    rng = random.Random(7)
    src = KVStateMachine.memory()
    src.apply_many([(i + 1, d) for i, d in enumerate(random_workload(rng, 200))])
    data = snapshot_bytes(src)
    sm = machine.sm
    Driver(sm)(C.put(b"doomed", b"gone after restore"))
    sm.restore(io.BytesIO(data), index=200)
    assert sm.applied_index() == 200 and sm.revision() == src.revision()
    assert snapshot_bytes(sm) == data
    sm = machine.restart()
    assert snapshot_bytes(sm) == data
    assert sm.get(b"doomed") is None
    # Sessions came along: a retry of the last command of c1 is a duplicate.
    s = sm.session(b"c1")
    assert s is not None and s == src.session(b"c1")


def test_restore_checks_before_touching_anything(machine: Machine) -> None:
    sm = machine.sm
    Driver(sm)(C.put(b"keep", b"me"))
    src = KVStateMachine.memory()
    src.apply(1, C.put(b"x", b"y"))
    data = snapshot_bytes(src)
    with pytest.raises(SnapshotFormatError, match="index"):
        sm.restore(io.BytesIO(data), index=5)
    with pytest.raises(SnapshotFormatError, match="magic"):
        sm.restore(io.BytesIO(b"not a snapshot at all"))
    assert sm.get(b"keep") is not None and not sm.needs_restore()


def test_truncated_snapshot_leaves_machine_needing_restore(machine: Machine) -> None:
    src = KVStateMachine.memory()
    src.apply_many([(i, C.put(b"k%d" % i, b"v")) for i in range(1, 50)])
    data = snapshot_bytes(src)
    sm = machine.sm
    with pytest.raises(SnapshotFormatError):
        sm.restore(io.BytesIO(data[:-5]))
    assert sm.needs_restore()
    sm = machine.restart()
    if machine.kind == "leveldb":
        assert sm.needs_restore()  # the flag is durable
    sm.restore(io.BytesIO(data), index=49)
    assert not sm.needs_restore() and sm.applied_index() == 49


def test_snapshot_view_is_frozen(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    do(C.put(b"a", b"1"))
    view = sm.snapshot_view()
    do(C.put(b"a", b"2"))
    do(C.put(b"b", b"3"))
    buf = io.BytesIO()
    view.write(buf)
    view.close()
    assert view.index == 1
    other = KVStateMachine.memory()
    other.restore(io.BytesIO(buf.getvalue()), index=1)
    assert kv(other, b"a") == (b"1", 1, 1, 1) and other.get(b"b") is None


def test_apply_result_is_ok_by_default(machine: Machine) -> None:
    r = Driver(machine.sm)(C.put(b"a", b"1"))
    assert r.status == OK


def test_corrupt_record_is_a_named_error(tmp_path: os.PathLike[str]) -> None:
    from raftd.kv.backend import LevelDBKVBackend
    from raftd.storage.base import CorruptionError

    m = Machine("leveldb", tmp_path)  # type: ignore[arg-type]
    Driver(m.sm)(C.put(b"key", b"value"))
    assert m.db is not None
    b = LevelDBKVBackend(m.db, "/raft/kv")
    raw_key = b._pk + b"key"
    v = bytearray(m.db.state.raw.get(raw_key))
    v[-6] ^= 0x10
    m.db.state.raw.put(raw_key, bytes(v))
    # Reopened: the running machine may answer a recent write from its cache.
    with pytest.raises(CorruptionError, match="bad key record") as ei:
        m.restart().get(b"key")
    assert ei.value.namespace == "/raft/kv" and ei.value.key == raw_key
    # A snapshot never carries it on to a follower.
    with pytest.raises(CorruptionError, match="bad key record") as ei:
        m.sm.snapshot_data(io.BytesIO())
    assert ei.value.key == raw_key
    m.close()


def test_a_view_gives_its_records_as_stored_too(machine: Machine) -> None:
    from raftd.kv.backend import record_payload

    do = Driver(machine.sm)
    assert do(C.encode(pb.Command(lease_grant=pb.LeaseGrantRequest(ttl=60, id=7)))).status == OK
    for i in range(50):
        do(C.put(b"k%02d" % i, b"v" * i))
    put = pb.Command(put=pb.PutRequest(key=b"leased", value=b"x", lease=7))
    assert do(C.encode(put)).status == OK
    view = machine.sm.snapshot_view()
    try:
        keys = list(view._view.keys())
        assert any(r.lease == 7 for _, r in keys)
        assert list(view._view.stored_keys()) == [(k, record_payload(r)) for k, r in keys]
    finally:
        view.close()


def test_held_notifications_are_made_once_on_release(machine: Machine) -> None:
    src = KVStateMachine.memory()
    src.apply(1, C.put(b"k", b"v"))
    data = snapshot_bytes(src)
    sm = machine.sm
    calls: list[str] = []
    sm.add_listener(lambda: calls.append("events"))
    sm.add_lease_listener(lambda: calls.append("leases"))
    sm.hold_notifications()
    sm.restore(io.BytesIO(data), index=1)
    Driver(sm)(C.put(b"k2", b"v2"))
    assert calls == []  # held: a restore on a worker thread calls nobody there
    sm.release_notifications()
    assert sorted(calls) == ["events", "leases"]
    Driver(sm)(C.put(b"k3", b"v3"))
    assert calls[-1] == "events"  # no longer held


def _put_workload(rng: random.Random, n: int) -> list[bytes]:
    """Puts of every shape (with and without a lease, asking ``prev_kv`` or not, an empty
    key, replacing a leased key), among the commands that change what a put sees:
    deletes, lease grants and revokes, transactions, retries and stale seqs."""
    keys = [b"k%02d" % i for i in range(12)]
    leases = [101, 102, 0]
    out: list[bytes] = []
    for i in range(n):
        k = rng.choice(keys)
        cid = rng.choice([b"", b"c1", b"c2"])
        seq = i + 1 if cid else 0
        x = rng.random()
        if x < 0.55:
            req = pb.PutRequest(
                key=k if rng.random() < 0.97 else b"",
                value=rng.randbytes(rng.randint(0, 12)),
                prev_kv=rng.random() < 0.2,
                lease=rng.choice(leases) if rng.random() < 0.3 else 0,
            )
            out.append(C.encode(pb.Command(put=req), client_id=cid, seq=seq))
        elif x < 0.62:
            out.append(C.delete(k, client_id=cid, seq=seq))
        elif x < 0.7:
            grant = pb.LeaseGrantRequest(ttl=30, id=rng.choice(leases[:2]))
            out.append(C.encode(pb.Command(lease_grant=grant), client_id=cid, seq=seq))
        elif x < 0.76:
            revoke = pb.LeaseRevokeRequest(id=rng.choice(leases[:2]))
            out.append(C.encode(pb.Command(lease_revoke=revoke), client_id=cid, seq=seq))
        elif x < 0.84:
            txn = C.txn([], [C.op_put(rng.choice(keys), b"t")], [], client_id=cid, seq=seq)
            out.append(txn)
        elif x < 0.94:
            out.append(out[rng.randrange(len(out))] if out else b"")  # retries, stale seqs
        else:
            out.append(b"")
    return out


def test_plain_puts_match_the_general_executor(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Puts with no lease involved and no ``prev_kv`` take a shorter path than other
    commands: the same log gives the same results, sessions, leases (and the keys each
    holds), watch events and snapshot as with every put taken by the general executor."""
    import raftd.kv.machine as machine_mod

    work = _put_workload(random.Random(seed_from_env()), 1500)
    plain = machine_mod._plain_put
    taken = [0, 0]  # short path taken, declined

    def counting(*args: object) -> object:
        res = plain(*args)  # type: ignore[arg-type]
        taken[res is None] += 1
        return res

    general = KVStateMachine.memory()
    fast = machine.sm
    for lo in range(0, len(work), 23):
        batch = [(i + 1, d) for i, d in enumerate(work[lo : lo + 23], start=lo)]
        monkeypatch.setattr(machine_mod, "_plain_put", lambda *a: None)
        expected = general.apply_many(batch)
        monkeypatch.setattr(machine_mod, "_plain_put", counting)
        got = fast.apply_many(batch)
        assert got == expected, f"entries {lo + 1}..{lo + len(batch)}"
        assert dict(fast.leases()) == dict(general.leases())
        assert [r.result.SerializeToString(deterministic=True) for r in got if r.result] == [
            r.result.SerializeToString(deterministic=True) for r in expected if r.result
        ]
    assert taken[0] > 300 and taken[1] > 100, taken  # both paths were exercised
    events = general.history.read(1, b"", None, limit=10**6)[0]
    assert len(events) > 500
    assert fast.history.read(1, b"", None, limit=10**6)[0] == events
    assert snapshot_bytes(fast) == snapshot_bytes(general)
    assert snapshot_bytes(machine.restart()) == snapshot_bytes(general)


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_a_plain_puts_stored_result_is_protobufs_serialization(rev: int) -> None:
    """A session keeps a plain put's result as bytes built without protobuf: they are the
    bytes protobuf's deterministic serialization writes, and parse back to the result."""
    expected = pb.CommandResult(revision=rev)
    expected.put.SetInParent()
    got = put_result_bytes(rev)
    assert got == expected.SerializeToString(deterministic=True)
    assert pb.CommandResult.FromString(got) == expected
