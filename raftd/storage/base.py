"""The storage contract of the runtime: the core's reads plus the writes the runtime makes.

The pure core (:mod:`raftd.core`) only *reads* storage, through
:class:`raftd.core.storage.Storage`. The runtime's Ready loop *writes* it, and its duty
(etcd-io/raft's ``Ready`` contract, Raft §5 Figure 2) is:

    persist hard state + entries (+ snapshot)  ->  send messages  ->  apply  ->  advance

:meth:`RaftStorage.save` is that "persist" step: ONE atomic, durable write per ``Ready``.

Index conventions follow :mod:`raftd.core.storage`: ``first_index() - 1`` is the index of
the last compaction point (a snapshot or a ``compact()`` call) and ``term(first_index()-1)``
is always answerable.

Error model:

- Contract violations by the caller (a gap in the log, entries out of order) raise
  :class:`~raftd.core.storage.UnavailableError` or :class:`ValueError` and write nothing.
- A failed write (disk full, I/O error) raises :class:`StorageWriteError`. From then on the
  storage is *failed*: every further write raises :class:`StorageWriteError` too (reads
  keep working). The runtime must step down and stop acknowledging: after a failed write
  we no longer know what is on disk, so we must not promise anything.
- Stored data that does not check out (bad checksum, a hole in the log) raises
  :class:`CorruptionError`, preferably at open, never a silently wrong answer.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from raftd.core.storage import Storage, StorageError
from raftd.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

if TYPE_CHECKING:
    import outcome

T = TypeVar("T")

__all__ = [
    "CorruptionError",
    "FaultHook",
    "GroupStorage",
    "RaftStorage",
    "Readable",
    "SnapshotCancelled",
    "SnapshotFiles",
    "StorageClosedError",
    "StorageWriteError",
    "Writable",
    "check_entries",
]

FaultHook = Callable[[str], None]
"""Fault-injection hook: called with a point name (``"write:save"``, ``"snapfile:chunk"``,
...) just before the storage does the named thing. It may raise (an ``OSError`` is then
reported as a :class:`StorageWriteError`, as a real I/O error would be), sleep, or kill the
process (crash tests). ``None`` in production."""


class Writable(Protocol):
    """The part of a binary file object that snapshot writers need."""

    def write(self, data: bytes, /) -> int: ...


class Readable(Protocol):
    """The part of a binary file object that snapshot readers need."""

    def read(self, size: int = -1, /) -> bytes: ...


class StorageWriteError(StorageError):
    """A write failed (disk full, I/O error, ...). The storage is failed from then on."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message if cause is None else f"{message}: {cause!r}")
        self.cause = cause


class SnapshotCancelled(Exception):
    """The writing of a snapshot image was abandoned on request (the group is stopping);
    nothing of it is left behind."""


class StorageClosedError(StorageError):
    """The storage (or its database) was closed."""


class CorruptionError(StorageError):
    """Stored data failed validation. Names where, so an operator can find it."""

    def __init__(
        self,
        message: str,
        *,
        namespace: str,
        index: int | None = None,
        key: bytes | None = None,
    ) -> None:
        where = [f"namespace={namespace!r}"]
        if index is not None:
            where.append(f"index={index}")
        if key is not None:
            where.append(f"key={key.hex()}")
        super().__init__(f"{message} ({', '.join(where)})")
        self.namespace = namespace
        self.index = index
        self.key = key


