"""The KV state machine's snapshot stream: written and read in chunks, never whole.

::

    "RKVSNAP1"
    "M" applied u64 | revision u64                       (exactly once, first)
    "K" key_len u32 | key | value_len u32 | value | create u64 | mod u64 | version u64
    "J" same as "K", then lease u64                       (a key attached to a lease)
    "S" id_len u32 | client id | last_seq u64 | result_len u32 | result
    "L" id u64 | ttl u64 | n u32 | n x (key_len u32 | key)
    "E" key_count u64 | session_count u64                (last, when there is no lease)
    "F" key_count u64 | session_count u64 | lease_count u64   (last, with leases)

Keys come in byte order, then sessions, then leases. The counts in ``E``/``F`` catch
truncation; the snapshot file around the stream carries a SHA-256
(:mod:`raftd.storage.snapshots`). A state without leases is written exactly as before
leases existed (no "J", "L" or "F" records), so older readers still read it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from raftd.kv.backend import (
    LEASE_FLAG_BYTE,
    RECORD_HEAD,
    KeyRecord,
    LeaseRecord,
    Meta,
    Session,
)
from raftd.storage.base import Readable, Writable

MAGIC = b"RKVSNAP1"
_META = struct.Struct(">QQ")
_U32 = struct.Struct(">I")
_KTAIL = struct.Struct(">QQQ")
_U64 = struct.Struct(">Q")
_END = struct.Struct(">QQ")
_END3 = struct.Struct(">QQQ")
_FLUSH = 64 << 10


class SnapshotFormatError(ValueError):
    """The snapshot stream is malformed or truncated."""


def write_stream(
    f: Writable,
    meta: Meta,
    keys: Iterable[tuple[bytes, KeyRecord]],
    sessions: Iterable[tuple[bytes, Session]],
    leases: Iterable[tuple[int, LeaseRecord]] = (),
) -> None:
    """Write a whole snapshot stream to ``f`` in chunks of about 64 KiB."""
    for chunk in iter_stream(meta, keys, sessions, leases):
        f.write(chunk)


def iter_stream(
    meta: Meta,
    keys: Iterable[tuple[bytes, KeyRecord]],
    sessions: Iterable[tuple[bytes, Session]],
    leases: Iterable[tuple[int, LeaseRecord]] = (),
) -> Iterator[bytes]:
    """The snapshot stream as chunks of about 64 KiB, made one at a time as they are
    asked for (a caller can spread the work over time)."""
    return _stream(meta, _key_records(keys), sessions, leases)


def iter_stream_stored(
    meta: Meta,
    stored_keys: Iterable[tuple[bytes, bytes]],
    sessions: Iterable[tuple[bytes, Session]],
    leases: Iterable[tuple[int, LeaseRecord]] = (),
) -> Iterator[bytes]:
    """:func:`iter_stream` from key records in their stored layout
    (:func:`raftd.kv.backend.record_payload`): the same bytes, made without decoding
    each record (a "K" record is a rearrangement of the stored one)."""
    return _stream(meta, _stored_key_records(stored_keys), sessions, leases)


def _key_records(keys: Iterable[tuple[bytes, KeyRecord]]) -> Iterator[bytes]:
    u32 = _U32.pack
    for k, r in keys:
        rec = (b"J" if r.lease else b"K") + u32(len(k)) + k + u32(len(r.value)) + r.value
        rec += _KTAIL.pack(r.create_revision, r.mod_revision, r.version)
        if r.lease:
            rec += _U64.pack(r.lease)
        yield rec


# The stored head (create, mod, version) is laid out as a "K" record's tail
# (tests/kv/test_snapfmt.py holds the two encodings to the same bytes).
_HEAD = RECORD_HEAD.size


def _stored_key_records(stored: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    u32 = _U32.pack
    for k, p in stored:
        if p[LEASE_FLAG_BYTE] & 0x80:
            # A key attached to a lease: "J", its version without the flag, the lease.
            v = p[_HEAD + 8 :]
            f = LEASE_FLAG_BYTE
            tail = p[:f] + bytes((p[f] & 0x7F,)) + p[f + 1 : _HEAD + 8]
            yield b"J" + u32(len(k)) + k + u32(len(v)) + v + tail
        else:
            yield b"K" + u32(len(k)) + k + u32(len(p) - _HEAD) + p[_HEAD:] + p[:_HEAD]


def _stream(
    meta: Meta,
    key_records: Iterator[bytes],
    sessions: Iterable[tuple[bytes, Session]],
    leases: Iterable[tuple[int, LeaseRecord]],
) -> Iterator[bytes]:
    buf = bytearray(MAGIC)
    buf += b"M" + _META.pack(meta.applied, meta.revision)
    nk = ns = nl = 0
    u32 = _U32.pack
    for rec in key_records:
        buf += rec
        nk += 1
        if len(buf) >= _FLUSH:
            yield bytes(buf)
            buf.clear()
    for c, s in sessions:
        buf += b"S" + u32(len(c)) + c + _U64.pack(s.last_seq) + u32(len(s.result)) + s.result
        ns += 1
        if len(buf) >= _FLUSH:
            yield bytes(buf)
            buf.clear()
    for lid, lr in leases:
        buf += b"L" + _U64.pack(lid) + _U64.pack(lr.ttl) + u32(len(lr.keys))
        for k in lr.keys:
            buf += u32(len(k)) + k
        nl += 1
        if len(buf) >= _FLUSH:
            yield bytes(buf)
            buf.clear()
    if nl:
        buf += b"F" + _END3.pack(nk, ns, nl)
    else:
        buf += b"E" + _END.pack(nk, ns)
    yield bytes(buf)


class _Reader:
    def __init__(self, f: Readable) -> None:
        self._f = f
        self._buf = b""
        self._pos = 0

    def exact(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            more = self._f.read(max(_FLUSH, n))
            if not more:
                raise SnapshotFormatError("snapshot stream truncated")
            self._buf = self._buf[self._pos :] + more
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def key_record(self, leased: bool) -> tuple[bytes, KeyRecord]:
        """The body of a "K" (or, ``leased``, "J") record, whose tag was read. Parsed in
        place when the whole record is in the buffer (all but about one record per
        64 KiB): a restore reads one of these per key."""
        buf, pos = self._buf, self._pos
        try:
            (kl,) = _U32.unpack_from(buf, pos)
            ke = pos + 4 + kl
            (vl,) = _U32.unpack_from(buf, ke)
            ve = ke + 4 + vl
            c, m, ver = _KTAIL.unpack_from(buf, ve)
            end = ve + _KTAIL.size
            lease = 0
            if leased:
                (lease,) = _U64.unpack_from(buf, end)
                end += 8
        except struct.error:
            end = len(buf) + 1  # runs past the buffer: read it piece by piece
        if end > len(buf):
            k = self.exact(_U32.unpack(self.exact(4))[0])
            v = self.exact(_U32.unpack(self.exact(4))[0])
            c, m, ver = _KTAIL.unpack(self.exact(_KTAIL.size))
            lease = _U64.unpack(self.exact(8))[0] if leased else 0
            return k, KeyRecord(v, c, m, ver, lease)
        self._pos = end
        return buf[pos + 4 : ke], KeyRecord(buf[ke + 4 : ve], c, m, ver, lease)

    def at_eof(self) -> bool:
        if self._pos < len(self._buf):
            return False
        return self._f.read(1) == b""


Record = tuple[bytes, KeyRecord] | tuple[bytes, Session] | tuple[int, LeaseRecord]


def read_stream(f: Readable) -> tuple[Meta, Iterator[Record]]:
    """Read the header; return the meta and an iterator of key and session records. The
    iterator raises :class:`SnapshotFormatError` on malformed or truncated input, at the
    latest when it reaches the end marker."""
    r = _Reader(f)
    if r.exact(len(MAGIC)) != MAGIC:
        raise SnapshotFormatError("not a KV snapshot (bad magic)")
    if r.exact(1) != b"M":
        raise SnapshotFormatError("snapshot stream does not start with its meta record")
    applied, revision = _META.unpack(r.exact(_META.size))
    meta = Meta(applied=applied, revision=revision)

    def records() -> Iterator[Record]:
        nk = ns = nl = 0
        last_key: bytes | None = None
        while True:
            tag = r.exact(1)
            if tag in (b"K", b"J"):
                k, rec = r.key_record(tag == b"J")
                if ns or nl or (last_key is not None and k <= last_key):
                    raise SnapshotFormatError("snapshot keys out of order")
                last_key = k
                nk += 1
                yield k, rec
            elif tag == b"S":
                if nl:
                    raise SnapshotFormatError("snapshot session after a lease")
                cid = r.exact(_U32.unpack(r.exact(4))[0])
                (seq,) = _U64.unpack(r.exact(8))
                res = r.exact(_U32.unpack(r.exact(4))[0])
                ns += 1
                yield cid, Session(seq, res)
            elif tag == b"L":
                lid, ttl = _END.unpack(r.exact(_END.size))
                (n,) = _U32.unpack(r.exact(4))
                lkeys = tuple(r.exact(_U32.unpack(r.exact(4))[0]) for _ in range(n))
                nl += 1
                yield lid, LeaseRecord(ttl, lkeys)
            elif tag in (b"E", b"F"):
                if tag == b"E":
                    ek, es = _END.unpack(r.exact(_END.size))
                    el = 0
                else:
                    ek, es, el = _END3.unpack(r.exact(_END3.size))
                if (ek, es, el) != (nk, ns, nl):
                    raise SnapshotFormatError(
                        f"snapshot counts {nk}/{ns}/{nl} do not match its end marker {ek}/{es}/{el}"
                    )
                if not r.at_eof():
                    raise SnapshotFormatError("trailing bytes after the snapshot end marker")
                return
            else:
                raise SnapshotFormatError(f"unknown snapshot record tag {tag!r}")

    return meta, records()
