"""Durable Raft storage: the contract, a memory twin, LevelDB, snapshots.

See :mod:`raftd.storage.base` for the contract and :mod:`raftd.storage.leveldb` for the
on-disk design (key layout in :mod:`raftd.storage.codec`, snapshot files and crash-safe
install in :mod:`raftd.storage.snapshots`).
"""

from raftd.storage.base import (
    CorruptionError,
    FaultHook,
    RaftStorage,
    Readable,
    StorageClosedError,
    StorageWriteError,
    Writable,
)
from raftd.storage.leveldb import LevelDB, LevelDBStorage
from raftd.storage.memory import MemoryRaftStorage
from raftd.storage.snapshots import (
    PRESETS,
    SnapshotPolicy,
    SnapshotStore,
    Snapshotter,
    finish_pending_install,
    install_snapshot,
    recover,
)

__all__ = [
    "PRESETS",
    "CorruptionError",
    "FaultHook",
    "LevelDB",
    "LevelDBStorage",
    "MemoryRaftStorage",
    "RaftStorage",
    "Readable",
    "SnapshotPolicy",
    "SnapshotStore",
    "Snapshotter",
    "StorageClosedError",
    "StorageWriteError",
    "Writable",
    "finish_pending_install",
    "install_snapshot",
    "recover",
]
