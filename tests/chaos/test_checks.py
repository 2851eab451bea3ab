"""The chaos harness's checks can fail: fabricated anomalies must be reported."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from harness.chaos import (
    Clock,
    OpRecord,
    availability,
    check_linearizable,
    checker_ops,
    compare_states,
    find_lost_writes,
    unavailability_windows,
)
from harness.chaos.cli import availability_table, write_key_file
from harness.chaos.nemesis import KINDS, KindPicker, epochs_of
from raftd.testing.linearizability import cas_op, parse_file, read_op, write_history, write_op


def rec(
    f: str,
    key: str,
    call: float,
    end: float,
    typ: str = "ok",
    *,
    value: int | None = None,
    old: int | None = None,
    output: int | bool | None = None,
    error: str = "",
    process: int = 0,
    phase: str = "load",
) -> OpRecord:
    return OpRecord(
        process=process,
        worker=0,
        node="n1",
        f=f,  # type: ignore[arg-type]
        key=key,
        value=value,
        old=old,
        call=call,
        end=end,
        type=typ,  # type: ignore[arg-type]
        output=output,
        error=error,
        phase=phase,  # type: ignore[arg-type]
    )


def test_a_stale_read_is_reported_as_not_linearizable() -> None:
    ops = [
        write_op(0, "k", 1, 0.0, 1.0),
        write_op(0, "k", 2, 2.0, 3.0),
        read_op(1, "k", 1, 4.0, 5.0),  # 2 was acknowledged before the read began
        read_op(1, "other", None, 4.0, 5.0),
    ]
    verdicts = {v.key: v for v in check_linearizable(ops)}
    assert verdicts["k"].linearizable is False
    assert "k" in verdicts["k"].explanation or verdicts["k"].explanation
    assert verdicts["other"].linearizable is True


def test_a_lost_acknowledged_write_is_reported_by_both_checks() -> None:
    # Write 1 then write 2, both acknowledged, sequential; the final reads see 1.
    ops = [
        write_op(0, "k", 1, 0.0, 1.0),
        write_op(0, "k", 2, 2.0, 3.0),
        read_op(5, "k", 1, 10.0, 11.0),
    ]
    lost = find_lost_writes(ops, {"k": 1})
    assert [op.value for op in lost.lost] == [2]
    assert lost.describe() == [f"lost: {lost.describe()[0].removeprefix('lost: ')}"]
    assert check_linearizable(ops)[0].linearizable is False


def test_a_write_lost_to_the_initial_state_and_a_phantom_value() -> None:
    ops = [write_op(0, "a", 1, 0.0, 1.0), cas_op(1, "b", None, 7, True, 0.0, 1.0)]
    res = find_lost_writes(ops, {"a": None, "b": 99})
    assert [op.key for op in res.lost] == ["a"]
    assert res.phantoms == {"b": 99}
    assert any(line.startswith("phantom") for line in res.describe())


def test_concurrent_or_unknown_overwrites_are_not_lost_writes() -> None:
    ops = [
        write_op(0, "k", 1, 0.0, 5.0),  # concurrent with write 2: may come last
        write_op(1, "k", 2, 1.0, 2.0),
        write_op(2, "k", 3, 6.0, None),  # unknown outcome: may take effect at any time
        write_op(3, "k", 4, 7.0, 8.0),
        cas_op(4, "k", 4, 5, False, 9.0, 9.5),  # a failed cas wrote nothing
    ]
    assert find_lost_writes(ops, {"k": 3}).lost == []
    assert find_lost_writes(ops, {"k": 1}).lost == [ops[3]]


def test_records_map_to_checker_ops_with_jepsen_semantics(tmp_path: Path) -> None:
    records = [
        rec("write", "k", 0.0, 1.0, value=1),
        rec("write", "k", 2.0, 3.0, "fail", value=2, error="UNAVAILABLE: no leader"),
        rec("write", "k", 4.0, 5.0, "info", value=3, error="DEADLINE_EXCEEDED"),
        rec("cas", "k", 6.0, 7.0, "fail", value=4, old=9, output=False),
        rec("cas", "k", 6.5, 7.5, "fail", value=5, old=1, error="UNAVAILABLE", process=1),
        rec("cas", "k", 8.0, 9.0, "info", value=6, old=1, error="x (indeterminate)"),
        rec("read", "k", 10.0, 11.0, "fail", error="UNAVAILABLE", process=2),
        rec("read", "k", 12.0, 13.0, output=3, process=3, phase="final"),
    ]
    ops = checker_ops(records)
    kinds = [(op.kind, op.value, op.output, op.ret is None) for op in ops]
    assert kinds == [
        ("write", 1, None, False),
        ("write", 3, None, True),
        ("cas", (9, 4), False, False),
        ("cas", (1, 6), None, True),
        ("read", None, 3, False),
    ]
    assert [r.answered for r in records] == [True, False, False, True, False, False, False, True]
    # Linearizable (the unknown write 3 took effect), also once written and parsed again.
    assert all(v.linearizable for v in check_linearizable(ops))
    path = tmp_path / "history.txt"
    write_history(path, ops)
    assert all(v.linearizable for v in check_linearizable(parse_file(path)))
    # A definitely failed write whose value shows up anyway is an anomaly.
    bad = [*records, rec("read", "k", 20.0, 21.0, output=2, process=4, phase="final")]
    assert check_linearizable(checker_ops(bad))[0].linearizable is False
    assert find_lost_writes(checker_ops(bad), {"k": 2}).phantoms == {"k": 2}


def test_diverging_node_states_are_reported() -> None:
    same = [(b"k0", b"1", 2, 5, 3)]
    assert compare_states({"n1": (5, same), "n2": (5, list(same))}) == []
    problems = compare_states({"n1": (5, same), "n2": (5, [(b"k0", b"2", 2, 5, 3)]), "n3": (4, [])})
    assert len(problems) == 3  # n2's value, n3's revision, n3's missing key
    assert any("revision" in p for p in problems)
    assert compare_states({}) != []


def test_unavailability_windows_and_attribution() -> None:
    successes = [1.0, 1.2, 5.0, 5.5, 6.3, 7.1, 8.0, 8.9, 9.9, 12.5]
    windows = unavailability_windows(successes, 0.0, 12.0, threshold=1.0)
    assert windows == [(1.2, 5.0), (9.9, 12.0)]
    assert unavailability_windows([], 0.0, 0.5) == []
    events: list[dict[str, object]] = [
        {"t": 1.0, "kind": "kill", "phase": "start"},
        {"t": 3.0, "kind": "kill", "phase": "heal"},
        {"t": 8.0, "kind": "pause", "phase": "start"},
    ]
    epochs = epochs_of(events, 0.0, 12.0)
    assert epochs == [("kill", 1.0, 8.0), ("pause", 8.0, 12.0)]
    records = [
        rec("read", "k", 0.5, 1.0, output=None),
        rec("read", "k", 2.0, 5.0, "fail", error="UNAVAILABLE"),
        rec("read", "k", 4.0, 5.0, output=None),
        rec("write", "k", 9.0, 9.9, value=1),
        rec("read", "k", 13.0, 14.0, output=1, phase="final"),
    ]
    table = availability(records, epochs, windows, (0.0, 12.0))
    assert (table["kill"].ops, table["kill"].answered, table["kill"].faults) == (2, 1, 1)
    assert table["kill"].longest_unavailable_s == 3.8
    assert math.isclose(table["pause"].longest_unavailable_s, 2.1)
    assert (table["none"].ops, table["none"].epoch_s) == (1, 1.0)
    assert "kill" in availability_table(table.values())
    # A window that starts just before a fault goes to the fault it overlaps most.
    table = availability([], epochs, [(7.9, 11.0), (0.1, 0.95)], (0.0, 12.0))
    assert math.isclose(table["pause"].longest_unavailable_s, 3.1)
    assert "kill" not in table or table["kill"].longest_unavailable_s == 0.0
    assert math.isclose(table["none"].longest_unavailable_s, 0.85)


def test_kind_picker_uses_every_kind_before_repeating() -> None:
    import random

    picker = KindPicker(KINDS)
    rng = random.Random(3)
    first = [picker.pick(rng) for _ in KINDS]
    assert sorted(first) == sorted(KINDS)


def test_clock_is_strictly_increasing() -> None:
    clock = Clock()
    times = [clock.now() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(times))


def test_key_file_is_private_and_loadable(tmp_path: Path) -> None:
    from raftd.security.keys import load_key_file

    path = write_key_file(tmp_path / "k" / "cluster.key")
    assert path.stat().st_mode & 0o777 == 0o600
    load_key_file(path)
