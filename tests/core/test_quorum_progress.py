"""Quorum math and progress tracking, with property tests against naive versions."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from raftd.core.progress import Inflights, Progress, ProgressState
from raftd.core.quorum import VoteResult, committed_index, majority, vote_result


def naive_committed(voters: list[str], match: dict[str, int]) -> int:
    """The largest index i such that a majority of voters has match >= i."""
    best = 0
    for i in sorted({match.get(v, 0) for v in voters} | {0}):
        if sum(1 for v in voters if match.get(v, 0) >= i) >= len(voters) // 2 + 1:
            best = max(best, i)
    return best


def naive_vote(voters: list[str], votes: dict[str, bool]) -> VoteResult:
    yes = sum(1 for v in voters if votes.get(v) is True)
    undecided = [v for v in voters if v not in votes]
    if yes * 2 > len(voters):
        return VoteResult.WON
    # LOST if no way to fill the undecided makes a majority.
    if (yes + len(undecided)) * 2 <= len(voters):
        return VoteResult.LOST
    return VoteResult.PENDING


voter_sets = st.lists(st.sampled_from(list("abcdefg")), min_size=1, max_size=7, unique=True)


@given(voter_sets, st.dictionaries(st.sampled_from(list("abcdefghij")), st.integers(0, 50)))
def test_committed_index_matches_naive(voters: list[str], match: dict[str, int]) -> None:
    assert committed_index(voters, match) == naive_committed(voters, match)


@given(voter_sets, st.dictionaries(st.sampled_from(list("abcdefghij")), st.booleans()))
def test_vote_result_matches_naive(voters: list[str], votes: dict[str, bool]) -> None:
    assert vote_result(voters, votes) == naive_vote(voters, votes)


def test_majority() -> None:
    assert [majority(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]


def test_committed_index_ignores_learners_and_empty() -> None:
    assert committed_index([], {"a": 5}) == 0
    # "x" is not a voter: its match does not count.
    assert committed_index(["a", "b", "c"], {"a": 5, "x": 9}) == 0
    assert committed_index(["a", "b", "c"], {"a": 5, "b": 3, "c": 1}) == 3


def test_vote_result_all_orders() -> None:
    voters = ["a", "b", "c"]
    for combo in itertools.product([None, True, False], repeat=3):
        votes = {v: g for v, g in zip(voters, combo, strict=True) if g is not None}
        assert vote_result(voters, votes) == naive_vote(voters, votes)


def test_inflights_count_and_bytes() -> None:
    inf = Inflights(3, max_bytes=100)
    inf.add(1, 10)
    inf.add(2, 10)
    assert not inf.full()
    inf.add(5, 90)
    assert inf.full()  # by count and by bytes
    inf.free_le(2)
    assert inf.count() == 1 and inf.bytes == 90
    assert not inf.full()
    inf.free_first_one()
    assert inf.count() == 0 and inf.bytes == 0


def test_inflights_full_by_bytes_only() -> None:
    inf = Inflights(100, max_bytes=50)
    inf.add(1, 60)
    assert inf.full()


def test_progress_probe_sends_one_at_a_time() -> None:
    p = Progress(5, 10, 0, False)
    assert p.state == ProgressState.PROBE and not p.is_paused()
    p.update_on_entries_send(3, 30, p.next)
    assert p.is_paused()
    assert p.maybe_update(7)
    assert not p.is_paused()


def test_progress_replicate_window() -> None:
    p = Progress(5, 2, 0, False)
    p.maybe_update(4)
    p.become_replicate()
    assert p.next == 5
    p.update_on_entries_send(2, 20, p.next)
    assert p.next == 7
    p.update_on_entries_send(1, 10, p.next)
    assert p.is_paused()
    p.maybe_update(6)
    p.inflights.free_le(6)
    assert not p.is_paused()


def test_progress_decrease_probe_and_stale() -> None:
    p = Progress(10, 10, 0, False)
    p.match = 2
    # A reject for an index other than next-1 is stale.
    assert not p.maybe_decrease_to(5, 3)
    assert p.maybe_decrease_to(9, 4)
    assert p.next == 5
    # The hint never moves next below match + 1.
    p.next = 6
    assert p.maybe_decrease_to(5, 0)
    assert p.next == 3


def test_progress_decrease_replicate() -> None:
    p = Progress(10, 10, 0, False)
    p.maybe_update(7)
    p.become_replicate()
    assert not p.maybe_decrease_to(6, 0)  # at or below match: stale
    assert p.maybe_decrease_to(9, 0)
    assert p.next == 8


def test_progress_snapshot_state() -> None:
    p = Progress(3, 10, 0, False)
    p.become_snapshot(20)
    assert p.is_paused()
    p.become_probe()
    assert p.next == 21  # resumes after the snapshot it was sent
