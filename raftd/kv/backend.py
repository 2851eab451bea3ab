"""Where the KV state machine keeps its data: a memory twin and LevelDB.

Both keep the same four things: key records, the client session table (exactly-once
deduplication, Raft thesis §6.3), the lease table (id -> TTL and attached keys) and the
meta record (applied index, store revision, "restoring" flag).
:meth:`KVBackend.commit` writes the changes of one or more applied entries together with
the new meta in ONE atomic batch, which is what guarantees that a restart never applies
an entry twice: either the entry's effects and its index are both
on disk, or neither is.

LevelDB layout, in the state machines' database (:mod:`raftd.storage.statedb`), under
the group's prefix (see :mod:`raftd.storage.codec`) + ``"D"``::

    "k" <user key>   -> create_revision u64 | mod_revision u64 | version u64 | value
                        (with a lease: version has bit 63 set and lease u64 precedes value)
    "s" <client id>  -> last_seq u64 | serialized CommandResult
    "L" <id u64>     -> ttl u64 | n u32 | n x (key_len u32 | key)
    "m"              -> applied u64 | revision u64 | restoring u8

every value sealed with a CRC-32 bound to its key. Writes are ``sync=True`` by default:
LevelDB does not fsync the previous log file when it switches to a new one, so after a
power loss an *unsynced* batch can be lost while a later synced batch survives. A lost
apply batch would be harmless (it is replayed from the Raft log), but a hole in the middle
of a restore or of consecutive applies would not be; ``sync=False`` is only safe against
process crashes, not power loss.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from raftd.storage import codec
from raftd.storage.base import CorruptionError
from raftd.storage.codec import DecodeError
from raftd.storage.leveldb import LevelDB

__all__ = [
    "LEASE_FLAG",
    "LEASE_FLAG_BYTE",
    "RECORD_HEAD",
    "BackendView",
    "KVBackend",
    "KeyRecord",
    "LeaseRecord",
    "LevelDBKVBackend",
    "MemoryKVBackend",
    "Meta",
    "Session",
    "record_payload",
]


class KeyRecord(NamedTuple):
    """The stored state of one key (etcd's KeyValue without the key). Immutable. Applying
    a put builds one or two, on every replica: a named tuple is built in about 40% of
    the time a frozen dataclass takes."""

    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0  # id of the lease the key is attached to (0: none)


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """One lease: its granted TTL in seconds and the keys attached to it (sorted)."""

    ttl: int
    keys: tuple[bytes, ...] = ()


class Session(NamedTuple):
    """One client's deduplication state: its last applied seq and that command's result.
    Immutable (a named tuple, as :class:`KeyRecord`: one is built per applied write)."""

    last_seq: int
    result: bytes


@dataclass(frozen=True, slots=True)
class Meta:
    """Applied index, store revision, and whether a restore is in progress."""

    applied: int = 0
    revision: int = 0
    restoring: bool = False


class BackendView(Protocol):
    """A consistent, frozen read view (for writing a snapshot, possibly in a thread)."""

    @property
    def meta(self) -> Meta: ...

    def keys(self) -> Iterator[tuple[bytes, KeyRecord]]: ...

    def stored_keys(self) -> Iterator[tuple[bytes, bytes]]:
        """The same keys, each with its record in the stored layout
        (:func:`record_payload`), checksums verified: for a writer that re-encodes
        records without making a :class:`KeyRecord` of each."""
        ...

    def sessions(self) -> Iterator[tuple[bytes, Session]]: ...

    def leases(self) -> Iterator[tuple[int, LeaseRecord]]: ...

    def close(self) -> None: ...


class KVBackend(Protocol):
    """Storage of the KV state machine. Writes are atomic per call."""

    def load_meta(self) -> Meta: ...

    def get(self, key: bytes) -> KeyRecord | None: ...

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, KeyRecord]]:
        """Keys in ``[start, end)`` in byte order (``end=None``: unbounded)."""
        ...

    def get_session(self, client_id: bytes) -> Session | None: ...

    def scan_leases(self) -> Iterator[tuple[int, LeaseRecord]]:
        """Every lease, by id."""
        ...

    def commit(
        self,
        keys: Mapping[bytes, KeyRecord | None],
        sessions: Mapping[bytes, Session],
        meta: Meta,
        leases: Mapping[int, LeaseRecord | None] | None = None,
    ) -> None:
        """One atomic batch: put (or delete, for ``None``) keys and leases, put sessions,
        set meta."""
        ...

    def view(self) -> BackendView: ...

    def flush(self) -> None:
        """Make every committed batch durable, ``sync=False`` ones included (blocking;
        safe in another thread while batches keep being committed)."""
        ...

    def begin_restore(self, meta: Meta) -> None:
        """Set ``meta`` (with ``restoring=True``) and delete all keys and sessions. May
        take several batches; the flag is written with (or before) the first."""
        ...

    def restore_chunk(
        self,
        keys: list[tuple[bytes, KeyRecord]],
        sessions: list[tuple[bytes, Session]],
        leases: list[tuple[int, LeaseRecord]] | None = None,
    ) -> None: ...

    def end_restore(self, meta: Meta) -> None:
        """Write the final meta (``restoring=False``)."""
        ...


# -- memory ----------------------------------------------------------------------------
class _MemoryView:
    def __init__(
        self,
        meta: Meta,
        keys: list[tuple[bytes, KeyRecord]],
        sessions: list[tuple[bytes, Session]],
        leases: list[tuple[int, LeaseRecord]] | None = None,
    ) -> None:
        self._meta = meta
        self._keys = keys
        self._sessions = sessions
        self._leases = leases or []

    @property
    def meta(self) -> Meta:
        return self._meta

    def keys(self) -> Iterator[tuple[bytes, KeyRecord]]:
        return iter(self._keys)

    def stored_keys(self) -> Iterator[tuple[bytes, bytes]]:
        return ((k, record_payload(r)) for k, r in self._keys)

    def sessions(self) -> Iterator[tuple[bytes, Session]]:
        return iter(self._sessions)

    def leases(self) -> Iterator[tuple[int, LeaseRecord]]:
        return iter(self._leases)

    def close(self) -> None:
        pass


class MemoryKVBackend:
    """In-memory twin of :class:`LevelDBKVBackend` for unit tests and the simulator."""

    def __init__(self) -> None:
        self._meta = Meta()
        self._data: dict[bytes, KeyRecord] = {}
        self._sorted: list[bytes] = []
        self._sessions: dict[bytes, Session] = {}
        self._leases: dict[int, LeaseRecord] = {}

    def load_meta(self) -> Meta:
        return self._meta

    def scan_leases(self) -> Iterator[tuple[int, LeaseRecord]]:
        return iter(sorted(self._leases.items()))

    def get(self, key: bytes) -> KeyRecord | None:
        return self._data.get(key)

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, KeyRecord]]:
        # Snapshot the key list so callers may write while iterating.
        ks = self._sorted
        lo = bisect.bisect_left(ks, start)
        hi = len(ks) if end is None else bisect.bisect_left(ks, end)
        data = self._data
        return iter([(k, data[k]) for k in ks[lo:hi]])

    def get_session(self, client_id: bytes) -> Session | None:
        return self._sessions.get(client_id)

    def _put(self, key: bytes, rec: KeyRecord | None) -> None:
        if rec is None:
            if self._data.pop(key, None) is not None:
                i = bisect.bisect_left(self._sorted, key)
                del self._sorted[i]
        else:
            if key not in self._data:
                bisect.insort(self._sorted, key)
            self._data[key] = rec

    def commit(
        self,
        keys: Mapping[bytes, KeyRecord | None],
        sessions: Mapping[bytes, Session],
        meta: Meta,
        leases: Mapping[int, LeaseRecord | None] | None = None,
    ) -> None:
        for k, rec in keys.items():
            self._put(k, rec)
        self._sessions.update(sessions)
        for lid, lrec in (leases or {}).items():
            if lrec is None:
                self._leases.pop(lid, None)
            else:
                self._leases[lid] = lrec
        self._meta = meta

    def flush(self) -> None:
        """Nothing to do: memory is all there is."""

    def view(self) -> BackendView:
        return _MemoryView(
            self._meta,
            [(k, self._data[k]) for k in self._sorted],
            sorted(self._sessions.items()),
            sorted(self._leases.items()),
        )

    def begin_restore(self, meta: Meta) -> None:
        self._meta = meta
        self._data.clear()
        self._sorted.clear()
        self._sessions.clear()
        self._leases.clear()

    def restore_chunk(
        self,
        keys: list[tuple[bytes, KeyRecord]],
        sessions: list[tuple[bytes, Session]],
        leases: list[tuple[int, LeaseRecord]] | None = None,
    ) -> None:
        for k, rec in keys:
            self._put(k, rec)
        self._sessions.update(sessions)
        self._leases.update(leases or ())

    def end_restore(self, meta: Meta) -> None:
        self._meta = meta


# -- LevelDB ---------------------------------------------------------------------------
#: A stored key record: this head (create revision, mod revision, version), then the
#: lease id (u64) if the version carries :data:`LEASE_FLAG`, then the value.
RECORD_HEAD = struct.Struct(">QQQ")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
#: Set in a stored key record's version field when a lease id follows the fixed part.
LEASE_FLAG = 1 << 63
#: The byte of a stored record that carries :data:`LEASE_FLAG` (its top bit): the
#: version's most significant byte.
LEASE_FLAG_BYTE = 16


def record_payload(r: KeyRecord) -> bytes:
    """A key record in its stored layout (see :data:`RECORD_HEAD`), before its checksum."""
    if r.lease:
        head = RECORD_HEAD.pack(r.create_revision, r.mod_revision, r.version | LEASE_FLAG)
        return head + _U64.pack(r.lease) + r.value
    return RECORD_HEAD.pack(r.create_revision, r.mod_revision, r.version) + r.value


_SESS = struct.Struct(">Q")
_META = struct.Struct(">QQB")
_DELETE_CHUNK = 4096


class LevelDBKVBackend:
    """KV data of one namespace in the daemon's state database (see module doc)."""

    def __init__(self, db: LevelDB, namespace: str, *, sync: bool = True) -> None:
        # The records live in the state machines' database; the prefix comes from the
        # log database's namespace registry.
        self._db = db.state
        self._namespace = namespace
        self._sync = sync
        base = db.group_prefix(namespace) + codec.KIND_DATA
        self._base = base
        self._pk = base + b"k"
        self._pk_end = base + b"l"
        self._ps = base + b"s"
        self._pl = base + b"L"
        self._km = base + b"m"

    # -- codecs ------------------------------------------------------------------------
    def _corrupt(self, msg: str, key: bytes) -> CorruptionError:
        return CorruptionError(msg, namespace=self._namespace, key=key)

    def _dec_rec(self, key: bytes, v: bytes) -> KeyRecord:
        try:
            p = codec.unseal(key, v)
            c, m, ver = RECORD_HEAD.unpack_from(p)
            if ver & LEASE_FLAG:
                (lease,) = _U64.unpack_from(p, RECORD_HEAD.size)
                return KeyRecord(p[RECORD_HEAD.size + 8 :], c, m, ver & ~LEASE_FLAG, lease)
        except (DecodeError, struct.error) as e:
            raise self._corrupt(f"bad key record: {e}", key) from None
        return KeyRecord(p[RECORD_HEAD.size :], c, m, ver)

    @staticmethod
    def _enc_rec(key: bytes, r: KeyRecord) -> bytes:
        return codec.seal(key, record_payload(r))

    def _dec_lease(self, key: bytes, v: bytes) -> LeaseRecord:
        try:
            p = codec.unseal(key, v)
            (ttl,) = _U64.unpack_from(p)
            (n,) = _U32.unpack_from(p, 8)
            pos = 12
            keys: list[bytes] = []
            for _ in range(n):
                (kl,) = _U32.unpack_from(p, pos)
                pos += 4
                if pos + kl > len(p):
                    raise struct.error("lease key truncated")
                keys.append(p[pos : pos + kl])
                pos += kl
        except (DecodeError, struct.error) as e:
            raise self._corrupt(f"bad lease record: {e}", key) from None
        return LeaseRecord(ttl, tuple(keys))

    @staticmethod
    def _enc_lease(key: bytes, r: LeaseRecord) -> bytes:
        parts = [_U64.pack(r.ttl), _U32.pack(len(r.keys))]
        for k in r.keys:
            parts.append(_U32.pack(len(k)))
            parts.append(k)
        return codec.seal(key, b"".join(parts))

    def _dec_sess(self, key: bytes, v: bytes) -> Session:
        try:
            p = codec.unseal(key, v)
            (seq,) = _SESS.unpack_from(p)
        except (DecodeError, struct.error) as e:
            raise self._corrupt(f"bad session record: {e}", key) from None
        return Session(seq, p[_SESS.size :])

    @staticmethod
    def _enc_sess(key: bytes, s: Session) -> bytes:
        return codec.seal(key, _SESS.pack(s.last_seq) + s.result)

    def _dec_meta(self, v: bytes) -> Meta:
        try:
            applied, rev, restoring = _META.unpack(codec.unseal(self._km, v))
        except (DecodeError, struct.error) as e:
            raise self._corrupt(f"bad state machine meta: {e}", self._km) from None
        return Meta(applied, rev, bool(restoring))

    def _meta_put(self, m: Meta) -> tuple[bytes, bytes]:
        return self._km, codec.seal(self._km, _META.pack(m.applied, m.revision, m.restoring))

    # -- reads -------------------------------------------------------------------------
    def load_meta(self) -> Meta:
        v = self._db.get(self._km)
        return Meta() if v is None else self._dec_meta(v)

    def get(self, key: bytes) -> KeyRecord | None:
        k = self._pk + key
        v = self._db.get(k)
        return None if v is None else self._dec_rec(k, v)

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, KeyRecord]]:
        n = len(self._pk)
        stop = self._pk_end if end is None else self._pk + end
        for k, v in self._db.raw.iterator(start=self._pk + start, stop=stop):
            yield k[n:], self._dec_rec(k, v)

    def get_session(self, client_id: bytes) -> Session | None:
        k = self._ps + client_id
        v = self._db.get(k)
        return None if v is None else self._dec_sess(k, v)

    def scan_leases(self) -> Iterator[tuple[int, LeaseRecord]]:
        n = len(self._pl)
        for k, v in self._db.raw.iterator(prefix=self._pl):
            yield _U64.unpack(k[n:])[0], self._dec_lease(k, v)

    # -- writes ------------------------------------------------------------------------
    def commit(
        self,
        keys: Mapping[bytes, KeyRecord | None],
        sessions: Mapping[bytes, Session],
        meta: Meta,
        leases: Mapping[int, LeaseRecord | None] | None = None,
    ) -> None:
        pk, ps, pl = self._pk, self._ps, self._pl
        seal, sess = codec.seal, _SESS.pack
        deletes: list[bytes] = []
        puts: list[tuple[bytes, bytes]] = []
        # _enc_rec and _enc_sess inlined (the session's layout written out, each stored
        # key made once): this runs for every key and session that an apply batch
        # writes, on every replica.
        for k, r in keys.items():
            sk = pk + k
            if r is None:
                deletes.append(sk)
            else:
                puts.append((sk, seal(sk, record_payload(r))))
        for c, s in sessions.items():
            sk = ps + c
            puts.append((sk, seal(sk, sess(s.last_seq) + s.result)))
        for lid, lrec in (leases or {}).items():
            lk = pl + _U64.pack(lid)
            if lrec is None:
                deletes.append(lk)
            else:
                puts.append((lk, self._enc_lease(lk, lrec)))
        puts.append(self._meta_put(meta))
        self._db.write("kv.apply", deletes, puts, sync=self._sync)

    def view(self) -> BackendView:
        return _LevelDBView(self, self._db.raw.snapshot())

    def flush(self) -> None:
        self._db.flush()

    def begin_restore(self, meta: Meta) -> None:
        self._db.write("kv.restore-begin", (), [self._meta_put(meta)], sync=self._sync)
        # Deleting under an iterator is fine: a LevelDB iterator reads a snapshot.
        chunk: list[bytes] = []
        for k in self._db.raw.iterator(prefix=self._base, include_value=False):
            if k == self._km:
                continue
            chunk.append(k)
            if len(chunk) >= _DELETE_CHUNK:
                self._db.write("kv.restore-clear", chunk, (), sync=self._sync)
                chunk = []
        if chunk:
            self._db.write("kv.restore-clear", chunk, (), sync=self._sync)

    def restore_chunk(
        self,
        keys: list[tuple[bytes, KeyRecord]],
        sessions: list[tuple[bytes, Session]],
        leases: list[tuple[int, LeaseRecord]] | None = None,
    ) -> None:
        pk, ps, pl = self._pk, self._ps, self._pl
        puts = [(pk + k, self._enc_rec(pk + k, r)) for k, r in keys]
        puts.extend((ps + c, self._enc_sess(ps + c, s)) for c, s in sessions)
        for lid, lrec in leases or ():
            lk = pl + _U64.pack(lid)
            puts.append((lk, self._enc_lease(lk, lrec)))
        self._db.write("kv.restore", (), puts, sync=self._sync)

    def end_restore(self, meta: Meta) -> None:
        self._db.write("kv.restore-end", (), [self._meta_put(meta)], sync=self._sync)


