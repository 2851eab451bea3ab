"""Pieces of the gray harness: the election count, the cgroup CPU quota, the busy loops."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.gray import CpuQuota, _Poller, busy_loops, cgroup_unavailable


class _NoSystem:
    name = "none"


def _counts(seen: list[tuple[str, int]]) -> tuple[int, int]:
    p = _Poller(_NoSystem())  # type: ignore[arg-type]
    p.seen = seen
    return p.counts()


def test_poller_counts_leaders_of_higher_terms() -> None:
    assert _counts([]) == (0, 0)
    assert _counts([("a", 3), ("a", 3), ("a", 3)]) == (0, 0)
    # A node without a leader, then a new leader in term 5, then the same re-elected.
    seen = [("a", 3), ("", 4), ("a", 3), ("b", 5), ("a", 3), ("b", 5), ("b", 7)]
    assert _counts(seen) == (2, 4)
    # A stale answer of an older term does not count as a change.
    assert _counts([("a", 3), ("b", 4), ("a", 3)]) == (1, 1)


def _cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def test_cpu_quota_moves_the_process_and_back() -> None:
    why = cgroup_unavailable()
    if why is not None:
        pytest.skip(why)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        before = _cgroup_of(p.pid)
        q = CpuQuota(p.pid, 5.0)
        try:
            assert q.group.name in _cgroup_of(p.pid)
            if q.version == "v1":
                assert (q.group / "cpu.cfs_quota_us").read_text().strip() == "5000"
            else:
                assert (q.group / "cpu.max").read_text().split()[0] == "5000"
        finally:
            q.close()
        assert _cgroup_of(p.pid) == before
        assert not q.group.exists()
    finally:
        p.kill()
        p.wait()


def test_busy_loops_run_and_are_reaped() -> None:
    with busy_loops(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("R",):
                assert time.monotonic() < deadline, "a busy loop never ran"
                time.sleep(0.01)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