@runtime_checkable
class RaftStorage(Storage, Protocol):
    """Durable Raft storage for one group (namespace): the core's reads plus the writes.

    Implementations: :class:`raftd.storage.memory.MemoryRaftStorage` (tests, simulator)
    and :class:`raftd.storage.leveldb.LevelDBStorage`. Both pass
    ``tests/storage/test_contract.py``.

    Threading: one owner (the group's Ready loop) calls the writes, one at a time.
    ``save_async`` may run the blocking part in a worker thread; in-memory caches are only
    updated on the caller's thread after the write lands.
    """

    @property
    def namespace(self) -> str: ...

    @property
    def failed(self) -> StorageWriteError | None:
        """The write error that failed this storage, or ``None``."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool = True,
    ) -> None:
        """Persist one ``Ready`` atomically and durably (fsync) before returning.

        ``sync=False`` (a Ready whose only change is the commit index, etcd's
        ``MustSync == false``) skips the fsync; entries and snapshots are always synced.

        Order inside the one batch: the snapshot (if newer than the current one) replaces
        the log and marks an install pending (see :meth:`pending_install`); then
        ``entries`` are appended, replacing every stored entry with index >= the first new
        entry's index (conflicting suffix, Raft §5.3); entries at or below the compaction
        point are skipped; then ``hard_state`` (``None``: unchanged).

        Snapshot data: the bytes in ``snapshot.data`` are written to the snapshot store.
        A snapshot with *empty* data whose image is already in the store (put there by
        ``snapshot_store.write`` or taken over from the transport) is recorded from that
        image (LevelDB: verified and fsynced, without rewriting the file).

        Raises :class:`~raftd.core.storage.UnavailableError` if ``entries`` would leave a
        gap, :class:`ValueError` if they are not contiguous or their terms go down, and
        :class:`StorageWriteError` if the write fails (nothing is then known to be durable).
        """
        ...

    async def save_async(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool = True,
    ) -> None:
        """:meth:`save` without stalling the trio loop where the write is slow."""
        ...

    def compact(self, index: int) -> None:
        """Drop entries before ``index``; ``index`` becomes the compaction point, so
        afterwards ``first_index() == index + 1`` and ``term(index)`` still answers.
        No-op if already compacted that far; ``UnavailableError`` if ``index > last``."""
        ...

    async def compact_async(self, index: int) -> None:
        """:meth:`compact` without stalling the trio loop."""
        ...

    def snapshot_metadata(self) -> SnapshotMetadata:
        """Metadata of the current snapshot, cheaply (no data is loaded)."""
        ...

    def snapshot_size(self) -> int:
        """Bytes of the current snapshot as stored (0 if there is none), cheaply (no data
        is read): for a snapshot policy that restarts with the size of the last one."""
        ...

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (ignored unless newer than the current
        snapshot) and mark an install pending, durably. Same as ``save(None, [], snap)``."""
        ...

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of applied ``index`` (durably). Does not
        compact. Returns the current snapshot unchanged if ``index`` is not newer.
        ``conf_state=None`` keeps the current membership."""
        ...

    def create_snapshot_streaming(
        self,
        index: int,
        conf_state: ConfState | None,
        write: Callable[[Writable], object],
    ) -> SnapshotMetadata:
        """As :meth:`create_snapshot`, but the data is produced by ``write(file)`` in
        chunks, so a large state machine never has to sit in memory as one ``bytes``
        (the three steps of :meth:`begin_snapshot` in a row)."""
        ...

    def begin_snapshot(self, index: int, conf_state: ConfState | None) -> SnapshotMetadata | None:
        """The metadata a snapshot of the state machine as of applied ``index`` carries
        (``conf_state=None``: the current membership), or ``None`` if ``index`` is not
        newer than the current snapshot. Writes nothing. Raises :class:`ValueError`
        while an install is pending and ``UnavailableError`` beyond the last entry.
        Exception: if the current snapshot has no image and ``index`` is its index, the
        current snapshot's metadata (to give it an image).

        A snapshot taken beside the owner's other writes is three steps:
        :meth:`begin_snapshot` (the owner), :meth:`write_snapshot_image` (any thread),
        :meth:`record_snapshot` (the owner). A snapshot without an image is two:
        :meth:`begin_snapshot`, then :meth:`record_state_snapshot` once the state
        machine holds that state durably."""
        ...

    def write_snapshot_image(
        self, meta: SnapshotMetadata, write: Callable[[Writable], object]
    ) -> None:
        """Store the image of ``meta``, produced by ``write(file)`` in chunks, durably.
        Blocking, and safe to run in a worker thread while the owner keeps saving,
        compacting and reading: it touches only the snapshot images, never the log or a
        cache. A failure raises :class:`StorageWriteError`, leaves no image, and does
        not fail the storage (nothing it holds has changed)."""
        ...

    def record_snapshot(self, meta: SnapshotMetadata) -> bool:
        """Make the image of ``meta`` (from :meth:`write_snapshot_image`) the current
        snapshot, durably. Does not compact. ``False`` if it is no longer newer than the
        current snapshot or an install became pending while it was written: the image is
        then dropped and nothing changes. :class:`ValueError` if there is no image."""
        ...

    async def record_snapshot_async(self, meta: SnapshotMetadata) -> bool:
        """:meth:`record_snapshot` without stalling the trio loop."""
        ...

    def record_state_snapshot(self, meta: SnapshotMetadata) -> bool:
        """Make ``meta`` (from :meth:`begin_snapshot`) the current snapshot *without an
        image*, durably: the state machine itself holds the state as of ``meta.index``
        and the caller has made that state durable first (the log behind it may then be
        compacted). Such a snapshot cannot be sent or restored from until an image is
        recorded for it or a later one (see :meth:`image_metadata`). ``False`` (nothing
        changes) if ``meta`` is no longer newer than the current snapshot or an install
        is pending."""
        ...

    async def record_state_snapshot_async(self, meta: SnapshotMetadata) -> bool:
        """:meth:`record_state_snapshot` without stalling the trio loop."""
        ...

    def image_metadata(self) -> SnapshotMetadata | None:
        """The newest recorded snapshot whose image is in the store: the current one if
        it has an image, else an earlier one still kept (only images recorded since this
        storage was opened count), else ``None``. An earlier image can still bring a
        follower up to date if the log holds every entry after it."""
        ...

    def open_snapshot_data(self) -> AbstractContextManager[Readable]:
        """A reader of the current snapshot's data, verified (checksum) before it is handed
        out. Used to restore the state machine. :class:`CorruptionError` if the current
        snapshot has no image."""
        ...

    def set_conf_state(self, conf_state: ConfState) -> None:
        """Durably record the membership the runtime applied. ``initial_state()`` returns
        the last one recorded (here or by a snapshot install), else the current
        snapshot's membership."""
        ...

    def pending_install(self) -> SnapshotMetadata | None:
        """The snapshot whose install (state machine restore) has not been confirmed with
        :meth:`finish_install`, or ``None``. Survives restarts: see
        :func:`raftd.storage.snapshots.recover`."""
        ...

    def finish_install(self, index: int) -> None:
        """Confirm that the state machine now reflects the snapshot at ``index``."""
        ...

    def close(self) -> None:
        """Release resources. Further writes raise :class:`StorageClosedError`."""
        ...


