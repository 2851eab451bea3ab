"""The bounded in-memory history of key events that watches are served from.

Every applied command that changes keys appends its events (all with the command's store
revision) after its batch is durable. A watch asks for the events from some revision on;
the history answers from memory, so a watcher that reconnects can resume from the last
revision it saw, as long as that revision is still held.

Bounds: at most ``max_events`` events and about ``max_bytes`` bytes of memory (keys,
values, previous values and a fixed cost per event; defaults 35,000 events / 32 MiB).
The oldest *whole revisions* are dropped first, and :attr:`EventHistory.floor` is the
oldest revision still complete: a watch from an older revision must be refused
("compacted") and the client must re-read and watch again.

The history is not persisted. After a restart it starts empty at the state machine's
revision (``floor = revision + 1``); after a snapshot install it is cleared the same way,
since the events that the snapshot skipped are unknown.
"""

from __future__ import annotations

import bisect
import struct
from array import array

from raftd.kv.backend import KeyRecord

__all__ = ["DELETE", "PUT", "EventHistory", "KeyEvent", "pack_event", "pack_put"]

PUT = 0
DELETE = 1

#: The window's default length. Its memory at 100-byte values (about 8.5 MB of new
#: keys, 13 MB of overwrites) counts against the daemon's memory per key, and shares
#: that budget with the applier's record cache (:data:`raftd.kv.cache.DEFAULT_MAX_BYTES`).
DEFAULT_MAX_EVENTS = 35_000
DEFAULT_MAX_BYTES = 32 << 20
#: Dropped events kept in the list before it is compacted, at least.
_COMPACT_MIN = 1024
#: ... and at least this fraction (1/_COMPACT_SHARE) of the list. Each dropped event
#: held is memory that counts against the daemon (about 250-350 bytes at 100-byte values).
_COMPACT_SHARE = 32
#: What a held event costs beside its packed bytes (object header, list and array slots).
_OVERHEAD = 56


class KeyEvent:
    """One change of one key at ``revision``. ``record`` is the new state (PUT), ``prev``
    the state before (``None`` if the key did not exist). Read-only by contract.

    The history holds tens of thousands of these, so the new state is kept inline (one
    object instead of two: about 40 bytes less per event) and :attr:`record` builds the
    :class:`KeyRecord` when asked."""

    __slots__ = (
        "_create",
        "_lease",
        "_mod",
        "_value",
        "_version",
        "key",
        "prev",
        "revision",
        "type",
    )

    def __init__(
        self,
        revision: int,
        type: int,  # PUT or DELETE
        key: bytes,
        record: KeyRecord | None,
        prev: KeyRecord | None,
    ) -> None:
        self.revision = revision
        self.type = type
        self.key = key
        self.prev = prev
        if record is None:
            self._value: bytes | None = None
            self._create = self._mod = self._version = self._lease = 0
        else:
            self._value = record.value
            self._create = record.create_revision
            self._mod = record.mod_revision
            self._version = record.version
            self._lease = record.lease

    @property
    def record(self) -> KeyRecord | None:
        if self._value is None:
            return None
        return KeyRecord(self._value, self._create, self._mod, self._version, self._lease)

    def _fields(self) -> tuple[object, ...]:
        return (self.revision, self.type, self.key, self.record, self.prev)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyEvent):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"KeyEvent(revision={self.revision!r}, type={self.type!r}, key={self.key!r}, "
            f"record={self.record!r}, prev={self.prev!r})"
        )

    def size(self) -> int:
        n = 64 + len(self.key)
        if self._value is not None:
            n += len(self._value)
        if self.prev is not None:
            n += len(self.prev.value)
        return n


# One held event, packed into a single bytes object (see EventHistory):
# type, flags (has a record, has a prev), key length, value length, prev value length,
# then the record's and the prev's (create, mod, version, lease) as present, then the
# key, the value and the prev's value.
_PACK_HEAD = struct.Struct("<BBIII")
_PACK_META = struct.Struct("<qqqq")
_HAS_RECORD = 1
_HAS_PREV = 2


def pack_event(e: KeyEvent) -> bytes:
    """One event in the history's packed layout (see above)."""
    prev = e.prev
    flags = 0
    parts: list[bytes] = []
    vlen = plen = 0
    if e._value is not None:
        flags |= _HAS_RECORD
        vlen = len(e._value)
        parts.append(_PACK_META.pack(e._create, e._mod, e._version, e._lease))
    if prev is not None:
        flags |= _HAS_PREV
        plen = len(prev.value)
        parts.append(
            _PACK_META.pack(prev.create_revision, prev.mod_revision, prev.version, prev.lease)
        )
    parts.append(e.key)
    if e._value is not None:
        parts.append(e._value)
    if prev is not None:
        parts.append(prev.value)
    return _PACK_HEAD.pack(e.type, flags, len(e.key), vlen, plen) + b"".join(parts)


# A put with no lease on either side, head and metas in one call (the layout above: "<"
# packs without padding, so these are _PACK_HEAD followed by one or two _PACK_META).
_PUT_NEW = struct.Struct("<BBIIIqqqq")
_PUT_OVER = struct.Struct("<BBIIIqqqqqqqq")


def pack_put(
    key: bytes, value: bytes, create: int, mod: int, version: int, prev: KeyRecord | None
) -> bytes:
    """The packed event of a put that attaches no lease, over ``prev`` (``None``: a new
    key; otherwise a record with no lease): the same bytes as packing its
    :class:`KeyEvent`, without building one (the state machine's common write)."""
    if prev is None:
        head = _PUT_NEW.pack(PUT, _HAS_RECORD, len(key), len(value), 0, create, mod, version, 0)
        return head + key + value
    pv = prev.value
    head = _PUT_OVER.pack(
        PUT,
        _HAS_RECORD | _HAS_PREV,
        len(key),
        len(value),
        len(pv),
        create,
        mod,
        version,
        0,
        prev.create_revision,
        prev.mod_revision,
        prev.version,
        0,
    )
    return head + key + value + pv


