"""Fixtures shared by the storage tests: every contract test runs against both the memory
twin and the real LevelDB implementation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd.storage.base import FaultHook, RaftStorage
from raftd.storage.leveldb import LevelDB
from raftd.storage.memory import MemoryRaftStorage

NS = "/raft/test"


class Impl:
    """A storage implementation under test, with a way to reopen it (a restart)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.hook: FaultHook | None = None
        self._db: LevelDB | None = None
        self._mem: MemoryRaftStorage | None = None

    @property
    def durable(self) -> bool:
        return self.kind == "leveldb"

    def open(self, hook: FaultHook | None = None) -> RaftStorage:
        self.hook = hook
        if self.kind == "memory":
            self._mem = MemoryRaftStorage(NS, fault_hook=hook)
            return self._mem
        # A small tail cache, so reads exercise both the cache and the database.
        self._db = LevelDB(self.tmp / "data", fault_hook=hook, tail_cache=8)
        return self._db.group(NS)

    def reopen(self) -> RaftStorage:
        """A restart: LevelDB is closed and opened again; memory stays the same object."""
        if self.kind == "memory":
            assert self._mem is not None
            return self._mem
        assert self._db is not None
        self._db.close()
        return self.open(self.hook)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


@pytest.fixture(params=["memory", "leveldb"])
def impl(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Impl]:
    i = Impl(str(request.param), tmp_path)
    yield i
    i.close()


@pytest.fixture
def store(impl: Impl) -> RaftStorage:
    return impl.open()
