"""Callback waiters (``raftd.runtime.group._Waiter``). One is one shot: once it has
called its callback it holds no reference to it, so an owner that keeps its waiter (as a
request served without a task does) is freed by reference counting, not by the cyclic
collector. A group that stops fails each once, even when the callbacks stop waiting."""

from __future__ import annotations

import functools
import gc
import random
import weakref
from typing import Any

import trio

from raftd.kv import commands
from raftd.kv.machine import KVStateMachine
from raftd.runtime.group import (
    CommandProposal,
    Group,
    GroupUnavailable,
    Session,
    _Waiter,
)
from raftd.runtime.presets import PRESETS
from raftd.storage.memory import MemoryRaftStorage
from raftd.transport.memory import MemoryNetwork


class Owner:
    def __init__(self) -> None:
        self.got: list[Any] = []
        self.waiter = _Waiter(callback=self.on_result)

    def on_result(self, w: _Waiter) -> None:
        self.got.append(w.result if w.error is None else w.error)


def test_a_called_waiter_lets_its_owner_go_without_the_cyclic_collector() -> None:
    gc.disable()
    try:
        for finish in ("set", "fail"):
            owner = Owner()
            w = owner.waiter
            if finish == "set":
                w.set(7)
            else:
                w.fail(ValueError("no"))
            assert len(owner.got) == 1
            w.set(8)  # one shot: a second result is ignored
            assert len(owner.got) == 1
            ref = weakref.ref(owner)
            del owner, w
            assert ref() is None, f"{finish}: the owner outlived its last reference"
    finally:
        gc.enable()


def test_a_stopping_group_fails_callback_waiters_that_stop_waiting() -> None:
    """A request served without a task stops waiting (``command_stop``) from inside its
    callback; when the group stops, every such waiter is failed once, and the group's
    shutdown is not broken by the callbacks changing what it iterates."""

    async def main() -> list[list[BaseException]]:
        g = Group(
            namespace="/raft/cb",
            node_id="n1",
            storage=MemoryRaftStorage("/raft/cb"),
            sm=KVStateMachine.memory(),
            transport=MemoryNetwork().transport("n1", "/raft/cb"),
            preset=PRESETS["local"],
            rng=random.Random(1),
            clock=trio.current_time,
        )
        g.bootstrap(["n1", "n2", "n3"])  # no quorum: nothing commits
        got: list[list[BaseException]] = []
        proposals: dict[Session, CommandProposal] = {}

        def stop_waiting(errors: list[BaseException], session: Session, w: _Waiter) -> None:
            assert w.error is not None
            errors.append(w.error)
            g.command_stop(session, proposals[session], w)

        async with trio.open_nursery() as nursery:
            await nursery.start(g.run)
            for i in range(4):
                errors: list[BaseException] = []
                got.append(errors)
                session = (b"client", i)
                callback = functools.partial(stop_waiting, errors, session)
                p, _ = g.command_start(commands.put(b"k%d" % i, b"v"), session, callback)
                proposals[session] = p
            nursery.cancel_scope.cancel()
        return got

    got = trio.run(main)
    assert [[type(e) for e in errors] for errors in got] == [[GroupUnavailable]] * 4
