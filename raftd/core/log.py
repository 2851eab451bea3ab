"""The Raft log: stable entries in :class:`Storage` plus an unstable tail in memory.

Entries the node accepted but the runtime has not yet persisted live in
:class:`Unstable`. They leave it when ``advance()`` reports them persisted.
"""

from __future__ import annotations

from raftd.core.storage import CompactedError, Storage, UnavailableError, limit_size
from raftd.core.types import Entry, Snapshot


class LogError(Exception):
    """An internal log invariant was violated; the node must not continue."""


class Unstable:
    """Entries and at most one snapshot not yet persisted. ``entries[i]`` has index
    ``offset + i``."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        """Entries up to ``i`` (with term ``t``) are now persisted."""
        gt = self.maybe_term(i)
        if gt is None or gt != t or i < self.offset:
            # The entry was replaced by a newer leader's entry while being persisted.
            return
        del self.entries[: i + 1 - self.offset]
        self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # The log is being replaced from before our tail: take the new entries.
            self.offset = after
            self.entries = list(ents)
        else:
            # Keep what precedes ``after``, then append.
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        if lo < self.offset or hi > self.offset + len(self.entries):
            raise LogError(f"unstable slice [{lo},{hi}) out of [{self.offset}, ...]")
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """The node's log. ``committed`` and ``applied`` are indexes into it.

    Invariant: ``applied <= committed <= last_index()``.
    """

    def __init__(self, storage: Storage, max_next_ents_size: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, unstable={len(self.unstable.entries)})"
        )

    # -- indexes ---------------------------------------------------------------------------
    # first_index and last_index are Unstable.maybe_first_index / maybe_last_index, then
    # the storage's, written out: the core asks for them several times per message.
    def first_index(self) -> int:
        snap = self.unstable.snapshot
        if snap is not None:
            return snap.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``. Raises :class:`CompactedError` / :class:`UnavailableError`."""
        dummy = self.first_index() - 1
        if i < dummy:
            raise CompactedError(f"index {i} is compacted")
        if i > self.last_index():
            raise UnavailableError(f"index {i} is beyond the last index {self.last_index()}")
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # -- appending ---------------------------------------------------------------------------
    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry that is new or conflicts with ours, or 0."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, with that term.

        Used for the fast backtrack of Raft §5.3: a whole term of mismatching entries is
        skipped in one round trip instead of one index per round trip.
        """
        while index > 0:
            try:
                t = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, committed: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """Append ``ents`` after (index, log_term) if our log matches there (Raft §5.3).

        Returns the index of the last new entry, or None on a mismatch.
        """
        if not self.match_term(index, log_term):
            return None
        lastnewi = index + len(ents)
        ci = self.find_conflict(ents)
        if ci != 0:
            if ci <= self.committed:
                raise LogError(f"entry {ci} conflicts with committed entry {self.committed}")
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, lastnewi))
        return lastnewi

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise LogError(f"append after {after} is out of range [committed {self.committed}]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    # -- commit and apply ----------------------------------------------------------------
    def commit_to(self, to: int) -> None:
        if self.committed < to:
            if self.last_index() < to:
                raise LogError(f"commit {to} is beyond the last index {self.last_index()}")
            self.committed = to

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Raft §5.4.2: only entries of the current term are committed by counting."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise LogError(f"applied {i} out of range [{self.applied}, {self.committed}]")
        self.applied = i

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    def has_next_committed_entries(self) -> bool:
        if self.committed <= self.applied or self.unstable.snapshot is not None:
            return False
        off = max(self.applied + 1, self.first_index())
        return self.committed + 1 > off

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet applied, at most ``max_next_ents_size`` bytes."""
        if self.has_pending_snapshot():
            return []
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    # -- reading -------------------------------------------------------------------------
    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def entries(self, i: int, max_size: int | None = None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``. Raises :class:`CompactedError` if ``lo`` is compacted."""
        if lo > hi:
            raise LogError(f"invalid slice {lo} > {hi}")
        fi = self.first_index()
        if lo < fi:
            raise CompactedError(f"index {lo} is compacted (first is {fi})")
        if hi > self.last_index() + 1:
            raise LogError(f"slice [{lo},{hi}) out of bound [{fi},{self.last_index()}]")
        if lo == hi:
            return []
        ents: list[Entry] = []
        uoff = self.unstable.offset
        if lo < uoff:
            stored = self.storage.entries(lo, min(hi, uoff), max_size)
            if len(stored) < min(hi, uoff) - lo:
                return stored  # limited by size
            ents = stored
        if hi > uoff:
            ents = ents + self.unstable.slice(max(lo, uoff), hi)
        return limit_size(ents, max_size)

    def stable_last_index(self) -> int:
        """The last index this node holds durably (entries before the unstable tail)."""
        if self.unstable.snapshot is not None:
            return self.storage.last_index()
        return self.unstable.offset - 1

    # -- persistence callbacks -----------------------------------------------------------
    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
