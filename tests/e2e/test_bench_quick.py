"""``scripts/bench-all --quick`` and ``scripts/bench`` run against real daemons and print
results in the anchors' format. Only the output format is checked: timings on a shared
CI machine mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from harness.bench.load import REQUIRED_KEYS, result
from harness.bench.report import Reporter, summarize

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args: str, timeout: float) -> tuple[list[str], list[dict[str, Any]]]:
    p = subprocess.run(
        [str(ROOT / "scripts" / args[0]), *args[1:]],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    lines = p.stdout.splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    return lines, docs


def check_keys(doc: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    assert not missing, (missing, doc)
    assert doc["system"] == "raftd"
    assert isinstance(doc["op"], str)
    for k in ("clients", "ok", "errs"):
        assert isinstance(doc[k], int), (k, doc)
    for k in ("ops_per_s", "p50_ms", "p99_ms"):
        assert doc[k] is None or isinstance(doc[k], int | float), (k, doc)


@pytest.mark.slow
def test_bench_all_quick_output_format() -> None:
    lines, docs = run_script("bench-all", "--quick", timeout=480)
    assert lines[-1].startswith("{"), "the last line must be the summary JSON"
    for d in docs:
        check_keys(d)
    *results, summary = docs
    seen = {(d["op"], d["clients"], d.get("encrypted")) for d in results}
    for want in (
        ("idle-rss", 0, None),
        ("put", 1, None),
        ("put", 64, None),
        ("put", 256, None),
        ("get-l", 64, None),
        ("failover", 1, None),
        ("put", 64, False),
        ("put", 64, True),
    ):
        assert want in seen, (want, seen)
    assert any(d["op"] == "catchup" for d in results)
    # put@1 through the first daemon, then through the leader and a follower each.
    assert sum(d["op"] == "put" and d["clients"] == 1 for d in results) == 3
    by_op = {d["op"]: d for d in results}
    assert by_op["idle-rss"]["idle_rss_kb"] > 0
    assert by_op["failover"]["ok"] + by_op["failover"]["errs"] == 2
    assert len(by_op["failover"]["trials_s"]) == by_op["failover"]["ok"]
    assert by_op["catchup"]["catchup_s"] > 0
    rtt = by_op["libp2p-rtt"]
    assert rtt["ok"] == 200 and 0 < rtt["p50_ms"] <= rtt["p99_ms"], rtt
    assert summary["op"] == "summary" and summary["errs"] == 0, summary["failed"]
    assert set(summary["ratios"]) >= {
        "put64_vs_etcd",
        "put256_vs_pysyncobj",
        "put1_p50_vs_etcd",
        "put1_leader_p50_vs_etcd",
        "put1_follower_p50_vs_etcd",
        "failover_p50_s",
        "catchup_s",
        "idle_rss_mb",
        "getl64_vs_etcd",
        "keyed_vs_plain_put64",
    }
    assert summary["ratios"]["put64_vs_etcd"] is None  # no anchors in --quick
    assert summary["ratios"]["libp2p_rtt_p50_ms"] == rtt["p50_ms"]
    assert summary["ratios"]["put1_leader_floor_ms"] is None  # it needs the raw fsync
    header = next(i for i, line in enumerate(lines) if line.startswith("measurement "))
    assert any("idle RSS" in line for line in lines[header:])


@pytest.mark.slow
def test_bench_single_op_still_works() -> None:
    lines, docs = run_script(
        *("bench", "put", "--clients", "4", "--conns", "2", "--total", "200"),
        *("--duration", "5", "--key-space", "50"),
        timeout=120,
    )
    assert lines[-1].startswith("{") and len(docs) == 1
    check_keys(docs[0])
    assert docs[0]["op"] == "put" and docs[0]["clients"] == 4 and docs[0]["ok"] > 0
    assert any(line.startswith("op=put clients=4 conns=2 ") for line in lines)
    # CPU per operation of every process, read from /proc over the measured window.
    doc = docs[0]
    roles = [k for k in doc if k.startswith("cpu_us_per_op_")]
    assert {"cpu_us_per_op_leader", "cpu_us_per_op_client", "cpu_us_per_op_daemons"} <= set(
        roles
    ), roles
    assert sum(k.startswith("cpu_us_per_op_follower") for k in roles) == 2, roles
    assert doc["cpu_us_per_op_leader"] > 0 and doc["cpu_us_per_op_client"] > 0
    assert doc["cpu_us_per_op_daemons"] >= doc["cpu_us_per_op_leader"]
    assert any(line.startswith("cpu us/op: leader=") for line in lines)
    # Raft frames and bytes each daemon sent per operation, from its /metrics.
    assert doc["frames_per_op_leader"] > 0 and doc["bytes_per_op_leader"] > 0
    assert any(line.startswith("Raft frames/bytes sent per op: ") for line in lines)


def test_profile_table_parses_pyspy_raw_stacks() -> None:
    from harness.profile import parse_collapsed

    raw = (
        "thread (0x1);run (trio/_core/_run.py:10);loop (raftd/runtime/group.py:5) 30\n"
        "thread (0x1);run (trio/_core/_run.py:10);send (raftd/transport/x.py:7) 10\n"
        "garbage line\n"
    )
    table = parse_collapsed(raw)
    assert table.samples == 40
    assert table.top("own", 1) == [("loop (raftd/runtime/group.py)", 75.0)]
    assert dict(table.top("total", 3))["run (trio/_core/_run.py)"] == 100.0


def test_bench_idle_wakeup_prints_the_cost_of_each_kind() -> None:
    lines, docs = run_script(
        "bench-idle-wakeup", "--seconds", "0.5", "--rounds", "1", "--rate", "40", timeout=60
    )
    assert lines[-1].startswith("{") and len(docs) == 1
    doc = docs[0]
    assert doc["rate"] == 40.0
    assert set(doc["median"]) == {"epoll", "trio"}
    for name, samples in doc["us_per_wakeup"].items():
        assert len(samples) == 1 and samples[0] > 0, (name, samples)
    assert any(line.startswith("trio ") and "µs CPU each" in line for line in lines)


@pytest.mark.parametrize(("spread", "want"), [(False, "aaaa"), (True, "abca")])
def test_a_spread_worker_sends_each_request_on_the_next_connection(spread: bool, want: str) -> None:
    import trio

    from harness.bench.load import BenchResult, _timed_calls

    used: list[str] = []

    async def call() -> None:
        await trio.lowlevel.checkpoint()

    def next_call(c: Any) -> Any:
        if len(used) == 4:
            return None
        used.append(c)
        return call()

    res = BenchResult("put", 1, 3, endpoints=3)
    trio.run(lambda: _timed_calls(res, cast(Any, ["a", "b", "c"]), 1, next_call, spread=spread))
    assert "".join(used) == want
    assert len(res.latencies) == 4


def test_put1_floor_is_the_round_trips_of_its_path_plus_one_fsync() -> None:
    rep = Reporter(None)
    rep.add("raftd libp2p rtt", result("libp2p-rtt", ok=10, p50_ms=0.25, p99_ms=0.3))
    rep.add("raw fsync", result("fsync", system="raw", p50_ms=0.1))
    rep.add("raftd put@1 via leader", result("put", p50_ms=1.4))
    rep.add("raftd put@1 via follower", result("put", p50_ms=2.4))
    ratios = summarize(rep)
    assert ratios["libp2p_rtt_p50_ms"] == 0.25
    assert ratios["put1_leader_floor_ms"] == pytest.approx(0.35)
    assert ratios["put1_follower_floor_ms"] == pytest.approx(0.6)
