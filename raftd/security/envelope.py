"""Per-frame AES-256-GCM envelope for libp2p streams, sans I/O.

One :class:`Sealer` per outbound direction of a stream and one :class:`Opener` per inbound
direction. The framing layer (``raftd.wire.framing``) delivers and sends whole frames; this
module only turns plaintext frames into sealed frames and back. :class:`NullEnvelope` has
the same interface and passes frames through, so the transport has one code path.

Wire format (version 1)
=======================

The first frame a sender writes on a stream is its **header**::

    version   u8      = 1
    key_id    8 B     id of the root key that sealed this stream (KeyRing key id)
    salt      16 B    os.urandom(16), fresh for every stream and direction
    n         u8      1..16, number of accepted key ids that follow
    accepted  n*8 B   ids of every key the sender accepts, newest first (for rotation)
    tag       16 B    AES-GCM tag over an empty plaintext: authenticates the header

(``42 + 8*n`` bytes: 50 with one key, 58 during a rotation.) Without a key the header is
the single byte ``0x00`` (version 0, "no encryption"), so a keyed node and an unkeyed node
refuse each other's streams with a clear message instead of garbage.

Every later frame is::

    seq       u64 BE  0, 1, 2, ... on this stream and direction
    sealed    len(plaintext) + 16 B   AES-256-GCM ciphertext || tag

(:data:`FRAME_OVERHEAD` = 24 bytes; the minimum frame is 24 bytes, for an empty plaintext.)

Keys and nonces
===============

``subkey = HKDF(root, salt=namespace, info=b"raftd/v1/" + purpose)`` with purpose
``transport`` for ``raft`` streams, ``snapshot`` for ``snap`` and ``commands`` for ``cmd``
(see :func:`raftd.security.keys.derive`). Then a fresh key for this one stream direction::

    stream_key = HKDF-SHA256(subkey, salt=header.salt,
                             info=b"raftd/v1/stream" || lp(kind) || lp(sender) || lp(receiver))

(``lp(x)`` = u32 BE length || x). The GCM nonce of data frame ``seq`` is
``00 00 00 00 || seq (u64 BE)``; the header tag uses ``ff ff ff ff || 0 (u64)``, outside
that space. A nonce is therefore reused under one key only if two stream directions draw
the same 128-bit salt (and the same peers, kind, namespace and root key): with 2**32
streams the chance is about 2**-65. The sequence number never wraps: a sealer refuses to
seal frame 2**63 (:class:`SequenceExhausted`).

Associated data
===============

``context = lp(b"raftd/v1") || lp(namespace) || lp(kind) || lp(sender) || lp(receiver)``.
The header tag authenticates ``context || header-without-tag``. Each data frame's AAD is
``SHA-256(context || whole header) || seq (u64 BE)``, binding the frame to its namespace,
stream kind, direction, header (so to its salt and key) and position. Namespace, kind and
direction are also bound through the stream key, so a mismatch fails twice over.

Receiving
=========

:meth:`Opener.accept_header` must be given the first frame; it verifies the tag before
exposing :attr:`Opener.peer_accepts`, so a peer's advertised key ids are authentic. Then
:meth:`Opener.open` takes frames strictly in order 0, 1, 2, ...: a replayed, reordered or
skipped frame, or one from another stream, is refused. The first refusal fails the opener
for good (every later call raises too): the transport must reset the stream. Every error
is an :class:`EnvelopeError` naming the namespace, stream kind and peer, never key bytes;
no input can make an opener raise anything else.

Threat model: see :mod:`raftd.security`.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Final, Literal, Protocol, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from raftd.security.keys import KeyRing, Purpose

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_OVERHEAD",
    "HEADER_VERSION",
    "MAX_ACCEPTED_IDS",
    "MAX_SEQ",
    "NULL_HEADER",
    "PURPOSE_OF_KIND",
    "STREAM_KINDS",
    "AuthenticationFailed",
    "Duplex",
    "Envelope",
    "EnvelopeError",
    "FrameOpener",
    "FrameSealer",
    "KeyedEnvelope",
    "MalformedFrame",
    "NullEnvelope",
    "NullOpener",
    "NullSealer",
    "Opener",
    "ReplayDetected",
    "Sealer",
    "SequenceExhausted",
    "StreamKind",
    "UnknownKey",
    "accept_duplex",
    "header_size",
    "make_envelope",
    "open_duplex",
]

#: Mirrors ``raftd.transport.base.Kind`` (security must not import transport).
StreamKind = Literal["raft", "snap", "cmd"]
STREAM_KINDS: Final[tuple[StreamKind, ...]] = get_args(StreamKind)
PURPOSE_OF_KIND: Final[dict[StreamKind, Purpose]] = {
    "raft": "transport",
    "snap": "snapshot",
    "cmd": "commands",
}

HEADER_VERSION: Final = 1
#: The whole header of an unencrypted stream (:class:`NullEnvelope`).
NULL_HEADER: Final = b"\x00"
KEY_ID_BYTES: Final = 8
SALT_BYTES: Final = 16
TAG_BYTES: Final = 16
SEQ_BYTES: Final = 8
#: Sealed frame size minus plaintext size.
FRAME_OVERHEAD: Final = SEQ_BYTES + TAG_BYTES
#: A header lists at most this many accepted key ids.
MAX_ACCEPTED_IDS: Final = 16
#: The last sequence number a stream may use; frame 2**63 is never sealed.
MAX_SEQ: Final = 2**63 - 1
#: Same default as ``raftd.wire.framing.DEFAULT_MAX_FRAME_SIZE`` (a sealed frame's size).
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024

_FIXED_HEADER = 1 + KEY_ID_BYTES + SALT_BYTES + 1  # before the accepted ids
_DATA_NONCE_PREFIX: Final = b"\x00\x00\x00\x00"
_HEADER_NONCE: Final = b"\xff\xff\xff\xff" + bytes(8)
_U64 = struct.Struct(">Q")


def header_size(n_accepted: int) -> int:
    """Size in bytes of a version-1 header listing ``n_accepted`` key ids."""
    return _FIXED_HEADER + KEY_ID_BYTES * n_accepted + TAG_BYTES


# ---------------------------------------------------------------------------- errors


class EnvelopeError(Exception):
    """A frame or header was refused. The transport resets the stream and logs this.

    The message names namespace, stream kind and peer; it never contains key bytes.
    """

    def __init__(self, reason: str, *, namespace: str, kind: str, peer: str) -> None:
        super().__init__(f"{kind} stream with peer {peer} in {namespace}: {reason}")
        self.reason = reason
        self.namespace = namespace
        self.kind = kind
        self.peer = peer


class AuthenticationFailed(EnvelopeError):
    """The GCM tag did not verify: wrong key, tampered bytes, wrong namespace/direction/
    stream, or an unencrypted peer talking to an encrypted node."""


class ReplayDetected(EnvelopeError):
    """A frame's sequence number is not the next expected one (replayed, reordered,
    dropped in between, or its sequence field was tampered with)."""


class UnknownKey(EnvelopeError):
    """The header names a key id this node does not accept (see rotation in keys.py)."""


class MalformedFrame(EnvelopeError):
    """Wrong size or layout: too short, too long, bad version, bad header fields."""


class SequenceExhausted(EnvelopeError):
    """The sealer has sealed 2**63 frames; the stream must be replaced (never happens in
    practice, but a GCM nonce must never repeat)."""


# ------------------------------------------------------------------------ interfaces


class FrameSealer(Protocol):
    """The outbound half of one stream direction."""

    @property
    def header(self) -> bytes:
        """The first frame to write on the stream, before any sealed frame."""
        ...

    @property
    def key_id(self) -> str | None:
        """Id of the key sealing this stream (``None`` without encryption)."""
        ...

    @property
    def max_plaintext(self) -> int:
        """Largest plaintext :meth:`seal` accepts."""
        ...

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """The frame to write for ``plaintext``; frames must be written in call order."""
        ...

    def stale(self, ring: KeyRing | None, peer_accepts: AbstractSet[str] | None) -> bool:
        """After a reload or new peer information: should the stream be replaced?"""
        ...


class FrameOpener(Protocol):
    """The inbound half of one stream direction."""

    @property
    def key_id(self) -> str | None:
        """Id of the key the peer sealed the stream with (after :meth:`accept_header`)."""
        ...

    @property
    def peer_accepts(self) -> frozenset[str] | None:
        """Key ids the peer advertised as accepted; ``None`` before the header (and
        without encryption). Authentic: set only after the header's tag verified."""
        ...

    def accept_header(self, frame: bytes | bytearray | memoryview) -> None:
        """Check the stream's first frame. Raises :class:`EnvelopeError`."""
        ...

    def open(self, frame: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of the next frame. Raises :class:`EnvelopeError`."""
        ...

    def stale(self, ring: KeyRing | None) -> bool:
        """After a reload: is this stream's key no longer accepted?"""
        ...


class Envelope(Protocol):
    """Makes sealers and openers; one per daemon. :class:`KeyedEnvelope` or
    :class:`NullEnvelope`."""

    @property
    def encrypted(self) -> bool: ...

    @property
    def ring(self) -> KeyRing | None:
        """The current ring (``None`` without a key): pass it to ``stale()``."""
        ...

    def sealer(
        self,
        namespace: str,
        kind: StreamKind,
        *,
        local_peer: str,
        remote_peer: str,
        peer_accepts: AbstractSet[str] | None = None,
    ) -> FrameSealer:
        """The sealer for a new stream direction local_peer -> remote_peer.

        ``peer_accepts`` is the set the remote peer last advertised (``None`` if unknown);
        it chooses the key (:meth:`KeyRing.sealing_key`). Raises
        :class:`raftd.security.keys.NoCommonKey` if no held key is acceptable.
        """
        ...

    def opener(
        self, namespace: str, kind: StreamKind, *, local_peer: str, remote_peer: str
    ) -> FrameOpener:
        """The opener for a new stream direction remote_peer -> local_peer."""
        ...


# ---------------------------------------------------------------------------- keyed


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _context(namespace: str, kind: str, sender: str, receiver: str) -> bytes:
    fields = (b"raftd/v1", namespace.encode(), kind.encode(), sender.encode(), receiver.encode())
    return b"".join(_lp(f) for f in fields)


def _stream_aead(subkey: bytes, salt: bytes, kind: str, sender: str, receiver: str) -> AESGCM:
    info = b"raftd/v1/stream" + _lp(kind.encode()) + _lp(sender.encode()) + _lp(receiver.encode())
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info)
    return AESGCM(hkdf.derive(subkey))


