"""Peer discovery: maps peer ids to addresses per namespace (mDNS, Kademlia DHT,
GossipSub presence, bootstrap entries; peer exchange lives in the formation protocol).
Membership itself only ever changes through Raft (see :mod:`raftd.formation`)."""

from raftd.discovery.addrs import LocalNetworks, announce_addrs, rank_addrs
from raftd.discovery.hub import KINDS, DiscoveryHub
from raftd.discovery.table import PeerRecord, PeerTable

__all__ = [
    "KINDS",
    "DiscoveryHub",
    "LocalNetworks",
    "PeerRecord",
    "PeerTable",
    "announce_addrs",
    "rank_addrs",
]
