"""Snapshot files, the snapshot policy, and crash-safe snapshot install."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftd.kv import commands as C
from raftd.kv.machine import KVStateMachine
from raftd.storage.base import CorruptionError, SnapshotCancelled, StorageWriteError
from raftd.storage.leveldb import LevelDB, LevelDBStorage
from raftd.storage.memory import MemoryRaftStorage
from raftd.storage.snapshots import (
    PRESETS,
    SnapshotJob,
    SnapshotPolicy,
    SnapshotStore,
    Snapshotter,
    install_snapshot,
    namespace_slug,
    recover,
    restore_pending_install,
)

from .helpers import state_of

NS = "/raft/cron"
META = SnapshotMetadata(index=42, term=3, conf_state=ConfState(("a", "b"), ("c",)))


# -- the file store --------------------------------------------------------------------
def test_file_roundtrip_and_layout(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "s", NS)
    body = os.urandom(3 << 20)
    path = st.write_bytes(META, body)
    assert path.name == "3-42.snap"
    info = st.verify(3, 42)
    assert info.metadata == META and info.body_length == len(body)
    assert st.load(3, 42) == Snapshot(META, body)
    with st.open_data(3, 42) as f:
        assert f.read(10) == body[:10]
        assert f.read() == body[10:]
        assert f.read() == b""
    assert st.files() == [(3, 42)]
    assert not [n for n in os.listdir(st.directory) if n.endswith(".tmp")]


@pytest.mark.parametrize("damage", ["flip_body", "flip_header", "truncate", "append", "rename"])
def test_damaged_file_is_detected(tmp_path: Path, damage: str) -> None:
    st = SnapshotStore(tmp_path / "s", NS)
    path = st.write_bytes(META, b"payload" * 1000)
    data = bytearray(path.read_bytes())
    if damage == "flip_body":
        data[3000] ^= 1
    elif damage == "flip_header":
        data[14] ^= 1
    elif damage == "truncate":
        data = data[:-100]
    elif damage == "append":
        data += b"x"
    path.write_bytes(bytes(data))
    term, index = 3, 42
    if damage == "rename":
        path.rename(st.path(3, 43))
        index = 43
    with pytest.raises(CorruptionError) as ei:
        st.load(term, index)
    assert ei.value.namespace == NS and ei.value.index == index


def test_namespace_slug() -> None:
    assert namespace_slug("/raft/cron").startswith("raft-cron-")
    assert namespace_slug("/raft/cron") != namespace_slug("raft-cron")
    assert namespace_slug("/") != namespace_slug("//")
    assert "/" not in namespace_slug("../../etc")


def test_retain_never_drops_the_pinned_one(tmp_path: Path) -> None:
    st = SnapshotStore(tmp_path / "s", NS)
    for i in range(1, 7):
        st.write_bytes(SnapshotMetadata(i, 1, ConfState()), b"x")
    assert st.retain(2, pin=(1, 1)) == [(1, 2), (1, 3), (1, 4)]
    assert st.files() == [(1, 1), (1, 5), (1, 6)]


# -- policy ----------------------------------------------------------------------------
def test_policy_entries_or_time_whichever_first() -> None:
    p = SnapshotPolicy(entries=100, interval_s=10.0, trailing=30)
    assert not p.due(applied=50, snapshot_index=0, now=5.0, last_at=0.0)
    assert p.due(applied=100, snapshot_index=0, now=5.0, last_at=0.0)  # by entries
    assert p.due(applied=1, snapshot_index=0, now=10.0, last_at=0.0)  # by time
    assert not p.due(applied=7, snapshot_index=7, now=99.0, last_at=0.0)  # nothing new
    assert p.compact_index(100) == 70 and p.compact_index(10) == 0
    with pytest.raises(ValueError):
        SnapshotPolicy(entries=0)


def test_policy_byte_rule_waits_for_the_log_to_outgrow_the_last_snapshot() -> None:
    p = SnapshotPolicy(entries=100, interval_s=10.0, trailing=30, growth=1.0)

    def due(
        policy: SnapshotPolicy = p,
        applied: int = 300,
        now: float = 1.0,
        log_bytes: int = 0,
        snapshot_bytes: int = 1000,
    ) -> bool:
        return policy.due(
            applied=applied,
            snapshot_index=100,
            now=now,
            last_at=0.0,
            log_bytes=log_bytes,
            snapshot_bytes=snapshot_bytes,
        )

    assert not due(log_bytes=999)  # enough entries, too few bytes
    assert due(log_bytes=1000)
    assert not due(now=10.0)  # the time rule waits for bytes too
    assert due(applied=150, now=10.0, log_bytes=1000)  # by time, with enough bytes
    assert not due(applied=150, log_bytes=10**6)  # too few entries
    assert due(snapshot_bytes=0)  # no snapshot size known yet
    assert due(SnapshotPolicy(entries=100, growth=0.0))
    with pytest.raises(ValueError):
        SnapshotPolicy(growth=-1.0)


def test_snapshotter_counts_the_snapshot_and_the_log_since(node: Node) -> None:
    _, storage, sm = node
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, trailing=5), now=0.0)
    run_node(storage, sm, 200)
    snapper.note_applied(12_345)
    meta = snapper.take(now=1.0)
    size = len(state_of(sm))
    assert meta.index == 200 and snapper.snapshot_bytes == size and snapper.log_bytes == 0
    # 10 more entries are enough by count, but not by bytes: the log must outgrow the
    # snapshot (200 keys) first.
    run_node(storage, sm, 10)
    snapper.note_applied(size - 1)
    assert not snapper.due(now=2.0)
    snapper.note_applied(1)
    assert snapper.due(now=2.0)


def test_a_restarted_snapshotter_knows_the_stored_snapshot_size(node: Node) -> None:
    """The byte rule survives a restart: the stored snapshot's size is the last one's, so
    a node does not write its whole state again at the first bound after each restart."""
    _, storage, sm = node
    policy = SnapshotPolicy(entries=100, interval_s=60.0, trailing=30)
    snapper = Snapshotter(storage, sm, policy, now=0.0)
    run_node(storage, sm, 200)
    snapper.take(now=1.0)
    size = snapper.snapshot_bytes
    run_node(storage, sm, 150)
    again = Snapshotter(storage, sm, policy, now=100.0)  # as after a restart
    stored = again.snapshot_bytes
    assert size <= stored < size + 512  # as stored: a file adds a header and a checksum
    again.note_applied(stored - 1)
    assert not again.due(now=200.0)  # 150 entries and 100 s, but a log smaller than the state
    again.note_applied(1)
    assert again.due(now=200.0)


def test_presets() -> None:
    assert (PRESETS["local"].entries, PRESETS["local"].interval_s) == (100_000, 60.0)
    assert (PRESETS["regional"].entries, PRESETS["regional"].interval_s) == (100_000, 120.0)
    assert (PRESETS["global"].entries, PRESETS["global"].interval_s) == (100_000, 300.0)
    assert all(p.trailing == 5000 and p.keep == 3 for p in PRESETS.values())


# -- snapshotter -----------------------------------------------------------------------
def run_node(storage: LevelDBStorage | MemoryRaftStorage, sm: KVStateMachine, n: int) -> None:
    """Mimic a single-node runtime: append n put commands, commit, apply."""
    base = storage.last_index()
    es = [Entry(1, base + i, data=C.put(b"k%05d" % (base + i), b"v")) for i in range(1, n + 1)]
    storage.save(HardState(1, "a", base + n), es, None)
    sm.apply_many([(e.index, e.data) for e in es])


Node = tuple[LevelDB | None, LevelDBStorage | MemoryRaftStorage, KVStateMachine]


@pytest.fixture(params=["memory", "leveldb"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    """A storage and a KV machine: the memory twins, or both in one LevelDB."""
    if request.param == "memory":
        yield None, MemoryRaftStorage(NS), KVStateMachine.memory()
        return
    db = LevelDB(tmp_path / "n1")
    yield db, db.group(NS), KVStateMachine.leveldb(db, NS)
    db.close()


def test_snapshotter_snapshots_and_compacts_behind(node: Node) -> None:
    _, storage, sm = node
    snapper = Snapshotter(
        storage, sm, SnapshotPolicy(entries=100, interval_s=60, trailing=30), now=0.0
    )
    run_node(storage, sm, 99)
    assert snapper.maybe_take(now=1.0) is None
    run_node(storage, sm, 1)
    meta = snapper.maybe_take(now=2.0)
    assert meta is not None and meta.index == 100
    assert storage.first_index() == 71  # trailing window of 30 kept: 71..100
    run_node(storage, sm, 5)
    assert snapper.maybe_take(now=62.5) is None  # time, but a log smaller than the state
    snapper.note_applied(snapper.snapshot_bytes)
    assert snapper.maybe_take(now=30.0) is None
    meta = snapper.maybe_take(now=62.5)  # by time
    assert meta is not None and meta.index == 105 and storage.first_index() == 76
    # The snapshot restores to the same state.
    other = KVStateMachine.memory()
    with storage.open_snapshot_data() as f:
        other.restore(f, index=105)
    assert other.revision() == sm.revision() == 105


def test_a_snapshot_without_an_image_then_one_made_for_a_follower(node: Node) -> None:
    """take_state records the applied index without copying the state and compacts
    behind it; the state machine itself is the snapshot (a restart finds it there). An
    image made later for the same index restores to the same state."""
    _, storage, sm = node
    snapper = Snapshotter(
        storage, sm, SnapshotPolicy(entries=100, interval_s=60, trailing=30), now=0.0
    )
    run_node(storage, sm, 120)
    meta = snapper.take_state(now=1.0)
    assert meta.index == 120 and storage.first_index() == 91
    assert storage.image_metadata() is None and snapper.snapshot_bytes == 0
    if isinstance(storage, LevelDBStorage):
        assert not os.listdir(storage.snapshot_store.directory)
    assert recover(storage, sm) is False  # the state machine holds the snapshot
    assert snapper.begin_state() is None  # nothing applied since
    job = snapper.begin()  # an image at the same index, for a follower
    assert job is not None and job.meta == meta
    try:
        snapper.write(job)
    finally:
        job.close()
    assert snapper.finish(job, now=2.0) == meta
    assert storage.image_metadata() == meta
    other = KVStateMachine.memory()
    with storage.open_snapshot_data() as f:
        other.restore(f, index=120)
    assert other.revision() == sm.revision() == 120


def test_a_restart_after_a_snapshot_without_an_image_needs_no_restore(tmp_path: Path) -> None:
    """The state machine is the snapshot: after a restart it is at (or past) the
    snapshot's index with every key, and the log resumes behind it."""
    db = LevelDB(tmp_path / "n1")
    storage, sm = db.group(NS), KVStateMachine.leveldb(db, NS, sync=False)
    run_node(storage, sm, 120)
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=100, trailing=30), now=0.0)
    assert snapper.take_state(now=1.0).index == 120
    run_node(storage, sm, 5)
    db.close()
    db = LevelDB(tmp_path / "n1")
    storage, sm = db.group(NS), KVStateMachine.leveldb(db, NS, sync=False)
    assert storage.snapshot_metadata().index == 120 and storage.image_metadata() is None
    assert recover(storage, sm) is False
    assert sm.applied_index() == 125 and (storage.first_index(), storage.last_index()) == (91, 125)
    kv = sm.get(b"k%05d" % 120)
    assert kv is not None and kv.value == b"v"
    db.close()


