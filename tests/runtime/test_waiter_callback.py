"""A callback waiter (``raftd.runtime.group._Waiter``) is one shot: once it has called its
callback it holds no reference to it, so an owner that keeps its waiter (as a request
served without a task does) is freed by reference counting, not by the cyclic collector."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from raftd.runtime.group import _Waiter


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