class _LevelDBView:
    """A plyvel snapshot: consistent even while applies continue on another thread."""

    def __init__(self, b: LevelDBKVBackend, snap: Any) -> None:
        self._b = b
        self._snap = snap
        v = snap.get(b._km)
        self._meta = Meta() if v is None else b._dec_meta(v)

    @property
    def meta(self) -> Meta:
        return self._meta

    def keys(self) -> Iterator[tuple[bytes, KeyRecord]]:
        n = len(self._b._pk)
        for k, v in self._snap.iterator(prefix=self._b._pk):
            yield k[n:], self._b._dec_rec(k, v)

    def stored_keys(self) -> Iterator[tuple[bytes, bytes]]:
        n = len(self._b._pk)
        unseal = codec.unseal
        for k, v in self._snap.iterator(prefix=self._b._pk):
            try:
                p = unseal(k, v)
            except DecodeError as e:
                raise self._b._corrupt(f"bad key record: {e}", k) from None
            if len(p) < RECORD_HEAD.size or (
                p[LEASE_FLAG_BYTE] & 0x80 and len(p) < RECORD_HEAD.size + 8
            ):
                raise self._b._corrupt("key record too short", k)
            yield k[n:], p

    def sessions(self) -> Iterator[tuple[bytes, Session]]:
        n = len(self._b._ps)
        for k, v in self._snap.iterator(prefix=self._b._ps):
            yield k[n:], self._b._dec_sess(k, v)

    def leases(self) -> Iterator[tuple[int, LeaseRecord]]:
        n = len(self._b._pl)
        for k, v in self._snap.iterator(prefix=self._b._pl):
            yield _U64.unpack(k[n:])[0], self._b._dec_lease(k, v)

    def close(self) -> None:
        self._snap.close()
