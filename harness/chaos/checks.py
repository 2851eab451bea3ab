"""The checks a chaos run ends with, as pure functions (unit-tested on fabricated input).

* :func:`check_linearizable`: the history, key by key, against the key-value model of
  :mod:`raftd.testing.linearizability`. The final reads are part of the history, so a
  lost acknowledged write also shows up here as a non-linearizable key.
* :func:`find_lost_writes`: an explicit, checker-independent test of durability. Let ``F``
  be the final value of a key (what every node returns after the run) and ``x`` the op
  that wrote ``F`` (values are unique per write; ``F = None`` is the initial state,
  "written" at time -inf). An acknowledged write ``w`` of another value (an ``ok`` write,
  or a cas that swapped) is *lost* when it was invoked after ``x`` returned
  (``w.call > x.ret``): real-time order then forces ``x`` before ``w`` in every
  linearization, so ``w`` must have been overwritten by a later write, but ``F`` is the
  last value and nothing wrote it after ``w``. (An ``x`` with an unknown outcome may take
  effect at any time after its call: nothing is lost then.) A final value that no op
  wrote is a *phantom*.
* :func:`compare_states`: every node's full key range (stale read, once all report the
  same revision) must be identical: same keys, values, create/mod revisions, versions.
* :func:`unavailability_windows` and :func:`availability`: see :mod:`harness.chaos`
  for the definitions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from harness.chaos.history import OpRecord
from raftd.testing.linearizability import (
    CheckTimeoutError,
    Key,
    Op,
    Value,
    check_history,
    describe_op,
)

__all__ = [
    "KeyVerdict",
    "LostWrites",
    "NemesisAvailability",
    "availability",
    "check_linearizable",
    "compare_states",
    "find_lost_writes",
    "unavailability_windows",
]

UNAVAILABLE_THRESHOLD_S = 1.0
"""A gap between successful completions counts as unavailability above this length."""


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """Verdict for one key: ``linearizable`` is None when the check timed out."""

    key: Key
    ops: int
    linearizable: bool | None
    explanation: str


def check_linearizable(ops: Sequence[Op], *, timeout: float = 600.0) -> list[KeyVerdict]:
    """Check each key's sub-history on its own (so that every bad key is reported, not only
    the first); ``timeout`` bounds the whole check (later keys then get ``None``)."""
    import time

    by_key: dict[Key, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    deadline = time.monotonic() + timeout
    out: list[KeyVerdict] = []
    for key, key_ops in by_key.items():
        left = deadline - time.monotonic()
        if left <= 0:
            out.append(KeyVerdict(key, len(key_ops), None, "not checked: time budget spent"))
            continue
        try:
            res = check_history(key_ops, timeout=left)
        except CheckTimeoutError:
            out.append(KeyVerdict(key, len(key_ops), None, f"check timed out after {timeout}s"))
            continue
        out.append(KeyVerdict(key, len(key_ops), res.linearizable, res.explanation))
    return out


@dataclass(frozen=True, slots=True)
class LostWrites:
    """Result of :func:`find_lost_writes`."""

    lost: list[Op] = field(default_factory=list)
    phantoms: dict[Key, Value] = field(default_factory=dict)
    """Keys whose final value no op wrote."""

    def describe(self) -> list[str]:
        lines = [f"lost: {describe_op(op)}" for op in self.lost]
        lines += [
            f"phantom: key {k!r} holds {v!r}, never written" for k, v in self.phantoms.items()
        ]
        return lines


def _written(op: Op) -> Value:
    if op.kind == "write":
        v = op.value
    else:
        assert isinstance(op.value, tuple)
        v = op.value[1]
    assert not isinstance(v, tuple)
    return v


def find_lost_writes(
    ops: Iterable[Op], final: Mapping[str, Value] | Mapping[Key, Value]
) -> LostWrites:
    """Acknowledged writes missing from the final state (see the module docstring).
    ``final`` maps each key to the value every node returned at the end; keys without a
    final value are not judged."""
    writers: dict[tuple[Key, Value], float] = {}
    acked: list[Op] = []
    for op in ops:
        if op.kind == "read" or (op.kind == "cas" and op.output is False):
            continue
        ret = math.inf if op.ret is None else op.ret
        k = (op.key, _written(op))
        writers[k] = max(writers.get(k, -math.inf), ret)
        if op.ret is not None:
            acked.append(op)
    result = LostWrites()
    for key, value in final.items():
        if value is None:
            x_ret = -math.inf
        elif (key, value) in writers:
            x_ret = writers[(key, value)]
        else:
            result.phantoms[key] = value
            continue
        for op in acked:
            if op.key == key and _written(op) != value and op.call > x_ret:
                result.lost.append(op)
    return result


KvTuple = tuple[bytes, bytes, int, int, int]
"""(key, value, create_revision, mod_revision, version) of one stored key."""


def compare_states(states: Mapping[str, tuple[int, Sequence[KvTuple]]]) -> list[str]:
    """Problems (empty if none) among nodes' ``(revision, kvs)`` full-range reads: every
    node must hold the same revision and exactly the same key-value tuples."""
    if not states:
        return ["no node state to compare"]
    problems: list[str] = []
    names = sorted(states)
    ref_name = names[0]
    ref_rev, ref_kvs = states[ref_name]
    ref = {kv[0]: kv for kv in ref_kvs}
    for name in names[1:]:
        rev, kvs = states[name]
        if rev != ref_rev:
            problems.append(f"{name} is at revision {rev}, {ref_name} at {ref_rev}")
        mine = {kv[0]: kv for kv in kvs}
        for key in sorted(set(ref) | set(mine)):
            a, b = ref.get(key), mine.get(key)
            if a != b:
                problems.append(f"key {key!r}: {ref_name} has {a}, {name} has {b}")
    return problems


def unavailability_windows(
    successes: Iterable[float], start: float, end: float, threshold: float = UNAVAILABLE_THRESHOLD_S
) -> list[tuple[float, float]]:
    """Maximal intervals of ``[start, end]`` without a successful completion that are longer
    than ``threshold``: the gaps between consecutive points of ``start``, the successful
    completion times inside the interval, and ``end``."""
    points = [start, *sorted(t for t in successes if start < t < end), end]
    return [(a, b) for a, b in itertools.pairwise(points) if b - a > threshold]


@dataclass(slots=True)
class NemesisAvailability:
    """Per nemesis kind: ops invoked during its epochs, how many were answered, the
    longest unavailability window starting in them, and the time covered."""

    kind: str
    faults: int = 0
    ops: int = 0
    answered: int = 0
    longest_unavailable_s: float = 0.0
    unavailable_s: float = 0.0
    epoch_s: float = 0.0

    @property
    def fraction(self) -> float:
        return self.answered / self.ops if self.ops else math.nan

    def merge(self, other: NemesisAvailability) -> None:
        self.faults += other.faults
        self.ops += other.ops
        self.answered += other.answered
        self.longest_unavailable_s = max(self.longest_unavailable_s, other.longest_unavailable_s)
        self.unavailable_s += other.unavailable_s
        self.epoch_s += other.epoch_s

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "faults": self.faults,
            "ops": self.ops,
            "answered": self.answered,
            "fraction": None if math.isnan(self.fraction) else round(self.fraction, 4),
            "longest_unavailable_s": round(self.longest_unavailable_s, 3),
            "unavailable_s": round(self.unavailable_s, 3),
            "epoch_s": round(self.epoch_s, 3),
        }


def availability(
    records: Sequence[OpRecord],
    epochs: Sequence[tuple[str, float, float]],
    windows: Sequence[tuple[float, float]],
    load: tuple[float, float] | None = None,
) -> dict[str, NemesisAvailability]:
    """Attribute load-phase ops (by invoke time) and unavailability windows (to the epoch
    they overlap most) to the nemesis epochs ``(kind, start, end)``. Time outside every
    epoch belongs to kind ``none`` (its ``epoch_s`` is computed when ``load``, the load
    phase's ``(start, end)``, is given)."""
    out: dict[str, NemesisAvailability] = {}
    if load is not None:
        rest = (load[1] - load[0]) - sum(b - a for _, a, b in epochs)
        if rest > 0:
            out["none"] = NemesisAvailability("none", epoch_s=rest)

    def kind_at(t: float) -> str:
        for kind, a, b in epochs:
            if a <= t < b:
                return kind
        return "none"

    for kind, a, b in epochs:
        entry = out.setdefault(kind, NemesisAvailability(kind))
        entry.faults += 1
        entry.epoch_s += b - a
    for rec in records:
        if rec.phase != "load":
            continue
        entry = out.setdefault(kind_at(rec.call), NemesisAvailability(kind_at(rec.call)))
        entry.ops += 1
        entry.answered += rec.answered
    for a, b in windows:
        kind = _most_overlap(epochs, a, b)
        entry = out.setdefault(kind, NemesisAvailability(kind))
        entry.longest_unavailable_s = max(entry.longest_unavailable_s, b - a)
        entry.unavailable_s += b - a
    return out


def _most_overlap(epochs: Sequence[tuple[str, float, float]], a: float, b: float) -> str:
    """The kind of the epoch that overlaps ``[a, b]`` most (``none``: time outside all
    epochs), the earliest on ties."""
    best, best_len = "none", -1.0
    covered = 0.0
    for kind, x, y in epochs:
        length = max(0.0, min(b, y) - max(a, x))
        covered += length
        if length > best_len:
            best, best_len = kind, length
    if (b - a) - covered > best_len:
        return "none"
    return best
