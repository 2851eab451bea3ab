"""LevelDB-specific behaviour: layout, namespaces, corruption detection, real disk-full."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftd.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftd.storage import codec
from raftd.storage.base import CorruptionError, StorageWriteError, Writable
from raftd.storage.leveldb import LevelDB, LevelDBStorage

NS = "/raft/cron"


def ents(lo: int, hi: int, term: int, size: int = 8) -> list[Entry]:
    return [Entry(term, i, data=(b"%d:" % i).ljust(size, b".")) for i in range(lo, hi + 1)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def reopen(db: LevelDB, ns: str = NS) -> tuple[LevelDB, LevelDBStorage]:
    db.close()
    db2 = LevelDB(db.data_dir)
    return db2, db2.group(ns)


def test_layout_one_db_many_namespaces(data_dir: Path) -> None:
    db = LevelDB(data_dir)
    a, b = db.group("/raft/a"), db.group("/raft/b")
    assert db.group("/raft/a") is a
    assert a.prefix != b.prefix and len(a.prefix) == 5
    a.save(HardState(1, "x", 2), ents(1, 5, 1), None)
    b.save(HardState(7, "y", 1), ents(1, 2, 7), None)
    pa = a.prefix
    db.close()
    assert (data_dir / "db").is_dir()
    db = LevelDB(data_dir)
    assert db.namespaces() == ["/raft/a", "/raft/b"]
    a, b = db.group("/raft/a"), db.group("/raft/b")
    assert a.prefix == pa
    assert (a.last_index(), b.last_index()) == (5, 2)
    assert a.initial_state()[0] == HardState(1, "x", 2)
    assert b.entries(1, 3) == ents(1, 2, 7)
    db.close()


def test_keys_are_big_endian_so_scans_are_ordered(data_dir: Path) -> None:
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(None, ents(1, 300, 1), None)
    assert s.entries(250, 270) == ents(250, 269, 1)
    # Cross 2**16 and 2**32 boundaries by starting the log after a snapshot.
    for base in (65_530, (1 << 32) - 5):
        s.apply_snapshot(Snapshot(SnapshotMetadata(base, 2, ConfState()), b""))
        s.finish_install(base)
        s.save(None, ents(base + 1, base + 12, 2), None)
        assert s.entries(base + 1, base + 13) == ents(base + 1, base + 12, 2)
    keys = list(db.raw.iterator(prefix=s.prefix + codec.KIND_LOG, include_value=False))
    assert keys == sorted(keys) and len(keys) == 12
    db.close()


def test_tail_cache_serves_the_newest_entries(data_dir: Path) -> None:
    db = LevelDB(data_dir, tail_cache=10)
    s = db.group(NS)
    s.save(None, ents(1, 30, 1), None)
    assert [e.index for e in s._tail] == list(range(21, 31))
    s.save(None, ents(25, 26, 2), None)  # truncate inside the cache
    assert [e.index for e in s._tail] == list(range(21, 27)) and s._tail[-1].term == 2
    s.save(None, ents(5, 6, 3), None)  # truncate below the cache
    assert [e.index for e in s._tail] == [5, 6]
    s.compact(5)
    assert [e.index for e in s._tail] == [6]
    assert s.entries(2 + 4, 7) == ents(6, 6, 3)
    s.apply_snapshot(Snapshot(SnapshotMetadata(40, 3, ConfState()), b""))
    assert s._tail == []
    db.close()


def test_tail_cache_grows_only_when_a_write_lands(data_dir: Path) -> None:
    """Appends after the cache's end grow it once the write has landed, trimmed to its
    size; a write that fails leaves it (and what reads see) as it was."""
    fail = [False]

    def hook(point: str) -> None:
        if fail[0] and point.startswith("write:"):
            raise OSError(5, "Input/output error (injected)")

    db = LevelDB(data_dir, tail_cache=10, fault_hook=hook)
    s = db.group(NS)
    for lo in range(1, 60, 3):
        s.save(None, ents(lo, lo + 2, 1), None)
        assert [e.index for e in s._tail] == list(range(max(1, lo + 3 - 10), lo + 3))
        assert s.entries(max(1, lo - 5), lo + 3) == ents(max(1, lo - 5), lo + 2, 1)
    fail[0] = True
    with pytest.raises(StorageWriteError):
        s.save(None, ents(61, 62, 1), None)
    assert [e.index for e in s._tail] == list(range(51, 61))
    assert s.last_index() == 60
    db.close()


def test_first_last_index_persisted_not_scanned(data_dir: Path) -> None:
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(None, ents(1, 50, 1), None)
    s.compact(20)
    raw = db.raw.get(s.prefix + codec.KIND_META + codec.META_LOG)
    key = s.prefix + codec.KIND_META + codec.META_LOG
    assert codec.decode_log_meta(codec.unseal(key, raw)) == (21, 50, 1)
    db.close()


def _table_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in (data_dir / "db").glob("*.ldb"))


def test_tables_are_written_uncompressed(data_dir: Path) -> None:
    """Compressing blocks is CPU the compaction thread takes from the daemon under write
    load, mostly for log entries a snapshot deletes soon: tables are written as is."""
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(None, ents(1, 400, 1, size=1000), None)  # 400 KB that compress ~50:1
    db.raw.compact_range()
    assert _table_bytes(data_dir) > 400 * 1000
    db.close()


def test_a_database_written_with_snappy_blocks_opens_and_reads(data_dir: Path) -> None:
    """Data dirs written before tables were uncompressed (snappy blocks) keep working: each
    block says how it is compressed."""
    import plyvel

    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(HardState(3, "b", 400), ents(1, 400, 3, size=1000), None)
    db.close()
    old = plyvel.DB(str(data_dir / "db"), compression="snappy")
    old.compact_range()  # every table rewritten with snappy blocks
    old.close()
    assert 0 < _table_bytes(data_dir) < 100 * 1000
    db, s = reopen(LevelDB(data_dir))
    assert s.initial_state()[0] == HardState(3, "b", 400)
    assert s.entries(1, 401) == ents(1, 400, 3, size=1000)
    s.save(None, ents(401, 800, 3, size=1000), None)
    db.raw.compact_range()
    assert _table_bytes(data_dir) > 400 * 1000  # the new entries' tables: as is
    assert s.entries(1, 801) == ents(1, 800, 3, size=1000)
    db.close()


# -- corruption ------------------------------------------------------------------------
def _corrupt_and_reopen(data_dir: Path, damage: str) -> CorruptionError:
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(HardState(1, "a", 10), ents(1, 10, 1), None)
    raw = db.raw
    k7 = codec.log_key(s.prefix, 7)
    if damage == "flip":
        v = bytearray(raw.get(k7))
        v[10] ^= 0x01
        raw.put(k7, bytes(v))
    elif damage == "hole":
        raw.delete(k7)
    elif damage == "stray":
        raw.put(codec.log_key(s.prefix, 12), codec.encode_entry(Entry(1, 12)))
    elif damage == "short":
        raw.delete(codec.log_key(s.prefix, 10))
    elif damage == "hard_state":
        k = s.prefix + codec.KIND_HARD_STATE
        v = bytearray(raw.get(k))
        v[-1] ^= 0x01  # flip, not overwrite: the byte may already hold the constant
        raw.put(k, bytes(v))
    elif damage == "term_down":
        raw.put(k7, codec.encode_entry(Entry(0, 7)))
    db.close()
    with pytest.raises(CorruptionError) as ei:
        LevelDB(data_dir).group(NS)
    return ei.value


@pytest.mark.parametrize(
    ("damage", "index", "words"),
    [
        ("flip", 7, "checksum"),
        ("hole", 7, "hole"),
        ("stray", 12, "stray"),
        ("short", 10, "ends at 9"),
        ("hard_state", None, "bad record"),
        ("term_down", 7, "term goes down"),
    ],
)
def test_corruption_is_a_named_error_at_open(
    data_dir: Path, damage: str, index: int | None, words: str
) -> None:
    err = _corrupt_and_reopen(data_dir, damage)
    assert err.namespace == NS
    assert err.index == index
    assert words in str(err)
    assert NS in str(err)
    if index is not None:
        assert err.key is not None and str(err).count("key=") == 1


def test_corruption_after_open_is_caught_on_read(data_dir: Path) -> None:
    db = LevelDB(data_dir, tail_cache=0)  # read through to the database
    s = db.group(NS)
    s.save(None, ents(1, 10, 1), None)
    k = codec.log_key(s.prefix, 4)
    v = bytearray(db.raw.get(k))
    v[-1] ^= 0xFF
    db.raw.put(k, bytes(v))
    with pytest.raises(CorruptionError, match="index=4"):
        s.entries(1, 11)
    with pytest.raises(CorruptionError, match="index=4"):
        s.entries(4, 5)
    assert s.entries(5, 11) == ents(5, 10, 1)
    db.close()


def test_missing_or_damaged_snapshot_file(data_dir: Path) -> None:
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(None, ents(1, 10, 1), None)
    s.create_snapshot(8, None, b"x" * 1000)
    path = s.snapshot_store.path(1, 8)
    db.close()
    data = bytearray(path.read_bytes())
    data[500] ^= 0x40
    path.write_bytes(bytes(data))
    db, s = reopen(LevelDB(data_dir))
    with pytest.raises(CorruptionError, match="sha256"):
        s.snapshot()
    db.close()
    path.unlink()
    # Without its file the snapshot reads as one taken without an image: the storage
    # opens, but nothing can be restored or sent from it.
    db, s = reopen(LevelDB(data_dir))
    assert s.snapshot_metadata().index == 8
    assert s.image_metadata() is None
    with pytest.raises(CorruptionError, match="no image"):
        s.open_snapshot_data()
    db.close()


def test_missing_file_of_a_pending_install_fails_the_open(data_dir: Path) -> None:
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(None, ents(1, 10, 1), None)
    meta = SnapshotMetadata(index=20, term=2, conf_state=ConfState(voters=("a",)))
    s.save(None, (), Snapshot(metadata=meta, data=b"image"))
    assert s.pending_install() == meta
    path = s.snapshot_store.path(2, 20)
    db.close()
    path.unlink()
    with pytest.raises(CorruptionError, match="missing"):
        LevelDB(data_dir).group(NS)


def test_orphans_and_temp_files_are_removed_at_open(data_dir: Path) -> None:
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(None, ents(1, 10, 1), None)
    s.create_snapshot(5, None, b"five")
    d = s.snapshot_store.directory
    (d / ".1-9.snap.tmp").write_bytes(b"partial")
    s.snapshot_store.write_bytes(SnapshotMetadata(9, 1, ConfState()), b"orphan")
    db, s = reopen(db)
    assert sorted(os.listdir(d)) == ["1-5.snap"]
    assert s.snapshot().data == b"five"
    db.close()


def test_snapshot_retention_keeps_newest_three(data_dir: Path) -> None:
    db = LevelDB(data_dir)
    s = db.group(NS)
    s.save(None, ents(1, 10, 1), None)
    for i in range(2, 8):
        s.create_snapshot(i, None, b"s%d" % i)
    assert s.snapshot_store.files() == [(1, 5), (1, 6), (1, 7)]
    db.close()


def test_failed_snapshot_file_write(data_dir: Path) -> None:
    def hook(point: str) -> None:
        if point == "snapfile:chunk":
            raise OSError(5, "Input/output error (injected)")

    db = LevelDB(data_dir, fault_hook=hook)
    s = db.group(NS)
    s.save(None, ents(1, 10, 1), None)

    def produce(w: Writable) -> None:
        w.write(b"chunk")

    with pytest.raises(StorageWriteError, match="Input/output error"):
        s.create_snapshot_streaming(5, None, produce)
    # Only the image failed, and nothing of it is left: the database is untouched and
    # keeps taking writes.
    assert s.failed is None
    assert os.listdir(s.snapshot_store.directory) == []
    assert s.snapshot().is_empty()
    s.save(None, ents(11, 11, 1), None)
    assert s.last_index() == 11
    db.close()


# -- a real full disk ------------------------------------------------------------------
@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_disk_full_fails_the_storage(tiny_tmpfs: Path) -> None:
    db = LevelDB(tiny_tmpfs / "data")
    s = db.group(NS)
    index = 0
    with pytest.raises(StorageWriteError, match="No space left") as ei:
        for _ in range(2000):  # 2000 x 1 KiB is well over the 1 MiB tmpfs
            s.save(HardState(1, "a", index), ents(index + 1, index + 1, 1, 1024), None)
            index += 1
    assert ei.value.cause is not None
    assert s.failed is ei.value
    assert index > 100  # it did write for a while
    # Nothing half-written is visible: the caches still describe the last good save.
    assert s.last_index() == index
    assert s.initial_state()[0] == HardState(1, "a", index - 1)
    assert s.entries(index, index + 1) == ents(index, index, 1, 1024)
    with pytest.raises(StorageWriteError, match="refusing"):
        s.save(None, ents(index + 1, index + 1, 1), None)
    # Another group in the same database refuses too: LevelDB is one log.
    with pytest.raises(StorageWriteError):
        db.group("/raft/other").save(None, ents(1, 1, 1), None)
    db.close()


def test_disk_full_while_writing_a_snapshot(tiny_tmpfs: Path) -> None:
    db = LevelDB(tiny_tmpfs / "data")
    s = db.group(NS)
    s.save(None, ents(1, 10, 1), None)

    def produce(w: Writable) -> None:
        for _ in range(64):
            w.write(b"z" * 32768)  # 2 MiB

    with pytest.raises(StorageWriteError, match="No space left"):
        s.create_snapshot_streaming(5, None, produce)
    assert s.snapshot().is_empty()
    assert os.listdir(s.snapshot_store.directory) == []  # the temp file was removed
    # The database holds what it held: the group keeps its log and takes writes again
    # once the temp file's space is back.
    assert s.failed is None
    s.save(None, ents(11, 11, 1), None)
    assert s.entries(1, 12) == ents(1, 11, 1)
    db.close()


# -- save_async ------------------------------------------------------------------------
async def test_save_async_fsyncs_in_the_writer_thread_and_the_loop_keeps_running(
    data_dir: Path,
) -> None:
    """Every fsyncing save runs in the database's writer thread, never on the event loop:
    with each write held up for 0.2 s, a task on the loop keeps ticking meanwhile. A save
    that moves only the commit index (no fsync) runs inline."""
    import threading
    import time

    import trio

    threads: list[str] = []

    def slow(point: str) -> None:
        if point == "write:save":
            threads.append(threading.current_thread().name)
            time.sleep(0.2)

    db = LevelDB(data_dir, fault_hook=slow)
    s = db.group(NS)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await s.save_async(HardState(1, "a", 0), ents(1, 1, 1), None)  # one entry
        await s.save_async(None, ents(2, 300, 1), None)  # a big batch
        nursery.cancel_scope.cancel()
    assert ticks >= 10, f"the event loop stalled during the writes ({ticks} ticks)"
    assert threads == [db.writer.name] * 2
    threads.clear()
    await s.save_async(HardState(1, "a", 5), [], None, sync=False)  # commit index only
    assert threads == [threading.current_thread().name]  # inline, on the loop
    assert s.last_index() == 300
    db.close()


async def test_cancelled_save_async_still_publishes_a_landed_write(data_dir: Path) -> None:
    import trio

    db = LevelDB(data_dir)
    s = db.group(NS)
    with trio.CancelScope() as cs:
        cs.cancel()  # cancelled before it even starts waiting for the thread
        await s.save_async(HardState(1, "a", 0), ents(1, 100, 1), None)
    assert cs.cancelled_caught
    # The write landed and the caches agree with the disk.
    assert s.last_index() == 100
    db, s = reopen(db)
    assert s.last_index() == 100
    db.close()


async def test_save_submit_leaves_the_writer_thread_only_the_write(data_dir: Path) -> None:
    """``save_submit`` returns at once with its batch built; the writer thread runs the
    write itself (its fault point and fsync). The caches show the write once ``on_done``
    has run. A failed write reaches ``on_done``, fails the storage, leaves the caches as
    they were, and the next save is refused."""
    import threading

    import outcome
    import trio

    seen: list[str] = []
    armed = False

    def hook(point: str) -> None:
        if point == "write:save":
            seen.append(threading.current_thread().name)
            if armed:
                raise OSError(5, "Input/output error (injected)")

    db = LevelDB(data_dir, fault_hook=hook)
    s = db.group(NS)
    built: list[str] = []
    build = db.batch

    def recording_batch(*args: Any, **kwargs: Any) -> Any:
        built.append(threading.current_thread().name)
        return build(*args, **kwargs)

    db.batch = recording_batch  # type: ignore[method-assign]
    results: list[outcome.Outcome[None]] = []
    landed = trio.Event()

    def on_done(r: outcome.Outcome[None]) -> None:
        results.append(r)
        landed.set()

    s.save_submit(HardState(1, "a", 0), ents(1, 50, 1), on_done)
    assert not results  # it returned before the write
    await landed.wait()
    results.pop().unwrap()
    assert seen == [db.writer.name]
    assert built == [threading.current_thread().name]  # the batch: built here
    assert s.last_index() == 50 and s.initial_state()[0] == HardState(1, "a", 0)

    armed = True
    landed = trio.Event()
    s.save_submit(HardState(1, "a", 50), ents(51, 60, 1), on_done)
    await landed.wait()
    with pytest.raises(StorageWriteError, match="Input/output error"):
        results.pop().unwrap()
    assert s.failed is not None
    assert s.last_index() == 50 and s.initial_state()[0] == HardState(1, "a", 0)
    with pytest.raises(StorageWriteError, match="refusing"):
        s.save_submit(None, ents(51, 51, 1), on_done)
    db.close()


async def test_loop_writes_wait_for_the_writes_on_other_threads(data_dir: Path) -> None:
    """LevelDB queues every write behind the one in progress, its fsync included, and the
    database is shared by every namespace. So code about to write on the event loop (the
    state machine's apply) first awaits ``off_loop_writes_done``: at once, with no
    checkpoint, when no write is in flight on another thread; otherwise once every such
    write has landed (a log save in the writer thread, a compaction in a worker), while
    the loop keeps running."""
    import threading

    import outcome
    import trio
    import trio.testing

    release = threading.Event()
    held = threading.Event()
    hold_points: set[str] = set()

    def hook(point: str) -> None:
        if point in hold_points:
            held.set()
            release.wait(30)

    db = LevelDB(data_dir, fault_hook=hook)
    a, b = db.group("/raft/a"), db.group("/raft/b")
    a.save(HardState(1, "x", 0), ents(1, 20, 1), None)

    ran: list[str] = []

    async def mark() -> None:
        ran.append("other task")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mark)
        await b.off_loop_writes_done()
        assert ran == []  # returned without a checkpoint: nothing was in flight

    events: list[str] = []

    async def wait_then_write() -> None:
        await b.off_loop_writes_done()
        events.append("loop write")
        db.write("kv.apply", (), [(b"/raft/b-probe", b"v")], sync=False)

    async def loop_write_waits_for(hold: str, off_loop: Callable[[], Awaitable[None]]) -> None:
        """Start ``off_loop``, a write another thread holds at ``hold`` until released
        (it records ``hold`` once the write has landed), then a write on the loop: it
        waits for the held one, and the loop stays free."""
        events.clear()
        held.clear()
        release.clear()
        hold_points.add(hold)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(off_loop)
            while not held.is_set():  # noqa: ASYNC110 - set by the other thread
                await trio.sleep(0.01)
            nursery.start_soon(wait_then_write)
            await trio.testing.wait_all_tasks_blocked()
            assert events == []  # still waiting, and the loop is free
            hold_points.clear()
            release.set()
        assert events == [hold, "loop write"]

    async def log_save() -> None:  # the writer thread's
        landed = trio.Event()

        def on_done(r: outcome.Outcome[None]) -> None:
            r.unwrap()
            events.append("write:save")
            landed.set()

        a.save_submit(HardState(1, "x", 20), ents(21, 30, 1), on_done)
        await landed.wait()

    async def compaction() -> None:  # a worker thread's
        await a.compact_async(10)
        events.append("write:compact")

    def restore() -> None:  # a snapshot's restore, run through the storage
        hook("restore")
        db.write("kv.restore", (), [(b"/raft/a-restored", b"v")])

    async def run_restore() -> None:
        await a.run_writes_off_loop(restore)
        events.append("restore")

    with trio.fail_after(30):
        await loop_write_waits_for("write:save", log_save)
        await loop_write_waits_for("write:compact", compaction)
        await loop_write_waits_for("restore", run_restore)
    assert a.first_index() == 11 and a.last_index() == 30
    await b.off_loop_writes_done()  # nothing left in flight
    db.close()
