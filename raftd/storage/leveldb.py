"""LevelDB (plyvel) implementation of :class:`~raftd.storage.base.RaftStorage`.

One log database per daemon data dir (``<data-dir>/db``), shared by all Raft groups; each
group (namespace, e.g. ``/raft/cron``) gets a 5-byte key prefix from a registry in the
database. The state machines keep their data under the same prefixes in a database of
their own (:mod:`raftd.storage.statedb`). The key layout and value encodings are
documented in :mod:`raftd.storage.codec`; snapshot files live beside it
(:mod:`raftd.storage.snapshots`).

Durability and atomicity: every ``save`` is ONE ``write_batch(sync=True)`` holding the
entries, the truncation of a conflicting suffix, the log metadata (first/last index) and
the hard state, so they land together or not at all. Group commit falls out of the
runtime handing many entries per Ready.

``first_index``/``last_index``/``term`` are O(1)/O(log runs) from memory: the first and
last index and the term of the compaction point are persisted in the same batch as the
entries (``M log``), and terms are cached as runs ``(first index of run, term)``, which are
few because terms change rarely. Nothing scans at runtime. At open, the whole retained log
is scanned once to validate it (contiguous, within the recorded bounds, every checksum,
terms never going down) and to rebuild the term runs; any mismatch is a
:class:`~raftd.storage.base.CorruptionError` naming the namespace, index and key.

Threading decision. Measured with ``scripts/bench-storage`` on the development VM (ext4,
2 vCPU, raw 100-byte append+fsync p50 ~0.13 ms; plyvel releases the GIL while LevelDB
writes, so a write in a thread does not stall the loop)::

    save, batch 1:    p50 ~0.15-0.17 ms  p99 ~0.3 ms   read term():               ~0.15 us
    save, batch 16:   p50 ~0.22-0.25 ms  p99 ~0.4 ms   read entries(1/100), tail: ~0.4/0.5 us
    save, batch 256:  p50 ~0.54-0.6 ms   p99 ~1-4 ms   read entries(100), disk:   ~200 us
    trio.to_thread.run_sync round trip: p50 ~0.06-0.12 ms
    save_async of 1 entry: ~0.18 ms inline vs ~0.32 ms through a worker thread

- ``save_async`` never writes on the event loop when it must fsync: log writes go to
  the database's one long-lived writer thread (:mod:`raftd.storage.writer`, cheaper per
  write than ``trio.to_thread``), so heartbeats, votes and reads keep flowing while the
  disk syncs, and a leader's appends leave while it persists them. A write that moves
  only the commit index (no fsync) runs inline.
- Encoding happens on the caller's thread; the in-memory caches are updated on the
  caller's thread only after the write landed, so readers never see what is not on disk.
- Reads stay inline: ``term``/``first_index``/``last_index`` never touch the database,
  and the newest entries (the tail, default 4096) are served from memory, which is what
  the core and replication to followers ask for. Older entries cost ~2 us each to read
  and verify; a follower that far behind is served in ``max_size`` slices.
- Snapshot files and compaction: ``create_snapshot_streaming_async``/``compact_async``
  always use a thread.

Failed writes: any exception from plyvel or the file system during a write becomes a
:class:`~raftd.storage.base.StorageWriteError` and fails the whole database (LevelDB
itself refuses further writes after a failed log write), so every group view refuses
writes from then on; the runtime steps down.
"""

from __future__ import annotations

import io
import os
import threading
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from raftd.core.storage import (
    CompactedError,
    SnapshotTemporarilyUnavailableError,
    StorageError,
    UnavailableError,
    limit_size,
)
from raftd.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftd.storage import codec
from raftd.storage.base import (
    CorruptionError,
    FaultHook,
    Readable,
    StorageClosedError,
    StorageWriteError,
    Writable,
    check_entries,
)
from raftd.storage.codec import DecodeError
from raftd.storage.snapshots import SnapshotStore, namespace_slug
from raftd.storage.statedb import (
    StateDatabase,
    format_record,
    make_batch,
    migrate,
    open_plyvel,
    read_format,
)
from raftd.storage.writer import WriterThread

T = TypeVar("T")

__all__ = ["LevelDB", "LevelDBStorage"]

_MAX_INDEX = (1 << 64) - 1


