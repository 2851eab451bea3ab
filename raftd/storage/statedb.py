"""The state machines' LevelDB (``<data-dir>/state``), beside the Raft log's (``<data-dir>/db``).

Why two databases: LevelDB compacts by merging files whose key ranges overlap. The log's
keys only grow, so files holding nothing but log entries are moved down the levels
without being rewritten. Key records are written in no particular key order. In one
database every table file held both, so each compaction merged the state machine's
records and rewrote the log entries with them. In a database of its own, a compaction
rewrites only the state (measured at 64 writes in flight, alternating pairs: 5% less
daemon CPU per put and 5% more puts/s at 10,000 keys, 9% less and 14% more at 100,000;
``docs/performance.md``).

Keys are the same in both: the group prefix from the log database's namespace registry,
then ``"D"`` and the state machine's own layout (:mod:`raftd.storage.codec`). The state
database holds its own format record (``KEY_FORMAT`` -> :data:`codec.STATE_FORMAT_VERSION`).

Ordering between the two, which replaces the single write-ahead log of one database:
- the runtime applies an entry only after its own log write of it was synced, so the
  state's applied index is never ahead of the durable log;
- applies are written without a sync: after a power loss the state may be behind, and the
  missing entries are applied again from the log;
- a snapshot recorded without an image makes the state durable first (:meth:`flush`), and
  only then records itself and compacts the log behind it.

Opening a data dir of log format 1 (one database) moves the state machines' records into
the state database (:func:`migrate`), restartable at any point of a crash, and raises the
log database to format 2, which a raftd from before refuses to open.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import plyvel

from raftd.core.storage import StorageError
from raftd.storage import codec
from raftd.storage.base import CorruptionError, StorageClosedError, StorageWriteError
from raftd.storage.codec import DecodeError

__all__ = [
    "StateDatabase",
    "format_record",
    "make_batch",
    "migrate",
    "open_plyvel",
    "read_format",
]

#: Keys per write batch when the migration copies or deletes records.
_CHUNK = 4096


def open_plyvel(path: Path, *, write_buffer_size: int) -> Any:
    """Open (creating it if missing) the LevelDB at ``path`` with raftd's options."""
    try:
        # paranoid_checks: LevelDB reports (rather than skips) corruption it finds.
        # write_buffer_size: LevelDB's own default (4 MiB). The memtable and the one
        # being flushed stay in memory: 16 MiB cost each daemon ~12 MB more RSS under
        # write load (scripts/bench-memory --write-buffer-mb).
        # compression: none. Most of what the log's database writes is entries that a
        # snapshot soon deletes, and compressing every block cost the daemons about 4%
        # of their CPU under write load (snappy in the compaction thread). Blocks record
        # how they are compressed, so a database written with snappy opens as before.
        return plyvel.DB(
            str(path),
            create_if_missing=True,
            paranoid_checks=True,
            write_buffer_size=write_buffer_size,
            compression=None,
        )
    except plyvel.CorruptionError as e:
        raise CorruptionError(f"LevelDB at {path} is corrupt: {e!r}", namespace="*") from e
    except plyvel.Error as e:
        raise StorageError(f"cannot open LevelDB at {path}: {e!r}") from e


def read_format(db: Any, path: Path) -> int | None:
    """The format version recorded in the plyvel database ``db`` (None: none recorded)."""
    v = db.get(codec.KEY_FORMAT)
    if v is None:
        return None
    try:
        return codec.read_u32(codec.unseal(codec.KEY_FORMAT, v))
    except DecodeError as e:
        raise CorruptionError(
            f"bad format record in {path}: {e}", namespace="*", key=codec.KEY_FORMAT
        ) from None


def format_record(version: int) -> tuple[bytes, bytes]:
    return codec.KEY_FORMAT, codec.seal(codec.KEY_FORMAT, codec.u32(version))


