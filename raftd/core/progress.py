"""The leader's view of each follower: match/next indexes and flow control.

Follows etcd-io/raft's ``tracker`` package. A follower is in one of three states:

- PROBE: the leader does not know the follower's last index. It sends at most one
  append per heartbeat interval and waits for the answer (fast backtrack on reject).
- REPLICATE: steady state. The leader streams appends optimistically, bounded by
  ``Inflights`` (max messages and max bytes in flight).
- SNAPSHOT: the follower needs a snapshot; appends pause until it is reported.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A bounded window of in-flight append messages, by count and by bytes.

    Each entry records the last index of one append and its payload size. Acks free the
    window up to an index.
    """

    __slots__ = ("_q", "bytes", "max_bytes", "size")

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        self.size = size
        self.max_bytes = max_bytes  # 0 means unlimited
        self._q: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def add(self, index: int, nbytes: int) -> None:
        if self.full():
            raise RuntimeError("cannot add into a full inflights window")
        self._q.append((index, nbytes))
        self.bytes += nbytes

    def free_le(self, index: int) -> None:
        """Free every in-flight append whose last index is <= ``index``."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        """Free the oldest in-flight append, so a full window can make progress when
        appends were lost (the heartbeat response proves the peer is alive)."""
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.size or (0 < self.max_bytes <= self.bytes)

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    """Replication progress of one peer, as tracked by the leader."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(
        self, next_index: int, inflight_size: int, inflight_bytes: int, is_learner: bool
    ) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        # Set by any message from the peer; cleared by check-quorum every election timeout.
        self.recent_active = False
        # In PROBE: an append is outstanding, so send no more until a response arrives.
        self.probe_sent = False
        self.inflights = Inflights(inflight_size, inflight_bytes)
        self.is_learner = is_learner

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record that the peer has the log up to ``n``. True if ``match`` moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def update_on_entries_send(self, n_entries: int, nbytes: int, next_index: int) -> None:
        """Account for an append of ``n_entries`` starting at ``next_index``."""
        if self.state == ProgressState.REPLICATE:
            if n_entries > 0:
                last = next_index + n_entries - 1
                self.next = last + 1
                self.inflights.add(last, nbytes)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejected append for index ``rejected``; ``match_hint`` is the highest
        index the follower might share with us (Raft §5.3, fast backtrack).
        False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale: we already know better
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale: not a response to our latest probe
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(state={self.state.name}, match={self.match}, next={self.next}, "
            f"learner={self.is_learner}, pending_snap={self.pending_snapshot})"
        )
