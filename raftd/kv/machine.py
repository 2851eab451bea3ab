"""The replicated key-value state machine.

``apply(index, data)`` executes one committed log entry (a serialized
``raftd.v1.Command``, or empty data for a no-op/conf-change entry) and returns its
result. Apply is deterministic: the result and the new state depend only on the previous
state and ``data``, never on time, randomness, or the host. Bad input (undecodable data,
an empty key) yields an ``INVALID`` result instead of an exception, so a poisoned entry
cannot wedge every replica.

Exactly-once (Raft thesis §6.3): a command with a ``client_id`` is deduplicated by
``seq``. The session table remembers, per client, the last applied seq and its
serialized result; the same seq again returns that result (``duplicate=True``) without
re-applying it; an older seq returns ``STALE_SEQUENCE`` (only the latest result is kept,
so a client must not reuse a seq older than its last acknowledged one). Sessions are part
of the state and of snapshots. They are never expired yet (room is left in ``Command`` for
session registration/expiry driven by log time).

Revisions follow etcd: one global store revision, incremented once per applied command
that changes at least one key (a transaction is one revision); each key records
``create_revision``, ``mod_revision`` and ``version``. Only the latest value of each key
is kept: historical (revision-based) reads are out of scope; the recent *changes* are
kept in memory, bounded, for watches (:class:`raftd.kv.watch.EventHistory`).

Leases (etcd's model): ``LeaseGrant`` creates a lease (id, TTL); a put with ``lease``
attaches the key (a put without one detaches it); ``LeaseRevoke`` deletes the lease and
its keys in one revision. Time never enters apply: the leader decides that a lease has
expired and proposes ``LeaseRevoke(expired=true)`` (see ``raftd.api.leases``). A lease
granted with id 0 gets the log index of its entry as id, which is unique per group and
the same on every replica.

Durability: the effects of the applied entries and the new applied index go to the
backend in ONE batch (:meth:`KVBackend.commit`), so after a restart the state machine
resumes exactly after the last entry whose effects are on disk.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf.message import DecodeError as ProtoDecodeError

from raftd.kv import snapfmt
from raftd.kv.backend import (
    BackendView,
    KeyRecord,
    KVBackend,
    LeaseRecord,
    LevelDBKVBackend,
    MemoryKVBackend,
    Meta,
    Session,
)
from raftd.kv.cache import MISS, RecordCache
from raftd.kv.watch import DELETE, PUT, EventHistory, KeyEvent, pack_event, pack_put
from raftd.storage.base import Readable, Writable
from raftd.storage.leveldb import LevelDB
from raftd.wire.pb import kv_pb2 as pb
from raftd.wire.ranges import key_bounds

__all__ = [
    "ApplyResult",
    "KVSnapshotView",
    "KVStateMachine",
    "RestoreInProgressError",
    "put_result_bytes",
]

_RESTORE_CHUNK = 4096
_C = pb.Compare


class RestoreInProgressError(RuntimeError):
    """The state machine's data is mid-restore and unusable until it is restored."""


@dataclass(slots=True)
class ApplyResult:
    """Outcome of applying one log entry. Read-only by contract: one is built per applied
    entry on every replica, and a frozen dataclass is built in five times the time.

    ``result`` is ``None`` for empty (no-op) entries and for entries at or below the
    applied index (``skipped``: already applied, not applied again).
    """

    index: int
    result: pb.CommandResult | None
    duplicate: bool = False
    skipped: bool = False
    #: The command's (client_id, seq), when it carries one: how a daemon that did not
    #: propose the entry itself (etcd-style forwarding) recognizes its own write.
    session: tuple[bytes, int] | None = None


class _Events:
    """The watch events of one apply batch, packed as they are made, in revision order
    (see :meth:`raftd.kv.watch.EventHistory.append_packed`)."""

    __slots__ = ("blobs", "revisions")

    def __init__(self) -> None:
        self.revisions: list[int] = []
        self.blobs: list[bytes] = []

    def extend(self, events: Iterable[KeyEvent]) -> None:
        for e in events:
            self.revisions.append(e.revision)
            self.blobs.append(pack_event(e))


class _InvalidCommand(Exception):
    pass


class _LeaseNotFound(_InvalidCommand):
    pass


