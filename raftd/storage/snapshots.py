"""Snapshots on disk, the snapshot/compaction policy, and crash-safe install.

Snapshot files
--------------
``<data-dir>/snapshots/<namespace-slug>/<term>-<index>.snap``, where the slug is the
namespace with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``-``, cut to
48 characters, plus ``-`` and 8 hex digits of the namespace's SHA-256 (so ``/raft/cron`` and
``raft-cron`` cannot share a folder). File layout::

    "RAFTSNP1" | header_len u32 | header | body | body_len u64 | sha256 | "RAFTSNPE"
    header = term u64 | index u64 | namespace_len u16 | namespace | conf state

The SHA-256 covers everything before it (magic, header and body) and is verified before a
snapshot is handed out (:meth:`SnapshotStore.open_data`, :meth:`SnapshotStore.load`).

A file is written as ``.<name>.tmp``, fsynced, renamed into place, then the folder is
fsynced, so a file with the final name is always complete. Only after that does the
database record it (one LevelDB batch), so a crash leaves at worst an *orphan* file newer
than the recorded snapshot; orphans and temp files are removed when the storage opens.
The newest ``keep`` files (default 3) are kept, and always the recorded one.

Snapshots without an image
--------------------------
A state machine that keeps its data in the same database can be its own snapshot: the
owner makes it durable (:meth:`Snapshottable.make_durable`), then records the snapshot's
metadata alone (:meth:`RaftStorage.record_state_snapshot`) and compacts the log behind
it. No file is written; a recorded snapshot without a file is one of these. An image is
made only when one must be sent, at the state machine's applied index, and recorded as
the current snapshot like any other (:meth:`Snapshotter.begin`). Nothing can restore a
state machine from a snapshot without an image: :func:`recover` names it if the state
machine is found behind one.

Installing a received snapshot, crash-safely
--------------------------------------------
1. ``storage.save(hs, [], snapshot)``: the file is written as above; then ONE batch
   replaces the log by the snapshot (log metadata, snapshot metadata, conf state, deletes
   of the old entries) and sets the *install marker* (``M install``).
2. ``sm.restore(file, index=...)``: the state machine replaces its data. It may take
   several batches; the state machine keeps its own "restoring" flag until the last one,
   which also writes its applied index.
3. ``storage.finish_install(index)`` clears the marker.

On restart :func:`recover` redoes step 2 and 3 whenever the marker is set, the state
machine says it is mid-restore, or its applied index is behind the recorded snapshot (the
log before the snapshot is gone, so the snapshot is the only way forward). Step 2 is
idempotent (it starts by clearing), so redoing it any number of times is safe.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from raftd.core.types import ConfState, Snapshot, SnapshotMetadata
from raftd.storage.base import (
    CorruptionError,
    FaultHook,
    RaftStorage,
    Readable,
    SnapshotCancelled,
    StorageWriteError,
    Writable,
)
from raftd.storage.codec import DecodeError, decode_conf_state, encode_conf_state

__all__ = [
    "PRESETS",
    "SnapshotCancelled",
    "SnapshotFileInfo",
    "SnapshotJob",
    "SnapshotPolicy",
    "SnapshotStore",
    "SnapshotView",
    "Snapshottable",
    "Snapshotter",
    "finish_pending_install",
    "install_snapshot",
    "namespace_slug",
    "recover",
    "restore_pending_install",
]

MAGIC = b"RAFTSNP1"
END_MAGIC = b"RAFTSNPE"
_PRE = struct.Struct(">8sI")
_HDR = struct.Struct(">QQH")
_FOOT = struct.Struct(">Q32s8s")
_NAME = re.compile(r"^(\d+)-(\d+)\.snap$")
_CHUNK = 1 << 20


def namespace_slug(namespace: str) -> str:
    """Folder name for a namespace: readable, filesystem-safe and collision-free."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", namespace).strip("-.")[:48] or "ns"
    return f"{base}-{hashlib.sha256(namespace.encode()).hexdigest()[:8]}"


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class SnapshotFileInfo:
    """A verified snapshot file: its metadata and where its body sits."""

    path: Path
    metadata: SnapshotMetadata
    body_offset: int
    body_length: int


