"""How long this process was held off the CPU: a slow disk and a starved CPU look alike
from inside (a write that takes long), and they call for different answers.

Two Linux counters, read only when a decision needs them (never per operation):

- the cgroup's CPU throttling (``throttled_time`` in ``cpu.stat``, cgroup v1 ``cpu``
  controller or v2; ns): a CPU quota (docker ``--cpus``, a Kubernetes limit) used up;
- the run-queue wait of the process's main thread (``/proc/self/schedstat``, second
  field, ns): other processes on the same cores.

Where a counter cannot be read (not Linux, no cgroup mounted), it counts as zero: the
caller then decides on its other signals alone.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["CpuStarvation"]


def _cgroup_cpu_stat() -> Path | None:
    """The ``cpu.stat`` of this process's CPU cgroup, if one is mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.lstrip("/")
        if "cpu" in controllers.split(","):  # cgroup v1
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                p = Path("/sys/fs/cgroup") / mount / rel / "cpu.stat"
                if p.exists():
                    return p
        if controllers == "":  # cgroup v2 (unified)
            for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
                p = base / rel / "cpu.stat"
                if p.exists():
                    return p
    return None


class CpuStarvation:
    """See the module docstring. :meth:`held_off_s` is cumulative; callers compare two
    readings (the process may have been moved to another cgroup in between: each
    reading looks the cgroup up again)."""

    def held_off_s(self) -> float:
        """Seconds this process's cgroup was throttled plus seconds its main thread
        waited for a CPU, since some fixed point in the past."""
        total_ns = 0
        cpu_stat = _cgroup_cpu_stat()
        if cpu_stat is not None:
            with contextlib.suppress(OSError, ValueError):
                for line in cpu_stat.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    # v1: throttled_time (ns); v2: throttled_usec (µs).
                    if key == "throttled_time":
                        total_ns += int(value)
                    elif key == "throttled_usec":
                        total_ns += int(value) * 1000
        with contextlib.suppress(OSError, ValueError, IndexError):
            total_ns += int(Path("/proc/self/schedstat").read_text().split()[1])
        return total_ns / 1e9
