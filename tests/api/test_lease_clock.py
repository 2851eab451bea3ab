"""The leader's lease timers (raftd.api.leases.LeaseClock) on trio's mock clock, over a
real in-memory state machine and a minimal group: revocation at the deadline, keepalive,
retry after a failed proposal, full TTL after a leader change, and no wake-ups while
there is nothing to time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import trio
import trio.testing

from raftd.api.leases import LeaseClock
from raftd.core import NodeId
from raftd.kv.machine import ApplyResult, KVStateMachine
from raftd.runtime.group import Group, GroupUnavailable
from raftd.wire.pb import kv_pb2 as pb


@dataclass
class _Preset:
    request_timeout_s: float = 1.0


@dataclass
class _Group:
    """What LeaseClock uses of a Group: a state machine, leadership, propose."""

    sm: KVStateMachine = field(default_factory=KVStateMachine.memory)
    leading: bool = True
    namespace: str = "t"
    preset: _Preset = field(default_factory=_Preset)
    fail_proposals: int = 0
    proposed_at: list[float] = field(default_factory=list)
    leadership_checks: int = 0
    _listeners: list[Callable[[NodeId], None]] = field(default_factory=list)
    _index: int = 0

    @property
    def is_leader(self) -> bool:
        self.leadership_checks += 1
        return self.leading

    def add_leader_listener(self, fn: Callable[[NodeId], None]) -> None:
        self._listeners.append(fn)

    def set_leader(self, leading: bool) -> None:
        self.leading = leading
        for fn in self._listeners:
            fn("me" if leading else "other")

    def apply(self, cmd: pb.Command) -> ApplyResult:
        self._index += 1
        return self.sm.apply(self._index, cmd.SerializeToString())

    async def propose(self, data: bytes) -> ApplyResult:
        self.proposed_at.append(trio.current_time())
        await trio.sleep(0.01)  # a round of replication
        if self.fail_proposals:
            self.fail_proposals -= 1
            raise GroupUnavailable("test: proposal lost")
        self._index += 1
        return self.sm.apply(self._index, data)


def _grant(g: _Group, lid: int, ttl: int, key: bytes = b"k") -> None:
    g.apply(pb.Command(lease_grant=pb.LeaseGrantRequest(id=lid, ttl=ttl)))
    g.apply(pb.Command(put=pb.PutRequest(key=key, value=b"v", lease=lid)))


async def _run(g: _Group, body: Callable[[LeaseClock], Any]) -> None:
    clock = LeaseClock(cast(Group, g))  # only what LeaseClock uses of a Group
    async with trio.open_nursery() as n:
        await n.start(clock.run)
        await body(clock)
        n.cancel_scope.cancel()


def _mock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def test_revoked_at_its_deadline_and_keepalive_moves_it() -> None:
    g = _Group()

    async def body(clock: LeaseClock) -> None:
        t0 = trio.current_time()
        _grant(g, 7, ttl=3)
        await trio.sleep(2)
        assert clock.keepalive(7) == 3  # deadline now t0 + 5
        while g.sm.lease(7) is not None:  # noqa: ASYNC110 - mock clock: no real waiting
            await trio.sleep(0.05)
        assert len(g.proposed_at) == 1
        assert 5.0 <= g.proposed_at[0] - t0 < 5.01
        assert g.sm.get(b"k") is None and clock.expired == 1

    trio.run(_run, g, body, clock=_mock())


def test_failed_revocation_is_proposed_again_after_check_interval() -> None:
    g = _Group(fail_proposals=2)

    async def body(clock: LeaseClock) -> None:
        _grant(g, 9, ttl=1)
        while g.sm.lease(9) is not None:  # noqa: ASYNC110 - mock clock
            await trio.sleep(0.05)
        assert len(g.proposed_at) == 3
        gaps = [b - a for a, b in zip(g.proposed_at, g.proposed_at[1:], strict=False)]
        assert all(clock.check_interval <= gap < clock.check_interval + 0.02 for gap in gaps)

    trio.run(_run, g, body, clock=_mock())


def test_leader_change_restarts_timers_and_followers_keep_none() -> None:
    g = _Group()

    async def body(clock: LeaseClock) -> None:
        _grant(g, 5, ttl=4)
        await trio.sleep(3)
        g.set_leader(False)
        await trio.sleep(10)  # a follower never revokes
        assert g.proposed_at == [] and g.sm.lease(5) is not None
        t1 = trio.current_time()
        g.set_leader(True)
        while g.sm.lease(5) is not None:  # noqa: ASYNC110 - mock clock
            await trio.sleep(0.05)
        assert 4.0 <= g.proposed_at[0] - t1 < 4.01  # a full TTL from the new term

    trio.run(_run, g, body, clock=_mock())


def test_no_wake_ups_without_leases() -> None:
    g = _Group()

    async def body(clock: LeaseClock) -> None:
        await trio.sleep(0.5)
        checks = g.leadership_checks
        await trio.sleep(100)  # an idle leader, then an idle follower
        g.set_leader(False)
        await trio.sleep(100)
        # One look per change of leader, none per interval.
        assert g.leadership_checks - checks <= 2

    trio.run(_run, g, body, clock=_mock())