class Owner(Protocol):
    """What the state database shares with the log's: one failure latch and fault hook
    for both (a failed write to either fails the storage)."""

    @property
    def closed(self) -> bool: ...

    def check_writable(self) -> None: ...

    def write_batch(self, op: str, wb: Any) -> None: ...

    def mark_failed(self, err: StorageWriteError) -> None: ...

    def fault(self, point: str) -> None: ...


class StateDatabase:
    """The state machines' database. Thread-safe as plyvel is; writes fail the owner's
    storage as the log's do (see :mod:`raftd.storage.leveldb`)."""

    def __init__(self, owner: Owner, db: Any, path: Path) -> None:
        self._owner = owner
        self._db = db
        self.path = path

    @property
    def raw(self) -> Any:
        """The plyvel database, for readers that know the key layout (the KV backend)."""
        if self._owner.closed:
            raise StorageClosedError(f"LevelDB at {self.path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        return self.raw.get(key)  # type: ignore[no-any-return]

    def fault(self, point: str) -> None:
        """The owner's fault hook (tests inject failures at named points)."""
        self._owner.fault(point)

    def write(
        self,
        op: str,
        deletes: Iterable[bytes],
        puts: Iterable[tuple[bytes, bytes]],
        *,
        sync: bool = True,
    ) -> None:
        """One atomic batch: all ``deletes`` then all ``puts``. Any failure fails the
        storage."""
        self._owner.write_batch(op, make_batch(self._db, deletes, puts, sync=sync))

    def flush(self) -> None:
        """Make every write made so far durable, synced or not. Blocking (a memtable
        written out): call it off the event loop. LevelDB syncs its log file only at a
        synced write, and not the previous log file when it switches to a new one; a
        flush writes the memtable to a table file and syncs it and the manifest, so
        nothing written before depends on a log file any more. Any failure fails the
        storage."""
        owner = self._owner
        owner.check_writable()
        try:
            owner.fault("write:flush")
            # A range holding no key (every key starts with ROOT or GROUP): LevelDB
            # flushes the memtable first, then finds nothing to compact.
            self._db.compact_range(start=b"\xff", stop=b"\xff\x00")
        except Exception as e:
            err = StorageWriteError("LevelDB flush failed", cause=e)
            owner.mark_failed(err)
            raise err from e

    def close(self) -> None:
        self._db.close()


def make_batch(
    db: Any, deletes: Iterable[bytes], puts: Iterable[tuple[bytes, bytes]], *, sync: bool
) -> Any:
    """A write batch of the plyvel database ``db``: all ``deletes`` then all ``puts`` (so a
    put wins over a delete of the same key)."""
    wb = db.write_batch(sync=sync)
    for k in deletes:
        wb.delete(k)
    for k, v in puts:
        wb.put(k, v)
    return wb


def _chunks(it: Iterable[Any]) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def migrate(log: Any, state: StateDatabase, prefixes: list[bytes]) -> None:
    """Move every state machine record of a format-1 log database ``log`` (plyvel), the
    keys under ``prefixes`` (each registered group's prefix + ``"D"``), into ``state``,
    and record format 2 in ``log``.

    Restartable after a crash at any point: the state database gets its format record
    only after the copy is durable (a flush), and a state database without one is
    cleared and filled again. The log database's records are deleted only then, and its
    format raised last."""
    sdb = state.raw
    if read_format(sdb, state.path) is None:
        for chunk in _chunks(sdb.iterator(include_value=False)):
            state.write("migrate-clear", chunk, (), sync=False)
        for prefix in prefixes:
            for chunk in _chunks(log.iterator(prefix=prefix)):
                state.write("migrate-copy", (), chunk, sync=False)
        state.flush()
        state.write("format", (), [format_record(codec.STATE_FORMAT_VERSION)])
    try:
        for prefix in prefixes:
            for chunk in _chunks(log.iterator(prefix=prefix, include_value=False)):
                state.fault("write:migrate-delete")
                make_batch(log, chunk, (), sync=False).write()
        log.put(*format_record(codec.FORMAT_VERSION), sync=True)
    except (OSError, plyvel.Error) as e:
        raise StorageWriteError("LevelDB write (migrate-delete) failed", cause=e) from e
