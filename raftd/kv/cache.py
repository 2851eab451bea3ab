"""A bounded, write-through cache of key records and client sessions for the applier.

Applying a put reads the key's previous record (its create revision, version and lease,
and the value a watcher asking for ``prev_kv`` gets) and the client's session (its last
seq). Read from LevelDB each time, that is two gets, two CRC checks and two decodes per
write on every replica. Recently written keys and active sessions are read again soon:
this cache answers those reads from memory.

Contract:

- It only ever holds what the backend holds. Entries are written through after a
  successful commit (:meth:`RecordCache.committed`), filled from reads of the backend made
  by the applier (the only writer), and dropped entirely by :meth:`clear` around a
  restore. A reader on another path may *look up* but never *fill*: a fill racing with a
  restore on another thread could otherwise bring back a record the restore removed.
- A lookup returns :data:`MISS` when the cache does not know; ``None`` is a known absent
  key.
- Memory is bounded: key records by an estimate of their bytes (``max_bytes``), sessions
  by count. The oldest written (or filled) entry goes first, in constant time: the
  entries are kept in an ``OrderedDict``. (A plain dict evicting from its front rescans
  the deleted slots there on every eviction, until the next resize: several µs per
  write once the cache is full.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from raftd.kv.backend import KeyRecord, Session

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_SESSIONS", "MISS", "Miss", "RecordCache"]


class Miss:
    """The type of :data:`MISS` (for ``isinstance`` narrowing)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


#: What a lookup returns when the cache does not know the answer.
MISS: Final = Miss()

#: Key records held, by the estimate of :func:`_cost`: about 10,700 keys of 16 bytes with
#: 100-byte values (about 4.5 MB of Python objects), so a working set of 10,000 keys is
#: applied without reading LevelDB: a miss is a get, a checksum and a decode on every
#: replica, 5-7% of the daemons' CPU per put at 64 in flight when most puts miss. Each
#: namespace has its own cache, and the daemon's memory per key matters more than the
#: hit rate on a large key space: this bound and the watch history's default window
#: (:data:`raftd.kv.watch.DEFAULT_MAX_EVENTS`) share one budget.
DEFAULT_MAX_BYTES = 17 << 18
#: Client sessions held (each is a seq and one serialized result).
DEFAULT_MAX_SESSIONS = 4096

# Python's memory per cached record beyond its key's and value's bytes: the record tuple
# and its two revision ints, the two bytes objects' headers, the dict entry and the
# OrderedDict's link (measured with tracemalloc on 3,800 records: 306 bytes).
_OVERHEAD = 300


def _cost(key: bytes, rec: KeyRecord | None) -> int:
    return _OVERHEAD + len(key) + (len(rec.value) if rec is not None else 0)


class RecordCache:
    """See the module docstring. Not thread-safe: used from the applier's thread, with
    :meth:`clear` called by whoever restores (while nothing applies)."""

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_sessions: int = DEFAULT_MAX_SESSIONS
    ) -> None:
        if max_bytes < 0 or max_sessions < 0:
            raise ValueError("cache bounds must be >= 0")
        self.max_bytes = max_bytes
        self.max_sessions = max_sessions
        self._keys: OrderedDict[bytes, KeyRecord | None] = OrderedDict()
        self._bytes = 0
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def size_bytes(self) -> int:
        """The estimated bytes of the key records held."""
        return self._bytes

    # -- lookups -----------------------------------------------------------------------
    def key(self, key: bytes) -> KeyRecord | Miss | None:
        rec = self._keys.get(key, MISS)
        if rec is MISS:
            self.misses += 1
        else:
            self.hits += 1
        return rec

    def session(self, client_id: bytes) -> Session | Miss:
        s = self._sessions.get(client_id)
        return MISS if s is None else s

    def key_or_load(
        self, key: bytes, load: Callable[[bytes], KeyRecord | None], *, fill: bool
    ) -> KeyRecord | None:
        """The cached record, else ``load(key)``, remembered only when ``fill`` (the
        applier; see the module docstring)."""
        # :meth:`key` and :meth:`fill_key` spelled out: on a key space larger than the
        # cache, every write of the applier on every replica takes this path.
        held = self._keys
        rec = held.get(key, MISS)
        if rec is not MISS:
            self.hits += 1
            return rec  # type: ignore[return-value]  # not MISS
        self.misses += 1
        loaded = load(key)
        if fill:
            held[key] = loaded  # newest last; absent until now
            self._bytes += _cost(key, loaded)
            if self._bytes > self.max_bytes:
                self._trim()
        return loaded

    def session_or_load(
        self, client_id: bytes, load: Callable[[bytes], Session | None], *, fill: bool
    ) -> Session | None:
        """The cached session, else ``load(client_id)``, remembered only when ``fill``."""
        s = self._sessions.get(client_id)
        if s is not None:
            return s
        loaded = load(client_id)
        if fill and loaded is not None:
            self.fill_session(client_id, loaded)
        return loaded

    # -- fills and write-through -------------------------------------------------------
    def fill_key(self, key: bytes, rec: KeyRecord | None) -> None:
        """Remember what the backend holds for ``key`` (the applier's read)."""
        self._put_keys(((key, rec),))

    def fill_session(self, client_id: bytes, s: Session) -> None:
        self._put_sessions(((client_id, s),))

    def committed(
        self, keys: Mapping[bytes, KeyRecord | None], sessions: Mapping[bytes, Session]
    ) -> None:
        """The backend has committed these records (``None``: deleted)."""
        self._put_keys(keys.items())
        self._put_sessions(sessions.items())

    def clear(self) -> None:
        self._keys.clear()
        self._sessions.clear()
        self._bytes = 0

    # -- internals ---------------------------------------------------------------------
    def _put_keys(self, items: Iterable[tuple[bytes, KeyRecord | None]]) -> None:
        """Hold these records, each (re)inserted at the end: the oldest written entry is
        the first evicted. One loop for a whole apply batch: it runs for every key a
        batch writes, on every replica."""
        held, size = self._keys, self._bytes
        for k, rec in items:
            old = held.pop(k, MISS)
            delta = len(rec.value) if rec is not None else 0
            if old is MISS:
                delta += _OVERHEAD + len(k)
            elif old is not None:
                delta -= len(old.value)  # type: ignore[union-attr]  # not MISS
            held[k] = rec
            size += delta
        self._bytes = size
        self._trim()

    def _trim(self) -> None:
        keys = self._keys
        while self._bytes > self.max_bytes and keys:
            self._bytes -= _cost(*keys.popitem(last=False))

    def _put_sessions(self, items: Iterable[tuple[bytes, Session]]) -> None:
        """Hold these sessions (newest last), then evict the oldest beyond the bound."""
        if self.max_sessions == 0:
            return
        live = self._sessions
        for cid, s in items:
            live.pop(cid, None)
            live[cid] = s
        while len(live) > self.max_sessions:
            live.popitem(last=False)
