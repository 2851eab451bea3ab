"""Pure Raft: a deterministic state machine with no I/O, no clock and no global RNG.

Only the standard library may be imported here (enforced by ``tests/core/test_purity.py``).
The runtime drives a :class:`RawNode` and follows the :class:`Ready` contract.
"""

from raftd.core import types, wakeup
from raftd.core.raft import TRANSFER_IN_PROGRESS, TRANSIENT_REFUSALS, Config, ProposalDroppedError
from raftd.core.rawnode import PeerProgress, RawNode, Ready, Status
from raftd.core.storage import MemoryStorage, Storage
from raftd.core.types import *  # noqa: F403 (the value types: types.__all__)

__all__ = [
    "TRANSFER_IN_PROGRESS",
    "TRANSIENT_REFUSALS",
    "Config",
    "MemoryStorage",
    "PeerProgress",
    "ProposalDroppedError",
    "RawNode",
    "Ready",
    "Status",
    "Storage",
    "wakeup",
]
__all__ += types.__all__
