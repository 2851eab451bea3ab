"""Writing a backup file: the state machine's snapshot stream framed and checksummed.

The format (read back by :mod:`raftd.app.backup`, which verifies and restores it)::

    b"RAFTDBAK1\\n"
    one JSON line: {"namespace": ..., "index": ..., "revision": ..., "created": ...}
    the state machine's snapshot stream (raftd.kv.snapfmt), in chunks
    32 bytes: SHA-256 of everything above
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from raftd.kv.machine import KVStateMachine

__all__ = ["MAGIC", "BackupInfo", "write_backup"]

MAGIC = b"RAFTDBAK1\n"


@dataclass(frozen=True, slots=True)
class BackupInfo:
    namespace: str
    index: int
    revision: int
    size: int


class _HashingWriter:
    """Writes through to ``out`` while hashing, and counts bytes."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.sha.update(data)
        self.size += len(data)
        self._write(data)
        return len(data)


def write_backup(
    sm: KVStateMachine, namespace: str, write: Callable[[bytes], object]
) -> BackupInfo:
    """Stream a backup of ``sm`` through ``write`` (call after a read barrier)."""
    view = sm.snapshot_view()
    try:
        w = _HashingWriter(write)
        header = {
            "namespace": namespace,
            "index": view.index,
            "revision": sm.revision(),
            "created": time.time(),
        }
        w.write(MAGIC)
        w.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        view.write(w)
        digest = w.sha.digest()
        write(digest)
        return BackupInfo(namespace, view.index, sm.revision(), w.size + len(digest))
    finally:
        view.close()