class SnapshotFiles(Protocol):
    """The snapshot images of one group as the runtime moves them: written from the
    state machine, streamed to a peer, taken over from a peer.

    Implementations: :class:`raftd.storage.snapshots.SnapshotStore` (files) and
    :class:`raftd.storage.memory.MemorySnapshotFiles` (bytes in memory)."""

    def write(self, meta: SnapshotMetadata, produce: Callable[[Writable], object]) -> object:
        """Store a complete image for ``meta``; ``produce(w)`` writes it in chunks. Durable
        on return. Recording it as the current snapshot is a separate step:
        ``storage.save(None, (), Snapshot(metadata=meta))`` with empty data."""
        ...

    def source(self, term: int, index: int) -> str | AsyncIterable[bytes]:
        """The stored image of ``(term, index)`` for a transport to stream: a file path
        or an async iterator of chunks."""
        ...

    def adopt_file(self, meta: SnapshotMetadata, path: Path) -> None:
        """Take over the image a transport received at ``path`` (verified in transit) as
        the image of ``meta``; ``path`` may be gone afterwards. Blocking: run it in a
        thread. The storage verifies it when it is recorded (``save``)."""
        ...


class GroupStorage(RaftStorage, Protocol):
    """What the group runtime (:class:`raftd.runtime.group.Group`) needs of its storage:
    the Raft storage contract, the snapshot images, and a save that completes later."""

    @property
    def snapshot_store(self) -> SnapshotFiles: ...

    def save_submit(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        on_done: Callable[[outcome.Outcome[None]], None],
    ) -> None:
        """Start a durable :meth:`save` of entries and hard state and return at once;
        ``on_done`` runs on the event loop's thread once the caches show the write (or
        with the write's error). No other write may start until then. An implementation
        may complete it before returning (``on_done`` is then called from here)."""
        ...

    async def off_loop_writes_done(self) -> None:
        """Return once no write of this storage's database runs on another thread, so
        that a write made next on the event loop (the state machine's apply) cannot queue
        behind another namespace's fsync and hold the loop. Returns at once, with no
        checkpoint, when nothing is in flight."""
        ...

    async def run_writes_off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)``, which writes this storage's database (a snapshot's
        restore), in a worker thread, counted among the writes
        :meth:`off_loop_writes_done` waits for."""
        ...


def check_entries(entries: Sequence[Entry]) -> None:
    """Raise ``ValueError`` unless ``entries`` are contiguous with non-decreasing terms."""
    for prev, cur in itertools.pairwise(entries):
        if cur.index != prev.index + 1:
            raise ValueError(f"entries not contiguous: {prev.index} then {cur.index}")
        if cur.term < prev.term:
            raise ValueError(f"entry terms go down at index {cur.index}")