def test_a_state_machine_behind_a_snapshot_without_an_image_is_named(tmp_path: Path) -> None:
    """If the state machine comes back older than a snapshot taken without an image,
    nothing can restore it: recover() says so instead of serving a wrong state."""
    db = LevelDB(tmp_path / "n1")
    storage, sm = db.group(NS), KVStateMachine.leveldb(db, NS)
    run_node(storage, sm, 50)
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, trailing=5), now=0.0)
    assert snapper.take_state(now=1.0).index == 50
    behind = KVStateMachine.memory()
    behind.apply_many([(1, C.put(b"k", b"v"))])
    with pytest.raises(CorruptionError, match=r"behind the snapshot at 50.*without an image"):
        recover(storage, behind)
    db.close()


def test_a_leveldb_flush_leaves_no_write_in_a_log_file(tmp_path: Path) -> None:
    """make_durable on LevelDB: the unsynced applies move from the state database's
    LevelDB log file (not synced when it switches files) to a synced table file."""
    db = LevelDB(tmp_path / "n1")
    storage, sm = db.group(NS), KVStateMachine.leveldb(db, NS, sync=False)
    run_node(storage, sm, 200)
    dbdir = tmp_path / "n1" / "state"

    def logs() -> int:
        return sum((dbdir / n).stat().st_size for n in os.listdir(dbdir) if n.endswith(".log"))

    assert logs() > 200 * 30  # every apply is in a log file
    tables = {n for n in os.listdir(dbdir) if n.endswith(".ldb")}
    sm.make_durable()
    assert logs() == 0
    assert {n for n in os.listdir(dbdir) if n.endswith(".ldb")} - tables
    db.close()


