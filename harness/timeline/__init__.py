"""Where one request's time goes, step by step, across the three daemons
(``scripts/timeline``).

The daemons run with the probes of ``harness/timeline/hook`` (see its module doc), which
stamp each step of the write path with the machine's monotonic clock. One client sends
requests one at a time to one daemon (the *origin*); every request the origin receives
starts a segment, which ends at the next one. :func:`step_medians` lines the segments up
and gives, for each step that happens in most of them (a role, an event, and which
occurrence of that event in the segment), the median time from the request's arrival.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Step", "read_trace", "segments", "step_medians"]

#: The event that starts a segment, at the origin.
REQUEST = "request"


@dataclass(frozen=True)
class Step:
    """One step of the path: ``role``'s ``occurrence``-th ``event`` (from 0) after the
    request's arrival, at ``median_ms`` (and ``p90_ms``), seen in ``share`` of the
    segments."""

    role: str
    event: str
    occurrence: int
    median_ms: float
    p90_ms: float
    share: float


def read_trace(path: Path) -> tuple[list[str], list[tuple[float, str]]]:
    """The probes missing in that daemon, and its records in order. Raises ValueError
    on a malformed file."""
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("missing:"):
        raise ValueError(f"{path}: not a timeline trace (no 'missing:' header)")
    missing = [m for m in lines[0][len("missing:") :].strip().split(",") if m]
    records = []
    for n, line in enumerate(lines[1:], start=2):
        t, sep, event = line.partition(" ")
        if not sep:
            raise ValueError(f"{path}:{n}: expected 'seconds event', got {line!r}")
        records.append((float(t), event))
    return missing, records


def segments(
    traces: Mapping[str, Sequence[tuple[float, str]]], origin: str
) -> list[list[tuple[float, str, str]]]:
    """Merge the roles' records by time and cut them at each ``REQUEST`` of ``origin``:
    per segment, ``(seconds since that request, role, event)`` in order. Records before
    the first request are dropped."""
    if origin not in traces:
        raise ValueError(f"no trace for the origin {origin!r}")
    merged = sorted((t, role, event) for role, recs in traces.items() for t, event in recs)
    out: list[list[tuple[float, str, str]]] = []
    start = 0.0
    for t, role, event in merged:
        if role == origin and event == REQUEST:
            out.append([])
            start = t
        elif out:
            out[-1].append((t - start, role, event))
    return out


def step_medians(
    segs: Iterable[Sequence[tuple[float, str, str]]], *, min_share: float = 0.5
) -> list[Step]:
    """The steps seen in at least ``min_share`` of ``segs``, by median time."""
    offsets: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    n = 0
    for seg in segs:
        n += 1
        seen: Counter[tuple[str, str]] = Counter()
        for dt, role, event in seg:
            k = seen[(role, event)]
            seen[(role, event)] += 1
            offsets[(role, event, k)].append(dt)
    steps = []
    for (role, event, k), vals in offsets.items():
        share = len(vals) / n
        if share < min_share:
            continue
        vals.sort()
        p90 = vals[min(len(vals) - 1, int(0.9 * len(vals)))]
        steps.append(Step(role, event, k, 1000 * statistics.median(vals), 1000 * p90, share))
    steps.sort(key=lambda s: (s.median_ms, s.role, s.event))
    return steps
