"""CpuStarvation reads how long this process was held off the CPU: the run-queue wait of
its main thread grows while more busy processes than cores compete with it."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from raftd.runtime.starvation import CpuStarvation


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="needs Linux schedstat")
def test_held_off_grows_when_more_busy_processes_than_cores_compete() -> None:
    s = CpuStarvation()
    quiet0 = s.held_off_s()
    assert quiet0 >= 0.0
    cores = os.cpu_count() or 1
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_spin, args=(1.5,)) for _ in range(2 * cores)]
    for p in procs:
        p.start()
    try:
        before = s.held_off_s()
        _spin(1.0)  # the main thread competes too: it waits in the run queue
        held = s.held_off_s() - before
    finally:
        for p in procs:
            p.join(10)
    # Three runnable processes per core: the main thread waits for most of a second.
    assert held > 0.1, held
    assert s.held_off_s() >= before + held