async def test_a_snapshot_job_is_written_beside_applies(node: Node) -> None:
    """The view is frozen at begin; the image is written in a worker thread while the
    owner keeps saving and applying; finish records it and compacts behind it. The
    entries applied meanwhile are not in the image, and still count toward the next."""
    import trio

    _, storage, sm = node
    run_node(storage, sm, 50)
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, trailing=5), now=0.0)
    snapper.note_applied(500)
    image_at_50 = state_of(sm)
    job = snapper.begin()
    assert job is not None and job.meta.index == 50
    run_node(storage, sm, 20)  # applied while the image is written
    snapper.note_applied(200)
    await trio.to_thread.run_sync(snapper.write, job)
    assert storage.snapshot_metadata().index == 0  # written, not recorded yet
    meta = await snapper.finish_async(job, now=1.0)
    assert meta is not None and meta.index == 50
    assert storage.first_index() == 46 and storage.last_index() == 70
    with storage.open_snapshot_data() as f:
        assert f.read() == image_at_50
    assert snapper.snapshot_bytes == len(image_at_50) and snapper.log_bytes == 200
    assert snapper.begin() is not None  # applied 70 is newer than 50


async def test_a_fed_job_makes_its_chunks_on_the_owners_thread(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fed job: the owner makes the chunks in slices, the writer thread only writes
    them; a full queue stops the feeding until the writer makes room (and says so). The
    image is the same as one made whole."""
    import threading

    import trio

    _, storage, sm = node
    run_node(storage, sm, 4000)  # 3 chunks of 64 KiB: more than the queue holds
    monkeypatch.setattr(SnapshotJob, "PIECE_BYTES", 1)  # a piece per chunk
    monkeypatch.setattr(SnapshotJob, "QUEUE_PIECES", 1)
    whole = state_of(sm)
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, trailing=5), now=0.0)
    job = snapper.begin(fed=True)
    assert job is not None and job.wants_feed()
    owner = threading.get_ident()
    made_on: set[int] = set()
    chunks = job.view.chunks
    rooms = 0
    room = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def on_room() -> None:
        nonlocal rooms
        rooms += 1
        token.run_sync_soon(room.set)

    job.on_room = on_room

    def tracked() -> Iterator[bytes]:
        for c in chunks():
            made_on.add(threading.get_ident())
            yield c

    job._chunks = tracked()  # to see which thread makes the chunks
    fed_full = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, snapper.write, job)
        while not job.fed_all:
            job.feed(1.0)  # a long budget: stops at a full queue or the last chunk
            if not job.fed_all and not job.wants_feed():
                fed_full = True
                with trio.fail_after(10):
                    await room.wait()
                room = trio.Event()
    job.close()
    assert fed_full and rooms >= 1
    assert made_on == {owner}
    assert snapper.finish(job, now=1.0) is not None
    with storage.open_snapshot_data() as f:
        assert f.read() == whole
    assert job.nbytes == len(whole)


async def test_a_cancelled_fed_job_stops_its_waiting_writer(node: Node) -> None:
    import trio

    _, storage, sm = node
    run_node(storage, sm, 100)
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, trailing=5), now=0.0)
    job = snapper.begin(fed=True)
    assert job is not None
    job.feed(0.0)  # one chunk of several: the writer then waits for the next
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                with pytest.raises(SnapshotCancelled):
                    await trio.to_thread.run_sync(snapper.write, job)

            nursery.start_soon(writer)
            job.cancel()
    job.close()
    assert storage.snapshot_metadata().index == 0


async def test_the_log_behind_a_snapshot_is_compacted_in_steps(node: Node) -> None:
    _, storage, sm = node
    run_node(storage, sm, 120)
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, trailing=20), now=0.0)
    job = snapper.begin()
    assert job is not None
    try:
        snapper.write(job)
    finally:
        job.close()
    meta = await snapper.finish_async(job, now=1.0, compact=False)
    assert meta is not None and meta.index == 120
    assert snapper.compaction_pending() and storage.first_index() == 1
    firsts = []
    while await snapper.compact_step_async(30):
        firsts.append(storage.first_index())
    firsts.append(storage.first_index())
    assert firsts == [31, 61, 91, 101]  # up to 120 - 20, 30 at a time
    assert not snapper.compaction_pending()
    assert not await snapper.compact_step_async(30)


def test_a_cancelled_snapshot_job_leaves_nothing(node: Node) -> None:
    _, storage, sm = node
    run_node(storage, sm, 3000)  # an image of several chunks
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, trailing=5), now=0.0)
    job = snapper.begin()
    assert job is not None
    job.cancel()
    with pytest.raises(SnapshotCancelled):
        snapper.write(job)
    assert storage.snapshot_metadata().index == 0 and storage.first_index() == 1
    if isinstance(storage, LevelDBStorage):
        assert os.listdir(storage.snapshot_store.directory) == []
    else:
        assert storage.snapshot_store.images == {}


def test_a_failed_image_write_is_retried_an_interval_later(node: Node) -> None:
    _, storage, sm = node
    run_node(storage, sm, 20)
    snapper = Snapshotter(storage, sm, SnapshotPolicy(entries=10, interval_s=30.0), now=0.0)
    assert snapper.due(now=1.0)
    snapper.failed(now=1.0)
    assert not snapper.due(now=30.9)
    assert snapper.due(now=31.0)
    snapper.take(now=31.0)
    assert snapper.retry_at == 0.0 and storage.snapshot_metadata().index == 20


# -- install ---------------------------------------------------------------------------
def leader_snapshot(tmp_path: Path, n: int = 300) -> Snapshot:
    """A snapshot from another node ('the leader') that holds n keys."""
    db = LevelDB(tmp_path / "leader")
    st = db.group(NS)
    sm = KVStateMachine.leveldb(db, NS)
    run_node(st, sm, n)
    st.create_snapshot_streaming(n, ConfState(("a", "b", "c")), sm.snapshot_data)
    snap = st.snapshot()
    db.close()
    return snap


def test_install_snapshot(tmp_path: Path) -> None:
    snap = leader_snapshot(tmp_path)
    db = LevelDB(tmp_path / "follower")
    st = db.group(NS)
    sm = KVStateMachine.leveldb(db, NS)
    run_node(st, sm, 10)  # some divergent local state, to be replaced
    assert install_snapshot(st, sm, snap)
    assert st.pending_install() is None
    assert (st.first_index(), st.last_index()) == (301, 300)
    assert sm.applied_index() == 300 and sm.get(b"k00299") is not None
    expected = state_of(sm)
    db.close()
    db = LevelDB(tmp_path / "follower")
    st, sm = db.group(NS), KVStateMachine.leveldb(db, NS)
    assert not recover(st, sm)
    assert state_of(sm) == expected
    assert not install_snapshot(st, sm, snap)  # not newer: ignored
    db.close()


def test_an_installed_snapshot_is_the_last_one_for_the_policy(tmp_path: Path) -> None:
    """A node that catches up by an install counts the installed snapshot's size and
    time, as if it had taken that snapshot: it does not snapshot its whole state again
    after ``entries`` more entries (the byte rule with no size known holds at once)."""
    snap = leader_snapshot(tmp_path)
    db = LevelDB(tmp_path / "follower")
    st, sm = db.group(NS), KVStateMachine.leveldb(db, NS)
    # Running before the install (a fresh node: no snapshot, no size).
    snapper = Snapshotter(st, sm, SnapshotPolicy(entries=10, interval_s=60.0, trailing=5), now=0.0)
    assert snapper.snapshot_bytes == 0
    st.save(None, (), snap)  # the install is pending until the state machine restores
    nbytes = restore_pending_install(st, sm)
    assert nbytes == len(snap.data) and sm.applied_index() == 300
    assert restore_pending_install(st, sm) is None  # nothing pending any more
    run_node(st, sm, 20)
    snapper.note_applied(100)
    assert snapper.due(now=1.0)  # no size known: the entry count alone makes it due
    snapper.installed(nbytes, now=1.0)
    run_node(st, sm, 20)
    snapper.note_applied(nbytes - 1)
    assert not snapper.due(now=2.0)  # the log has not outgrown the installed snapshot
    assert not snapper.due(now=61.0)  # nor by time
    assert snapper.last_at == 1.0  # the interval counts from the install
    snapper.note_applied(1)
    assert snapper.due(now=2.0)
    db.close()


CRASH_POINTS = [
    "snapfile:begin",
    "snapfile:chunk",
    "snapfile:before-rename",
    "snapfile:after-rename",
    "write:save",
    "write:kv.restore-begin",
    "write:kv.restore-clear",
    "write:kv.restore",
    "write:kv.restore-end",
    "write:install",
]


class Crash(Exception):
    """Stands for the process dying at a fault point (the test then 'restarts')."""


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_install_survives_a_crash_at_any_step(tmp_path: Path, point: str) -> None:
    snap = leader_snapshot(tmp_path, n=5000)  # > one restore chunk, so restore has steps
    hits = 0

    def hook(p: str) -> None:
        nonlocal hits
        if p == point:
            hits += 1
            if hits == 2 or point != "write:kv.restore":  # mid-restore: after one chunk
                raise Crash(p)

    path = tmp_path / "follower"
    db = LevelDB(path)
    st, sm = db.group(NS), KVStateMachine.leveldb(db, NS)
    run_node(st, sm, 10)
    before = state_of(sm)
    db.fault_hook = hook
    with pytest.raises((Crash, StorageWriteError)):
        install_snapshot(st, sm, snap)
    db.close()  # the "process" is gone; everything in memory is lost

    db = LevelDB(path)
    st, sm = db.group(NS), KVStateMachine.leveldb(db, NS)
    recovered = recover(st, sm)
    if point.startswith("snapfile:"):
        # The install never reached the database: the old state stands, no debris.
        assert not recovered and st.snapshot().is_empty() and state_of(sm) == before
        assert os.listdir(st.snapshot_store.directory) == []
    else:
        # The log was replaced: the restore is (re)done from the recorded snapshot.
        assert recovered == (point != "write:save")
        if point == "write:save":
            assert st.snapshot().is_empty()
        else:
            assert st.pending_install() is None and sm.applied_index() == 5000
            assert not sm.needs_restore() and sm.get(b"k04999") is not None
            assert sm.get(b"k00003") is not None and sm.revision() == 5000
    db.close()


def test_save_adopts_a_snapshot_file_already_in_the_store(tmp_path: Path) -> None:
    """The transport streams a received snapshot into the store, then the runtime saves
    the core's data-less Snapshot: the file is kept (not overwritten with nothing)."""
    snap = leader_snapshot(tmp_path)
    db = LevelDB(tmp_path / "follower")
    st, sm = db.group(NS), KVStateMachine.leveldb(db, NS)
    st.snapshot_store.write_bytes(snap.metadata, snap.data)  # "streamed by the transport"
    meta_only = Snapshot(metadata=snap.metadata)
    assert install_snapshot(st, sm, meta_only)
    assert st.snapshot() == snap
    assert sm.applied_index() == 300 and sm.get(b"k00299") is not None
    db.close()


def test_adopting_a_bad_file_is_refused(tmp_path: Path) -> None:
    snap = leader_snapshot(tmp_path)
    db = LevelDB(tmp_path / "follower")
    st = db.group(NS)
    path = st.snapshot_store.write_bytes(snap.metadata, snap.data)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="sha256"):
        st.save(None, (), Snapshot(metadata=snap.metadata))
    assert st.snapshot().is_empty() and st.pending_install() is None
    db.close()