class LevelDB:
    """The daemon's storage, opened once; hands out per-namespace storage views.

    ``LevelDB(data_dir)`` opens (creating them) the Raft log's database ``<data_dir>/db``,
    the state machines' database ``<data_dir>/state`` (:attr:`state`, see
    :mod:`raftd.storage.statedb`) and ``<data_dir>/snapshots``. Use :meth:`group` for each
    Raft group. Thread-safe: writes may come from worker threads. A failed write to either
    database fails both.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        fault_hook: FaultHook | None = None,
        keep_snapshots: int = 3,
        write_buffer_size: int = 4 << 20,
        tail_cache: int = 4096,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "db"
        self._db: Any = open_plyvel(path, write_buffer_size=write_buffer_size)
        self.fault_hook = fault_hook
        self.keep_snapshots = keep_snapshots
        self.tail_cache = tail_cache
        self._failed: StorageWriteError | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._groups: dict[str, LevelDBStorage] = {}
        self.writer = WriterThread(f"raftd-writer:{Path(data_dir).name}")
        # Writes handed to other threads (see off_loop_writes_done); counted on the
        # event loop's thread only.
        self._off_loop = 0
        self._off_loop_done: trio.Event | None = None
        try:
            self.state = self._open_state(path, write_buffer_size)
        except BaseException:
            self._db.close()
            raise

    def _open_state(self, path: Path, write_buffer_size: int) -> StateDatabase:
        """Open the state machines' database beside this one, checking both formats,
        and migrate a data dir of log format 1 (see :mod:`raftd.storage.statedb`)."""
        version = read_format(self._db, path)
        if version not in (None, 1, codec.FORMAT_VERSION):
            raise StorageError(f"unsupported storage format {version} at {path}")
        spath = self.data_dir / "state"
        if version == codec.FORMAT_VERSION and not spath.exists():
            raise CorruptionError(
                f"the state machines' database {spath} is missing: the data dir was "
                "damaged (restore the node from a backup, or empty its data dir but for "
                "identity.key to rejoin)",
                namespace="*",
            )
        state = StateDatabase(self, open_plyvel(spath, write_buffer_size=write_buffer_size), spath)
        try:
            sversion = read_format(state.raw, spath)
            if sversion not in (None, codec.STATE_FORMAT_VERSION):
                raise StorageError(f"unsupported state storage format {sversion} at {spath}")
            if version == 1:
                data = [self.group_prefix(ns) + codec.KIND_DATA for ns in self.namespaces()]
                migrate(self._db, state, data)
            elif version is None:
                # A new data dir. A state database that holds more than its format
                # record belongs to another log: applying this one on top would be wrong.
                for k in state.raw.iterator(include_value=False):
                    if k != codec.KEY_FORMAT:
                        raise CorruptionError(
                            f"the state machines' database {spath} holds data but the log's "
                            f"database {path} is new: the data dir was damaged",
                            namespace="*",
                            key=k,
                        )
                if sversion is None:
                    state.write("format", (), [format_record(codec.STATE_FORMAT_VERSION)])
                self.write("format", (), [format_record(codec.FORMAT_VERSION)])
            elif sversion is None:
                raise CorruptionError(
                    f"the state machines' database {spath} has no format record: it was "
                    "replaced by an empty one (restore the node from a backup, or empty "
                    "its data dir but for identity.key to rejoin)",
                    namespace="*",
                )
        except BaseException:
            state.close()
            raise
        return state

    # -- shared plumbing ---------------------------------------------------------------
    @property
    def raw(self) -> Any:
        """The plyvel database, for readers that know the key layout (the KV backend)."""
        if self._closed:
            raise StorageClosedError(f"LevelDB at {self.data_dir} is closed")
        return self._db

    @property
    def failed(self) -> StorageWriteError | None:
        return self._failed

    @property
    def closed(self) -> bool:
        return self._closed

    def fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    # -- writes on other threads -------------------------------------------------------
    def off_loop_write_started(self) -> None:
        """The event loop handed a write to another thread (the writer thread, a worker).
        Call from the event loop's thread; pair with :meth:`off_loop_write_ended`."""
        self._off_loop += 1

    def off_loop_write_ended(self) -> None:
        """A write counted by :meth:`off_loop_write_started` has returned (landed or
        failed). Call from the event loop's thread."""
        self._off_loop -= 1
        if self._off_loop == 0 and self._off_loop_done is not None:
            self._off_loop_done.set()
            self._off_loop_done = None

    async def off_loop_writes_done(self) -> None:
        """Return once no write the event loop handed to another thread is in flight.

        LevelDB queues every write behind the one in progress, its fsync included: a
        write made on the event loop while the writer thread syncs another namespace's
        log would hold the loop (every namespace's heartbeats, reads and timers) for as
        long as that fsync takes, which on a slow disk is seconds. Code about to write on
        the loop awaits this first. Returns at once, with no checkpoint, when nothing is
        in flight, so a caller that does not yield before its write finds the database
        as quiet when it writes."""
        while self._off_loop:
            if self._off_loop_done is None:
                self._off_loop_done = trio.Event()
            await self._off_loop_done.wait()

    def mark_failed(self, err: StorageWriteError) -> None:
        if self._failed is None:
            self._failed = err

    def check_writable(self) -> None:
        if self._closed:
            raise StorageClosedError(f"LevelDB at {self.data_dir} is closed")
        if self._failed is not None:
            raise StorageWriteError("storage failed earlier, refusing writes", cause=self._failed)

    def write(
        self,
        op: str,
        deletes: Iterable[bytes],
        puts: Iterable[tuple[bytes, bytes]],
        *,
        sync: bool = True,
    ) -> None:
        """One atomic batch: all ``deletes`` then all ``puts`` (so a put wins over a delete
        of the same key). Any failure fails the database (see module docstring)."""
        self.write_batch(op, self.batch(deletes, puts, sync=sync))

    def batch(
        self, deletes: Iterable[bytes], puts: Iterable[tuple[bytes, bytes]], *, sync: bool = True
    ) -> Any:
        """A write batch holding ``deletes`` then ``puts``, to be written later by
        :meth:`write_batch`, possibly on another thread. Building it on the event loop
        leaves the writer thread little Python to run, so the two threads seldom wait
        for each other's GIL."""
        self.check_writable()
        return make_batch(self._db, deletes, puts, sync=sync)

    def write_batch(self, op: str, wb: Any) -> None:
        """Write a batch from :meth:`batch` atomically. Any failure fails the database."""
        self.check_writable()
        try:
            if self.fault_hook is not None:
                self.fault_hook("write:" + op)
            wb.write()
        except Exception as e:
            err = StorageWriteError(f"LevelDB write ({op}) failed", cause=e)
            self.mark_failed(err)
            raise err from e

    def get(self, key: bytes) -> bytes | None:
        return self.raw.get(key)  # type: ignore[no-any-return]

    # -- groups ------------------------------------------------------------------------
    def group_prefix(self, namespace: str) -> bytes:
        """The key prefix of ``namespace``, registering it (durably) on first use."""
        if not namespace:
            raise ValueError("empty namespace")
        reg = codec.KEY_NS_PREFIX + namespace.encode()
        with self._lock:
            v = self.get(reg)
            if v is not None:
                try:
                    return codec.group_prefix(codec.read_u32(codec.unseal(reg, v)))
                except DecodeError as e:
                    raise CorruptionError(
                        f"bad namespace registry record: {e}", namespace=namespace, key=reg
                    ) from None
            nv = self.get(codec.KEY_NS_NEXT)
            try:
                gid = 1 if nv is None else codec.read_u32(codec.unseal(codec.KEY_NS_NEXT, nv))
            except DecodeError as e:
                raise CorruptionError(
                    f"bad namespace counter: {e}", namespace=namespace, key=codec.KEY_NS_NEXT
                ) from None
            self.write(
                "register",
                (),
                [
                    (reg, codec.seal(reg, codec.u32(gid))),
                    (codec.KEY_NS_NEXT, codec.seal(codec.KEY_NS_NEXT, codec.u32(gid + 1))),
                ],
            )
            return codec.group_prefix(gid)

    def namespaces(self) -> list[str]:
        """Every namespace registered in this database, sorted."""
        n = len(codec.KEY_NS_PREFIX)
        return sorted(
            k[n:].decode()
            for k in self.raw.iterator(prefix=codec.KEY_NS_PREFIX, include_value=False)
        )

    def snapshot_dir(self, namespace: str) -> Path:
        return self.data_dir / "snapshots" / namespace_slug(namespace)

    def group(self, namespace: str) -> LevelDBStorage:
        """The storage view of ``namespace`` (the same object while it is open). Opening
        validates the group's log; raises :class:`CorruptionError` if it is damaged."""
        with self._lock:
            g = self._groups.get(namespace)
            if g is not None and not g.closed:
                return g
        prefix = self.group_prefix(namespace)
        # Forward to fault_hook as it is at call time (tests set it after opening).
        store = SnapshotStore(self.snapshot_dir(namespace), namespace, fault_hook=self.fault)
        g = LevelDBStorage(self, namespace, prefix, store)
        with self._lock:
            self._groups[namespace] = g
        return g

    def close(self) -> None:
        """Close every view and the database. Idempotent."""
        if self._closed:
            return
        for g in list(self._groups.values()):
            g.close()
        self._closed = True
        self.writer.close()
        self._db.close()
        self.state.close()

    def __enter__(self) -> LevelDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class _Pending:
    """A prepared write: what goes to disk, and the cache state once it has landed."""

    op: str
    deletes: list[bytes] = field(default_factory=list)
    delete_log: range | None = None  # log indexes to delete too, keys made where it runs
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    snap_meta: SnapshotMetadata | None = None  # a snapshot to record (its file first)
    snapshot: Snapshot | None = None  # the in-memory snapshot, if we have its bytes
    first: int = 0
    last: int = 0
    dummy_term: int = 0
    starts: list[int] | None = None
    terms: list[int] | None = None
    hard_state: HardState | None = None
    tail: list[Entry] | None = None  # the tail cache to publish, replacing the old one,
    tail_append: Sequence[Entry] | None = None  # or entries to append to it in place
    conf_state: ConfState | None = None
    install: SnapshotMetadata | None = None
    clear_install: bool = False
    sync: bool = True  # False only for a Ready that changes nothing but the commit index
    batch: Any = None  # ``deletes`` and ``puts`` already in a LevelDB write batch
    image: bool = True  # ``snap_meta`` has an image in the store (see record_state_snapshot)

    def empty(self) -> bool:
        return not self.puts and not self.deletes and not self.delete_log and self.snap_meta is None


