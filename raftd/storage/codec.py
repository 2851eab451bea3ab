"""Binary layout of everything the LevelDB storage keeps: keys, sealed values, entries.

Key layout (the log's LevelDB, one per daemon data dir, ``<data-dir>/db``)::

    \\x00 "format"                -> format version (u32, :data:`FORMAT_VERSION`)
    \\x00 "ns-next"               -> next group id to hand out (u32)
    \\x00 "ns:" <namespace utf-8> -> group id (u32)                 (the namespace registry)
    \\x01 <gid u32 BE> <kind> ... -> per-group keys, kinds:
        "L" <index u64 BE>        log entry (big-endian: key order == index order)
        "H"                       hard state
        "C"                       conf state (latest membership the runtime recorded)
        "M" <name>                metadata: "log" (first, last, term of first-1),
                                  "snap" (snapshot metadata), "install" (pending install)

The state machines' LevelDB (``<data-dir>/state``, :mod:`raftd.storage.statedb`)::

    \\x00 "format"                -> its format version (u32, :data:`STATE_FORMAT_VERSION`)
    \\x01 <gid u32 BE> "D" ...    -> state machine data (the group id from the log's
                                   registry), layout owned by the state machine
                                   (:mod:`raftd.kv.backend`)

In format 1 the state machine data lived in the log's database, under the same keys; a
data dir of format 1 is migrated when it is opened.

Why a registry rather than the namespace itself or its hash: the group prefix is 6 bytes
(1 + 4 + kind) whatever the namespace length, it cannot collide (a hash could, however
unlikely), and the registry lists the groups a data dir holds. Ids are never reused.

Values are *sealed*: ``payload || crc32(payload, crc32(key))`` (CRC-32/IEEE from
:func:`zlib.crc32`; CRC-32C is not available without an extra dependency). Binding the key
into the checksum also catches a value stored under the wrong key.

Log entries are hot, so they get a leaner encoding (one CRC call)::

    term u64 BE | type u8 | data | crc32(term|type|data, start=index mod 2**32) u32 BE

(``zlib.crc32``'s start value continues the CRC from the index, which binds the value to
its index without hashing the key bytes.)
"""

from __future__ import annotations

import struct
import zlib

from raftd.core.types import ConfState, Entry, EntryType, HardState, SnapshotMetadata

FORMAT_VERSION = 2
STATE_FORMAT_VERSION = 1

ROOT = b"\x00"
GROUP = b"\x01"
KEY_FORMAT = ROOT + b"format"
KEY_NS_NEXT = ROOT + b"ns-next"
KEY_NS_PREFIX = ROOT + b"ns:"

KIND_LOG = b"L"
KIND_HARD_STATE = b"H"
KIND_CONF_STATE = b"C"
KIND_META = b"M"
KIND_DATA = b"D"

META_LOG = b"log"
META_SNAP = b"snap"
META_INSTALL = b"install"

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
ENTRY_HDR = struct.Struct(">QB")
_HS = struct.Struct(">QQ")
_LOG_META = struct.Struct(">QQQ")
_SNAP_HDR = struct.Struct(">QQ")
_U16 = struct.Struct(">H")
_MASK32 = 0xFFFFFFFF
_ENTRY_TYPES = tuple(sorted(EntryType))  # by value; faster than EntryType(n)
assert all(t == i for i, t in enumerate(_ENTRY_TYPES))


class DecodeError(ValueError):
    """A stored value does not decode or its checksum does not match."""


def group_prefix(gid: int) -> bytes:
    return GROUP + U32.pack(gid)


def log_key(prefix: bytes, index: int) -> bytes:
    return prefix + KIND_LOG + U64.pack(index)


def index_of_log_key(prefix: bytes, key: bytes) -> int:
    if len(key) != len(prefix) + 9:
        raise DecodeError(f"bad log key length {len(key)}")
    return int(U64.unpack_from(key, len(prefix) + 1)[0])


def u32(n: int) -> bytes:
    return U32.pack(n)


def read_u32(b: bytes) -> int:
    if len(b) != 4:
        raise DecodeError("bad u32")
    return int(U32.unpack(b)[0])


# -- sealing ---------------------------------------------------------------------------
def seal(key: bytes, payload: bytes) -> bytes:
    """``payload`` followed by its CRC-32 bound to ``key``."""
    return payload + U32.pack(zlib.crc32(payload, zlib.crc32(key)))


