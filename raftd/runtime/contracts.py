"""What the group runtime needs of the parts it is given, as protocols.

- storage: :class:`raftd.storage.base.GroupStorage` (the Raft storage contract, the
  snapshot images, a save that completes later); implemented by
  :class:`~raftd.storage.leveldb.LevelDBStorage` and its test twin
  :class:`~raftd.storage.memory.MemoryRaftStorage`;
- state machine: :class:`GroupStateMachine` below; implemented by
  :class:`~raftd.kv.machine.KVStateMachine` (on LevelDB or in memory);
- transport: :class:`raftd.transport.base.Transport`; implemented by
  :class:`~raftd.transport.libp2p.Libp2pTransport` and
  :class:`~raftd.transport.memory.MemoryTransport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftd.kv.machine import ApplyResult
from raftd.storage.base import GroupStorage
from raftd.storage.snapshots import Snapshottable

__all__ = ["GroupStateMachine", "GroupStorage"]


class GroupStateMachine(Snapshottable, Protocol):
    """A replicated state machine as the group runtime drives it: committed entries are
    applied in index order, in batches; snapshots are taken from a consistent view and
    restored from an image (:class:`~raftd.storage.snapshots.Snapshottable`)."""

    def apply_many(self, items: Sequence[tuple[int, bytes]]) -> list[ApplyResult]:
        """Apply consecutive committed ``(index, data)`` pairs in order, as one batch (an
        empty ``data``: an entry that only moves the applied index); one result per
        entry, naming its ``index`` and, for a command that carried one, its
        ``session``. Entries at or below :meth:`applied_index` are skipped, never
        applied twice; a gap raises ``ValueError`` before anything is applied."""
        ...

    def hold_notifications(self) -> None:
        """Queue the state machine's listener calls (they run on the event loop's thread)
        while it is restored on a worker thread."""
        ...

    def release_notifications(self) -> None:
        """Make the queued listener calls, on the calling (event loop's) thread."""
        ...
