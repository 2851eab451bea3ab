"""EventHistory keeps its bound in memory too: events dropped from the window are
released (the list is compacted), and reads stay exact across compactions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.kv.backend import KeyRecord
from raftd.kv.watch import (
    _COMPACT_MIN,
    _COMPACT_SHARE,
    DELETE,
    PUT,
    EventHistory,
    KeyEvent,
    pack_event,
    pack_put,
)


def _ev(rev: int) -> KeyEvent:
    key = b"k%d" % (rev % 7)
    return KeyEvent(rev, PUT, key, KeyRecord(b"v%d" % rev, rev, rev, 1), None)


def test_dropped_events_are_released_and_reads_stay_exact() -> None:
    bound = 3000
    h = EventHistory(0, max_events=bound)
    held_max = 0
    for rev in range(1, 40_001):
        h.append([_ev(rev)])
        held_max = max(held_max, len(h._blobs))
        if rev % 997 == 0 or rev == 40_000:
            assert len(h) == min(rev, bound)
            assert h.floor == max(1, rev - bound + 1)
            evs, nxt = h.read(h.floor, b"", None, limit=10 * bound)
            assert [e.revision for e in evs] == list(range(h.floor, rev + 1))
            assert nxt == rev + 1
            # A key range reads the same events as a filter of the whole window.
            evs_k1, _ = h.read(h.floor, b"k1", b"k2", limit=10 * bound)
            assert evs_k1 == [e for e in evs if e.key == b"k1"]
    # The list never holds much more than the window (see the next test).
    assert held_max <= bound + max(_COMPACT_MIN, bound // (_COMPACT_SHARE - 1)) + 1, held_max


def test_a_large_window_holds_a_small_share_of_dropped_events() -> None:
    # Where the share, not the fixed minimum, decides when the list is compacted.
    bound = 64_000
    assert bound // (_COMPACT_SHARE - 1) > _COMPACT_MIN
    h = EventHistory(0, max_events=bound)
    held_max = 0
    for rev in range(1, 3 * bound + 1):
        h.append_packed([rev], [b"e%d" % rev])
        held_max = max(held_max, len(h._blobs))
    assert held_max <= bound + bound // (_COMPACT_SHARE - 1) + 1, held_max
    assert held_max <= bound * 1.04
    assert len(h) == bound and h.floor == 2 * bound + 1
    assert h._revs[h._head] == h.floor and h._revs[-1] == 3 * bound


def test_event_keeps_what_it_was_given() -> None:
    old = KeyRecord(b"old", 3, 5, 2, 9)
    new = KeyRecord(b"new", 3, 8, 3, 0)
    e = KeyEvent(8, PUT, b"k", new, old)
    assert (e.revision, e.type, e.key, e.record, e.prev) == (8, PUT, b"k", new, old)
    assert e == KeyEvent(8, PUT, b"k", KeyRecord(b"new", 3, 8, 3, 0), old)
    assert e != KeyEvent(8, PUT, b"k", KeyRecord(b"new", 3, 8, 4, 0), old)
    assert e.size() == 64 + 1 + 3 + 3
    d = KeyEvent(9, DELETE, b"k", None, new)
    assert d.record is None and d.prev == new and d.size() == 64 + 1 + 3
    assert "record=None" in repr(d)


_records = st.one_of(
    st.none(),
    st.builds(
        KeyRecord,
        st.binary(max_size=300),
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**63 - 1),
    ),
)


@given(
    st.lists(
        st.tuples(st.binary(max_size=40), _records, _records, st.integers(1, 3)),
        min_size=1,
        max_size=30,
    )
)
def test_held_events_read_back_as_appended(specs: list[tuple[bytes, object, object, int]]) -> None:
    """Events come back from the (packed) history field for field, whatever their keys,
    values, leases and revisions, whole or filtered by a key range."""
    h = EventHistory(0)
    events: list[KeyEvent] = []
    rev = 0
    for key, record, prev, step in specs:
        rev += step
        assert record is None or isinstance(record, KeyRecord)
        assert prev is None or isinstance(prev, KeyRecord)
        events.append(KeyEvent(rev, PUT if record is not None else DELETE, key, record, prev))
    for e in events:
        h.append([e])
    got, nxt = h.read(1, b"", None, limit=len(events))
    assert got == events and nxt == rev + 1
    assert [e.size() for e in got] == [e.size() for e in events]
    lo, hi = sorted((specs[0][0], specs[-1][0]))
    ranged, _ = h.read(1, lo, hi, limit=len(events))
    assert ranged == [e for e in events if lo <= e.key < hi]
    later, _ = h.read(events[-1].revision, b"", None)
    assert later == [events[-1]]


_revs = st.integers(min_value=1, max_value=2**62)
_records = st.builds(KeyRecord, st.binary(max_size=40), _revs, _revs, _revs, lease=st.just(0))


@given(
    st.binary(min_size=1, max_size=40),
    st.binary(max_size=40),
    _revs,
    _revs,
    _revs,
    st.none() | _records,
)
def test_a_packed_put_is_its_event_packed(
    key: bytes, value: bytes, create: int, mod: int, version: int, prev: KeyRecord | None
) -> None:
    """The state machine's common write packs its event without building it: the bytes
    are the event's, and they read back as that event."""
    event = KeyEvent(mod, PUT, key, KeyRecord(value, create, mod, version), prev)
    blob = pack_put(key, value, create, mod, version, prev)
    assert blob == pack_event(event)
    h = EventHistory(mod - 1)
    h.append_packed([mod], [blob])
    assert h.read(mod, key, None)[0] == [event]


def test_packed_events_are_checked_like_events() -> None:
    h = EventHistory(5)
    blob = pack_event(_ev(6))
    with pytest.raises(ValueError, match="not after 5"):
        h.append_packed([5], [blob])
    with pytest.raises(ValueError, match="one revision per packed event"):
        h.append_packed([6, 7], [blob])
    h.append_packed([], [])
    assert len(h) == 0 and h.last == 5
    h.append_packed([6], [blob])
    assert h.read(6, b"", None)[0] == [_ev(6)]
