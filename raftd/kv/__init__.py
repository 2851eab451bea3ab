"""The replicated key-value state machine (etcd-like KV with exactly-once sessions).

- :mod:`raftd.kv.machine`: :class:`KVStateMachine` (apply, reads, snapshots).
- :mod:`raftd.kv.backend`: its storage, in memory or in the daemon's LevelDB.
- :mod:`raftd.kv.commands`: builders of serialized commands (``raftd.v1.Command``).
- :mod:`raftd.kv.snapfmt`: the streaming snapshot format.
"""

from raftd.kv.backend import KeyRecord, LevelDBKVBackend, MemoryKVBackend, Meta, Session
from raftd.kv.machine import (
    ApplyResult,
    KVSnapshotView,
    KVStateMachine,
    RestoreInProgressError,
)
from raftd.wire.ranges import prefix_end

__all__ = [
    "ApplyResult",
    "KVSnapshotView",
    "KVStateMachine",
    "KeyRecord",
    "LevelDBKVBackend",
    "MemoryKVBackend",
    "Meta",
    "RestoreInProgressError",
    "Session",
    "prefix_end",
]
