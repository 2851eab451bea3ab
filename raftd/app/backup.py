"""Backups: ``raftd snapshot save FILE`` and ``raftd snapshot restore FILE``.

A backup file (written by :func:`raftd.kv.backupfile.write_backup`, which the API's
``snapshot save`` streams) is self-contained and checksummed::

    b"RAFTDBAK1\\n"
    one JSON line: {"namespace": ..., "index": ..., "revision": ..., "created": ...}
    the state machine's snapshot stream (raftd.kv.snapfmt), in chunks
    32 bytes: SHA-256 of everything above

A backup saved by ``etcdctl snapshot save`` (the etcd endpoint's Snapshot) is this file
followed by padding and another SHA-256 (see :mod:`raftd.etcd.snapfile`); ``restore``
reads the backup inside it.

``save`` takes a linearizable read point first (ReadIndex), so the backup contains every
write acknowledged before the command started. ``restore`` seeds a NEW cluster: run it on
every future member's empty data dir with the same ``--peer`` list (or none, for a single
node that others join later). Every member then starts from the identical state, at the
backup's index, with those members as voters.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from raftd.core import ConfState, Snapshot, SnapshotMetadata
from raftd.etcd.snapfile import payload_size
from raftd.kv.backupfile import MAGIC, BackupInfo, write_backup
from raftd.kv.machine import KVStateMachine
from raftd.storage.leveldb import LevelDB
from raftd.storage.snapshots import finish_pending_install
from raftd.transport.host import load_or_create_identity, peer_id_of

__all__ = [
    "MAGIC",
    "BackupError",
    "BackupInfo",
    "restore_backup",
    "verify_backup",
    "write_backup",
]

_CHUNK = 256 * 1024


class BackupError(Exception):
    """The backup cannot be written or restored; the message says why."""


def _size(path: Path) -> int:
    """The backup's size: the file's, or that of the backup inside an etcdctl file."""
    inner = payload_size(path)
    return inner if inner is not None else path.stat().st_size


def _read_header(f: BinaryIO) -> dict[str, object]:
    if f.read(len(MAGIC)) != MAGIC:
        raise BackupError("not a raftd backup file (bad magic)")
    line = f.readline(4096)
    try:
        header = json.loads(line)
    except ValueError:
        raise BackupError("corrupt backup header") from None
    if not isinstance(header, dict) or not isinstance(header.get("index"), int):
        raise BackupError("corrupt backup header")
    return header


Progress = Callable[[int, int], None]
"""``progress(done, total)``: ``done`` of ``total`` bytes read so far."""


def verify_backup(path: Path, *, progress: Progress | None = None) -> BackupInfo:
    """Check the magic, the header and the SHA-256 (reading the file once, in chunks).
    ``progress(done, total)`` is called after each chunk, ``total`` being the file
    size; the last call has ``done == total``."""
    size = _size(path)
    if size < len(MAGIC) + 32:
        raise BackupError(f"{path} is too short to be a backup")
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        header = _read_header(f)
        f.seek(0)
        left = size - 32
        while left:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise BackupError(f"{path} is truncated")
            sha.update(chunk)
            left -= len(chunk)
            if progress is not None:
                progress(size - 32 - left, size)
        if f.read(32) != sha.digest():
            raise BackupError(f"{path}: checksum mismatch (corrupt or truncated backup)")
        if progress is not None:
            progress(size, size)
    return BackupInfo(
        str(header.get("namespace", "")),
        int(header["index"]),  # type: ignore[call-overload]
        int(header.get("revision", 0)),  # type: ignore[call-overload]
        size,
    )


class _Bounded(io.RawIOBase):
    """Read at most ``left`` bytes of ``f`` (the stream without the checksum)."""

    def __init__(self, f: BinaryIO, left: int) -> None:
        self._f = f
        self._left = left

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data


def restore_backup(
    path: Path,
    data_dir: Path,
    namespace: str | None = None,
    peers: list[str] | None = None,
    *,
    progress: Progress | None = None,
) -> tuple[BackupInfo, str]:
    """Seed ``namespace`` (default: the backup's) in the empty ``data_dir`` from the
    backup, with this node plus ``peers`` (peer ids) as voters. Returns the backup's
    info and this node's peer id.

    ``progress(done, total)`` is called as the file is read, chunk by chunk, with
    ``done`` never decreasing. The file is read twice: whole, to check its checksum
    before anything is written, then without the trailing checksum, to load it; so
    ``total`` is ``2 * size - 32`` bytes. On success the last call has ``done ==
    total`` (made once every byte was read, before the state machine is rebuilt from
    the loaded snapshot)."""
    size = _size(path)
    total_read = 2 * size - 32

    def verify_progress(done: int, _size: int) -> None:
        assert progress is not None
        progress(done, total_read)

    info = verify_backup(path, progress=verify_progress if progress is not None else None)
    ns = namespace or info.namespace
    data_dir.mkdir(parents=True, exist_ok=True)
    me = peer_id_of(load_or_create_identity(data_dir))
    voters = tuple(sorted({me, *(peers or [])}))
    db = LevelDB(data_dir)
    try:
        storage = db.group(ns)
        hs, cs = storage.initial_state()
        if not hs.is_empty() or cs.voters or storage.last_index() > 0:
            raise BackupError(f"{ns} in {data_dir} already holds data: restore needs an empty one")
        meta = SnapshotMetadata(index=info.index, term=1, conf_state=ConfState(voters=voters))
        total = size - 32  # the data, without the trailing checksum

        def produce(w: object) -> None:
            with open(path, "rb") as f:
                _read_header(f)
                left = total - f.tell()
                reader = _Bounded(f, left)
                while chunk := reader.read(_CHUNK):
                    w.write(chunk)  # type: ignore[attr-defined]
                    if progress is not None:
                        progress(size + f.tell(), total_read)
                if progress is not None:
                    # Everything but the checksum was read: the second pass is done.
                    progress(total_read, total_read)

        storage.snapshot_store.write(meta, produce)
        storage.save(None, (), Snapshot(metadata=meta))
        sm = KVStateMachine.leveldb(db, ns)
        finish_pending_install(storage, sm)
        if sm.applied_index() != info.index:
            raise BackupError("restored state does not match the backup's index")
        storage.set_conf_state(meta.conf_state)
    finally:
        db.close()
    os.sync()
    return info, me
