"""The simulator's stalled-node fault: the scenario (raftd/testing/sim_stall.py) is clean
with the daemon's wake-up policy, and catches the policy's two mutants; the random fault
menu stalls nodes too and stays safe."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd.core import Message, RawNode, wakeup
from raftd.testing.sim import SimConfig, Simulator
from raftd.testing.sim_stall import StallScenario, run_stall_seed

ROOT = Path(__file__).resolve().parents[2]
SEEDS = int(os.environ.get("RAFTD_SIM_STALL_SEEDS", "400"))


def test_stall_scenario_sample_is_clean() -> None:
    """Through the command line, as users run it."""
    argv = ["--scenario", "stall", "--seeds", str(SEEDS), "--start", "0"]
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sim"), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    print(r.stdout[-3000:], r.stderr[-500:])
    assert r.stdout.strip().splitlines()[-1] == f"{SEEDS} seeds, 0 violations"
    assert r.returncode == 0


def test_stall_scenario_replays_and_varies() -> None:
    """The same seed replays the same run; seeds cover both victims, stalls longer than
    an election timeout (followers) and shorter (leaders), and lead-ins that bring the
    victim's timer to the edge."""
    runs = [StallScenario(s).run() for s in range(40)]
    assert StallScenario(7).run() == runs[7]
    et = StallScenario.ELECTION_TICK
    followers = [r for r in runs if r.victim_role == "follower"]
    leaders = [r for r in runs if r.victim_role == "leader"]
    assert followers and leaders
    assert all(r.stall > et and r.ticks_on_resume == wakeup.MAX_TICKS_AT_ONCE for r in followers)
    assert all(0 < r.stall < et for r in leaders)
    assert {r.nodes for r in runs} == {3, 5}
    assert max(r.lead_in for r in runs) >= et - 2


def _ticks_first(
    node: RawNode,
    inbox: deque[Message],
    elapsed_ticks: int,
    on_error: object = None,
) -> int:
    """Mutant: the elapsed ticks before the queued messages."""
    n = wakeup.ticks_to_step(elapsed_ticks)
    for _ in range(n):
        node.tick()
    while inbox:
        node.step(inbox.popleft())
    return n


@pytest.fixture
def mutant(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    kind: str = request.param
    if kind in ("unbounded", "both"):
        monkeypatch.setattr(wakeup, "MAX_TICKS_AT_ONCE", 1_000_000)
    if kind in ("ticks-first", "both"):
        monkeypatch.setattr(wakeup, "step_wakeup", _ticks_first)
    yield kind


def _violations(seeds: range) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for seed in seeds:
        report = run_stall_seed(seed)
        if report is not None:
            assert f"replay: scripts/sim --scenario stall --seeds 1 --start {seed}" in report
            invariant = report.split("): ", 1)[1].split(":", 1)[0]
            out.setdefault(invariant, []).append(seed)
    return out


# (mutant, invariants it must break on some of the first 200 seeds)
MUTANTS = [
    ("unbounded", {"stalled-follower-campaigned"}),
    ("ticks-first", {"stalled-follower-campaigned", "stalled-leader-deposed"}),
    ("both", {"stalled-follower-campaigned", "stalled-leader-deposed"}),
]


@pytest.mark.parametrize(("mutant", "broken"), MUTANTS, indirect=["mutant"])
def test_stall_scenario_catches_the_policy_mutants(mutant: str, broken: set[str]) -> None:
    found = _violations(range(200))
    print(mutant, {k: len(v) for k, v in found.items()}, "of 200 seeds")
    assert set(found) == broken
    # Only the failures the scenario is about: no safety invariant broke.
    assert all(k.startswith("stalled-") for k in found)


def test_random_menu_stalls_nodes_and_resumes_them_through_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = wakeup.step_wakeup

    def counting(
        node: RawNode, inbox: deque[Message], elapsed: int, on_error: object = None
    ) -> int:
        calls.append(elapsed)
        return real(node, inbox, elapsed)

    monkeypatch.setattr(wakeup, "step_wakeup", counting)
    stalls = 0
    for seed in range(10):
        s = Simulator(SimConfig(seed=seed, nodes=3 + seed % 5, steps=1500))
        s.run()
        stalls += s.stats.get("stalls", 0)
    assert stalls > 0
    assert len(calls) >= stalls // 2  # a crash during a stall ends it without a resume
    assert max(calls) > wakeup.MAX_TICKS_AT_ONCE  # stalls long enough to be bounded
