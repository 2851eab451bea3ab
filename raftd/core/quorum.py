"""Quorum math for a single (non-joint) majority configuration.

Raft §5.2 and §5.3: an election is won, and an entry committed, by a majority of the
voters. Learners never count.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from raftd.core.types import NodeId


class VoteResult(enum.Enum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(n: int) -> int:
    """Smallest number of voters that forms a majority of ``n``."""
    return n // 2 + 1


def committed_index(voters: Collection[NodeId], match: Mapping[NodeId, int]) -> int:
    """The largest index that a majority of ``voters`` has in its log.

    Voters missing from ``match`` count as 0. An empty configuration commits nothing
    (returns 0): a cluster with no voters cannot make progress.
    """
    if not voters:
        return 0
    acked = sorted([match.get(v, 0) for v in voters], reverse=True)
    return acked[majority(len(acked)) - 1]


def vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant."""
    if not voters:
        # An empty configuration wins trivially; the caller never campaigns without voters.
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected < need:
        return VoteResult.LOST
    return VoteResult.PENDING
