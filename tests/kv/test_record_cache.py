"""The applier's record cache: its bounds and eviction, and that a state machine behind
it answers exactly as one without it (same results, same snapshots), forgets everything
a restore replaces, and never learns a write that did not commit."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from raftd.kv import commands as C
from raftd.kv.backend import KeyRecord, LevelDBKVBackend, MemoryKVBackend, Session
from raftd.kv.cache import _OVERHEAD, MISS, RecordCache
from raftd.kv.machine import KVStateMachine
from raftd.storage.base import StorageWriteError
from raftd.storage.leveldb import LevelDB
from raftd.wire.pb import kv_pb2 as pb
from tests.storage.helpers import seed_from_env

from .conftest import NS, ApplyFault, Machine
from .test_kv_machine import Driver, random_workload, snapshot_bytes


def rec(value: bytes, rev: int = 1) -> KeyRecord:
    return KeyRecord(value, rev, rev, 1)


# -- the cache alone ---------------------------------------------------------------------
def test_miss_is_not_absent() -> None:
    c = RecordCache()
    assert c.key(b"a") is MISS
    c.fill_key(b"a", None)
    assert c.key(b"a") is None
    c.committed({b"a": rec(b"1")}, {})
    assert c.key(b"a") == rec(b"1")
    assert (c.hits, c.misses) == (2, 1)


def test_bytes_bound_evicts_the_oldest_written_first() -> None:
    one = _OVERHEAD + 2 + 100  # overhead + key + value
    c = RecordCache(max_bytes=3 * one)
    for k in (b"k1", b"k2", b"k3"):
        c.committed({k: rec(b"v" * 100)}, {})
    assert len(c) == 3 and c.size_bytes == 3 * one
    c.committed({b"k1": rec(b"w" * 100, 2)}, {})  # rewritten: now the newest
    c.committed({b"k4": rec(b"v" * 100)}, {})
    assert c.key(b"k2") is MISS  # the oldest written went first
    assert all(c.key(k) is not MISS for k in (b"k1", b"k3", b"k4"))
    assert c.size_bytes == 3 * one
    c.committed({b"k3": None}, {})  # a delete is a known absence without a value
    assert c.key(b"k3") is None and c.size_bytes == 2 * one + _OVERHEAD + 2
    c.clear()
    assert len(c) == 0 and c.size_bytes == 0 and c.key(b"k1") is MISS


def test_key_or_load_fills_only_the_applier_and_keeps_the_bound() -> None:
    one = _OVERHEAD + 2 + 100
    c = RecordCache(max_bytes=2 * one)
    loads: list[bytes] = []

    def load(k: bytes) -> KeyRecord | None:
        loads.append(k)
        return None if k == b"k0" else rec(b"v" * 100)

    assert c.key_or_load(b"k1", load, fill=False) == rec(b"v" * 100)
    assert c.key(b"k1") is MISS  # a reader never fills
    for k in (b"k1", b"k2", b"k3"):
        assert c.key_or_load(k, load, fill=True) == rec(b"v" * 100)
    assert c.key_or_load(b"k3", load, fill=True) == rec(b"v" * 100)  # a hit: no load
    assert loads == [b"k1", b"k1", b"k2", b"k3"]
    assert c.key(b"k1") is MISS and c.size_bytes == 2 * one  # the oldest filled went
    assert c.key_or_load(b"k0", load, fill=True) is None
    assert c.key(b"k0") is None  # a known absence
    assert c.size_bytes == one + _OVERHEAD + 2
    assert (c.hits, c.misses) == (2, 7)


def test_zero_bounds_hold_nothing() -> None:
    c = RecordCache(max_bytes=0, max_sessions=0)
    c.committed({b"a": rec(b"1")}, {b"c": Session(1, b"")})
    c.fill_key(b"b", None)
    assert c.key(b"a") is MISS and c.key(b"b") is MISS and c.session(b"c") is MISS
    assert c.size_bytes == 0
    with pytest.raises(ValueError):
        RecordCache(max_bytes=-1)


def test_sessions_are_bounded_by_count() -> None:
    c = RecordCache(max_sessions=2)
    for i in range(3):
        c.committed({}, {b"c%d" % i: Session(i + 1, b"r")})
    assert c.session(b"c0") is MISS
    assert c.session(b"c2") == Session(3, b"r")
    c.fill_session(b"c1", Session(9, b""))  # refreshed: c2 is now the oldest
    c.fill_session(b"c3", Session(1, b""))
    assert c.session(b"c2") is MISS and c.session(b"c1") == Session(9, b"")


def test_the_default_bound_holds_a_working_set_of_ten_thousand_keys() -> None:
    """10,000 keys of 16 bytes with 100-byte values (the benchmarks' key space) stay
    cached: applying a put over any of them reads no LevelDB."""
    c = RecordCache()
    for i in range(0, 10_000, 100):
        c.committed({b"key-%012d" % j: rec(b"v" * 100, j + 1) for j in range(i, i + 100)}, {})
    assert len(c) == 10_000
    assert c.key(b"key-%012d" % 0) == rec(b"v" * 100, 1)


# -- behind a state machine ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "leveldb"])
def test_cache_size_never_changes_an_answer(kind: str, tmp_path: Path) -> None:
    """Caches that hold everything, that evict constantly, and none at all: the same
    log gives the same results and byte-identical snapshots."""
    work = random_workload(random.Random(seed_from_env()), 400)
    dbs: list[LevelDB] = []

    def machine(cache: RecordCache) -> KVStateMachine:
        if kind == "memory":
            return KVStateMachine(MemoryKVBackend(), cache)
        db = LevelDB(tmp_path / f"d{len(dbs)}")
        dbs.append(db)
        return KVStateMachine(LevelDBKVBackend(db, NS), cache)

    sms = [
        machine(RecordCache()),
        machine(RecordCache(max_bytes=400, max_sessions=1)),
        machine(RecordCache(max_bytes=0, max_sessions=0)),
    ]
    for lo in range(0, len(work), 23):
        batch = [(i + 1, d) for i, d in enumerate(work[lo : lo + 23], start=lo)]
        results = [sm.apply_many(batch) for sm in sms]
        assert results[0] == results[1] == results[2]
    snaps = [snapshot_bytes(sm) for sm in sms]
    assert snaps[0] == snaps[1] == snaps[2]
    assert sms[0].cache.hits > 0 and len(sms[2].cache) == 0
    for db in dbs:
        db.close()


def test_writes_hit_the_cache_and_reads_do_not_fill_it(machine: Machine) -> None:
    sm = machine.sm
    do = Driver(sm)
    do(C.put(b"hot", b"1", client_id=b"c", seq=1))
    hits = sm.cache.hits
    do(C.put(b"hot", b"2", client_id=b"c", seq=2))
    assert sm.cache.hits == hits + 1  # the previous record came from memory
    n = len(sm.cache)
    if machine.kind == "leveldb":
        cold = machine.restart()  # an empty cache over the same data
        kv = cold.get(b"hot")
        assert kv is not None and kv.value == b"2" and kv.version == 2
        assert len(cold.cache) == 0  # a reader looks up, never fills
        assert cold.session(b"c") is not None and cold.cache.session(b"c") is MISS
    else:
        assert len(sm.cache) == n


def test_restore_forgets_every_cached_record(machine: Machine) -> None:
    src = KVStateMachine.memory()
    Driver(src)(C.put(b"other", b"x"))
    data = snapshot_bytes(src)
    sm = machine.sm
    do = Driver(sm)
    do(C.put(b"doomed", b"1", client_id=b"c", seq=5))
    assert sm.cache.key(b"doomed") is not MISS and sm.cache.session(b"c") is not MISS
    sm.restore(io.BytesIO(data), index=1)
    assert sm.get(b"doomed") is None and sm.session(b"c") is None
    assert len(sm.cache) == 0
    # The next write of the key starts over (version 1), as the snapshot says.
    r = Driver(sm)(C.put(b"doomed", b"2", client_id=b"c", seq=1))
    assert r.status == pb.CommandResult.OK
    kv = sm.get(b"doomed")
    assert kv is not None and kv.version == 1


def test_a_failed_commit_never_reaches_the_cache(tmp_path: Path) -> None:
    m = Machine("leveldb", tmp_path)
    fault = ApplyFault()
    sm = m.open(fault)
    do = Driver(sm)
    do(C.put(b"a", b"1", client_id=b"c", seq=1))
    fault.armed = True
    with pytest.raises(StorageWriteError):
        do(C.put(b"a", b"2", client_id=b"c", seq=2))
    cached = sm.cache.key(b"a")
    assert isinstance(cached, KeyRecord) and cached.value == b"1"
    s = sm.cache.session(b"c")
    assert isinstance(s, Session) and s.last_seq == 1
    m.close()
