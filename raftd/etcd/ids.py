"""Stable 64-bit etcd ids for raftd's string identities.

etcd names clusters and members by uint64; raftd by namespace/cluster record and libp2p
peer id. The ids here are the first 8 bytes (big-endian) of a SHA-256 of a tagged
string, so every daemon derives the same id for the same peer or cluster, across
restarts, without storing anything. 0 means "none" to etcd clients and is never
produced.
"""

from __future__ import annotations

import hashlib

__all__ = ["cluster_id", "member_id"]


def _id(tag: str, value: str) -> int:
    n = int.from_bytes(hashlib.sha256(f"{tag}\0{value}".encode()).digest()[:8], "big")
    return n or 1


def member_id(peer_id: str) -> int:
    """The etcd member id of a raftd peer (0 for the empty peer id: "no leader")."""
    return _id("raftd-member", peer_id) if peer_id else 0


def cluster_id(namespace: str, cluster: str = "") -> int:
    """The etcd cluster id of ``namespace`` (and its formation cluster id, if any)."""
    return _id("raftd-cluster", f"{namespace}\0{cluster}")
