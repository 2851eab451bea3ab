"""The read side of Raft storage, as the core sees it, and an in-memory implementation.

The core never writes storage itself: it hands entries, hard state and snapshots out in a
``Ready`` batch, and the runtime persists them, then calls ``advance()``. The core reads
stable (already persisted) entries back through the :class:`Storage` protocol.

Index conventions (as etcd-io/raft): storage holds a dummy entry at position 0 whose
index/term are those of the last snapshot (or 0/0), so ``first_index() == snap.index + 1``
and ``term(first_index() - 1)`` is always answerable.
"""

from __future__ import annotations

from dataclasses import replace
from operator import attrgetter
from typing import Protocol

from raftd.core.types import (
    EMPTY_HARD_STATE,
    ENTRY_OVERHEAD,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
)

_DATA = attrgetter("data")


class StorageError(Exception):
    """Base class of storage errors the core understands."""


class CompactedError(StorageError):
    """The requested index is older than the first available one: it was compacted."""


class UnavailableError(StorageError):
    """The requested index is newer than the last one in storage."""


class SnapshotTemporarilyUnavailableError(StorageError):
    """A snapshot is being prepared; the leader should retry later."""


class Storage(Protocol):
    """What the Raft core reads. All methods must be cheap and must not block on I/O
    for long: the core calls them synchronously while stepping."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the latest membership."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one if any, at most ``max_size`` bytes.

        Raises :class:`CompactedError` if ``lo <= snapshot index`` and
        :class:`UnavailableError` if ``hi > last_index() + 1``.
        """
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``, for ``first_index()-1 <= index <= last_index()``."""
        ...

    def last_index(self) -> int: ...

    def first_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot. May raise :class:`SnapshotTemporarilyUnavailableError`."""
        ...


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """Prefix of ``entries`` whose total size is within ``max_size``; never empty if the
    input is not (the first entry always goes, so a huge entry cannot stall replication)."""
    if max_size is None or not entries:
        return entries
    # Most runs fit: their total (Entry.size() summed) first, without a call per entry.
    if sum(map(len, map(_DATA, entries))) + ENTRY_OVERHEAD * len(entries) <= max_size:
        return entries
    total = entries[0].size()
    n = 1
    while n < len(entries):
        total += entries[n].size()
        if total > max_size:
            break
        n += 1
    return entries[:n]


class MemoryStorage:
    """In-memory :class:`Storage` with the write methods the runtime and simulator use.

    Used by unit tests and the simulator. Not durable. ``ents[0]`` is a dummy entry
    holding the snapshot's index and term.
    """

    def __init__(self) -> None:
        self.hard_state: HardState = EMPTY_HARD_STATE
        self.snap: Snapshot = Snapshot()
        self.ents: list[Entry] = [Entry(term=0, index=0)]

    # -- reads ---------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.snap.metadata.conf_state

    def _offset(self) -> int:
        return self.ents[0].index

    def first_index(self) -> int:
        return self._offset() + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, index: int) -> int:
        off = self._offset()
        if index < off:
            raise CompactedError(f"index {index} compacted (first is {off + 1})")
        if index - off >= len(self.ents):
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        return self.ents[index - off].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        off = self._offset()
        if lo <= off:
            raise CompactedError(f"index {lo} compacted (first is {off + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} beyond last {self.last_index()}")
        return limit_size(self.ents[lo - off : hi - off], max_size)

    def snapshot(self) -> Snapshot:
        return self.snap

    # -- writes --------------------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap``. Older snapshots are ignored."""
        if snap.metadata.index <= self.snap.metadata.index:
            return
        self.snap = snap
        self.ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of applied ``index``."""
        if index <= self.snap.metadata.index:
            return self.snap
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} beyond last {self.last_index()}")
        cs = conf_state if conf_state is not None else self.snap.metadata.conf_state
        meta = SnapshotMetadata(index=index, term=self.term(index), conf_state=cs)
        self.snap = Snapshot(metadata=meta, data=data)
        return self.snap

    def compact(self, compact_index: int) -> None:
        """Discard entries before ``compact_index``; it becomes the dummy entry."""
        off = self._offset()
        if compact_index <= off:
            return
        if compact_index > self.last_index():
            raise UnavailableError(f"compact {compact_index} beyond last {self.last_index()}")
        i = compact_index - off
        self.ents = [replace(self.ents[i], data=b""), *self.ents[i + 1 :]]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append, truncating any conflicting suffix first. Entries already compacted are
        skipped."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return
        ents = list(entries)
        if first > ents[0].index:
            ents = ents[first - ents[0].index :]
        off = ents[0].index - self._offset()
        if off > len(self.ents):
            raise UnavailableError(
                f"missing log entry: last {self.last_index()}, append at {ents[0].index}"
            )
        if off < len(self.ents):
            del self.ents[off:]  # truncate the conflicting suffix
        self.ents.extend(ents)