def _kv(key: bytes, r: KeyRecord, keys_only: bool = False) -> pb.KeyValue:
    return pb.KeyValue(
        key=key,
        value=b"" if keys_only else r.value,
        create_revision=r.create_revision,
        mod_revision=r.mod_revision,
        version=r.version,
        lease=r.lease,
    )


class _Tx:
    """Uncommitted changes of the entries being applied, over the backend. Reads see
    the writes made before them (ops of a transaction run in order)."""

    def __init__(self, backend: KVBackend, cache: RecordCache) -> None:
        self.b = backend
        self.cache = cache
        self.keys: dict[bytes, KeyRecord | None] = {}
        self.sessions: dict[bytes, Session] = {}
        self.leases: dict[int, LeaseRecord | None] = {}

    def get(self, key: bytes, *, fill: bool = True) -> KeyRecord | None:
        """The key's record as of the writes so far. ``fill=False`` for a key about to be
        written: the record this batch writes replaces it in the cache at commit, so
        remembering the one read now would only evict another key."""
        rec = self.keys.get(key, MISS)
        if rec is not MISS:
            return rec  # type: ignore[return-value]  # not MISS
        return self.cache.key_or_load(key, self.b.get, fill=fill)

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, KeyRecord]]:
        over = sorted(k for k in self.keys if k >= start and (end is None or k < end))
        base = self.b.scan(start, end)
        i = 0
        nb = next(base, None)
        while nb is not None or i < len(over):
            if nb is not None and (i == len(over) or nb[0] < over[i]):
                yield nb
                nb = next(base, None)
                continue
            k = over[i]
            i += 1
            if nb is not None and nb[0] == k:
                nb = next(base, None)
            r = self.keys[k]
            if r is not None:
                yield k, r

    def session(self, cid: bytes) -> Session | None:
        s = self.sessions.get(cid)
        if s is not None:
            return s
        return self.cache.session_or_load(cid, self.b.get_session, fill=True)

    def lease(self, lid: int, base: Mapping[int, LeaseRecord]) -> LeaseRecord | None:
        if lid in self.leases:
            return self.leases[lid]
        return base.get(lid)