class _FileWriter:
    """Hashes and counts what the producer writes; calls the fault hook per chunk."""

    def __init__(self, f: BinaryIO, h: hashlib._Hash, hook: FaultHook | None) -> None:
        self._f = f
        self._h = h
        self._hook = hook
        self.length = 0

    def write(self, data: bytes, /) -> int:
        if self._hook is not None:
            self._hook("snapfile:chunk")
        self._f.write(data)
        self._h.update(data)
        self.length += len(data)
        return len(data)


class _BoundedReader:
    """Reads at most ``length`` bytes of ``f`` (the body of a snapshot file)."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > self._left:
            size = self._left
        data = self._f.read(size)
        self._left -= len(data)
        return data


class SnapshotStore:
    """The snapshot files of one namespace, in one folder. Not thread-safe for writers:
    one writer at a time (the group's owner), any number of readers."""

    def __init__(self, directory: Path, namespace: str, *, fault_hook: FaultHook | None = None):
        self.directory = directory
        self.namespace = namespace
        self._hook = fault_hook
        directory.mkdir(parents=True, exist_ok=True)

    def _fault(self, point: str) -> None:
        if self._hook is not None:
            self._hook(point)

    @staticmethod
    def file_name(term: int, index: int) -> str:
        return f"{term}-{index}.snap"

    def path(self, term: int, index: int) -> Path:
        return self.directory / self.file_name(term, index)

    def files(self) -> list[tuple[int, int]]:
        """``(term, index)`` of every complete file, oldest (lowest index) first."""
        out = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m:
                out.append((int(m.group(1)), int(m.group(2))))
        out.sort(key=lambda ti: (ti[1], ti[0]))
        return out

    # -- writing -----------------------------------------------------------------------
    def write(self, meta: SnapshotMetadata, produce: Callable[[Writable], object]) -> Path:
        """Write a complete snapshot file; ``produce(w)`` writes the body in chunks.

        Durable on return (file and folder fsynced). Raises :class:`StorageWriteError` on
        any I/O error (or fault-hook exception); the temp file is then removed if possible.
        """
        final = self.path(meta.term, meta.index)
        tmp = self.directory / f".{final.name}.tmp"
        ns = self.namespace.encode()
        header = _HDR.pack(meta.term, meta.index, len(ns)) + ns + encode_conf_state(meta.conf_state)
        try:
            self._fault("snapfile:begin")
            with open(tmp, "wb") as f:
                h = hashlib.sha256()
                pre = _PRE.pack(MAGIC, len(header)) + header
                f.write(pre)
                h.update(pre)
                w = _FileWriter(f, h, self._hook)
                produce(w)
                f.write(_FOOT.pack(w.length, h.digest(), END_MAGIC))
                f.flush()
                os.fsync(f.fileno())
            self._fault("snapfile:before-rename")
            os.replace(tmp, final)
            fsync_dir(self.directory)
            self._fault("snapfile:after-rename")
        except Exception as e:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(e, StorageWriteError | SnapshotCancelled):
                raise
            raise StorageWriteError(f"writing snapshot {final}", cause=e) from e
        return final

    def adopt(self, meta: SnapshotMetadata) -> bool:
        """Make a file that was placed at :meth:`path` by someone else (a transport that
        streamed it there) durable: verify it, fsync it and the folder. False if there is
        no such file; :class:`CorruptionError` if it does not check out."""
        p = self.path(meta.term, meta.index)
        if not p.exists():
            return False
        info = self.verify(meta.term, meta.index)
        if info.metadata != meta:
            raise self._corrupt(f"snapshot file {p} holds {info.metadata}, not {meta}", meta.index)
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.directory)
        except OSError as e:
            raise StorageWriteError(f"making snapshot {p} durable", cause=e) from e
        return True

    def source(self, term: int, index: int) -> str:
        """The file of ``(term, index)``, for a transport to stream."""
        return str(self.path(term, index))

    def adopt_file(self, meta: SnapshotMetadata, path: Path) -> None:
        """Rename a file a transport received into the store as the image of ``meta``
        (verified and fsynced later, by :meth:`adopt`, when the storage records it)."""
        os.replace(path, self.path(meta.term, meta.index))

    def write_bytes(self, meta: SnapshotMetadata, data: bytes) -> Path:
        def produce(w: Writable) -> None:
            for i in range(0, len(data), _CHUNK):
                w.write(data[i : i + _CHUNK])

        return self.write(meta, produce)

    # -- reading -----------------------------------------------------------------------
    def _corrupt(self, msg: str, index: int | None) -> CorruptionError:
        return CorruptionError(msg, namespace=self.namespace, index=index)

    def verify(self, term: int, index: int) -> SnapshotFileInfo:
        """Check the whole file (structure, SHA-256, header vs name). Raises
        :class:`CorruptionError` if it is missing or does not check out."""
        p = self.path(term, index)
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _PRE.size + _HDR.size + _FOOT.size:
                    raise self._corrupt(f"snapshot file {p} too short", index)
                magic, hlen = _PRE.unpack(f.read(_PRE.size))
                if magic != MAGIC:
                    raise self._corrupt(f"snapshot file {p}: bad magic", index)
                f.seek(size - _FOOT.size)
                body_len, digest, end = _FOOT.unpack(f.read(_FOOT.size))
                body_off = _PRE.size + hlen
                if end != END_MAGIC or body_off + body_len + _FOOT.size != size:
                    raise self._corrupt(f"snapshot file {p}: bad footer", index)
                f.seek(0)
                h = hashlib.sha256()
                left = size - _FOOT.size
                while left > 0:
                    chunk = f.read(min(_CHUNK, left))
                    if not chunk:
                        raise self._corrupt(f"snapshot file {p}: truncated", index)
                    h.update(chunk)
                    left -= len(chunk)
                if h.digest() != digest:
                    raise self._corrupt(f"snapshot file {p}: sha256 mismatch", index)
                f.seek(_PRE.size)
                header = f.read(hlen)
        except FileNotFoundError:
            raise self._corrupt(f"snapshot file {p} is missing", index) from None
        except OSError as e:
            raise self._corrupt(f"snapshot file {p} unreadable: {e}", index) from e
        try:
            t, i, nlen = _HDR.unpack_from(header)
            ns = header[_HDR.size : _HDR.size + nlen].decode()
            cs, off = decode_conf_state(header, _HDR.size + nlen)
        except (struct.error, DecodeError, UnicodeDecodeError) as e:
            raise self._corrupt(f"snapshot file {p}: bad header: {e}", index) from None
        if (t, i) != (term, index) or ns != self.namespace or off != len(header):
            raise self._corrupt(f"snapshot file {p}: header does not match its name", index)
        meta = SnapshotMetadata(index=i, term=t, conf_state=cs)
        return SnapshotFileInfo(p, meta, body_off, body_len)

    def open_data(self, term: int, index: int) -> AbstractContextManager[Readable]:
        """A reader of the verified body of snapshot ``term-index``."""
        info = self.verify(term, index)

        @contextmanager
        def reader() -> Iterator[Readable]:
            with open(info.path, "rb") as f:
                f.seek(info.body_offset)
                yield _BoundedReader(f, info.body_length)

        return reader()

    def load(self, term: int, index: int) -> Snapshot:
        """The whole snapshot in memory (what the core's ``Storage.snapshot()`` returns)."""
        info = self.verify(term, index)
        with open(info.path, "rb") as f:
            f.seek(info.body_offset)
            data = f.read(info.body_length)
        if len(data) != info.body_length:
            raise self._corrupt(f"snapshot file {info.path}: truncated", index)
        return Snapshot(metadata=info.metadata, data=data)

    # -- housekeeping ------------------------------------------------------------------
    def remove(self, term: int, index: int) -> None:
        self.path(term, index).unlink(missing_ok=True)

    def retain(self, keep: int, pin: tuple[int, int] | None) -> list[tuple[int, int]]:
        """Delete all but the newest ``keep`` files, never ``pin``. Returns what went."""
        files = self.files()
        doomed = [ti for ti in files[: max(0, len(files) - keep)] if ti != pin]
        for t, i in doomed:
            self.remove(t, i)
        if doomed:
            fsync_dir(self.directory)
        return doomed

    def cleanup(self, recorded: tuple[int, int] | None) -> list[str]:
        """At open: remove temp files and orphans (complete files newer than the recorded
        snapshot: written, but the crash came before the database recorded them)."""
        removed = []
        rec_index = recorded[1] if recorded is not None else 0
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if name.endswith(".tmp") or (
                m is not None
                and int(m.group(2)) > rec_index
                and (int(m.group(1)), int(m.group(2))) != recorded
            ):
                (self.directory / name).unlink(missing_ok=True)
                removed.append(name)
        if removed:
            fsync_dir(self.directory)
        return removed


