"""The shared-key envelope: every frame on a group's ``raft``, ``snap`` and ``cmd``
streams sealed with AES-256-GCM under a key all members hold (``--key-file`` or
``$RAFTD_KEY``).

- :mod:`raftd.security.keys`: loading the key (file permission checks, hex / base64 /
  raw / passphrase rule), key ids, the rotation :class:`KeyRing`, HKDF subkeys.
- :mod:`raftd.security.envelope`: the sans-I/O :class:`Sealer` / :class:`Opener` per
  stream direction, the :class:`NullEnvelope` passthrough, the exact wire format.

Threat model
============

The attacker can reach the daemon at the libp2p layer: connect to it, open streams, run
its own libp2p peer with its own peer id, and send any bytes. libp2p's Noise channel
already authenticates peer ids and encrypts each connection, but Noise admits *any* peer
id. The shared key decides who is a member.

What the shared key protects, against anyone who does not hold it:

- **Confidentiality and integrity** of Raft traffic, forwarded client commands, join and
  peer-exchange requests, and snapshots: a non-holder can neither read nor forge nor
  modify a frame, and cannot get one accepted at all (the first frame of every stream is
  an authenticated header).
- **Binding**: a frame only opens in the namespace, stream kind (``raft``/``snap``/``cmd``)
  and direction (sender peer id -> receiver peer id) it was sealed for, and only on its
  own stream (a fresh random 128-bit salt and key per stream direction).
- **Replay within a stream**: frames must arrive in sequence (0, 1, 2, ...); a replayed,
  reordered, dropped or spliced frame is refused and the stream reset.

What it does not protect:

- **Members**: anyone holding the key is a full member and can do anything a member can
  (forge Raft messages in its own name, propose writes, join). There are no per-node
  keys or roles. Peer ids are authenticated by Noise, not by this key.
- **Forward secrecy** beyond Noise's: a leaked shared key decrypts any recorded envelope
  traffic of an attacker who could also see inside the Noise channel (in practice, a
  member or a node compromise), and lets the attacker join.
- **Metadata**: peer ids, addresses, protocol ids (which name the namespace), timing,
  frame sizes and counts, and key ids are visible to the connected peer; headers are
  cleartext (authenticated, not encrypted).
- **Replay of a whole stream** from its header: the receiver adds no freshness. Noise binds
  a stream to the sender's peer identity, so only a party that could decrypt that Noise
  session (the original receiver, a member) could replay it.
- **Denial of service**: anyone who can connect can make a node reject streams.
- **The local API socket**: protected by its file permissions (and the API token), not by
  this key.
- **Passphrases** are only as strong as the passphrase: one recorded frame allows an
  offline guessing attack, slowed by scrypt. Prefer a random 32-byte key.
"""

from raftd.security.envelope import (
    AuthenticationFailed,
    Duplex,
    Envelope,
    EnvelopeError,
    FrameOpener,
    FrameSealer,
    KeyedEnvelope,
    MalformedFrame,
    NullEnvelope,
    Opener,
    ReplayDetected,
    Sealer,
    SequenceExhausted,
    StreamKind,
    UnknownKey,
    accept_duplex,
    make_envelope,
    open_duplex,
)
from raftd.security.keys import (
    Key,
    KeyFilePermissionError,
    KeyLoadError,
    KeyRing,
    NoCommonKey,
    derive,
    load_key,
    load_key_file,
)

__all__ = [
    "AuthenticationFailed",
    "Duplex",
    "Envelope",
    "EnvelopeError",
    "FrameOpener",
    "FrameSealer",
    "Key",
    "KeyFilePermissionError",
    "KeyLoadError",
    "KeyRing",
    "KeyedEnvelope",
    "MalformedFrame",
    "NoCommonKey",
    "NullEnvelope",
    "Opener",
    "ReplayDetected",
    "Sealer",
    "SequenceExhausted",
    "StreamKind",
    "UnknownKey",
    "accept_duplex",
    "derive",
    "load_key",
    "load_key_file",
    "make_envelope",
    "open_duplex",
]