class _Exec:
    """Executes one command against a :class:`_Tx` at revision ``rev`` (the command is
    the log entry at ``index``); ``leases`` is the committed lease table."""

    def __init__(
        self, tx: _Tx, rev: int, index: int = 0, leases: Mapping[int, LeaseRecord] | None = None
    ) -> None:
        self.tx = tx
        self.rev = rev  # the revision writes of this command get
        self.index = index
        self.base_leases: Mapping[int, LeaseRecord] = leases if leases is not None else {}
        self.wrote = False
        self.events: list[KeyEvent] = []

    # -- key writes (lease attachment and events) ----------------------------------------
    def lease(self, lid: int) -> LeaseRecord | None:
        return self.tx.lease(lid, self.base_leases)

    def write_key(self, key: bytes, new: KeyRecord | None, prev: KeyRecord | None) -> None:
        if prev is not None and prev.lease and (new is None or new.lease != prev.lease):
            lr = self.lease(prev.lease)
            if lr is not None:
                self.tx.leases[prev.lease] = LeaseRecord(
                    lr.ttl, tuple(k for k in lr.keys if k != key)
                )
        if new is not None and new.lease and (prev is None or prev.lease != new.lease):
            lr = self.lease(new.lease)
            if lr is None:  # pragma: no cover - validate() checked it
                raise _LeaseNotFound(f"lease {new.lease} not found")
            ks = list(lr.keys)
            i = bisect.bisect_left(ks, key)
            if i == len(ks) or ks[i] != key:
                ks.insert(i, key)
            self.tx.leases[new.lease] = LeaseRecord(lr.ttl, tuple(ks))
        self.tx.keys[key] = new
        self.wrote = True
        self.events.append(KeyEvent(self.rev, PUT if new is not None else DELETE, key, new, prev))

    # -- validation (before any effect, so a bad transaction does nothing) -------------
    @staticmethod
    def validate_op(op: pb.RequestOp) -> None:
        kind = op.WhichOneof("request")
        if kind is None:
            raise _InvalidCommand("empty request op")
        req = getattr(op, kind)
        if not req.key:
            raise _InvalidCommand(f"empty key in {kind}")

    def check_lease(self, req: pb.PutRequest) -> None:
        if req.lease and self.lease(req.lease) is None:
            raise _LeaseNotFound(f"lease {req.lease} not found")

    def validate(self, cmd: pb.Command) -> str:
        kind: str | None = cmd.WhichOneof("op")
        if kind is None:
            raise _InvalidCommand("command has no op")
        if kind == "txn":
            for c in cmd.txn.compare:
                if not c.key:
                    raise _InvalidCommand("empty key in compare")
            for op in [*cmd.txn.success, *cmd.txn.failure]:
                self.validate_op(op)
                if op.WhichOneof("request") == "put":
                    self.check_lease(op.put)
        elif kind == "lease_grant":
            if cmd.lease_grant.ttl <= 0:
                raise _InvalidCommand("lease TTL must be > 0")
            if cmd.lease_grant.id < 0:
                raise _InvalidCommand("lease id must be >= 0")
            lid = cmd.lease_grant.id or self.index
            if lid <= 0:
                raise _InvalidCommand("lease id 0 needs the entry's index")
            if self.lease(lid) is not None:
                raise _InvalidCommand(f"lease {lid} already exists")
        elif kind == "lease_revoke":
            if self.lease(cmd.lease_revoke.id) is None:
                raise _LeaseNotFound(f"lease {cmd.lease_revoke.id} not found")
        else:
            if not getattr(cmd, kind).key:
                raise _InvalidCommand(f"empty key in {kind}")
            if kind == "cas" and cmd.cas.WhichOneof("expected") is None:
                raise _InvalidCommand("compare-and-swap without an expectation")
            if kind == "put":
                self.check_lease(cmd.put)
        return kind

    # -- ops ---------------------------------------------------------------------------
    def put(self, req: pb.PutRequest, resp: pb.PutResponse | None = None) -> None:
        """Put ``req``; its answer (``prev_kv``) goes into ``resp`` when one is given."""
        prev = self.tx.get(req.key)
        if prev is None:
            rec = KeyRecord(req.value, self.rev, self.rev, 1, req.lease)
        else:
            rec = KeyRecord(req.value, prev.create_revision, self.rev, prev.version + 1, req.lease)
        self.write_key(req.key, rec, prev)
        if resp is not None:
            resp.SetInParent()
            if req.prev_kv and prev is not None:
                resp.prev_kv.CopyFrom(_kv(req.key, prev))

    def delete(self, req: pb.DeleteRequest) -> pb.DeleteResponse:
        prev = self.tx.get(req.key)
        resp = pb.DeleteResponse(deleted=prev is not None)
        if prev is not None:
            self.write_key(req.key, None, prev)
            if req.prev_kv:
                resp.prev_kv.CopyFrom(_kv(req.key, prev))
        return resp

    def delete_range(self, req: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
        start, end = key_bounds(req.key, req.range_end)
        doomed = list(self.tx.scan(start, end))
        resp = pb.DeleteRangeResponse(deleted=len(doomed))
        for k, r in doomed:
            self.write_key(k, None, r)
            if req.prev_kv:
                resp.prev_kvs.append(_kv(k, r))
        return resp

    def range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        return range_response(self.tx.scan(*key_bounds(req.key, req.range_end)), req)

    def cas(self, req: pb.CompareAndSwapRequest) -> pb.CompareAndSwapResponse:
        cur = self.tx.get(req.key)
        which = req.WhichOneof("expected")
        if which == "value":
            ok = cur is not None and cur.value == req.value
        elif which == "mod_revision":
            ok = (cur.mod_revision if cur is not None else 0) == req.mod_revision
        else:
            ok = (cur is None) == req.absent
        resp = pb.CompareAndSwapResponse(succeeded=ok)
        if cur is not None:
            resp.current.CopyFrom(_kv(req.key, cur))
        if ok:
            self.put(pb.PutRequest(key=req.key, value=req.new_value))
        return resp

    def compare(self, c: pb.Compare) -> bool:
        """etcd's compare: over a range it must hold for every key in it; a range with
        no key compares a missing key."""
        if not c.range_end:
            return self.compare_one(c, self.tx.get(c.key))
        found = [r for _, r in self.tx.scan(*key_bounds(c.key, c.range_end))]
        if not found:
            return self.compare_one(c, None)
        return all(self.compare_one(c, r) for r in found)

    @staticmethod
    def compare_one(c: pb.Compare, r: KeyRecord | None) -> bool:
        a: int | bytes
        b: int | bytes
        if c.target == _C.VALUE:
            if r is None:
                return False  # as etcd: a value compare on a missing key never holds
            a, b = r.value, c.value
        elif c.target == _C.VERSION:
            a, b = (r.version if r else 0), c.version
        elif c.target == _C.CREATE:
            a, b = (r.create_revision if r else 0), c.create_revision
        elif c.target == _C.MOD:
            a, b = (r.mod_revision if r else 0), c.mod_revision
        elif c.target == _C.LEASE:
            a, b = (r.lease if r else 0), c.lease
        else:
            raise _InvalidCommand(f"unknown compare target {c.target}")
        if c.result == _C.EQUAL:
            return a == b
        if c.result == _C.NOT_EQUAL:
            return a != b
        if c.result == _C.GREATER:
            return a > b  # type: ignore[operator]
        if c.result == _C.LESS:
            return a < b  # type: ignore[operator]
        raise _InvalidCommand(f"unknown compare result {c.result}")

    def txn(self, req: pb.TxnRequest) -> pb.TxnResponse:
        ok = all(self.compare(c) for c in req.compare)
        resp = pb.TxnResponse(succeeded=ok)
        for op in req.success if ok else req.failure:
            kind = op.WhichOneof("request")
            r = resp.responses.add()
            if kind == "range":
                r.range.CopyFrom(self.range(op.range))
            elif kind == "put":
                self.put(op.put, r.put)
            elif kind == "delete":
                r.delete.CopyFrom(self.delete(op.delete))
            elif kind == "delete_range":
                r.delete_range.CopyFrom(self.delete_range(op.delete_range))
        return resp

    def lease_grant(self, req: pb.LeaseGrantRequest) -> pb.LeaseGrantResponse:
        lid = req.id or self.index
        self.tx.leases[lid] = LeaseRecord(req.ttl, ())
        return pb.LeaseGrantResponse(id=lid, ttl=req.ttl)

    def lease_revoke(self, req: pb.LeaseRevokeRequest) -> pb.LeaseRevokeResponse:
        lr = self.lease(req.id)
        if lr is None:  # pragma: no cover - validate() checked it
            raise _LeaseNotFound(f"lease {req.id} not found")
        deleted = 0
        for k in lr.keys:
            prev = self.tx.get(k)
            if prev is not None and prev.lease == req.id:
                self.write_key(k, None, prev)
                deleted += 1
        self.tx.leases[req.id] = None
        return pb.LeaseRevokeResponse(deleted=deleted)

    def run(self, cmd: pb.Command, kind: str, result: pb.CommandResult) -> None:
        if kind == "put":
            self.put(cmd.put, result.put)
        elif kind == "delete":
            result.delete.CopyFrom(self.delete(cmd.delete))
        elif kind == "delete_range":
            result.delete_range.CopyFrom(self.delete_range(cmd.delete_range))
        elif kind == "cas":
            result.cas.CopyFrom(self.cas(cmd.cas))
        elif kind == "txn":
            result.txn.CopyFrom(self.txn(cmd.txn))
        elif kind == "lease_grant":
            result.lease_grant.CopyFrom(self.lease_grant(cmd.lease_grant))
        elif kind == "lease_revoke":
            result.lease_revoke.CopyFrom(self.lease_revoke(cmd.lease_revoke))
        else:  # pragma: no cover - validate() rejects unknown kinds
            raise _InvalidCommand(f"unsupported op {kind}")


def _plain_put(tx: _Tx, req: pb.PutRequest, rev: int, events: _Events | None) -> bytes | None:
    """A put that involves no lease (neither the new record nor the one it replaces) and
    asks no ``prev_kv``, applied at revision ``rev``: the same effects and event as
    :meth:`_Exec.put` under :meth:`KVStateMachine._execute`, and its result serialized,
    without the general executor's steps (most writes are such puts, on every replica).
    None, with nothing written, for any other put: the general executor takes it."""
    key = req.key  # each read of a message field builds a new object
    if not key or req.lease or req.prev_kv:
        return None
    prev = tx.get(key, fill=False)
    value = req.value
    if prev is None:
        create, version = rev, 1
    elif prev.lease:
        return None
    else:
        create, version = prev.create_revision, prev.version + 1
    tx.keys[key] = KeyRecord(value, create, rev, version)
    if events is not None:
        events.revisions.append(rev)
        events.blobs.append(pack_put(key, value, create, rev, version, prev))
    return put_result_bytes(rev)


def put_result_bytes(rev: int) -> bytes:
    """``CommandResult(revision=rev, put=PutResponse())`` serialized, as protobuf's
    deterministic serialization writes it (``rev`` > 0): the revision's tag and varint,
    then the empty ``put`` field. A session keeps these bytes, and building them here
    costs half of building the message and serializing it."""
    out = bytearray(b"\x10")
    while rev > 0x7F:
        out.append((rev & 0x7F) | 0x80)
        rev >>= 7
    out.append(rev)
    out += b"R\x00"
    return bytes(out)


def range_response(
    items: Iterator[tuple[bytes, KeyRecord]], req: pb.RangeRequest
) -> pb.RangeResponse:
    resp = pb.RangeResponse()
    for n, (k, r) in enumerate(items):
        if req.limit > 0 and n >= req.limit:
            resp.more = True
            break
        resp.kvs.append(_kv(k, r, req.keys_only))
    return resp


def _invalid(msg: str, revision: int) -> pb.CommandResult:
    return pb.CommandResult(status=pb.CommandResult.INVALID, revision=revision, error=msg)


class KVSnapshotView:
    """The state machine frozen at :attr:`index`; :meth:`write` may run in a worker
    thread while applies continue (LevelDB: a plyvel snapshot; memory: a copy)."""

    def __init__(self, view: BackendView) -> None:
        self._view = view

    @property
    def index(self) -> int:
        return self._view.meta.applied

    def write(self, f: Writable) -> None:
        for chunk in self.chunks():
            f.write(chunk)

    def chunks(self) -> Iterator[bytes]:
        v = self._view
        return snapfmt.iter_stream_stored(v.meta, v.stored_keys(), v.sessions(), v.leases())

    def close(self) -> None:
        self._view.close()


class KVStateMachine:
    """The KV state machine over a :class:`KVBackend`. Implements
    :class:`raftd.storage.snapshots.Snapshottable`. One owner calls ``apply*`` and
    ``restore``; reads may interleave between them."""

    def __init__(self, backend: KVBackend, cache: RecordCache | None = None) -> None:
        self._b = backend
        self._cache = cache if cache is not None else RecordCache()
        m = backend.load_meta()
        self._applied = m.applied
        self._revision = m.revision
        self._restoring = m.restoring
        self._leases: dict[int, LeaseRecord] = {} if m.restoring else dict(backend.scan_leases())
        self._history = EventHistory(m.revision)
        self._listeners: list[Callable[[], None]] = []
        self._lease_listeners: list[Callable[[], None]] = []
        self._held: list[list[Callable[[], None]]] | None = None

    @classmethod
    def memory(cls) -> KVStateMachine:
        return cls(MemoryKVBackend())

    @classmethod
    def leveldb(cls, db: LevelDB, namespace: str, *, sync: bool = True) -> KVStateMachine:
        """The state machine of ``namespace`` in the daemon's database (same prefix as
        ``db.group(namespace)``)."""
        return cls(LevelDBKVBackend(db, namespace, sync=sync))

    # -- status ------------------------------------------------------------------------
    def applied_index(self) -> int:
        return self._applied

    def revision(self) -> int:
        return self._revision

    def needs_restore(self) -> bool:
        return self._restoring

    # -- leases and watch history ------------------------------------------------------
    def leases(self) -> Mapping[int, LeaseRecord]:
        """The lease table (read-only view; changes as entries are applied)."""
        return MappingProxyType(self._leases)

    def lease(self, lease_id: int) -> LeaseRecord | None:
        return self._leases.get(lease_id)

    @property
    def history(self) -> EventHistory:
        """Recent key events, for watches (in memory, bounded; see raftd.kv.watch)."""
        return self._history

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every apply batch that produced events, and after a
        restore (the history was reset). ``fn`` must not block nor raise."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def add_lease_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every apply batch that changed the lease table, and after a
        restore. ``fn`` must not block nor raise."""
        self._lease_listeners.append(fn)

    def hold_notifications(self) -> None:
        """Queue listener calls instead of making them, until
        :meth:`release_notifications`. For work run on another thread (a snapshot
        restore): listeners belong to the thread that registered them."""
        if self._held is None:
            self._held = []

    def release_notifications(self) -> None:
        """Make the queued listener calls (each listener list once) and stop holding."""
        held, self._held = self._held, None
        for listeners in held or ():
            self._notify(listeners)

    def _notify(self, listeners: list[Callable[[], None]] | None = None) -> None:
        chosen = self._listeners if listeners is None else listeners
        if self._held is not None:
            if not any(h is chosen for h in self._held):
                self._held.append(chosen)
            return
        for fn in list(chosen):
            try:
                fn()
            except Exception:  # pragma: no cover - listeners must not raise
                import logging

                logging.getLogger("raftd.kv").exception("state machine listener failed")

    def _check_usable(self) -> None:
        if self._restoring:
            raise RestoreInProgressError("state machine is mid-restore: run recover() first")

    # -- apply -------------------------------------------------------------------------
    def apply(self, index: int, data: bytes) -> ApplyResult:
        """Apply one committed entry (see :meth:`apply_many`)."""
        return self.apply_many([(index, data)])[0]

    def apply_many(self, items: Sequence[tuple[int, bytes]]) -> list[ApplyResult]:
        """Apply consecutive committed entries in ONE backend batch with the new applied
        index. Entries at or below the applied index are skipped (never applied twice);
        a gap raises ``ValueError`` before anything is applied. A backend write error
        propagates and leaves the in-memory state as it was."""
        self._check_usable()
        expected = self._applied + 1
        for index, _ in items:
            if index >= expected:
                if index != expected:
                    raise ValueError(f"apply gap: expected index {expected}, got {index}")
                expected += 1
        tx = _Tx(self._b, self._cache)
        applied, rev = self._applied, self._revision
        out: list[ApplyResult] = []
        events = _Events()
        for index, data in items:
            if index <= applied:
                out.append(ApplyResult(index, None, skipped=True))
                continue
            applied = index
            if not data:
                out.append(ApplyResult(index, None))
                continue
            try:
                cmd = pb.Command.FromString(data)
            except ProtoDecodeError as e:
                out.append(ApplyResult(index, _invalid(f"undecodable command: {e}", rev)))
                continue
            res, dup, rev = self._apply_one(tx, cmd, rev, index, events)
            cid = cmd.client_id
            out.append(ApplyResult(index, res, dup, False, (cid, cmd.seq) if cid else None))
        if applied != self._applied:
            self._b.commit(tx.keys, tx.sessions, Meta(applied, rev), tx.leases or None)
            self._cache.committed(tx.keys, tx.sessions)
            self._applied, self._revision = applied, rev
            for lid, lrec in tx.leases.items():
                if lrec is None:
                    self._leases.pop(lid, None)
                else:
                    self._leases[lid] = lrec
            if tx.leases:
                self._notify(self._lease_listeners)
            if events.blobs:
                self._history.append_packed(events.revisions, events.blobs)
                self._notify()
        return out

    def _apply_one(
        self,
        tx: _Tx,
        cmd: pb.Command,
        rev: int,
        index: int = 0,
        events: _Events | None = None,
    ) -> tuple[pb.CommandResult, bool, int]:
        cid = cmd.client_id
        if cid:
            if cmd.seq == 0:
                return _invalid("seq must be > 0 with a client_id", rev), False, rev
            sess = tx.session(cid)
            if sess is not None:
                if cmd.seq == sess.last_seq:
                    return pb.CommandResult.FromString(sess.result), True, rev
                if cmd.seq < sess.last_seq:
                    res = pb.CommandResult(
                        status=pb.CommandResult.STALE_SEQUENCE,
                        revision=rev,
                        error=f"seq {cmd.seq} is older than the last applied {sess.last_seq}",
                    )
                    return res, False, rev
        plain = _plain_put(tx, cmd.put, rev + 1, events) if cmd.HasField("put") else None
        if plain is not None:
            res = pb.CommandResult.FromString(plain)
            rev += 1
        else:
            res = self._execute(tx, cmd, rev, index, events)
            rev = res.revision
        if cid:
            stored = res.SerializeToString(deterministic=True) if plain is None else plain
            tx.sessions[cid] = Session(cmd.seq, stored)
        return res, False, rev

    def _execute(
        self, tx: _Tx, cmd: pb.Command, rev: int, index: int, events: _Events | None
    ) -> pb.CommandResult:
        """Any command, by the general executor; the result carries the store revision
        after it (``rev + 1`` if it wrote, else ``rev``)."""
        ex = _Exec(tx, rev + 1, index, self._leases)
        res = pb.CommandResult()
        try:
            kind = ex.validate(cmd)
            ex.run(cmd, kind, res)
        except _LeaseNotFound as e:
            res = pb.CommandResult(
                status=pb.CommandResult.LEASE_NOT_FOUND, revision=rev, error=str(e)
            )
        except _InvalidCommand as e:
            # validate() runs before any effect; compare() can only raise before the
            # first write of a transaction, so nothing was written here.
            res = _invalid(str(e), rev)
        else:
            if ex.wrote:
                rev += 1
                if events is not None:
                    events.extend(ex.events)
            res.revision = rev
        return res

    # -- reads -------------------------------------------------------------------------
    def get(self, key: bytes) -> pb.KeyValue | None:
        """The current key-value, or ``None``."""
        self._check_usable()
        r = self._cache.key_or_load(key, self._b.get, fill=False)
        return None if r is None else _kv(key, r)

    def range(self, key: bytes, range_end: bytes = b"", limit: int = 0) -> pb.RangeResponse:
        """Keys in ``[key, range_end)`` with etcd's conventions (``range_end`` empty: just
        ``key``; ``b"\\0"``: every key >= ``key``; see :mod:`raftd.wire.ranges`), at most
        ``limit`` (0: all); ``more`` says whether the limit cut the answer."""
        self._check_usable()
        req = pb.RangeRequest(key=key, range_end=range_end, limit=limit)
        return range_response(self._b.scan(*key_bounds(key, range_end)), req)

    def session(self, client_id: bytes) -> Session | None:
        return self._cache.session_or_load(client_id, self._b.get_session, fill=False)

    @property
    def cache(self) -> RecordCache:
        """The applier's cache of recent key records and sessions (for its counters)."""
        return self._cache

    # -- snapshots ---------------------------------------------------------------------
    def snapshot_view(self) -> KVSnapshotView:
        self._check_usable()
        return KVSnapshotView(self._b.view())

    def make_durable(self) -> None:
        """See :meth:`raftd.storage.snapshots.Snapshottable.make_durable`: every applied
        batch is in the backend when :meth:`applied_index` says so; this flushes them."""
        self._b.flush()

    def snapshot_data(self, f: Writable) -> int:
        """Write the whole state (keys, revision, sessions, applied index) to ``f`` in
        chunks; returns the applied index it reflects."""
        view = self.snapshot_view()
        try:
            view.write(f)
            return view.index
        finally:
            view.close()

    def restore(self, f: Readable, *, index: int | None = None) -> None:
        """Replace the whole state by the snapshot stream in ``f``.

        The header is checked (and its applied index against ``index``) before anything
        is touched. Then the backend is flagged *restoring* and cleared, the records are
        loaded in chunks, and the last batch writes the final meta and clears the flag. A
        crash in between leaves :meth:`needs_restore` true, and restoring again from
        the same snapshot is always safe.
        """
        meta, records = snapfmt.read_stream(f)
        if index is not None and meta.applied != index:
            raise snapfmt.SnapshotFormatError(
                f"snapshot data is at index {meta.applied}, its metadata says {index}"
            )
        self._cache.clear()
        self._b.begin_restore(Meta(self._applied, self._revision, restoring=True))
        self._restoring = True
        keys: list[tuple[bytes, KeyRecord]] = []
        sessions: list[tuple[bytes, Session]] = []
        leases: list[tuple[int, LeaseRecord]] = []
        for k, v in records:
            if isinstance(v, KeyRecord):
                assert isinstance(k, bytes)
                keys.append((k, v))
            elif isinstance(v, LeaseRecord):
                assert isinstance(k, int)
                leases.append((k, v))
            else:
                assert isinstance(k, bytes)
                sessions.append((k, v))
            if len(keys) + len(sessions) + len(leases) >= _RESTORE_CHUNK:
                self._b.restore_chunk(keys, sessions, leases)
                keys, sessions, leases = [], [], []
        if keys or sessions or leases:
            self._b.restore_chunk(keys, sessions, leases)
        self._b.end_restore(Meta(meta.applied, meta.revision))
        self._cache.clear()
        self._applied, self._revision, self._restoring = meta.applied, meta.revision, False
        self._leases = dict(self._b.scan_leases())
        self._history.reset(meta.revision)
        self._notify()
        self._notify(self._lease_listeners)
