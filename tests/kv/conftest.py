"""Every KV test runs against the memory twin and the LevelDB-backed state machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd.kv.machine import KVStateMachine
from raftd.storage.base import FaultHook
from raftd.storage.leveldb import LevelDB

NS = "/raft/kv"


class Machine:
    """A KV state machine under test, with a restart for the durable one."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.db: LevelDB | None = None
        self.sm = self.open()

    def open(self, hook: FaultHook | None = None) -> KVStateMachine:
        if self.kind == "memory":
            return KVStateMachine.memory()
        if self.db is not None:
            self.db.close()
        self.db = LevelDB(self.tmp / "data", fault_hook=hook)
        return KVStateMachine.leveldb(self.db, NS)

    def restart(self) -> KVStateMachine:
        """LevelDB: reopen from disk. Memory: the same machine (nothing to lose)."""
        if self.kind == "leveldb":
            self.sm = self.open()
        return self.sm

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


class ApplyFault:
    """A fault hook that fails the state machine's apply write ("disk full") once armed."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, point: str) -> None:
        if self.armed and point == "write:kv.apply":
            raise OSError(28, "No space left on device (injected)")


@pytest.fixture(params=["memory", "leveldb"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Machine]:
    m = Machine(str(request.param), tmp_path)
    yield m
    m.close()