# -- policy ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When to snapshot and how much log to keep behind a snapshot.

    A snapshot is due once the entries applied since the last one hold at least
    ``growth`` times the last snapshot's bytes (the byte rule), AND either ``entries``
    entries were applied or ``interval_s`` seconds passed, whichever comes first. The
    byte rule is the Raft thesis's (chapter 5: snapshot once the log has grown by a
    multiple of the previous snapshot's size): a snapshot costs in proportion to the
    state, so with a large state a fixed count of entries, or a fixed time, would spend
    more per write on snapshots as the state grows. The count bounds the log of a small
    state (etcd's default, 100,000 entries); the time lets a slow trickle of writes
    compact its log once it is worth it. After a snapshot at index ``i`` the log is
    compacted up to ``i - trailing``, so followers that lag by less than ``trailing``
    entries still catch up from the log instead of needing a whole snapshot.
    """

    entries: int = 100_000
    interval_s: float = 60.0
    trailing: int = 5_000
    keep: int = 3
    growth: float = 1.0

    def __post_init__(self) -> None:
        if (
            self.entries < 1
            or self.interval_s <= 0
            or self.trailing < 0
            or self.keep < 1
            or self.growth < 0
        ):
            raise ValueError(f"invalid snapshot policy {self}")

    def due(
        self,
        *,
        applied: int,
        snapshot_index: int,
        now: float,
        last_at: float,
        log_bytes: int = 0,
        snapshot_bytes: int = 0,
    ) -> bool:
        """``log_bytes``: bytes of the entries applied since the last snapshot, which
        was ``snapshot_bytes`` long (0 when unknown: the byte rule then holds)."""
        behind = applied - snapshot_index
        if behind <= 0 or log_bytes < self.growth * snapshot_bytes:
            return False
        return behind >= self.entries or now - last_at >= self.interval_s

    def compact_index(self, snapshot_index: int) -> int:
        """Compact up to here (0 means nothing to compact)."""
        return max(0, snapshot_index - self.trailing)


PRESETS: dict[str, SnapshotPolicy] = {
    "local": SnapshotPolicy(entries=100_000, interval_s=60.0),
    "regional": SnapshotPolicy(entries=100_000, interval_s=120.0),
    "global": SnapshotPolicy(entries=100_000, interval_s=300.0),
}
"""Suggested defaults per deployment preset (the trailing window is 5000 entries)."""


# -- the state machine side ------------------------------------------------------------
class SnapshotView(Protocol):
    """A frozen view of a state machine at ``index``; ``write`` may run in another thread
    while the state machine keeps applying."""

    @property
    def index(self) -> int: ...

    def write(self, f: Writable) -> None: ...

    def chunks(self) -> Iterator[bytes]:
        """The image :meth:`write` writes, as chunks made one at a time when asked."""
        ...

    def close(self) -> None: ...


class Snapshottable(Protocol):
    """What snapshotting and install need from a state machine."""

    def applied_index(self) -> int: ...

    def needs_restore(self) -> bool:
        """True if a restore was interrupted: the data is not usable until restored."""
        ...

    def snapshot_view(self) -> SnapshotView: ...

    def make_durable(self) -> None:
        """Make the state as of every entry applied so far durable (blocking; safe in a
        worker thread while the owner keeps applying). A snapshot without an image
        (:meth:`Snapshotter.begin_state`) relies on it: the log behind such a snapshot
        is compacted, so the state machine must never come back older than it."""
        ...

    def restore(self, f: Readable, *, index: int) -> None:
        """Replace all data by the snapshot read from ``f``; afterwards
        ``applied_index() == index``. Must be idempotent under crashes."""
        ...


class Snapshotter:
    """Applies a :class:`SnapshotPolicy` to one group: snapshot, then compact.

    Time is passed in (``now``, any monotonic clock in seconds), so tests need no clock.
    """

    def __init__(
        self,
        storage: RaftStorage,
        sm: Snapshottable,
        policy: SnapshotPolicy,
        *,
        now: float,
    ) -> None:
        self.storage = storage
        self.sm = sm
        self.policy = policy
        self.last_at = now
        #: Bytes of the last snapshot (0: none yet), and of the entries applied since
        #: (:meth:`note_applied`). After a restart the last snapshot is the stored one:
        #: without its size the byte rule would hold at once and the node would write
        #: its whole state again at the first count or time bound, at every restart.
        self.snapshot_bytes = storage.snapshot_size()
        self.log_bytes = 0
        #: After a failed image write, no new snapshot is due before this time.
        self.retry_at = 0.0
        #: Where the log is to be compacted to, behind the last snapshot (0: nowhere).
        self.compact_to = 0

    def installed(self, nbytes: int, now: float) -> None:
        """A snapshot of ``nbytes`` was installed from the leader: it is this group's
        last snapshot now, for both rules. Without this a node that restarted and then
        caught up by an install would know no snapshot size (the byte rule then holds)
        and take a snapshot of its whole state again after ``entries`` entries, while
        it is still catching up."""
        self.snapshot_bytes = nbytes
        self.log_bytes = 0
        self.last_at = now

    def note_applied(self, nbytes: int) -> None:
        """Count ``nbytes`` of applied entry data toward the byte rule."""
        self.log_bytes += nbytes

    def due(self, now: float) -> bool:
        if now < self.retry_at:
            return False
        return self.policy.due(
            applied=self.sm.applied_index(),
            snapshot_index=self.storage.snapshot_metadata().index,
            now=now,
            last_at=self.last_at,
            log_bytes=self.log_bytes,
            snapshot_bytes=self.snapshot_bytes,
        )

    def begin(
        self, conf_state: ConfState | None = None, *, fed: bool = False
    ) -> SnapshotJob | None:
        """Start a snapshot of the state machine at its applied index (on the owner's
        thread: the view is frozen here, so applies may continue). ``None`` if the
        applied index is not newer than the current snapshot. ``conf_state`` defaults to
        the storage's current membership. Hand the job to :meth:`write` (any thread;
        ``fed=True``: feed it meanwhile, see :class:`SnapshotJob`), then to
        :meth:`finish` (the owner's thread)."""
        view = self.sm.snapshot_view()
        try:
            meta = self.storage.begin_snapshot(view.index, conf_state)
        except BaseException:
            view.close()
            raise
        if meta is None:
            view.close()
            return None
        return SnapshotJob(meta, view, self.log_bytes, fed=fed)

    def write(self, job: SnapshotJob) -> None:
        """Write the job's image (blocking; safe in a worker thread while the owner keeps
        saving and applying). Raises :class:`SnapshotCancelled` soon after
        :meth:`SnapshotJob.cancel`, :class:`StorageWriteError` if the image cannot be
        written; either way nothing is left behind. Close the job afterwards."""
        self.storage.write_snapshot_image(job.meta, job.produce)

    def finish(self, job: SnapshotJob, now: float) -> SnapshotMetadata | None:
        """Record the written image and compact the log behind it; ``None`` if the image
        was no longer newer (an install came first) and was dropped."""
        if not self.storage.record_snapshot(job.meta):
            return None
        ci = self._recorded(job, now)
        if ci:
            self.storage.compact(ci)
        return job.meta

    async def finish_async(
        self, job: SnapshotJob, now: float, *, compact: bool = True
    ) -> SnapshotMetadata | None:
        """:meth:`finish` with the writes off the trio thread. ``compact=False`` leaves
        the compaction to :meth:`compact_step_async`, a step at a time."""
        if not await self.storage.record_snapshot_async(job.meta):
            return None
        self.compact_to = self._recorded(job, now)
        if compact:
            while await self.compact_step_async(self.compact_to):
                pass
        return job.meta

    def compaction_pending(self) -> bool:
        """The log behind the last snapshot is not compacted yet (see :meth:`finish_async`)."""
        return self.compact_to > self.storage.first_index() - 1

    async def compact_step_async(self, max_entries: int) -> bool:
        """Compact at most ``max_entries`` more entries toward the last snapshot's
        compaction point; True while more remain. A compaction of ~100,000 entries is
        one LevelDB batch of as many deletes: in steps, the caller's loop can run
        between them."""
        first = self.storage.first_index()
        if self.compact_to <= first - 1:
            return False
        await self.storage.compact_async(min(self.compact_to, first - 1 + max_entries))
        return self.compaction_pending()

    def _recorded(self, job: SnapshotJob, now: float) -> int:
        """Count the recorded snapshot for the policy; the index to compact to (0: none)."""
        self.snapshot_bytes = job.nbytes
        # Entries applied while the image was written are not in it: they still count.
        self.log_bytes = max(0, self.log_bytes - job.log_bytes)
        self.last_at = now
        self.retry_at = 0.0
        ci = self.policy.compact_index(job.meta.index)
        return ci if ci > self.storage.first_index() - 1 else 0

    # -- snapshots without an image --------------------------------------------------
    def begin_state(self, conf_state: ConfState | None = None) -> SnapshotMetadata | None:
        """The metadata of a snapshot *without an image* at the state machine's applied
        index (owner's thread), or ``None`` if that is not newer than the current
        snapshot. Make the state machine durable (:meth:`Snapshottable.make_durable`,
        any thread), then :meth:`finish_state` or :meth:`finish_state_async`.

        Such a snapshot costs a flush of the state machine and the compaction, not a
        copy of the state: the state machine is its own snapshot, as etcd's backend is.
        An image is made only when one is needed, for a follower too far behind the log
        (:meth:`begin` at the applied index then)."""
        applied = self.sm.applied_index()
        if applied <= self.storage.snapshot_metadata().index:
            return None
        return self.storage.begin_snapshot(applied, conf_state)

    def finish_state(self, meta: SnapshotMetadata, now: float) -> bool:
        """Record ``meta`` from :meth:`begin_state` (the state machine has been made
        durable since) and compact the log behind it; ``False`` if it was no longer
        newer (an install came first): nothing changes then."""
        if not self.storage.record_state_snapshot(meta):
            return False
        ci = self._recorded_state(now)
        if ci:
            self.storage.compact(ci)
        return True

    async def finish_state_async(self, meta: SnapshotMetadata, now: float) -> bool:
        """:meth:`finish_state` with the write off the trio thread; the compaction is
        left to :meth:`compact_step_async`."""
        if not await self.storage.record_state_snapshot_async(meta):
            return False
        self.compact_to = self._recorded_state(now)
        return True

    def _recorded_state(self, now: float) -> int:
        # A snapshot without an image costs nothing in proportion to the state, so the
        # byte rule (which spaces snapshots by their size) no longer applies after one.
        self.snapshot_bytes = 0
        self.log_bytes = 0
        self.last_at = now
        self.retry_at = 0.0
        meta = self.storage.snapshot_metadata()
        ci = self.policy.compact_index(meta.index)
        return ci if ci > self.storage.first_index() - 1 else 0

    def take_state(self, now: float, conf_state: ConfState | None = None) -> SnapshotMetadata:
        """A snapshot without an image, compacting behind it (:meth:`begin_state`, the
        state machine made durable, :meth:`finish_state` in a row). Returns the current
        snapshot's metadata."""
        meta = self.begin_state(conf_state)
        if meta is not None:
            self.sm.make_durable()
            self.finish_state(meta, now)
        return self.storage.snapshot_metadata()

    def failed(self, now: float) -> None:
        """Writing an image failed: try again no sooner than an interval from ``now``
        (the log keeps everything meanwhile; a full disk is not retried at every write)."""
        self.retry_at = now + self.policy.interval_s

    def take(self, now: float, conf_state: ConfState | None = None) -> SnapshotMetadata:
        """Snapshot the state machine at its applied index, then compact the log behind
        it (:meth:`begin`, :meth:`write` and :meth:`finish` in a row). Returns the
        current snapshot's metadata."""
        job = self.begin(conf_state)
        if job is not None:
            try:
                self.write(job)
            finally:
                job.close()
            self.finish(job, now)
        return self.storage.snapshot_metadata()

    def maybe_take(
        self, now: float, conf_state: ConfState | None = None
    ) -> SnapshotMetadata | None:
        return self.take(now, conf_state) if self.due(now) else None


class SnapshotJob:
    """A snapshot being taken: the state machine's frozen view, the metadata the image
    will carry, and (once written) its size. Made by :meth:`Snapshotter.begin`.

    Its image is made in one of two ways. By default the writer (:meth:`Snapshotter.write`)
    makes it too. A job begun with ``fed=True`` is *fed* by its owner instead: the owner
    makes the chunks in slices (:meth:`feed`, a few milliseconds at a time between its
    other work) and hands them over through a small queue, and the writer thread only
    writes and hashes them, which holds the interpreter for microseconds per chunk. A
    thread that made the chunks itself would hold it for the whole image, and the owner's
    event loop would wait for the interpreter at each of its wake-ups and system calls."""

    #: Chunks are handed to the writer in pieces of at least this many bytes...
    PIECE_BYTES = 1 << 20
    #: ...and at most this many pieces wait for it.
    QUEUE_PIECES = 4

    __slots__ = (
        "_chunks",
        "_closed",
        "_piece",
        "_piece_bytes",
        "_queue",
        "_waiting",
        "cancelled",
        "fed",
        "fed_all",
        "log_bytes",
        "meta",
        "nbytes",
        "on_room",
        "view",
    )

    def __init__(
        self, meta: SnapshotMetadata, view: SnapshotView, log_bytes: int, *, fed: bool = False
    ) -> None:
        self.meta = meta
        self.view = view
        #: The snapshotter's ``log_bytes`` when the view was frozen (all in the image).
        self.log_bytes = log_bytes
        self.nbytes = 0
        self.cancelled = False
        self.fed = fed
        #: Every chunk was handed to the writer (fed jobs).
        self.fed_all = False
        #: Called by the writer thread when it has made room in a queue the owner found
        #: full (the owner then feeds again). Must be safe to call from that thread.
        self.on_room: Callable[[], None] | None = None
        # Pieces (lists of chunks); None after the last one, or to stop a cancelled
        # job's writer.
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(self.QUEUE_PIECES)
        self._piece: list[bytes] = []
        self._piece_bytes = 0
        self._waiting = False
        self._chunks: Iterator[bytes] = view.chunks() if fed else iter(())
        self._closed = False

    def cancel(self) -> None:
        """Ask the writer to stop at its next chunk (the owner's thread)."""
        self.cancelled = True
        with suppress(queue.Full):
            self._queue.put_nowait(None)  # a writer waiting for a chunk stops

    def wants_feed(self) -> bool:
        """A fed job with chunks still to make and room for them in the queue."""
        return self.fed and not self.fed_all and not self._waiting and not self._closed

    def feed(self, budget_s: float) -> None:
        """Make chunks for about ``budget_s`` seconds (at least one chunk) and hand them
        to the writer a piece (``PIECE_BYTES``) at a time, until the queue is full (then
        :attr:`on_room` is called once the writer has taken a piece) or every chunk is
        made. The owner's thread only."""
        if not self.wants_feed() or self.cancelled:
            return
        deadline = time.perf_counter() + budget_s
        q = self._queue
        piece = self._piece
        while True:
            if q.full():
                self._waiting = True
                return
            chunk = next(self._chunks, None)
            if chunk is None:
                if piece:
                    q.put_nowait(piece)
                    self._piece = piece = []
                    self._piece_bytes = 0
                    if q.full():
                        self._waiting = True
                        return
                q.put_nowait(None)
                self.fed_all = True
                return
            piece.append(chunk)
            self._piece_bytes += len(chunk)
            if self._piece_bytes >= self.PIECE_BYTES:
                # Each hand-over wakes the writer, which then needs the interpreter
                # lock a few times: per piece, not per chunk.
                q.put_nowait(piece)
                self._piece = piece = []
                self._piece_bytes = 0
            if time.perf_counter() >= deadline:
                return

    def produce(self, f: Writable) -> None:
        """Write the image to ``f`` (the writer's thread)."""
        counter = _CountingWriter(f, self)
        if not self.fed:
            self.view.write(counter)
        else:
            q = self._queue
            while True:
                chunk = q.get()
                if self._waiting:
                    self._waiting = False
                    if self.on_room is not None:
                        self.on_room()
                if self.cancelled:
                    raise SnapshotCancelled(f"snapshot at {self.meta.index} cancelled")
                if chunk is None:
                    break
                for part in chunk:
                    counter.write(part)
        self.nbytes = counter.n

    def close(self) -> None:
        """Release the view (idempotent; the thread that made the chunks: the owner's
        for a fed job, once the writer has returned)."""
        if not self._closed:
            self._closed = True
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
            self.view.close()


class _CountingWriter:
    """A :class:`Writable` that counts what passes through it, and stops a cancelled
    job."""

    __slots__ = ("f", "job", "n")

    def __init__(self, f: Writable, job: SnapshotJob | None = None) -> None:
        self.f = f
        self.job = job
        self.n = 0

    def write(self, data: bytes, /) -> int:
        if self.job is not None and self.job.cancelled:
            raise SnapshotCancelled(f"snapshot at {self.job.meta.index} cancelled")
        self.n += len(data)
        return self.f.write(data)


class _CountingReader:
    """A :class:`Readable` that counts what passes through it."""

    __slots__ = ("f", "n")

    def __init__(self, f: Readable) -> None:
        self.f = f
        self.n = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self.f.read(size)
        self.n += len(data)
        return data


def restore_pending_install(storage: RaftStorage, sm: Snapshottable) -> int | None:
    """Restore ``sm`` from the pending snapshot and clear the marker. Returns the bytes
    of snapshot data the state machine read (for :meth:`Snapshotter.installed`), or
    None if no install was pending."""
    meta = storage.pending_install()
    if meta is None:
        return None
    with storage.open_snapshot_data() as f:
        counted = _CountingReader(f)
        sm.restore(counted, index=meta.index)
    storage.finish_install(meta.index)
    return counted.n


def finish_pending_install(storage: RaftStorage, sm: Snapshottable) -> bool:
    """Restore ``sm`` from the pending snapshot and clear the marker. False if none."""
    return restore_pending_install(storage, sm) is not None


def install_snapshot(storage: RaftStorage, sm: Snapshottable, snap: Snapshot) -> bool:
    """Install a snapshot received from the leader (steps 1-3 of the module docstring).
    Returns False (and does nothing) if it is not newer than the current snapshot."""
    if snap.metadata.index <= storage.snapshot_metadata().index:
        return False
    storage.save(None, (), snap)
    return finish_pending_install(storage, sm)


def recover(storage: RaftStorage, sm: Snapshottable) -> bool:
    """Run at startup, before the state machine serves anything or applies an entry.

    Restores ``sm`` from the recorded snapshot if an install was interrupted (marker set),
    a restore was interrupted (``sm.needs_restore()``), or ``sm`` is behind the snapshot.
    Returns True if it restored.
    """
    meta = storage.snapshot_metadata()
    pending = storage.pending_install()
    if pending is None and not sm.needs_restore() and sm.applied_index() >= meta.index:
        return False
    if meta.index == 0:
        raise CorruptionError(
            "state machine needs a restore but there is no snapshot", namespace=storage.namespace
        )
    image = storage.image_metadata()
    if image is None or (image.term, image.index) != (meta.term, meta.index):
        raise CorruptionError(
            f"the state machine is at index {sm.applied_index()}, behind the snapshot at "
            f"{meta.index}, which was taken without an image because the state machine "
            "held that state durably: the state machine's data was lost or replaced",
            namespace=storage.namespace,
            index=meta.index,
        )
    with storage.open_snapshot_data() as f:
        sm.restore(f, index=meta.index)
    if pending is not None:
        storage.finish_install(meta.index)
    return True
