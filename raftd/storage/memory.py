"""In-memory :class:`~raftd.storage.base.RaftStorage`: the test twin of the LevelDB one.

It extends the core's :class:`~raftd.core.storage.MemoryStorage` with the runtime's write
contract (one atomic ``save``, install markers, failure semantics, a fault hook), so that
``tests/storage/test_contract.py`` runs the same suite against both implementations.
Nothing here is durable: "durable" means "visible to later reads of this object".
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from raftd.core.storage import (
    CompactedError,
    MemoryStorage,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from raftd.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftd.storage.base import (
    CorruptionError,
    FaultHook,
    Readable,
    SnapshotCancelled,
    StorageClosedError,
    StorageWriteError,
    Writable,
    check_entries,
)

T = TypeVar("T")

__all__ = ["MemoryRaftStorage", "MemorySnapshotFiles"]


class MemorySnapshotFiles:
    """Snapshot images in memory, by ``(term, index)``: the twin of
    :class:`raftd.storage.snapshots.SnapshotStore` (see
    :class:`raftd.storage.base.SnapshotFiles`)."""

    def __init__(self) -> None:
        self.images: dict[tuple[int, int], bytes] = {}

    def write(self, meta: SnapshotMetadata, produce: Callable[[Writable], object]) -> None:
        buf = io.BytesIO()
        produce(buf)
        self.images[(meta.term, meta.index)] = buf.getvalue()

    def source(self, term: int, index: int) -> AsyncIterator[bytes]:
        data = self.images[(term, index)]

        async def chunks() -> AsyncIterator[bytes]:
            yield data

        return chunks()

    def adopt_file(self, meta: SnapshotMetadata, path: Path) -> None:
        self.images[(meta.term, meta.index)] = Path(path).read_bytes()


class MemoryRaftStorage(MemoryStorage):
    """Memory-backed Raft storage for one namespace. See :class:`RaftStorage`."""

    def __init__(self, namespace: str = "/memory", *, fault_hook: FaultHook | None = None):
        super().__init__()
        self._namespace = namespace
        self._hook = fault_hook
        self._failed: StorageWriteError | None = None
        self._closed = False
        self._conf_state: ConfState | None = None
        self._install: SnapshotMetadata | None = None
        self._files = MemorySnapshotFiles()
        # The newest snapshot recorded with an image (the current one, if it has one;
        # see record_state_snapshot).
        self._image_meta: SnapshotMetadata | None = None

    # -- status ------------------------------------------------------------------------
    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def failed(self) -> StorageWriteError | None:
        return self._failed

    @property
    def snapshot_store(self) -> MemorySnapshotFiles:
        return self._files

    def close(self) -> None:
        self._closed = True

    def _check_writable(self) -> None:
        if self._closed:
            raise StorageClosedError(f"storage {self._namespace!r} is closed")
        if self._failed is not None:
            raise StorageWriteError(
                f"storage {self._namespace!r} failed earlier, refusing writes",
                cause=self._failed,
            )

    def _fault(self, point: str) -> None:
        """Run the fault hook; an exception from it fails the storage like an I/O error."""
        if self._hook is None:
            return
        try:
            self._hook(point)
        except Exception as e:
            self._failed = StorageWriteError(f"write failed at {point}", cause=e)
            raise self._failed from e

    # -- reads -------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._current_conf()

    def _current_conf(self) -> ConfState:
        # The membership the runtime last recorded, else the snapshot's (as MemoryStorage).
        return self._conf_state if self._conf_state is not None else self.snap.metadata.conf_state

    def snapshot_metadata(self) -> SnapshotMetadata:
        return self.snap.metadata

    def pending_install(self) -> SnapshotMetadata | None:
        return self._install

    def snapshot_size(self) -> int:
        return len(self.snap.data)

    def snapshot(self) -> Snapshot:
        meta = self.snap.metadata
        if meta.index and not self._has_image:
            raise SnapshotTemporarilyUnavailableError(
                f"{self._namespace}: snapshot {meta.term}-{meta.index} has no image"
            )
        return self.snap

    def image_metadata(self) -> SnapshotMetadata | None:
        meta = self.snap.metadata
        if meta.index == 0:
            return None
        if self._has_image:
            return meta
        m = self._image_meta
        if m is None or (m.term, m.index) not in self._files.images:
            return None
        return m

    @property
    def _has_image(self) -> bool:
        return self._image_meta is not None and self._image_meta == self.snap.metadata

    def _recorded(self, snap: Snapshot, *, image: bool) -> None:
        self.snap = snap
        if image:
            self._image_meta = snap.metadata

    def open_snapshot_data(self) -> AbstractContextManager[Readable]:
        meta = self.snap.metadata
        if meta.index and not self._has_image:
            raise CorruptionError(
                f"snapshot {meta.term}-{meta.index} has no image (the state machine was to "
                "hold its state)",
                namespace=self._namespace,
                index=meta.index,
            )

        @contextmanager
        def reader() -> Iterator[Readable]:
            yield io.BytesIO(self.snap.data)

        return reader()

    # -- writes ------------------------------------------------------------------------
    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool = True,
    ) -> None:
        self._check_writable()
        check_entries(entries)
        if snapshot is not None and not snapshot.data:
            # Recorded from the image already in the store, as the LevelDB storage does.
            meta = snapshot.metadata
            image = self._files.images.get((meta.term, meta.index))
            if image is not None:
                snapshot = Snapshot(metadata=meta, data=image)
        new_snap = (
            snapshot
            if snapshot is not None and snapshot.metadata.index > self.snap.metadata.index
            else None
        )
        # Validate everything before mutating anything: the write must be all or nothing.
        if new_snap is not None:
            base_first = new_snap.metadata.index + 1
            base_last = new_snap.metadata.index
        else:
            base_first, base_last = self.first_index(), self.last_index()
        ents = [e for e in entries if e.index >= base_first]
        if ents:
            if ents[0].index > base_last + 1:
                raise UnavailableError(
                    f"missing log entry: last {base_last}, append at {ents[0].index}"
                )
            prev = ents[0].index - 1
            if new_snap is not None and prev == new_snap.metadata.index:
                prev_term = new_snap.metadata.term
            else:
                prev_term = self.term(prev)
            if ents[0].term < prev_term:
                raise ValueError(f"entry terms go down at index {ents[0].index}")
        self._fault("write:save")
        if new_snap is not None:
            MemoryStorage.apply_snapshot(self, new_snap)
            m = new_snap.metadata
            self._files.images.setdefault((m.term, m.index), new_snap.data)
            self._recorded(new_snap, image=True)
            self._conf_state = new_snap.metadata.conf_state
            self._install = new_snap.metadata
        if ents:
            self.append(ents)
        if hard_state is not None:
            self.hard_state = hard_state

    async def save_async(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        *,
        sync: bool = True,
    ) -> None:
        # Memory writes never block: run inline, but stay a checkpoint like any async call.
        await trio.lowlevel.checkpoint()
        self.save(hard_state, entries, snapshot, sync=sync)

    def save_submit(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        on_done: Callable[[outcome.Outcome[None]], None],
    ) -> None:
        """Memory writes never block: the save completes, and ``on_done`` runs, before
        this returns."""
        on_done(outcome.capture(self.save, hard_state, entries, None))

    async def off_loop_writes_done(self) -> None:
        """Memory writes all happen on the caller's thread: nothing is ever in flight."""

    async def run_writes_off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, as the database-backed storage runs it."""
        return await trio.to_thread.run_sync(fn, *args)

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.save(None, (), snap)

    def compact(self, compact_index: int) -> None:
        self._check_writable()
        if compact_index <= self._offset():
            return
        if compact_index > self.last_index():
            raise UnavailableError(f"compact {compact_index} beyond last {self.last_index()}")
        self._fault("write:compact")
        super().compact(compact_index)

    def begin_snapshot(self, index: int, conf_state: ConfState | None) -> SnapshotMetadata | None:
        if self._closed:
            raise StorageClosedError(f"storage {self._namespace!r} is closed")
        cur = self.snap.metadata
        if index <= cur.index:
            if index == cur.index > 0 and not self._has_image and self._install is None:
                return cur  # to give the current snapshot its image
            return None
        if self._install is not None:
            raise ValueError("a snapshot install is pending: finish it first")
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} beyond last {self.last_index()}")
        if index < self._offset():
            raise CompactedError(f"snapshot index {index} already compacted")
        cs = conf_state if conf_state is not None else self._current_conf()
        return SnapshotMetadata(index=index, term=self.term(index), conf_state=cs)

    def write_snapshot_image(
        self, meta: SnapshotMetadata, write: Callable[[Writable], object]
    ) -> None:
        try:
            self._files.write(meta, write)
        except Exception as e:
            if isinstance(e, StorageWriteError | SnapshotCancelled):
                raise
            raise StorageWriteError(f"writing snapshot {meta.term}-{meta.index}", cause=e) from e

    def record_snapshot(self, meta: SnapshotMetadata) -> bool:
        self._check_writable()
        key = (meta.term, meta.index)
        cur = self.snap.metadata
        if (
            self._install is not None
            or meta.index < cur.index
            or (meta.index == cur.index and (meta != cur or self._has_image))
        ):
            if key != (cur.term, cur.index):
                self._files.images.pop(key, None)
            return False
        image = self._files.images.get(key)
        if image is None:
            raise ValueError(f"no image of snapshot {meta.term}-{meta.index} in the store")
        self._fault("write:snapshot")
        self._recorded(Snapshot(metadata=meta, data=image), image=True)
        return True

    def record_state_snapshot(self, meta: SnapshotMetadata) -> bool:
        self._check_writable()
        if meta.index <= self.snap.metadata.index or self._install is not None:
            return False
        self._fault("write:snapshot")
        self._recorded(Snapshot(metadata=meta), image=False)
        return True

    async def record_state_snapshot_async(self, meta: SnapshotMetadata) -> bool:
        await trio.lowlevel.checkpoint()
        return self.record_state_snapshot(meta)

    async def record_snapshot_async(self, meta: SnapshotMetadata) -> bool:
        await trio.lowlevel.checkpoint()
        return self.record_snapshot(meta)

    def create_snapshot(self, index: int, conf_state: ConfState | None, data: bytes) -> Snapshot:
        self._check_writable()
        meta = self.begin_snapshot(index, conf_state)
        if meta is None:
            return self.snap
        self._fault("write:snapshot")
        self._files.images[(meta.term, meta.index)] = data
        self._recorded(Snapshot(metadata=meta, data=data), image=True)
        return self.snap

    def create_snapshot_streaming(
        self,
        index: int,
        conf_state: ConfState | None,
        write: Callable[[Writable], object],
    ) -> SnapshotMetadata:
        self._check_writable()
        meta = self.begin_snapshot(index, conf_state)
        if meta is None:
            return self.snap.metadata
        self.write_snapshot_image(meta, write)
        self.record_snapshot(meta)
        return self.snap.metadata

    async def compact_async(self, index: int) -> None:
        await trio.lowlevel.checkpoint()
        self.compact(index)

    def set_conf_state(self, conf_state: ConfState) -> None:
        self._check_writable()
        self._fault("write:conf")
        self._conf_state = conf_state

    def finish_install(self, index: int) -> None:
        self._check_writable()
        if self._install is None or self._install.index > index:
            return
        self._fault("write:install")
        self._install = None
