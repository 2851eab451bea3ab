"""Lease expiry: the leader's lease clock.

The lease table (ids, TTLs, attached keys) is replicated state (:mod:`raftd.kv.machine`);
*time* is not. Only the leader keeps a deadline per lease, in memory, on its monotonic
clock:

- a lease the leader has not seen yet (just granted, or this node just became leader)
  gets ``now + ttl``: **a new leader restarts every lease's timer with its full TTL**
  (as etcd does), so a lease can outlive its TTL by up to one TTL plus the election
  time after a leader change, but never expires early because of one;
- a keepalive (forwarded to the leader) sets ``now + ttl`` again; keepalives are not
  logged;
- at each lease's deadline the leader proposes ``LeaseRevoke(id, expired=true)``.
  Applying that entry deletes the lease and its keys on every replica, at the same log
  position, so apply stays deterministic. A revocation that fails is proposed again
  ``check_interval`` later, while still leader.

Losing leadership drops all deadlines; followers keep none.

The timer task sleeps until the earliest deadline, and is woken when the lease table
changes (an applied grant or revoke, a restore) or the leader changes: an idle node
(no leases, or a follower) does not wake up for leases at all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from raftd.core import NodeId
from raftd.runtime.group import Group, GroupError
from raftd.wire.pb import kv_pb2 as kpb

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = ["LeaseClock", "min_lease_ttl"]

log = logging.getLogger("raftd.api.leases")


def min_lease_ttl(election_s: float) -> int:
    """The shortest TTL granted: twice the (base) election timeout, at least 1 s. A
    shorter requested TTL is raised to it (the grant answers the TTL it used)."""
    return max(1, math.ceil(2 * election_s))


class LeaseClock:
    """The leader-side lease timers of one group (see the module doc)."""

    def __init__(
        self,
        group: Group,
        *,
        check_interval: float = 0.1,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.group = group
        self.check_interval = check_interval
        self.clock = clock
        self._deadlines: dict[int, float] = {}
        self._revoking: set[int] = set()
        self._tried: dict[int, float] = {}  # lease id -> when its revocation was proposed
        self._wake = trio.Event()
        self.expired = 0  # revocations proposed because a TTL ran out
        group.add_leader_listener(self._on_leader_change)
        group.sm.add_lease_listener(self._poke)

    def _poke(self) -> None:
        self._wake.set()

    def _on_leader_change(self, leader: NodeId) -> None:
        # Any change of leader restarts the timers (full TTL for a new term).
        self._deadlines.clear()
        self._tried.clear()
        self._poke()

    def _sync(self, now: float) -> None:
        leases = self.group.sm.leases()
        for lid, rec in leases.items():
            if lid not in self._deadlines:
                self._deadlines[lid] = now + rec.ttl
        if len(self._deadlines) > len(leases):
            for lid in [i for i in self._deadlines if i not in leases]:
                del self._deadlines[lid]
                self._tried.pop(lid, None)

    def keepalive(self, lease_id: int) -> int:
        """Leader only: restart the lease's timer; return its TTL. Raises KeyError if
        the lease does not exist (here, as applied on the leader)."""
        rec = self.group.sm.lease(lease_id)
        if rec is None:
            raise KeyError(lease_id)
        self._deadlines[lease_id] = self.clock() + rec.ttl
        return rec.ttl

    def remaining(self, lease_id: int) -> float:
        """Leader only: seconds left before the lease expires. KeyError if unknown."""
        rec = self.group.sm.lease(lease_id)
        if rec is None:
            raise KeyError(lease_id)
        now = self.clock()
        deadline = self._deadlines.setdefault(lease_id, now + rec.ttl)
        return max(0.0, deadline - now)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wake = trio.Event()
                if not self.group.is_leader:
                    self._deadlines.clear()
                    self._tried.clear()
                    await self._wake.wait()
                    continue
                now = self.clock()
                self._sync(now)
                nxt = math.inf
                for lid, deadline in list(self._deadlines.items()):
                    if lid in self._revoking:
                        continue  # its task pokes when it ends
                    due = max(deadline, self._tried.get(lid, -math.inf) + self.check_interval)
                    if due <= now:
                        self._revoking.add(lid)
                        self._tried[lid] = now
                        nursery.start_soon(self._revoke, lid)
                    else:
                        nxt = min(nxt, due)
                # The deadlines are on ``self.clock``; trio's clock runs at the same rate.
                with trio.move_on_after(nxt - now if nxt < math.inf else math.inf):
                    await self._wake.wait()

    async def _revoke(self, lease_id: int) -> None:
        cmd = kpb.Command(lease_revoke=kpb.LeaseRevokeRequest(id=lease_id, expired=True))
        try:
            with trio.move_on_after(max(1.0, self.group.preset.request_timeout_s)):
                res = await self.group.propose(cmd.SerializeToString(deterministic=True))
                self.expired += 1
                if res.result is not None and res.result.status == kpb.CommandResult.OK:
                    log.info(
                        "%s: lease %d expired (%d keys deleted)",
                        self.group.namespace,
                        lease_id,
                        res.result.lease_revoke.deleted,
                    )
        except GroupError as exc:
            log.debug("%s: revoking lease %d: %s", self.group.namespace, lease_id, exc)
        finally:
            # On failure the deadline stays: proposed again check_interval after this
            # try (if still leader); on success _sync drops it with the lease.
            self._revoking.discard(lease_id)
            self._poke()
