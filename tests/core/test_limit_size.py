"""``limit_size``: the prefix of a run of entries that a message carries."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from raftd.core.storage import limit_size
from raftd.core.types import ENTRY_OVERHEAD, Entry


@given(
    st.lists(st.integers(min_value=0, max_value=60), max_size=20),
    st.none() | st.integers(min_value=0, max_value=1000),
)
@example([0, 0], 2 * ENTRY_OVERHEAD - 1)  # the data fits, the entries do not
@example([10, 10, 10], 3 * (10 + ENTRY_OVERHEAD))  # exactly the size
def test_the_longest_prefix_within_the_size_and_never_nothing(
    sizes: list[int], max_size: int | None
) -> None:
    entries = [Entry(term=1, index=i + 1, data=b"x" * n) for i, n in enumerate(sizes)]
    got = limit_size(entries, max_size)
    if max_size is None or not entries:
        assert got == entries
        return
    n = 1
    while n < len(entries) and sum(e.size() for e in entries[: n + 1]) <= max_size:
        n += 1
    assert got == entries[:n]


def test_entry_size_counts_the_overhead() -> None:
    assert Entry(term=1, index=1, data=b"abc").size() == 3 + ENTRY_OVERHEAD