class LevelDBStorage:
    """Raft storage of one namespace inside a :class:`LevelDB`. See :class:`RaftStorage`.

    Not for concurrent writers: the group's owner task calls the writes one at a time.
    """

    def __init__(self, db: LevelDB, namespace: str, prefix: bytes, store: SnapshotStore) -> None:
        self._db = db
        self._namespace = namespace
        self._prefix = prefix
        self._store = store
        self._k_log = prefix + codec.KIND_LOG
        self._k_hs = prefix + codec.KIND_HARD_STATE
        self._k_cs = prefix + codec.KIND_CONF_STATE
        self._k_meta_log = prefix + codec.KIND_META + codec.META_LOG
        self._k_meta_snap = prefix + codec.KIND_META + codec.META_SNAP
        self._k_meta_install = prefix + codec.KIND_META + codec.META_INSTALL
        self._closed = False
        self._busy = False
        self._snap_cache: Snapshot | None = None
        # The newest entries as saved (contiguous, ending at last_index): followers and
        # the core mostly read the tail, and decoding costs ~2.5 us an entry.
        self._tail: list[Entry] = []
        self._load()

    # -- open / validation -------------------------------------------------------------
    def _corrupt(self, msg: str, index: int | None = None, key: bytes | None = None) -> Exception:
        return CorruptionError(msg, namespace=self._namespace, index=index, key=key)

    def _read_sealed(self, key: bytes) -> bytes | None:
        v = self._db.get(key)
        if v is None:
            return None
        try:
            return codec.unseal(key, v)
        except DecodeError as e:
            raise self._corrupt(f"bad record: {e}", key=key) from None

    def _load(self) -> None:
        try:
            p = self._read_sealed(self._k_meta_log)
            first, last, dummy = (1, 0, 0) if p is None else codec.decode_log_meta(p)
            p = self._read_sealed(self._k_hs)
            hs = HardState() if p is None else codec.decode_hard_state(p)
            p = self._read_sealed(self._k_cs)
            cs = None if p is None else codec.decode_conf_state(p)[0]
            p = self._read_sealed(self._k_meta_snap)
            snap = SnapshotMetadata() if p is None else codec.decode_snapshot_meta(p)
            p = self._read_sealed(self._k_meta_install)
            install = None if p is None else codec.decode_snapshot_meta(p)
        except (DecodeError, UnicodeDecodeError) as e:
            raise self._corrupt(f"bad metadata: {e}") from None
        if first < 1 or last < first - 1:
            raise self._corrupt(f"bad log bounds first={first} last={last}", key=self._k_meta_log)
        starts, terms = [first - 1], [dummy]
        expected = first
        for key, value in self._db.raw.iterator(prefix=self._k_log):
            try:
                idx = codec.index_of_log_key(self._prefix, key)
            except DecodeError:
                raise self._corrupt("malformed log key", key=key) from None
            if idx < first:
                raise self._corrupt(f"stray entry before the first index {first}", idx, key)
            if idx > last:
                raise self._corrupt(f"stray entry beyond the last index {last}", idx, key)
            if idx != expected:
                raise self._corrupt(
                    f"hole in the log: entry missing (next present is {idx})",
                    index=expected,
                    key=codec.log_key(self._prefix, expected),
                )
            try:
                term = codec.entry_term(idx, value)
            except DecodeError as e:
                raise self._corrupt(f"bad log entry: {e}", index=idx, key=key) from None
            if term < terms[-1]:
                raise self._corrupt(f"log term goes down ({terms[-1]} -> {term})", idx, key)
            if term != terms[-1]:
                starts.append(idx)
                terms.append(term)
            expected += 1
        if expected != last + 1:
            raise self._corrupt(
                f"log ends at {expected - 1} but its metadata says {last}",
                index=expected,
                key=codec.log_key(self._prefix, expected),
            )
        if hs.commit > last:
            raise self._corrupt(f"commit {hs.commit} beyond last index {last}", key=self._k_hs)
        recorded = (snap.term, snap.index) if snap.index > 0 else None
        self._store.cleanup(recorded)
        # A recorded snapshot without its file is one taken without an image (the state
        # machine holds it; recover() checks that it does), unless an install of it is
        # pending: that needs the file.
        has_image = recorded is not None and self._store.path(*recorded).exists()
        if install is not None and not has_image:
            raise self._corrupt(
                f"snapshot file {self._store.path(snap.term, snap.index)} is missing",
                index=snap.index,
            )
        # The newest snapshot recorded with an image (the current one, if it has one).
        self._image_meta: SnapshotMetadata | None = snap if has_image else None
        self._first, self._last, self._dummy_term = first, last, dummy
        self._starts, self._terms = starts, terms
        self._hs, self._cs, self._snap_meta, self._install = hs, cs, snap, install

    # -- status ------------------------------------------------------------------------
    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def prefix(self) -> bytes:
        """This group's key prefix (state machine data goes under ``prefix + b"D"``)."""
        return self._prefix

    @property
    def db(self) -> LevelDB:
        return self._db

    @property
    def snapshot_store(self) -> SnapshotStore:
        return self._store

    @property
    def failed(self) -> StorageWriteError | None:
        return self._db.failed

    @property
    def closed(self) -> bool:
        return self._closed or self._db.closed

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed or self._db.closed:
            raise StorageClosedError(f"storage {self._namespace!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        self._db.check_writable()
        if self._busy:
            raise RuntimeError(f"concurrent write to storage {self._namespace!r}")

    # -- reads -------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hs, self._conf_state()

    def _conf_state(self) -> ConfState:
        # The membership the runtime last recorded, else the snapshot's (as MemoryStorage).
        return self._cs if self._cs is not None else self._snap_meta.conf_state

    def first_index(self) -> int:
        return self._first

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        if index < self._first - 1:
            raise CompactedError(f"index {index} compacted (first is {self._first})")
        if index > self._last:
            raise UnavailableError(f"index {index} beyond last {self._last}")
        return self._terms[bisect_right(self._starts, index) - 1]

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo < self._first:
            raise CompactedError(f"index {lo} compacted (first is {self._first})")
        if hi > self._last + 1:
            raise UnavailableError(f"entries up to {hi - 1} beyond last {self._last}")
        self._check_open()
        if lo >= hi:
            return []
        tail = self._tail
        if tail and lo >= tail[0].index:
            off = tail[0].index
            return limit_size(tail[lo - off : hi - off], max_size)
        raw = self._db.raw
        klog = self._k_log
        if hi - lo == 1:
            key = codec.log_key(self._prefix, lo)
            v = raw.get(key)
            if v is None:
                raise self._corrupt("entry missing from the log", lo, key)
            return [self._decode(lo, key, v)]
        out: list[Entry] = []
        total = 0
        expected = lo
        for key, v in raw.iterator(
            start=codec.log_key(self._prefix, lo), stop=codec.log_key(self._prefix, hi)
        ):
            idx = codec.index_of_log_key(self._prefix, key)
            if idx != expected or not key.startswith(klog):
                raise self._corrupt(f"hole in the log (expected {expected})", idx, key)
            e = self._decode(idx, key, v)
            if max_size is not None:
                total += e.size()
                if out and total > max_size:
                    return out
            out.append(e)
            expected += 1
        if expected != hi:
            raise self._corrupt(f"entries missing from the log ({expected}..{hi - 1})", expected)
        return limit_size(out, max_size)

    def _decode(self, index: int, key: bytes, value: bytes) -> Entry:
        try:
            return codec.decode_entry(index, value)
        except DecodeError as e:
            raise self._corrupt(f"bad log entry: {e}", index, key) from None

    def snapshot_metadata(self) -> SnapshotMetadata:
        return self._snap_meta

    def snapshot(self) -> Snapshot:
        meta = self._snap_meta
        if meta.index == 0:
            return Snapshot(metadata=meta)
        if not self._has_image:
            raise SnapshotTemporarilyUnavailableError(
                f"{self._namespace}: snapshot {meta.term}-{meta.index} has no image"
            )
        cached = self._snap_cache
        if cached is not None and cached.metadata == meta:
            return cached
        self._check_open()
        snap = self._store.load(meta.term, meta.index)
        self._snap_cache = snap
        return snap

    def snapshot_size(self) -> int:
        meta = self._snap_meta
        if meta.index == 0:
            return 0
        try:
            return self._store.path(meta.term, meta.index).stat().st_size
        except OSError:
            return 0  # unknown: the policy's byte rule then holds, as with no snapshot

    def open_snapshot_data(self) -> AbstractContextManager[Readable]:
        meta = self._snap_meta
        if meta.index == 0:

            @contextmanager
            def empty() -> Iterator[Readable]:
                yield io.BytesIO(b"")

            return empty()
        if not self._has_image:
            raise self._corrupt(
                f"snapshot {meta.term}-{meta.index} has no image (the state machine was to "
                "hold its state)",
                index=meta.index,
            )
        return self._store.open_data(meta.term, meta.index)

    def image_metadata(self) -> SnapshotMetadata | None:
        meta = self._snap_meta
        if meta.index == 0:
            return None
        if self._has_image:
            return meta
        m = self._image_meta
        if m is None or not self._store.path(m.term, m.index).exists():
            return None
        return m

    @property
    def _has_image(self) -> bool:
        """The current snapshot has an image (it is the newest recorded with one)."""
        return self._image_meta is not None and self._image_meta == self._snap_meta

    def pending_install(self) -> SnapshotMetadata | None:
        return self._install

    # -- write machinery ---------------------------------------------------------------
    def _execute(self, pend: _Pending) -> None:
        """The blocking part of a write; safe to run in a worker thread (it touches no
        cache). Snapshot file first, then the one batch, then snapshot retention."""
        try:
            if pend.snap_meta is not None:
                m = pend.snap_meta
                if pend.snapshot is not None:
                    if not pend.snapshot.data and self._store.adopt(m):
                        # The data is in the store already (streamed there by the
                        # transport): keep that file; readers load it from there.
                        pend.snapshot = None
                    else:
                        self._store.write_bytes(m, pend.snapshot.data)
            if pend.delete_log:
                key = codec.log_key
                prefix = self._prefix
                pend.deletes.extend([key(prefix, i) for i in pend.delete_log])
                pend.delete_log = None
            if pend.batch is not None:
                self._db.write_batch(pend.op, pend.batch)
            elif pend.puts or pend.deletes:
                self._db.write(pend.op, pend.deletes, pend.puts, sync=pend.sync)
        except StorageWriteError as e:
            self._db.mark_failed(e)
            raise
        if pend.snap_meta is not None:
            # A failed cleanup only wastes space; the next snapshot retries it.
            with suppress(OSError):
                self._store.retain(
                    self._db.keep_snapshots, (pend.snap_meta.term, pend.snap_meta.index)
                )

    def _commit(self, pend: _Pending) -> None:
        """Publish the new state to readers, after the write landed (caller's thread)."""
        if pend.starts is not None and pend.terms is not None:
            self._first, self._last, self._dummy_term = pend.first, pend.last, pend.dummy_term
            self._starts, self._terms = pend.starts, pend.terms
        if pend.tail is not None:
            self._tail = pend.tail
        elif pend.tail_append is not None:
            tail = self._tail
            tail.extend(pend.tail_append)
            excess = len(tail) - self._db.tail_cache
            if excess > 0:
                del tail[:excess]
        if pend.hard_state is not None:
            self._hs = pend.hard_state
        if pend.conf_state is not None:
            self._cs = pend.conf_state
        if pend.snap_meta is not None:
            self._snap_meta = pend.snap_meta
            self._snap_cache = pend.snapshot
            if pend.image:
                self._image_meta = pend.snap_meta
        if pend.install is not None:
            self._install = pend.install
        if pend.clear_install:
            self._install = None

    def _run(self, pend: _Pending) -> None:
        if pend.empty():
            self._commit(pend)
            return
        self._busy = True
        try:
            self._execute(pend)
        finally:
            self._busy = False
        self._commit(pend)

    async def _run_async(self, pend: _Pending) -> None:
        if pend.empty():
            await trio.lowlevel.checkpoint()
            self._commit(pend)
            return
        self._busy = True
        self._db.off_loop_write_started()
        try:
            # Shielded: a write cannot be interrupted, and if it lands our caches must
            # say so. A cancellation is delivered at the caller's next checkpoint.
            with trio.CancelScope(shield=True):
                if pend.snap_meta is None and pend.op == "save":
                    # Log writes: the database's writer thread, in order.
                    await self._db.writer.run(self._execute, pend)
                else:
                    # Snapshot files and compactions can take long: a thread of their
                    # own, so log writes never queue behind them.
                    await trio.to_thread.run_sync(self._execute, pend)
        finally:
            self._busy = False
            self._db.off_loop_write_ended()
        self._commit(pend)
        await trio.lowlevel.checkpoint_if_cancelled()

    def _meta_log_put(self, first: int, last: int, dummy: int) -> tuple[bytes, bytes]:
        k = self._k_meta_log
        return k, codec.seal(k, codec.encode_log_meta(first, last, dummy))

    # -- save --------------------------------------------------------------------------
    def _prepare_save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool = True,
    ) -> _Pending:
        """``sync=False`` is allowed only when nothing but the commit index changes
        (etcd's MustSync): a lost commit index is relearned from the leader."""
        self._check_writable()
        if not sync and (entries or snapshot is not None):
            sync = True  # entries and snapshots are always durable before they count
        pend = _Pending("save", sync=sync)
        first, last, dummy = self._first, self._last, self._dummy_term
        starts, terms = self._starts, self._terms
        tail = self._tail
        prefix = self._prefix
        if snapshot is not None and snapshot.metadata.index > self._snap_meta.index:
            m = snapshot.metadata
            pend.delete_log = range(first, last + 1)  # keys made off the loop
            first, last, dummy = m.index + 1, m.index, m.term
            starts, terms = [m.index], [m.term]
            tail = []
            sm = codec.encode_snapshot_meta(m)
            pend.puts.append((self._k_meta_snap, codec.seal(self._k_meta_snap, sm)))
            pend.puts.append((self._k_meta_install, codec.seal(self._k_meta_install, sm)))
            cs = codec.encode_conf_state(m.conf_state)
            pend.puts.append((self._k_cs, codec.seal(self._k_cs, cs)))
            pend.snap_meta, pend.snapshot = m, snapshot
            pend.install, pend.conf_state = m, m.conf_state
        ents = entries
        if ents and ents[0].index < first:
            check_entries(ents)  # the skipped part too (rare path; the loop checks the rest)
            ents = ents[first - ents[0].index :]
        if ents:
            s = ents[0].index
            if s > last + 1:
                raise UnavailableError(f"missing log entry: last {last}, append at {s}")
            k = bisect_left(starts, s)
            if ents[0].term < terms[k - 1]:
                raise ValueError(f"entry terms go down at index {s}")
            starts, terms = starts[:k], terms[:k]
            new_last = ents[-1].index
            if new_last < last:
                pend.deletes.extend(codec.log_key(prefix, i) for i in range(new_last + 1, last + 1))
            # The hot loop (~0.4 us an entry): codec.encode_entry inlined, and the batch
            # checked (contiguous, terms never going down) as it is encoded.
            klog = self._k_log
            pack_index = codec.U64.pack
            pack_hdr = codec.ENTRY_HDR.pack
            pack_crc = codec.U32.pack
            crc32 = zlib.crc32
            append = pend.puts.append
            cur = terms[-1]
            expect = s
            for e in ents:
                i, t = e.index, e.term
                if i != expect:
                    raise ValueError(f"entries not contiguous: {expect - 1} then {i}")
                if t != cur:
                    if t < cur:
                        raise ValueError(f"entry terms go down at index {i}")
                    cur = t
                    starts.append(i)
                    terms.append(t)
                body = pack_hdr(t, e.type) + e.data
                append((klog + pack_index(i), body + pack_crc(crc32(body, i & 0xFFFFFFFF))))
                expect += 1
            last = new_last
            if tail and tail[-1].index + 1 == s:
                # The usual write: the cache grows in place once it has landed (a copy of
                # a cache of thousands of entries per write cost ~90 µs of the loop).
                pend.tail_append = list(ents)
            elif tail and tail[0].index <= s:
                tail = tail[: s - tail[0].index] + list(ents)
            else:
                tail = list(ents)
            if len(tail) > self._db.tail_cache:
                tail = tail[len(tail) - self._db.tail_cache :]
        if pend.snap_meta is not None or ents:
            pend.puts.append(self._meta_log_put(first, last, dummy))
            pend.first, pend.last, pend.dummy_term = first, last, dummy
            pend.starts, pend.terms = starts, terms
            if pend.tail_append is None:
                pend.tail = tail
        if hard_state is not None:
            pend.puts.append(
                (self._k_hs, codec.seal(self._k_hs, codec.encode_hard_state(hard_state)))
            )
            pend.hard_state = hard_state
        return pend

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool = True,
    ) -> None:
        self._run(self._prepare_save(hard_state, entries, snapshot, sync=sync))

    async def save_async(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool = True,
    ) -> None:
        """:meth:`save` off the event loop (see the module docstring): the loop keeps
        serving heartbeats, votes and reads while the disk syncs. A write that needs no
        fsync (only the commit index moved) runs inline."""
        pend = self._prepare_save(hard_state, entries, snapshot, sync=sync)
        if not pend.sync and pend.snap_meta is None:
            await trio.lowlevel.checkpoint()
            self._run(pend)
        else:
            await self._run_async(pend)

    def save_submit(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        on_done: Callable[[outcome.Outcome[None]], None],
    ) -> None:
        """Start a durable (fsynced) :meth:`save` of entries and hard state in the writer
        thread and return at once. ``on_done`` runs later on the event loop's thread,
        after the caches show the write (or with the write's error); until then no other
        write may start on this storage. For a caller that keeps working while the disk
        syncs (a Raft loop that must keep reading heartbeats behind a slow fsync)."""
        pend = self._prepare_save(hard_state, entries, None, sync=True)
        if pend.empty():
            self._commit(pend)
            on_done(outcome.Value(None))
            return
        if (pend.puts or pend.deletes) and not pend.delete_log:
            pend.batch = self._db.batch(pend.deletes, pend.puts, sync=True)
        self._busy = True

        def finished(result: outcome.Outcome[None]) -> None:
            self._busy = False
            self._db.off_loop_write_ended()
            if isinstance(result, outcome.Value):
                self._commit(pend)
            on_done(result)

        self._db.off_loop_write_started()
        try:
            self._db.writer.submit(self._execute, pend, finished)
        except BaseException:
            self._busy = False
            self._db.off_loop_write_ended()
            raise

    async def off_loop_writes_done(self) -> None:
        """See :meth:`LevelDB.off_loop_writes_done` (the database is shared by every
        namespace, and so is its queue of writes)."""
        await self._db.off_loop_writes_done()

    async def run_writes_off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """See :meth:`raftd.storage.base.GroupStorage.run_writes_off_loop`."""
        self._db.off_loop_write_started()
        try:
            return await trio.to_thread.run_sync(fn, *args)
        finally:
            self._db.off_loop_write_ended()

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.save(None, (), snap)

    # -- compaction --------------------------------------------------------------------
    def _prepare_compact(self, index: int) -> _Pending:
        self._check_writable()
        # No fsync of its own: a lost compaction leaves the log as it was (the batch is
        # atomic), and the next synced write makes it durable with everything before it.
        pend = _Pending("compact", sync=False)
        first, last = self._first, self._last
        if index <= first - 1:
            return pend
        if index > last:
            raise UnavailableError(f"compact {index} beyond last {last}")
        t = self.term(index)
        # A compaction after a snapshot deletes up to ~100,000 keys: they are made in
        # the thread that writes them, not on the event loop.
        pend.delete_log = range(first, index + 1)
        pend.puts.append(self._meta_log_put(index + 1, last, t))
        k = bisect_right(self._starts, index) - 1
        pend.first, pend.last, pend.dummy_term = index + 1, last, t
        pend.starts = [index, *self._starts[k + 1 :]]
        pend.terms = self._terms[k:]
        tail = self._tail
        pend.tail = tail[max(0, index + 1 - tail[0].index) :] if tail else []
        return pend

    def compact(self, index: int) -> None:
        self._run(self._prepare_compact(index))

    async def compact_async(self, index: int) -> None:
        await self._run_async(self._prepare_compact(index))

    # -- snapshots ---------------------------------------------------------------------
    def begin_snapshot(self, index: int, conf_state: ConfState | None) -> SnapshotMetadata | None:
        self._check_open()
        cur = self._snap_meta
        if index <= cur.index:
            if index == cur.index > 0 and not self._has_image and self._install is None:
                return cur  # to give the current snapshot its image
            return None
        if self._install is not None:
            raise ValueError("a snapshot install is pending: finish it first")
        if index > self._last:
            raise UnavailableError(f"snapshot index {index} beyond last {self._last}")
        cs = conf_state if conf_state is not None else self._conf_state()
        return SnapshotMetadata(index=index, term=self.term(index), conf_state=cs)

    def write_snapshot_image(
        self, meta: SnapshotMetadata, write: Callable[[Writable], object]
    ) -> None:
        # Only the snapshot folder is touched (a temp file, renamed into place): no
        # database record and no cache, so the owner's writes may run meanwhile.
        self._store.write(meta, write)

    def _prepare_record(self, meta: SnapshotMetadata) -> _Pending | None:
        self._check_writable()
        cur = self._snap_meta
        if self._install is not None or meta.index < cur.index:
            return None
        if meta.index == cur.index and (meta != cur or self._has_image):
            return None
        if not self._store.path(meta.term, meta.index).exists():
            raise ValueError(f"no image of snapshot {meta.term}-{meta.index} in the store")
        return self._snapshot_record(meta)

    def _snapshot_record(self, meta: SnapshotMetadata) -> _Pending:
        """The write that makes ``meta`` the current snapshot (its file is written, or
        adopted, first)."""
        pend = _Pending("snapshot")
        k = self._k_meta_snap
        pend.puts.append((k, codec.seal(k, codec.encode_snapshot_meta(meta))))
        pend.snap_meta = meta
        return pend

    def _discard_image(self, meta: SnapshotMetadata) -> None:
        if (meta.term, meta.index) != (self._snap_meta.term, self._snap_meta.index):
            with suppress(OSError):
                self._store.remove(meta.term, meta.index)

    def record_snapshot(self, meta: SnapshotMetadata) -> bool:
        pend = self._prepare_record(meta)
        if pend is None:
            self._discard_image(meta)
            return False
        self._run(pend)
        return True

    async def record_snapshot_async(self, meta: SnapshotMetadata) -> bool:
        pend = self._prepare_record(meta)
        if pend is None:
            self._discard_image(meta)
            await trio.lowlevel.checkpoint()
            return False
        await self._run_async(pend)
        return True

    def _prepare_state_record(self, meta: SnapshotMetadata) -> _Pending | None:
        self._check_writable()
        if meta.index <= self._snap_meta.index or self._install is not None:
            return None
        pend = self._snapshot_record(meta)
        pend.image = False
        return pend

    def record_state_snapshot(self, meta: SnapshotMetadata) -> bool:
        pend = self._prepare_state_record(meta)
        if pend is None:
            return False
        self._run(pend)
        return True

    async def record_state_snapshot_async(self, meta: SnapshotMetadata) -> bool:
        pend = self._prepare_state_record(meta)
        if pend is None:
            await trio.lowlevel.checkpoint()
            return False
        await self._run_async(pend)
        return True

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        self._check_writable()
        meta = self.begin_snapshot(index, conf_state)
        if meta is None:
            return self.snapshot()
        pend = self._snapshot_record(meta)
        pend.snapshot = Snapshot(metadata=meta, data=data)
        self._run(pend)
        return self.snapshot()

    def create_snapshot_streaming(
        self,
        index: int,
        conf_state: ConfState | None,
        write: Callable[[Writable], object],
    ) -> SnapshotMetadata:
        self._check_writable()
        meta = self.begin_snapshot(index, conf_state)
        if meta is None:
            return self._snap_meta
        self.write_snapshot_image(meta, write)
        self.record_snapshot(meta)
        return self._snap_meta

    # -- small records -----------------------------------------------------------------
    def set_conf_state(self, conf_state: ConfState) -> None:
        self._check_writable()
        pend = _Pending("conf")
        pend.puts.append((self._k_cs, codec.seal(self._k_cs, codec.encode_conf_state(conf_state))))
        pend.conf_state = conf_state
        self._run(pend)

    def finish_install(self, index: int) -> None:
        self._check_writable()
        if self._install is None or self._install.index > index:
            return
        pend = _Pending("install", deletes=[self._k_meta_install], clear_install=True)
        self._run(pend)
