"""Pure Raft: a deterministic state machine with no I/O, no clock and no global RNG.

Only the standard library may be imported here (enforced by ``tests/core/test_purity.py``).
The runtime drives a :class:`RawNode` and follows the :class:`Ready` contract.
"""

from raftd.core import wakeup
from raftd.core.raft import TRANSFER_IN_PROGRESS, TRANSIENT_REFUSALS, Config, ProposalDroppedError
from raftd.core.rawnode import PeerProgress, RawNode, Ready, Status
from raftd.core.storage import MemoryStorage, Storage
from raftd.core.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateType,
)

__all__ = [
    "NONE",
    "TRANSFER_IN_PROGRESS",
    "TRANSIENT_REFUSALS",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NodeId",
    "PeerProgress",
    "ProposalDroppedError",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "StateType",
    "Status",
    "Storage",
    "wakeup",
]