def unseal(key: bytes, value: bytes) -> bytes:
    """Inverse of :func:`seal`; raises :class:`DecodeError` on a checksum mismatch."""
    if len(value) < 4:
        raise DecodeError("sealed value too short")
    payload = value[:-4]
    if zlib.crc32(payload, zlib.crc32(key)) != U32.unpack_from(value, len(value) - 4)[0]:
        raise DecodeError("checksum mismatch")
    return payload


# -- entries ---------------------------------------------------------------------------
def encode_entry(e: Entry) -> bytes:
    body = ENTRY_HDR.pack(e.term, e.type) + e.data
    return body + U32.pack(zlib.crc32(body, e.index & _MASK32))


def decode_entry(index: int, value: bytes) -> Entry:
    """Decode and verify the entry stored at ``index``."""
    n = len(value)
    if n < ENTRY_HDR.size + 4:
        raise DecodeError("entry too short")
    body = value[:-4]
    if zlib.crc32(body, index & _MASK32) != U32.unpack_from(value, n - 4)[0]:
        raise DecodeError("entry checksum mismatch")
    term, typ = ENTRY_HDR.unpack_from(body)
    if typ >= len(_ENTRY_TYPES):
        raise DecodeError(f"unknown entry type {typ}")
    return Entry(term, index, _ENTRY_TYPES[typ], body[ENTRY_HDR.size :])


def entry_term(index: int, value: bytes) -> int:
    """Term of a stored entry, verifying its checksum."""
    return decode_entry(index, value).term


# -- small records ---------------------------------------------------------------------
def encode_hard_state(hs: HardState) -> bytes:
    return _HS.pack(hs.term, hs.commit) + hs.vote.encode()


def decode_hard_state(p: bytes) -> HardState:
    if len(p) < _HS.size:
        raise DecodeError("hard state too short")
    term, commit = _HS.unpack_from(p)
    return HardState(term=term, vote=p[_HS.size :].decode(), commit=commit)


def _encode_ids(ids: tuple[str, ...]) -> bytes:
    out = [_U16.pack(len(ids))]
    for i in ids:
        b = i.encode()
        out.append(_U16.pack(len(b)))
        out.append(b)
    return b"".join(out)


def _decode_ids(p: bytes, off: int) -> tuple[tuple[str, ...], int]:
    (n,) = _U16.unpack_from(p, off)
    off += 2
    ids = []
    for _ in range(n):
        (ln,) = _U16.unpack_from(p, off)
        off += 2
        if off + ln > len(p):
            raise DecodeError("conf state truncated")
        ids.append(p[off : off + ln].decode())
        off += ln
    return tuple(ids), off


def encode_conf_state(cs: ConfState) -> bytes:
    return _encode_ids(cs.voters) + _encode_ids(cs.learners)


def decode_conf_state(p: bytes, off: int = 0) -> tuple[ConfState, int]:
    try:
        voters, off = _decode_ids(p, off)
        learners, off = _decode_ids(p, off)
    except struct.error as e:
        raise DecodeError(f"conf state truncated: {e}") from None
    return ConfState(voters=voters, learners=learners), off


def encode_snapshot_meta(m: SnapshotMetadata) -> bytes:
    return _SNAP_HDR.pack(m.index, m.term) + encode_conf_state(m.conf_state)


def decode_snapshot_meta(p: bytes) -> SnapshotMetadata:
    if len(p) < _SNAP_HDR.size:
        raise DecodeError("snapshot metadata too short")
    index, term = _SNAP_HDR.unpack_from(p)
    cs, off = decode_conf_state(p, _SNAP_HDR.size)
    if off != len(p):
        raise DecodeError("trailing bytes after snapshot metadata")
    return SnapshotMetadata(index=index, term=term, conf_state=cs)


def encode_log_meta(first: int, last: int, dummy_term: int) -> bytes:
    return _LOG_META.pack(first, last, dummy_term)


def decode_log_meta(p: bytes) -> tuple[int, int, int]:
    if len(p) != _LOG_META.size:
        raise DecodeError("bad log metadata length")
    first, last, dummy = _LOG_META.unpack(p)
    return int(first), int(last), int(dummy)
