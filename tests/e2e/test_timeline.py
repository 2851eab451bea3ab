"""``scripts/timeline``: the segment arithmetic on made-up traces, and one short run
against real daemons whose probes must all install and see the whole write path."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.timeline import read_trace, segments, step_medians
from tests.e2e.test_bench_quick import run_script


def test_segments_start_at_each_request_of_the_origin_and_drop_what_came_before() -> None:
    traces = {
        "origin": [(0.5, "loop pass"), (1.0, "request"), (1.1, "answer"), (2.0, "request")],
        # Another daemon's API requests (another client) do not start segments.
        "leader": [(0.9, "apply"), (1.02, "request"), (1.05, "apply"), (2.2, "apply")],
    }
    segs = segments(traces, "origin")
    assert len(segs) == 2
    first = [(round(dt, 3), role, ev) for dt, role, ev in segs[0]]
    assert first == [
        (0.02, "leader", "request"),
        (0.05, "leader", "apply"),
        (0.1, "origin", "answer"),
    ]
    assert [(round(dt, 3), role, ev) for dt, role, ev in segs[1]] == [(0.2, "leader", "apply")]
    with pytest.raises(ValueError, match="no trace for the origin"):
        segments(traces, "follower")


def test_step_medians_count_occurrences_and_keep_the_common_steps() -> None:
    segs = [
        [(0.001, "leader", "send"), (0.003, "leader", "send"), (0.004, "origin", "answer")],
        [(0.002, "leader", "send"), (0.005, "leader", "send"), (0.006, "origin", "answer")],
        [(0.003, "leader", "send"), (0.004, "origin", "answer"), (0.009, "origin", "rare")],
    ]
    steps = step_medians(segs, min_share=0.5)
    got = [(s.role, s.event, s.occurrence, round(s.median_ms, 3), round(s.share, 2)) for s in steps]
    assert got == [
        ("leader", "send", 0, 2.0, 1.0),
        ("leader", "send", 1, 4.0, 0.67),
        ("origin", "answer", 0, 4.0, 1.0),
    ]
    assert all(s.p90_ms >= s.median_ms for s in steps)


def test_read_trace_names_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "1.trace"
    good.write_text("missing: a.B.c\n1.5000000 request\n1.6000000 send (APP)\n")
    assert read_trace(good) == (["a.B.c"], [(1.5, "request"), (1.6, "send (APP)")])
    bad = tmp_path / "2.trace"
    bad.write_text("1.5 request\n")
    with pytest.raises(ValueError, match="not a timeline trace"):
        read_trace(bad)
    torn = tmp_path / "3.trace"
    torn.write_text("missing: \n1.5\n")
    with pytest.raises(ValueError, match=r"3\.trace:2"):
        read_trace(torn)


@pytest.mark.slow
def test_timeline_through_the_leader_sees_every_step_in_order(tmp_path: Path) -> None:
    lines, _ = run_script(
        "timeline",
        *("--via", "leader", "--total", "60", "--last", "50", "--out", str(tmp_path)),
        timeout=240,
    )
    out = "\n".join(lines)
    rows: dict[str, float] = {}
    for line in lines:
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[2].endswith("%"):
            rows.setdefault(parts[3], float(parts[0]))
    for step in (
        "origin: loop pass",
        "origin: send (APP)",
        "origin: log write handed over",
        "origin: log write",
        "origin: log write ended",
        "follower a: frame received",
        "follower b: frame received",
        "origin: apply",
        "origin: answer",
    ):
        assert step in rows, (step, out)
    assert rows["origin: send (APP)"] < rows["follower a: frame received"]
    assert rows["origin: log write"] < rows["origin: log write ended"]
    assert rows["origin: apply"] < rows["origin: answer"]
    assert len(list(tmp_path.glob("*.trace"))) == 3
