"""ReadIndex bookkeeping for linearizable reads (Raft thesis §6.4).

The leader records its commit index when a read request arrives, confirms it is still
leader by a round of heartbeats carrying the request's context, and releases the read
once a majority acknowledged. Contexts must be unique cluster-wide (the runtime prefixes
them with its node id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftd.core.types import Message, NodeId


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    """Pending read-index requests, in arrival order."""

    __slots__ = ("pending", "queue")

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        if m.context in self.pending:
            return
        self.pending[m.context] = ReadIndexStatus(req=m, index=index)
        self.queue.append(m.context)

    def recv_ack(self, node: NodeId, ctx: bytes) -> set[NodeId] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(node)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release the request with ``ctx`` and every request queued before it: a quorum
        acknowledging a later heartbeat round also confirms the earlier ones."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        released = self.queue[: i + 1]
        del self.queue[: i + 1]
        return [self.pending.pop(c) for c in released]

    def last_pending_context(self) -> bytes | None:
        return self.queue[-1] if self.queue else None
