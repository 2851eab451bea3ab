"""The process runner's ``process_age``: formation counts a fresh node's first bootstrap
window from the process start, so the age must be the real one."""

from __future__ import annotations

import subprocess
import sys
import time

from raftd.app.runner import process_age


def test_process_age_counts_from_the_process_start() -> None:
    code = (
        "import time; time.sleep(0.3); "
        "from raftd.app.runner import process_age; print(process_age())"
    )
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    wall = time.monotonic() - t0
    age = float(out.stdout)
    # /proc counts in clock ticks (10 ms): allow one either way.
    assert 0.3 - 0.01 <= age <= wall + 0.01, (age, wall)


def test_this_process_is_older_than_zero() -> None:
    assert process_age() > 0.0
