"""Value types of the pure Raft core.

Every type here is an immutable, slotted dataclass or an enum, so that values can be
shared between the core, the storage layer and the simulator without defensive copies.
Node ids are strings: in the daemon they are libp2p peer ids; in tests any short name.
``NONE`` (the empty string) stands for "no node" (no vote, no leader).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "EARLY_MESSAGES",
    "EMPTY_HARD_STATE",
    "EMPTY_SNAPSHOT",
    "ENTRY_OVERHEAD",
    "LOCAL_MESSAGES",
    "NONE",
    "RESPONSE_MESSAGES",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "NodeId",
    "ReadState",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "StateType",
]

NodeId = str
NONE: NodeId = ""


class MessageType(enum.IntEnum):
    """Raft message types. Local types never cross the network (etcd-io/raft naming)."""

    HUP = 0  # local: start an election
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # local (or forwarded): propose entries
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local
    SNAP_STATUS = 11  # local
    CHECK_QUORUM = 12  # local
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)

#: What a leader may send before, or while, it persists the same Ready: its appends,
#: heartbeats, snapshots, TimeoutNow and ReadIndex answers promise nothing about its own
#: disk (Raft thesis §10.2.1; its commit index counts itself only once durable), unlike a
#: vote or an append acknowledgement.
EARLY_MESSAGES = frozenset(
    {
        MessageType.APP,
        MessageType.HEARTBEAT,
        MessageType.SNAP,
        MessageType.TIMEOUT_NOW,
        MessageType.READ_INDEX_RESP,
    }
)

RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)


class EntryType(enum.IntEnum):
    """Kind of a log entry."""

    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(enum.IntEnum):
    """Single-server membership changes (Raft thesis §4.2)."""

    ADD_VOTER = 0  # add as voter, or promote an existing learner
    ADD_LEARNER = 1  # add as learner, or demote an existing voter
    REMOVE_NODE = 2


class StateType(enum.IntEnum):
    """Role of a node."""

    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


#: What :meth:`Entry.size` counts for an entry beside its data.
ENTRY_OVERHEAD = 16


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``index`` starts at 1; ``term`` is the leader's term at append."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size in bytes, used for flow control."""
        return len(self.data) + ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be persisted before any message is sent (Raft §5, Figure 2)."""

    term: int = 0
    vote: NodeId = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """Cluster membership: voters and learners (non-voting members)."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()

    def members(self) -> tuple[NodeId, ...]:
        return self.voters + self.learners


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change, carried in a CONF_CHANGE entry."""

    type: ConfChangeType
    node_id: NodeId
    context: bytes = b""

    def encode(self) -> bytes:
        """Encode as entry data: 1 byte type, 2 bytes id length, id, context."""
        nid = self.node_id.encode()
        return bytes([int(self.type)]) + len(nid).to_bytes(2, "big") + nid + self.context

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        """Inverse of :meth:`encode`. Raises ``ValueError`` on malformed data."""
        if len(data) < 3:
            raise ValueError("conf change entry too short")
        n = int.from_bytes(data[1:3], "big")
        if len(data) < 3 + n:
            raise ValueError("conf change entry truncated")
        return ConfChange(ConfChangeType(data[0]), data[3 : 3 + n].decode(), data[3 + n :])


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    """Where a snapshot sits in the log, and the membership at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state machine snapshot. ``data`` is opaque to the core."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message. Field meanings follow etcd-io/raft's ``raftpb.Message``.

    - ``index``/``log_term``: for APP, the entry preceding ``entries``; for APP_RESP the
      last index accepted (or, when ``reject``, the index that was rejected).
    - ``reject_hint``/``log_term`` on a rejecting APP_RESP: the follower's hint for the
      fast backtrack (Raft §5.3, the conflict-index optimization).
    - ``context``: read-index request context, or a campaign marker for transfers.
    - ``commit_only`` on an APP: it carries no entries and was sent only because the
      leader's commit index moved, to a follower in the replicate state. Its answer
      would repeat what the answers to the appends before it say, so the follower
      answers it only when it rejects it (or when it is stale). If those earlier answers
      were lost, the follower's next heartbeat answer makes the leader send an append
      that is answered. A sender that leaves it false gets every answer, as in
      etcd-io/raft.
    - ``commit_only`` on a HEARTBEAT: the leader does not need its answer, and the
      follower does not send one. A leader with check-quorum on sets it only for a
      follower it has heard from since its last quorum check, that is replicating and
      holds every entry, and only without a read's ``context``: so each follower still
      answers at least one heartbeat per election timeout (the first after each check,
      and every one after it until an answer arrives), a follower that lacks entries
      answers every one, and reads are confirmed as before. An idle caught-up follower
      answers two heartbeats a second instead of ten (``local`` preset: 100 ms
      heartbeats, a 500 ms election timeout).
    """

    type: MessageType
    to: NodeId = NONE
    frm: NodeId = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    commit_only: bool = False


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state that is useful to observe but need not be persisted."""

    leader: NodeId = NONE
    state: StateType = StateType.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once ``applied >= index`` (thesis §6.4)."""

    index: int
    context: bytes
