"""Peer transport for Raft groups: the contract (``base``), an in-memory network for
runtime tests (``memory``), and libp2p streams for real use (``libp2p``, ``host``).

``raftd.transport.libp2p`` and ``raftd.transport.host`` import libp2p (about 0.9 s and
90 MB on first import), so this package does not import them eagerly.
"""
