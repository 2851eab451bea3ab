"""Tests of the linearizability checker (raftd.testing.linearizability).

The Jepsen etcd histories live next to the repository, in ``<repo>/../shared/jepsen-etcd``
(override with ``RAFTD_JEPSEN_DIR``); the tests over them are skipped when it is absent.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftd.testing.linearizability import (
    CheckTimeoutError,
    HistoryFormatError,
    Key,
    Op,
    Value,
    cas_op,
    check_file,
    check_history,
    format_history,
    parse_file,
    parse_history,
    read_op,
    write_history,
    write_op,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check-linearizable"


def jepsen_dir() -> Path:
    """Directory of the Jepsen etcd histories and their verdicts."""
    env = os.environ.get("RAFTD_JEPSEN_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "jepsen-etcd"


def verdict_params() -> list[Any]:
    """One pytest param (file name, expected verdict) per line of verdicts.tsv."""
    directory = jepsen_dir()
    tsv = directory / "verdicts.tsv"
    if not tsv.is_file():
        reason = f"Jepsen etcd histories not found: no {tsv} (set RAFTD_JEPSEN_DIR)"
        return [pytest.param("", False, marks=pytest.mark.skip(reason=reason), id="missing")]
    params = []
    for line in tsv.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.strip():
            continue
        name, verdict = line.split("\t")[:2]
        assert verdict.strip() in ("true", "false"), line
        params.append(pytest.param(name, verdict.strip() == "true", id=name))
    return params


# --------------------------------------------------------------------------------------
# Jepsen etcd corpus


@pytest.mark.parametrize(("name", "expected"), verdict_params())
def test_jepsen_etcd_verdict(name: str, expected: bool) -> None:
    start = time.perf_counter()
    result = check_file(jepsen_dir() / name)
    elapsed = time.perf_counter() - start
    assert result.linearizable is expected, result.explanation
    print(f"{name}: checked in {elapsed:.2f}s")  # speed is a figure here, not a verdict
    if not expected:
        assert result.pending, "a violation names the ops that cannot come next"
        assert "not linearizable" in result.explanation


# --------------------------------------------------------------------------------------
# Hand-made histories


def lin(ops: list[Op]) -> bool:
    return check_history(ops).linearizable


def test_empty_history_is_linearizable() -> None:
    result = check_history([])
    assert result.linearizable
    assert result.key is None


def test_initial_value_is_absent() -> None:
    assert lin([read_op(0, None, None, 0, 1)])
    assert not lin([read_op(0, None, 1, 0, 1)])


def test_sequential_write_read() -> None:
    ops = [write_op(0, None, 1, 0, 1), read_op(1, None, 1, 2, 3)]
    assert lin(ops)
    stale = [write_op(0, None, 1, 0, 1), read_op(1, None, None, 2, 3)]
    assert not lin(stale)


def test_concurrent_write_allows_either_read() -> None:
    # write [0, 10] overlaps both reads; old then new is fine, new then old is not.
    old_new = [write_op(0, None, 1, 0, 10), read_op(1, None, None, 1, 2), read_op(1, None, 1, 3, 4)]
    assert lin(old_new)
    new_old = [write_op(0, None, 1, 0, 10), read_op(1, None, 1, 1, 2), read_op(1, None, None, 3, 4)]
    assert not lin(new_old)


def test_touching_intervals_count_as_concurrent() -> None:
    # The read is invoked exactly when the write returns: treated as overlapping.
    assert lin([write_op(0, None, 1, 0, 5), read_op(1, None, None, 5, 6)])
    assert not lin([write_op(0, None, 1, 0, 5), read_op(1, None, None, 5.5, 6)])


def test_classic_two_writers_violation() -> None:
    ops = [
        write_op(0, None, 1, 0, 10),
        write_op(1, None, 2, 0, 10),
        read_op(2, None, 1, 11, 12),
        read_op(3, None, 2, 13, 14),
        read_op(4, None, 1, 15, 16),
    ]
    result = check_history(ops)
    assert not result.linearizable
    assert result.key is None
    # Both writes precede the read of 1, so the last write was 1 and the read of 2 is stuck.
    assert result.pending == (ops[3],)


def test_explanation_names_prefix_and_stuck_ops() -> None:
    ops = [
        write_op(0, "k", 1, 0, 1),
        write_op(0, "k", 2, 2, 3),
        read_op(1, "k", 1, 4, 5),
    ]
    result = check_history(ops)
    assert not result.linearizable
    assert result.key == "k"
    assert result.prefix == (ops[0], ops[1])
    assert result.pending == (ops[2],)
    assert result.state == 2
    text = result.explanation
    assert 'key "k"' in text
    assert "longest linearizable prefix: 2 of 3 ops" in text
    assert "op#2 client 1 read -> 1 [4, 5]: it read 1, but the value is 2" in text


def test_explanation_context_limits_prefix() -> None:
    ops = [write_op(0, None, i, 2 * i, 2 * i + 1) for i in range(30)]
    ops.append(read_op(1, None, 3, 100, 101))
    result = check_history(ops, context=5)
    assert not result.linearizable
    assert len(result.prefix) == 30
    assert "25 earlier ops omitted" in result.explanation
    assert result.explanation.count("=>") == 5


# --------------------------------------------------------------------------------------
# Unknown outcomes


def test_unknown_write_may_take_effect_late() -> None:
    ops = [
        write_op(0, None, 1, 0, None),
        read_op(1, None, None, 1, 2),
        read_op(1, None, 1, 3, 4),
    ]
    assert lin(ops)


def test_unknown_write_may_never_take_effect() -> None:
    ops = [write_op(0, None, 1, 0, None), read_op(1, None, None, 100, 101)]
    assert lin(ops)


def test_unknown_write_not_before_its_call() -> None:
    ops = [read_op(1, None, 1, 0, 1), write_op(0, None, 1, 2, None)]
    assert not lin(ops)


def test_unknown_write_takes_effect_once() -> None:
    ops = [
        write_op(0, None, 1, 0, None),
        read_op(1, None, 1, 1, 2),
        read_op(1, None, None, 3, 4),
    ]
    assert not lin(ops)


def test_unknown_cas_either_swapped_or_not() -> None:
    base = [write_op(0, None, 0, 0, 1), cas_op(1, None, 0, 1, None, 2, None)]
    assert lin([*base, read_op(2, None, 1, 3, 4)])
    assert lin([*base, read_op(2, None, 0, 3, 4)])
    assert lin([*base, read_op(2, None, 0, 3, 4), read_op(2, None, 1, 5, 6)])
    assert not lin([*base, read_op(2, None, 1, 3, 4), read_op(2, None, 0, 5, 6)])
    # Swapping needs the value to be OLD at some point after the call.
    assert not lin([*base, write_op(2, None, 5, 3, 4), read_op(2, None, 1, 5, 6)])


def test_unknown_read_constrains_nothing() -> None:
    ops = [write_op(0, None, 1, 0, 1), read_op(1, None, None, 2, None)]
    assert lin(ops)


# --------------------------------------------------------------------------------------
# cas semantics


def test_cas_ok_requires_old_value() -> None:
    assert lin([write_op(0, None, 1, 0, 1), cas_op(0, None, 1, 2, True, 2, 3)])
    assert not lin([write_op(0, None, 1, 0, 1), cas_op(0, None, 3, 2, True, 2, 3)])
    assert lin([cas_op(0, None, None, 7, True, 0, 1), read_op(0, None, 7, 2, 3)])


def test_cas_ok_sets_new_value() -> None:
    ops = [write_op(0, None, 1, 0, 1), cas_op(0, None, 1, 2, True, 2, 3)]
    assert lin([*ops, read_op(0, None, 2, 4, 5)])
    assert not lin([*ops, read_op(0, None, 1, 4, 5)])


def test_cas_fail_means_value_was_not_old() -> None:
    assert lin([write_op(0, None, 1, 0, 1), cas_op(0, None, 3, 2, False, 2, 3)])
    assert not lin([write_op(0, None, 1, 0, 1), cas_op(0, None, 1, 2, False, 2, 3)])
    # A concurrent write can make the failure legitimate.
    ops = [
        write_op(0, None, 1, 0, 1),
        cas_op(1, None, 1, 2, False, 2, 5),
        write_op(2, None, 4, 3, 4),
    ]
    assert lin(ops)


def test_cas_fail_does_not_change_value() -> None:
    ops = [write_op(0, None, 1, 0, 1), cas_op(0, None, 3, 2, False, 2, 3)]
    assert lin([*ops, read_op(0, None, 1, 4, 5)])
    assert not lin([*ops, read_op(0, None, 2, 4, 5)])


def test_cas_fail_explanation() -> None:
    result = check_history([write_op(0, None, 1, 0, 1), cas_op(0, None, 1, 2, False, 2, 3)])
    assert "cas 1->2 fail" in result.explanation
    assert "it failed, but the value is 1, equal to old" in result.explanation


# --------------------------------------------------------------------------------------
# Partitioning by key


def test_keys_are_independent() -> None:
    ops = [
        write_op(0, "a", 1, 0, 1),
        write_op(1, "b", 2, 0, 1),
        read_op(2, "a", 1, 2, 3),
        read_op(3, "b", 2, 2, 3),
        read_op(4, "c", None, 2, 3),
    ]
    assert lin(ops)
    # The same events on a single register would not be linearizable.
    assert not lin([replace(op, key=None) for op in ops])


def test_first_violating_key_is_reported() -> None:
    ops = [
        write_op(0, "a", 1, 0, 1),
        write_op(0, "b", 1, 2, 3),
        read_op(1, "b", 5, 4, 5),
        read_op(1, "a", 9, 6, 7),
    ]
    result = check_history(ops)
    assert not result.linearizable
    assert result.key == "a"  # "a" appears first in the history
    result_b = check_history(ops[1:])
    assert result_b.key == "b"
    assert result_b.pending == (ops[2],)


def test_many_keys_large_history() -> None:
    ops = []
    t = 0
    for i in range(3000):
        key = f"k{i % 50}"
        ops.append(write_op(i % 7, key, i, t, t + 3))
        ops.append(read_op(7 + i % 5, key, i, t + 2, t + 5))
        t += 4
    start = time.perf_counter()
    assert lin(ops)
    print(f"6,000 ops over 50 keys checked in {time.perf_counter() - start:.2f}s")


def test_single_key_long_history_iterative() -> None:
    # Far deeper than the recursion limit: the search must not recurse.
    ops = [write_op(0, None, i, 2 * i, 2 * i + 1) for i in range(5000)]
    ops.append(read_op(1, None, 4999, 10_000, 10_001))
    assert lin(ops)
    ops.append(read_op(1, None, 17, 10_002, 10_003))
    assert not lin(ops)


def test_timeout() -> None:
    with pytest.raises(CheckTimeoutError):
        check_history([write_op(0, None, 1, 0, 1)], timeout=0.0)


# --------------------------------------------------------------------------------------
# Op contract


@pytest.mark.parametrize(
    "make",
    [
        lambda: Op(0, "read", None, 1, None, 0, 1),
        lambda: Op(0, "write", None, 1, 2, 0, 1),
        lambda: Op(0, "cas", None, 1, True, 0, 1),
        lambda: Op(0, "cas", None, (1, 2), None, 0, 1),
        lambda: Op(0, "cas", None, (1, 2), True, 0, None),
        lambda: Op(0, "read", None, None, 1, 0, None),
        lambda: Op(0, "write", None, 1, None, 2, 1),
        lambda: Op(0, "write", None, 1.5, None, 0, 1),  # type: ignore[arg-type]
        lambda: Op(0, "delete", None, None, None, 0, 1),  # type: ignore[arg-type]
        lambda: Op(0, "write", None, True, None, 0, 1),
        lambda: Op(0, "write", None, 1, None, float("inf"), None),
    ],
)
def test_invalid_ops_rejected(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


# --------------------------------------------------------------------------------------
# Text format

PREFIX = "INFO  jepsen.util - "


def test_parse_basic_jepsen_lines() -> None:
    text = "\n".join(
        [
            PREFIX + "0\t:invoke\t:read\tnil",
            PREFIX + "1\t:invoke\t:write\t4",
            PREFIX + "2\t:invoke\t:cas\t[4 0]",
            PREFIX + "0\t:ok\t:read\tnil",
            PREFIX + "1\t:ok\t:write\t4",
            PREFIX + "2   :fail   :cas    [4 0]",  # space separated, as in some logs
        ]
    )
    ops = parse_history(text)
    assert ops == [
        read_op(0, None, None, 1, 4),
        write_op(1, None, 4, 2, 5),
        cas_op(2, None, 4, 0, False, 3, 6),
    ]


def test_parse_unknown_and_failed_ops() -> None:
    text = "\n".join(
        [
            PREFIX + "0\t:invoke\t:write\t1",
            PREFIX + "1\t:invoke\t:read\tnil",
            PREFIX + "2\t:invoke\t:cas\t[1 2]",
            PREFIX + "3\t:invoke\t:write\t9",
            PREFIX + "0\t:info\t:write\t:timed-out",
            PREFIX + "1\t:fail\t:read\t:timed-out",
            PREFIX + "3\t:fail\t:write\t9",  # definitely not applied: dropped
            PREFIX + "4\t:invoke\t:read\tnil",  # never completes
        ]
    )
    ops = parse_history(text)
    assert ops == [
        write_op(0, None, 1, 1, None),
        read_op(1, None, None, 2, None),
        cas_op(2, None, 1, 2, None, 3, None),
        read_op(4, None, None, 8, None),
    ]


def test_parse_failed_write_did_not_happen() -> None:
    text = "\n".join(
        [
            "0\t:invoke\t:write\t1",
            "0\t:fail\t:write\t1",
            "1\t:invoke\t:read\tnil",
            "1\t:ok\t:read\tnil",
        ]
    )
    assert check_history(parse_history(text)).linearizable


def test_parse_key_column() -> None:
    text = "\n".join(
        [
            "0\t:invoke\t:write\t1\tusers/1",
            '1\t:invoke\t:cas\t[nil "x y"]\t"key with space"',
            "0\t:ok\t:write\t1",  # inherits the key
            '1\t:ok\t:cas\t[nil "x y"]\t"key with space"',
            "2 :invoke :read nil 7",
            "2 :ok :read 1 7",
        ]
    )
    ops = parse_history(text)
    assert ops == [
        write_op(0, "users/1", 1, 1, 3),
        cas_op(1, "key with space", None, "x y", True, 2, 4),
        read_op(2, "7", 1, 5, 6),
    ]
    result = check_history(ops)
    assert not result.linearizable  # key "7" is absent, not 1: keys are not conflated
    assert result.key == "7"


def test_parse_ignores_other_lines() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "INFO  jepsen.core - Running test",
            PREFIX + ":nemesis\t:info\t:start\tnil",
            PREFIX + "0\t:invoke\t:read\tnil",
            "WARN  something else 3 4 5",
            PREFIX + "0\t:ok\t:read\tnil",
        ]
    )
    assert parse_history(text) == [read_op(0, None, None, 5, 7)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0\t:invoke\t:write\t1\n0\t:invoke\t:write\t2", "outstanding"),
        ("0\t:ok\t:write\t1", "never invoked"),
        ("0\t:invoke\t:write\t1\n0\t:ok\t:read\t1", "does not match"),
        ("0\t:invoke\t:write\t1\ta\n0\t:ok\t:write\t1\tb", "differs"),
        ("0\t:invoke\t:add\t1", "unsupported"),
        ("0\t:invoke\t:cas\t5", "pair"),
        ("0\t:invoke\t:write\t[1 2]", "expected nil"),
        ("0\t:invoke\t:read\tnil\n0\t:ok\t:read\t:timed-out", "expected nil"),
        ("0 garbage", "cannot parse"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message) as info:
        parse_history(text)
    assert info.value.lineno >= 1


def test_process_may_continue_after_info() -> None:
    text = "\n".join(
        [
            "0\t:invoke\t:write\t1",
            "0\t:info\t:write\t:timed-out",
            "0\t:invoke\t:read\tnil",
            "0\t:ok\t:read\t1",
        ]
    )
    ops = parse_history(text)
    assert ops == [write_op(0, None, 1, 1, None), read_op(0, None, 1, 3, 4)]
    assert check_history(ops).linearizable


def sample_ops() -> list[Op]:
    return [
        write_op(0, None, 1, 0.0, 1.5),
        write_op(1, "a b", 'quote"d\n', 0.5, 0.75),
        read_op(1, "a b", 'quote"d\n', 1.0, 1.25),
        cas_op(2, "k", None, "x", True, 0.2, 3.0),
        write_op(0, "k", -3, 2.0, None),  # unknown; client 0 continues afterwards
        read_op(0, "k", None, 2.5, None),  # unknown read
        cas_op(0, None, 3, 2, False, 4.0, 5.0),
        read_op(3, "k", "x", 5.0, 6.0),
    ]


def test_writer_round_trip() -> None:
    ops = sample_ops()
    text = format_history(ops)
    assert all(line.startswith(PREFIX) for line in text.splitlines())
    parsed = parse_history(text)
    # Same ops in invoke order, times renumbered to line numbers.
    by_call = sorted(ops, key=lambda op: op.call)
    assert [without_times(op) for op in parsed] == [without_times(op) for op in by_call]
    # Overlap is preserved exactly.
    for i, (x, px) in enumerate(zip(by_call, parsed, strict=True)):
        for y, py in zip(by_call[i + 1 :], parsed[i + 1 :], strict=True):
            assert precedes(x, y) == precedes(px, py)
    # Idempotent once times are line numbers.
    assert format_history(parsed) == text
    assert parse_history(format_history(parsed)) == parsed
    assert check_history(parsed).linearizable == check_history(ops).linearizable


def without_times(op: Op) -> tuple[object, ...]:
    return (op.client, op.kind, op.key, op.value, op.output, op.ret is None)


def precedes(a: Op, b: Op) -> bool:
    return a.ret is not None and a.ret < b.call


def test_writer_rejects_overlapping_client_ops() -> None:
    with pytest.raises(ValueError, match="overlapping"):
        format_history([write_op(0, None, 1, 0, 2), write_op(0, None, 2, 1, 3)])
    with pytest.raises(ValueError, match="overlapping"):
        format_history([write_op(0, None, 1, 0, 2), write_op(0, None, 2, 2, 3)])


def test_write_and_parse_file(tmp_path: Path) -> None:
    path = tmp_path / "h.log"
    write_history(path, sample_ops())
    assert parse_file(path) == parse_history(path.read_text(encoding="utf-8"))
    assert check_file(path).linearizable


# --------------------------------------------------------------------------------------
# Property tests: histories derived from a real serial execution are linearizable


@st.composite
def serial_histories(draw: st.DrawFn, sequential: bool = False) -> list[Op]:
    """Ops from a serial execution of the model, each one's interval containing the
    instant it took effect; intervals overlap at random unless ``sequential``.

    Clients are assigned so that each client's ops are sequential (writable as text).
    """
    n = draw(st.integers(min_value=1, max_value=25))
    keys: list[Key] = draw(st.sampled_from([[None], ["a", "b"], ["a", "b", "c"]]))
    values = st.sampled_from([None, 0, 1, 2, "s"])
    store: dict[Key, Value] = {}
    ops: list[Op] = []
    busy_until: list[float] = []  # per client: return time of its last op (inf: unknown)
    for i in range(n):
        point = 10.0 * (i + 1)
        if sequential:
            call, ret = point - 1.0, point + 1.0
        else:
            call = point - draw(st.integers(min_value=0, max_value=40))
            ret = point + draw(st.integers(min_value=0, max_value=40))
        key = draw(st.sampled_from(keys))
        current = store.get(key)
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        unknown = not sequential and kind != "read" and draw(st.integers(0, 5)) == 0
        applied = not unknown or draw(st.booleans())
        op: Op
        if kind == "read":
            op = read_op(0, key, current, call, ret)
        elif kind == "write":
            value = draw(values)
            if applied:
                store[key] = value
            op = write_op(0, key, value, call, None if unknown else ret)
        else:
            old = current if draw(st.booleans()) else draw(values)
            new = draw(values)
            swapped = old == current
            if applied and swapped:
                store[key] = new
            op = cas_op(
                0, key, old, new, None if unknown else swapped, call, None if unknown else ret
            )
        ops.append(op)
    # Give every op a client whose previous op returned before this call.
    for index in sorted(range(len(ops)), key=lambda j: ops[j].call):
        op = ops[index]
        free = [c for c, until in enumerate(busy_until) if until < op.call]
        client = free[0] if free else len(busy_until)
        if client == len(busy_until):
            busy_until.append(0.0)
        busy_until[client] = float("inf") if op.ret is None else op.ret
        ops[index] = replace(op, client=client)
    return draw(st.permutations(ops))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(serial_histories())
def test_serial_executions_are_linearizable(ops: list[Op]) -> None:
    result = check_history(ops)
    assert result.linearizable, result.explanation
    parsed = parse_history(format_history(ops))
    assert check_history(parsed).linearizable


@settings(max_examples=200, deadline=None)
@given(serial_histories(sequential=True), st.data())
def test_corrupted_read_in_sequential_history_is_detected(ops: list[Op], data: Any) -> None:
    reads = [i for i, op in enumerate(ops) if op.kind == "read"]
    if not reads:
        ops = [*ops, read_op(99, ops[0].key, None, 1e6, 1e6 + 1)]
        # The new read's true value is whatever the key holds at the end.
        ops[-1] = replace(ops[-1], output=final_value(ops, ops[0].key))
        reads = [len(ops) - 1]
    target = data.draw(st.sampled_from(reads))
    op = ops[target]
    wrong = data.draw(st.sampled_from([None, 0, 1, 2, "s", "t"]).filter(lambda v: v != op.output))
    corrupted = list(ops)
    corrupted[target] = replace(op, output=wrong)
    assert check_history(ops).linearizable
    result = check_history(corrupted)
    assert not result.linearizable
    assert result.key == op.key
    assert corrupted[target] in result.pending


def final_value(ops: list[Op], key: Key) -> Value:
    """The value of ``key`` after the (sequential, fully known) ``ops`` in call order."""
    value: Value = None
    for op in sorted(ops, key=lambda o: o.call):
        if op.key != key:
            continue
        if op.kind == "write" and not isinstance(op.value, tuple):
            value = op.value
        elif isinstance(op.value, tuple) and op.output:
            value = op.value[1]
    return value


def brute_force_linearizable(ops: list[Op]) -> bool:
    """Reference semantics by enumeration: some order of all known ops plus any subset of
    the unknown ones respects real time (ties: concurrent) and the model, key by key."""
    known = [op for op in ops if op.ret is not None]
    unknown = [op for op in ops if op.ret is None and op.kind != "read"]
    for mask in range(1 << len(unknown)):
        chosen = known + [op for i, op in enumerate(unknown) if mask >> i & 1]
        for order in itertools.permutations(chosen):
            if any(precedes(b, a) for i, a in enumerate(order) for b in order[i + 1 :]):
                continue
            store: dict[Key, Value] = {}
            for op in order:
                current = store.get(op.key)
                if op.kind == "read":
                    if op.output != current:
                        break
                elif not isinstance(op.value, tuple):  # write
                    store[op.key] = op.value
                else:  # cas
                    old, new = op.value
                    if op.output is None:
                        if old == current:
                            store[op.key] = new
                    elif op.output != (old == current):
                        break
                    elif op.output:
                        store[op.key] = new
            else:
                return True
    return False


@st.composite
def random_histories(draw: st.DrawFn) -> list[Op]:
    """Small arbitrary histories (often not linearizable), for comparison with brute force."""
    values = st.sampled_from([None, 1, 2])
    ops: list[Op] = []
    for client in range(draw(st.integers(min_value=1, max_value=6))):
        call = draw(st.integers(min_value=0, max_value=10))
        length = draw(st.integers(min_value=0, max_value=6))
        unknown = draw(st.integers(0, 4)) == 0
        ret = None if unknown else call + length
        key = draw(st.sampled_from([None, None, "k"]))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        if kind == "read":
            ops.append(read_op(client, key, None if unknown else draw(values), call, ret))
        elif kind == "write":
            ops.append(write_op(client, key, draw(values), call, ret))
        else:
            swapped = None if unknown else draw(st.booleans())
            ops.append(cas_op(client, key, draw(values), draw(values), swapped, call, ret))
    return ops


@settings(max_examples=400, deadline=None)
@given(random_histories())
def test_agrees_with_brute_force(ops: list[Op]) -> None:
    result = check_history(ops)
    assert result.linearizable == brute_force_linearizable(ops), result.explanation


# --------------------------------------------------------------------------------------
# Command line


def run_script(*args: str, python: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), *args] if python else [str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, timeout=60)


def test_script_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.log"
    bad = tmp_path / "bad.log"
    write_history(good, [write_op(0, None, 1, 0, 1), read_op(1, None, 1, 2, 3)])
    write_history(bad, [write_op(0, "x", 1, 0, 1), read_op(1, "x", 2, 2, 3)])
    ok = run_script(str(good))
    assert ok.returncode == 0, ok.stderr
    name, verdict, seconds = ok.stdout.strip().split("\t")
    assert (name, verdict) == (str(good), "true")
    float(seconds)
    both = run_script(str(good), str(bad))
    assert both.returncode == 1, both.stderr
    lines = both.stdout.splitlines()
    assert lines[0].startswith(f"{good}\ttrue\t")
    assert lines[1].startswith(f"{bad}\tfalse\t")
    assert any('key "x"' in line for line in lines[2:])
    assert all(line.startswith("    ") for line in lines[2:])
    missing = run_script(str(tmp_path / "nope.log"))
    assert missing.returncode == 2
    assert "\terror\t" in missing.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="shebang execution")
def test_script_runs_directly() -> None:
    tsv = jepsen_dir() / "verdicts.tsv"
    if not tsv.is_file():
        pytest.skip(f"Jepsen etcd histories not found: no {tsv}")
    result = run_script(str(jepsen_dir() / "etcd_002.log"), python=False)
    assert result.returncode == 0, result.stderr
    assert "\ttrue\t" in result.stdout