def _key_of(blob: bytes) -> bytes:
    _, flags, klen, _, _ = _PACK_HEAD.unpack_from(blob)
    metas = bool(flags & _HAS_RECORD) + bool(flags & _HAS_PREV)
    pos = _PACK_HEAD.size + _PACK_META.size * metas
    return blob[pos : pos + klen]


def _unpack(revision: int, blob: bytes) -> KeyEvent:
    type_, flags, klen, vlen, plen = _PACK_HEAD.unpack_from(blob)
    pos = _PACK_HEAD.size
    record = prev = None
    if flags & _HAS_RECORD:
        rmeta = _PACK_META.unpack_from(blob, pos)
        pos += _PACK_META.size
    if flags & _HAS_PREV:
        pmeta = _PACK_META.unpack_from(blob, pos)
        pos += _PACK_META.size
    key = blob[pos : pos + klen]
    pos += klen
    if flags & _HAS_RECORD:
        record = KeyRecord(blob[pos : pos + vlen], *rmeta)
        pos += vlen
    if flags & _HAS_PREV:
        prev = KeyRecord(blob[pos : pos + plen], *pmeta)
    return KeyEvent(revision, type_, key, record, prev)


class EventHistory:
    """Events of the most recent revisions, in revision order (see the module doc).

    Each held event is one packed ``bytes`` object (its revision in a parallel array):
    about half the memory of :class:`KeyEvent` objects and the records they point to,
    and nothing for the garbage collector to traverse. :meth:`read` builds the
    :class:`KeyEvent` objects it returns (new objects on every read)."""

    def __init__(
        self,
        revision: int = 0,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("history bounds must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._blobs: list[bytes] = []
        self._revs = array("q")  # the revision of each blob
        self._head = 0  # index of the oldest held event
        self._bytes = 0
        self.floor = revision + 1
        self.last = revision

    def __len__(self) -> int:
        return len(self._blobs) - self._head

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def reset(self, revision: int) -> None:
        """Forget everything; the next event will be after ``revision``."""
        self._blobs = []
        self._revs = array("q")
        self._head = 0
        self._bytes = 0
        self.floor = revision + 1
        self.last = revision

    def append(self, events: list[KeyEvent]) -> None:
        """Add the events of one or more revisions, each newer than :attr:`last`."""
        self.append_packed([e.revision for e in events], [pack_event(e) for e in events])

    def append_packed(self, revisions: list[int], blobs: list[bytes]) -> None:
        """:meth:`append` of events already packed (``blobs[i]`` at ``revisions[i]``, as
        :func:`pack_put` or the history's own packing makes them), in revision order."""
        if not blobs:
            return
        if len(revisions) != len(blobs):
            raise ValueError("history: one revision per packed event")
        if revisions[0] <= self.last:
            raise ValueError(f"history: revision {revisions[0]} is not after {self.last}")
        self._blobs.extend(blobs)
        self._revs.extend(revisions)
        self._bytes += sum(map(len, blobs)) + _OVERHEAD * len(blobs)
        self.last = revisions[-1]
        self._trim()

    def _trim(self) -> None:
        blobs, revs = self._blobs, self._revs
        dropped_rev = 0
        while len(blobs) - self._head > self.max_events or self._bytes > self.max_bytes:
            self._bytes -= len(blobs[self._head]) + _OVERHEAD
            dropped_rev = revs[self._head]
            self._head += 1
        if dropped_rev:
            # Never keep half a revision: a watcher from it would miss events.
            while self._head < len(blobs) and revs[self._head] == dropped_rev:
                self._bytes -= len(blobs[self._head]) + _OVERHEAD
                self._head += 1
            self.floor = dropped_rev + 1
        # Dropped events stay referenced by the list until it is compacted: compact once
        # they are 1/_COMPACT_SHARE of it, so the list holds at most that much more than
        # the bound (moving the pointers costs _COMPACT_SHARE pointer moves per event
        # appended, amortized: a memmove, a few ns).
        if self._head >= _COMPACT_MIN and self._head * _COMPACT_SHARE >= len(blobs):
            del blobs[: self._head]
            del revs[: self._head]
            self._head = 0

    def read(
        self, start: int, key: bytes, end: bytes | None, limit: int = 1000
    ) -> tuple[list[KeyEvent], int]:
        """Events with ``revision >= start`` on keys in ``[key, end)`` (``end=None``:
        unbounded), at most about ``limit`` (whole revisions only), and the revision to
        read from next. Raises ``LookupError`` if ``start < floor`` (compacted)."""
        if start < self.floor:
            raise LookupError(f"revision {start} is compacted (oldest held: {self.floor})")
        blobs, revs = self._blobs, self._revs
        i = bisect.bisect_left(revs, start, lo=self._head)
        out: list[KeyEvent] = []
        nxt = max(start, self.last + 1)
        n = len(blobs)
        everything = not key and end is None
        while i < n:
            rev = revs[i]
            if len(out) >= limit and rev != out[-1].revision:
                nxt = rev
                break
            blob = blobs[i]
            if everything:
                out.append(_unpack(rev, blob))
            else:
                k = _key_of(blob)
                if k >= key and (end is None or k < end):
                    out.append(_unpack(rev, blob))
            i += 1
        return out, nxt
