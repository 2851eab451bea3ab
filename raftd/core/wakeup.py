"""What a runtime steps when its node wakes up after a stall, and in which order.

A stall of this node's own process (a starved CPU, a slow disk, SIGSTOP, a long GC) looks,
from inside, like silence from everyone else: the timer says many ticks passed, and the
heartbeats that arrived meanwhile are still queued, unread. Counted naively, the node
campaigns (a follower) or steps down on its check-quorum (a leader) because of its own
stall. The order below keeps that from happening:

1. **Every queued message first**, oldest first: a heartbeat or append from the leader
   resets a follower's election timer; a follower's answer marks it active for the
   leader's check-quorum. Read what is queued before this is called (the runtime lets its
   transport read the sockets before a tick that would end an election timeout:
   :meth:`RawNode.timeout_due`).
2. **Then at most** :data:`MAX_TICKS_AT_ONCE` **of the ticks that elapsed**: one long
   stall is not many ticks of silence from the others. The timers lose the rest of the
   stall; the next ticks come at their normal pace, so a leader that is really gone is
   still noticed one election timeout later.

The runtime's Ready loop (:mod:`raftd.runtime.group`) and the simulator's stalled-node
fault (:mod:`raftd.testing.sim`) both call :func:`step_wakeup`: the simulator checks the
policy the daemon runs, not a copy of it. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from raftd.core.rawnode import RawNode
from raftd.core.types import Message

__all__ = ["MAX_TICKS_AT_ONCE", "step_wakeup", "ticks_to_step"]

#: Ticks stepped at most per wake-up, however many elapsed.
MAX_TICKS_AT_ONCE = 2


def ticks_to_step(elapsed: int) -> int:
    """How many of ``elapsed`` ticks (>= 0) one wake-up steps."""
    return min(max(elapsed, 0), MAX_TICKS_AT_ONCE)


def step_wakeup(
    node: RawNode,
    inbox: deque[Message],
    elapsed_ticks: int,
    on_error: Callable[[Message, Exception], None] | None = None,
) -> int:
    """Step every message of ``inbox`` (emptied, oldest first), then
    :func:`ticks_to_step` of ``elapsed_ticks``; return the ticks stepped.

    ``on_error``: called with a message whose step raised, and the error; the next
    messages are still stepped. Without it the error propagates (the messages after it
    stay in ``inbox``)."""
    while inbox:
        m = inbox.popleft()
        try:
            node.step(m)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(m, exc)
    n = ticks_to_step(elapsed_ticks)
    for _ in range(n):
        node.tick()
    return n