def _check_names(namespace: str, kind: str, local_peer: str, remote_peer: str) -> None:
    if kind not in STREAM_KINDS:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {STREAM_KINDS}")
    if not namespace or not local_peer or not remote_peer:
        raise ValueError("namespace and peer ids must not be empty")


class Sealer:
    """Seals the frames of one stream direction ``local_peer -> remote_peer``.

    Write :attr:`header` first, then each :meth:`seal` result in call order. Not
    thread-safe; one task owns it.
    """

    __slots__ = (
        "_aad_prefix",
        "_aead",
        "_header",
        "_key_id",
        "_kind",
        "_max_frame_size",
        "_namespace",
        "_remote",
        "_seq",
    )

    def __init__(
        self,
        ring: KeyRing,
        namespace: str,
        kind: StreamKind,
        *,
        local_peer: str,
        remote_peer: str,
        peer_accepts: AbstractSet[str] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        _check_names(namespace, kind, local_peer, remote_peer)
        if max_frame_size < FRAME_OVERHEAD:
            raise ValueError(f"max_frame_size must be >= {FRAME_OVERHEAD}")
        key = ring.sealing_key(peer_accepts)
        accepted = ring.accepted_ids[:MAX_ACCEPTED_IDS]
        salt = os.urandom(SALT_BYTES)
        subkey = key.derive(PURPOSE_OF_KIND[kind], namespace)
        self._aead = _stream_aead(subkey, salt, kind, local_peer, remote_peer)
        body = (
            bytes([HEADER_VERSION])
            + bytes.fromhex(key.id)
            + salt
            + bytes([len(accepted)])
            + b"".join(bytes.fromhex(i) for i in accepted)
        )
        context = _context(namespace, kind, local_peer, remote_peer)
        self._header = body + self._aead.encrypt(_HEADER_NONCE, b"", context + body)
        self._aad_prefix = hashlib.sha256(context + self._header).digest()
        self._key_id = key.id
        self._namespace = namespace
        self._kind = kind
        self._remote = remote_peer
        self._max_frame_size = max_frame_size
        self._seq = 0

    @property
    def header(self) -> bytes:
        return self._header

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def max_plaintext(self) -> int:
        return self._max_frame_size - FRAME_OVERHEAD

    @property
    def frames_sealed(self) -> int:
        return self._seq

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """``seq || AES-GCM(plaintext)``. Raises ``ValueError`` if the plaintext is over
        :attr:`max_plaintext` (nothing is consumed), :class:`SequenceExhausted` after
        2**63 frames."""
        size = plaintext.nbytes if isinstance(plaintext, memoryview) else len(plaintext)
        if size > self._max_frame_size - FRAME_OVERHEAD:
            raise ValueError(
                f"plaintext of {size} bytes exceeds the limit of "
                f"{self.max_plaintext} bytes for a sealed frame of {self._max_frame_size}"
            )
        seq = self._seq
        if seq > MAX_SEQ:
            raise SequenceExhausted(
                "sealed 2**63 frames; open a new stream",
                namespace=self._namespace,
                kind=self._kind,
                peer=self._remote,
            )
        self._seq = seq + 1
        seq_bytes = _U64.pack(seq)
        return seq_bytes + self._aead.encrypt(
            _DATA_NONCE_PREFIX + seq_bytes, plaintext, self._aad_prefix + seq_bytes
        )

    def stale(self, ring: KeyRing | None, peer_accepts: AbstractSet[str] | None) -> bool:
        """True if ``ring`` would now seal to this peer under another key (a newer common
        key, or this one is no longer held), or there is no ring any more."""
        if ring is None:
            return True
        try:
            return ring.sealing_key(peer_accepts).id != self._key_id
        except LookupError:
            return True

    def __repr__(self) -> str:
        return (
            f"Sealer({self._kind} -> {self._remote} in {self._namespace}, "
            f"key_id={self._key_id}, seq={self._seq})"
        )


class Opener:
    """Opens the frames of one stream direction ``remote_peer -> local_peer``.

    Give it the stream's first frame with :meth:`accept_header`, then every later frame,
    in order, with :meth:`open`. After any :class:`EnvelopeError` it is failed for good.
    """

    __slots__ = (
        "_aad_prefix",
        "_aead",
        "_context",
        "_failed",
        "_key_id",
        "_kind",
        "_local",
        "_max_frame_size",
        "_namespace",
        "_peer_accepts",
        "_remote",
        "_ring",
        "_seq",
    )

    def __init__(
        self,
        ring: KeyRing,
        namespace: str,
        kind: StreamKind,
        *,
        local_peer: str,
        remote_peer: str,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        _check_names(namespace, kind, local_peer, remote_peer)
        self._ring = ring
        self._namespace = namespace
        self._kind: StreamKind = kind
        self._local = local_peer
        self._remote = remote_peer
        self._max_frame_size = max_frame_size
        self._context = _context(namespace, kind, remote_peer, local_peer)
        self._aead: AESGCM | None = None
        self._aad_prefix = b""
        self._key_id: str | None = None
        self._peer_accepts: frozenset[str] | None = None
        self._seq = 0
        self._failed = False

    @property
    def key_id(self) -> str | None:
        return self._key_id

    @property
    def peer_accepts(self) -> frozenset[str] | None:
        return self._peer_accepts

    @property
    def frames_opened(self) -> int:
        return self._seq

    def _fail(self, cls: type[EnvelopeError], reason: str) -> EnvelopeError:
        self._failed = True
        return cls(reason, namespace=self._namespace, kind=self._kind, peer=self._remote)

    def _check_usable(self) -> None:
        if self._failed:
            raise EnvelopeError(
                "stream already refused a frame; reset it",
                namespace=self._namespace,
                kind=self._kind,
                peer=self._remote,
            )

    def accept_header(self, frame: bytes | bytearray | memoryview) -> None:
        """Verify the stream header (the first frame). Raises :class:`EnvelopeError`:
        :class:`UnknownKey` if sealed under a key this node does not hold,
        :class:`AuthenticationFailed` if the tag fails (or the peer is unencrypted),
        :class:`MalformedFrame` for a bad layout or a second header."""
        self._check_usable()
        if self._aead is not None:
            raise self._fail(MalformedFrame, "stream header received twice")
        header = bytes(frame)
        if header == NULL_HEADER:
            raise self._fail(
                AuthenticationFailed,
                "the peer sent an unencrypted stream, but this node requires the shared "
                "key: configure the same --key-file on every node",
            )
        if len(header) < header_size(1):
            raise self._fail(MalformedFrame, f"stream header of {len(header)} bytes is too short")
        if header[0] != HEADER_VERSION:
            raise self._fail(MalformedFrame, f"unsupported envelope version {header[0]}")
        n = header[_FIXED_HEADER - 1]
        if not 1 <= n <= MAX_ACCEPTED_IDS or len(header) != header_size(n):
            raise self._fail(
                MalformedFrame, f"stream header of {len(header)} bytes does not list {n} key ids"
            )
        key_id = header[1 : 1 + KEY_ID_BYTES].hex()
        salt = header[1 + KEY_ID_BYTES : 1 + KEY_ID_BYTES + SALT_BYTES]
        ids_end = _FIXED_HEADER + KEY_ID_BYTES * n
        accepted = [
            header[i : i + KEY_ID_BYTES].hex() for i in range(_FIXED_HEADER, ids_end, KEY_ID_BYTES)
        ]
        key = self._ring.get(key_id)
        if key is None:
            raise self._fail(
                UnknownKey,
                f"sealed under key id {key_id}, which this node does not accept (it accepts "
                f"{', '.join(self._ring.accepted_ids)}); distribute that key or reload",
            )
        aead = _stream_aead(
            key.derive(PURPOSE_OF_KIND[self._kind], self._namespace),
            salt,
            self._kind,
            self._remote,
            self._local,
        )
        body, tag = header[:ids_end], header[ids_end:]
        try:
            aead.decrypt(_HEADER_NONCE, tag, self._context + body)
        except InvalidTag:
            raise self._fail(
                AuthenticationFailed,
                "stream header failed authentication (wrong key, wrong namespace, stream "
                "kind or direction, or tampered)",
            ) from None
        # Checked after the tag so a forged header cannot choose which error we log.
        if len(set(accepted)) != n or key_id not in accepted:
            raise self._fail(MalformedFrame, "stream header has an inconsistent key id list")
        self._aead = aead
        self._aad_prefix = hashlib.sha256(self._context + header).digest()
        self._key_id = key_id
        self._peer_accepts = frozenset(accepted)

    def open(self, frame: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of the next frame, which must carry the next sequence number.

        Raises :class:`MalformedFrame` (before the header, under 24 bytes, over the size
        limit), :class:`ReplayDetected` (sequence number not the expected one),
        :class:`AuthenticationFailed` (tag).
        """
        self._check_usable()
        aead = self._aead
        if aead is None:
            raise self._fail(MalformedFrame, "data frame before the stream header")
        size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        if size < FRAME_OVERHEAD:
            raise self._fail(
                MalformedFrame, f"frame of {size} bytes is shorter than {FRAME_OVERHEAD}"
            )
        if size > self._max_frame_size:
            raise self._fail(
                MalformedFrame, f"frame of {size} bytes exceeds the limit of {self._max_frame_size}"
            )
        data = frame if isinstance(frame, bytes) else bytes(frame)
        seq_bytes = data[:SEQ_BYTES]
        (seq,) = _U64.unpack(seq_bytes)
        if seq != self._seq:
            raise self._fail(
                ReplayDetected,
                f"frame sequence number {seq}, expected {self._seq} (replayed, reordered, "
                "dropped or tampered)",
            )
        try:
            plaintext = aead.decrypt(
                _DATA_NONCE_PREFIX + seq_bytes,
                memoryview(data)[SEQ_BYTES:],
                self._aad_prefix + seq_bytes,
            )
        except InvalidTag:
            raise self._fail(
                AuthenticationFailed, f"frame {seq} failed authentication (tampered or forged)"
            ) from None
        self._seq = seq + 1
        return plaintext

    def stale(self, ring: KeyRing | None) -> bool:
        """True if ``ring`` no longer accepts this stream's key (or there is no ring)."""
        return ring is None or (self._key_id is not None and not ring.accepts(self._key_id))

    def __repr__(self) -> str:
        return (
            f"Opener({self._kind} <- {self._remote} in {self._namespace}, "
            f"key_id={self._key_id}, seq={self._seq})"
        )


class KeyedEnvelope:
    """Sealers and openers under a :class:`KeyRing`. :meth:`reload` swaps the ring; the
    transport then calls ``stale()`` on its live sealers/openers and resets those that
    answer True."""

    encrypted: Final = True

    def __init__(self, ring: KeyRing, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < FRAME_OVERHEAD:
            raise ValueError(f"max_frame_size must be >= {FRAME_OVERHEAD}")
        self.ring = ring
        self.max_frame_size = max_frame_size

    def reload(self, ring: KeyRing) -> None:
        """Use ``ring`` for every stream made from now on."""
        self.ring = ring

    def sealer(
        self,
        namespace: str,
        kind: StreamKind,
        *,
        local_peer: str,
        remote_peer: str,
        peer_accepts: AbstractSet[str] | None = None,
    ) -> Sealer:
        return Sealer(
            self.ring,
            namespace,
            kind,
            local_peer=local_peer,
            remote_peer=remote_peer,
            peer_accepts=peer_accepts,
            max_frame_size=self.max_frame_size,
        )

    def opener(
        self, namespace: str, kind: StreamKind, *, local_peer: str, remote_peer: str
    ) -> Opener:
        return Opener(
            self.ring,
            namespace,
            kind,
            local_peer=local_peer,
            remote_peer=remote_peer,
            max_frame_size=self.max_frame_size,
        )

    def __repr__(self) -> str:
        return f"KeyedEnvelope({self.ring!r}, max_frame_size={self.max_frame_size})"


# ----------------------------------------------------------------------------- null


class NullSealer:
    """Passthrough sealer: header ``0x00``, frames unchanged (no key configured)."""

    __slots__ = ("_kind", "_max_frame_size", "_namespace", "_remote")

    def __init__(
        self, namespace: str, kind: StreamKind, *, remote_peer: str, max_frame_size: int
    ) -> None:
        self._namespace = namespace
        self._kind = kind
        self._remote = remote_peer
        self._max_frame_size = max_frame_size

    header: Final = NULL_HEADER
    key_id: Final = None

    @property
    def max_plaintext(self) -> int:
        return self._max_frame_size

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        data = bytes(plaintext)
        if len(data) > self._max_frame_size:
            raise ValueError(
                f"plaintext of {len(data)} bytes exceeds the limit of {self._max_frame_size} bytes"
            )
        return data

    def stale(self, ring: KeyRing | None, peer_accepts: AbstractSet[str] | None) -> bool:
        return ring is not None


class NullOpener:
    """Passthrough opener: expects header ``0x00``, returns frames unchanged."""

    __slots__ = ("_failed", "_header_seen", "_kind", "_max_frame_size", "_namespace", "_remote")

    def __init__(
        self, namespace: str, kind: StreamKind, *, remote_peer: str, max_frame_size: int
    ) -> None:
        self._namespace = namespace
        self._kind = kind
        self._remote = remote_peer
        self._max_frame_size = max_frame_size
        self._header_seen = False
        self._failed = False

    key_id: Final = None
    peer_accepts: Final = None

    def _fail(self, cls: type[EnvelopeError], reason: str) -> EnvelopeError:
        self._failed = True
        return cls(reason, namespace=self._namespace, kind=self._kind, peer=self._remote)

    def accept_header(self, frame: bytes | bytearray | memoryview) -> None:
        if self._failed:
            raise self._fail(EnvelopeError, "stream already refused a frame; reset it")
        if self._header_seen:
            raise self._fail(MalformedFrame, "stream header received twice")
        header = bytes(frame)
        if header != NULL_HEADER:
            if header[:1] == bytes([HEADER_VERSION]):
                raise self._fail(
                    UnknownKey,
                    "the peer sent an encrypted stream, but this node has no shared key: "
                    "configure the same --key-file on every node",
                )
            raise self._fail(MalformedFrame, "bad stream header for an unencrypted stream")
        self._header_seen = True

    def open(self, frame: bytes | bytearray | memoryview) -> bytes:
        if self._failed:
            raise self._fail(EnvelopeError, "stream already refused a frame; reset it")
        if not self._header_seen:
            raise self._fail(MalformedFrame, "data frame before the stream header")
        data = bytes(frame)
        if len(data) > self._max_frame_size:
            raise self._fail(
                MalformedFrame,
                f"frame of {len(data)} bytes exceeds the limit of {self._max_frame_size}",
            )
        return data

    def stale(self, ring: KeyRing | None) -> bool:
        return ring is not None


class NullEnvelope:
    """No key configured: same interface as :class:`KeyedEnvelope`, no protection."""

    encrypted: Final = False
    #: No key; adding one needs a restart (a reload cannot switch envelopes).
    ring: Final = None

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size

    def sealer(
        self,
        namespace: str,
        kind: StreamKind,
        *,
        local_peer: str,
        remote_peer: str,
        peer_accepts: AbstractSet[str] | None = None,
    ) -> NullSealer:
        _check_names(namespace, kind, local_peer, remote_peer)
        return NullSealer(
            namespace, kind, remote_peer=remote_peer, max_frame_size=self.max_frame_size
        )

    def opener(
        self, namespace: str, kind: StreamKind, *, local_peer: str, remote_peer: str
    ) -> NullOpener:
        _check_names(namespace, kind, local_peer, remote_peer)
        return NullOpener(
            namespace, kind, remote_peer=remote_peer, max_frame_size=self.max_frame_size
        )

    def __repr__(self) -> str:
        return f"NullEnvelope(max_frame_size={self.max_frame_size})"


def make_envelope(
    ring: KeyRing | None, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> KeyedEnvelope | NullEnvelope:
    """:class:`KeyedEnvelope` if a ring is configured, else :class:`NullEnvelope`."""
    if ring is None:
        return NullEnvelope(max_frame_size=max_frame_size)
    return KeyedEnvelope(ring, max_frame_size=max_frame_size)


# ------------------------------------------------------------ request/response streams


@dataclass(frozen=True, slots=True)
class Duplex:
    """Both directions of one bidirectional stream (the ``cmd`` request/response protocol).

    Each direction has its own sealer/opener, salt and key; a frame reflected back to its
    sender fails authentication (the direction is bound).
    """

    sealer: FrameSealer
    opener: FrameOpener


def open_duplex(
    envelope: Envelope,
    namespace: str,
    kind: StreamKind,
    *,
    local_peer: str,
    remote_peer: str,
    peer_accepts: AbstractSet[str] | None = None,
) -> Duplex:
    """The initiator's side: write ``duplex.sealer.header`` and the request frames, then
    pass the responder's first frame to ``duplex.opener.accept_header`` and the rest to
    ``duplex.opener.open``."""
    return Duplex(
        envelope.sealer(
            namespace,
            kind,
            local_peer=local_peer,
            remote_peer=remote_peer,
            peer_accepts=peer_accepts,
        ),
        envelope.opener(namespace, kind, local_peer=local_peer, remote_peer=remote_peer),
    )


def accept_duplex(
    envelope: Envelope,
    namespace: str,
    kind: StreamKind,
    header_frame: bytes | bytearray | memoryview,
    *,
    local_peer: str,
    remote_peer: str,
) -> Duplex:
    """The responder's side, given the initiator's first frame (its header).

    Verifies the header (raises :class:`EnvelopeError`), then seals the reply under the
    newest key the initiator just advertised. Write ``duplex.sealer.header`` before the
    first response frame.
    """
    opener = envelope.opener(namespace, kind, local_peer=local_peer, remote_peer=remote_peer)
    opener.accept_header(header_frame)
    sealer = envelope.sealer(
        namespace,
        kind,
        local_peer=local_peer,
        remote_peer=remote_peer,
        peer_accepts=opener.peer_accepts,
    )
    return Duplex(sealer, opener)
