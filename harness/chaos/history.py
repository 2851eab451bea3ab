"""Recording of client operations: a strictly increasing clock, one record per operation
(invoke + completion), and the conversion to the linearizability checker's :class:`Op`.

Outcome types follow Jepsen:

* ``ok``: the operation took effect (a read returned ``output``; a cas swapped).
* ``fail``: it certainly did not take effect. A cas whose comparison failed is ``fail``
  with ``error == ""`` (the cluster answered "the value was not OLD"); any other ``fail``
  carries the definite error (e.g. ``UNAVAILABLE`` with ``indeterminate=false``, or a
  connection refused before the request was sent). A failed read is any read error.
* ``info``: unknown (a write/cas timed out, lost its connection, or got an error flagged
  ``indeterminate``). The client that issued it continues under a new process id.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from raftd.testing.linearizability import Op, cas_op, read_op, write_op

__all__ = [
    "Clock",
    "OpFunction",
    "OpRecord",
    "OpType",
    "Recorder",
    "checker_ops",
    "write_jsonl",
]

OpType: TypeAlias = Literal["ok", "fail", "info"]
OpFunction: TypeAlias = Literal["read", "write", "cas"]
Phase: TypeAlias = Literal["load", "final"]


class Clock:
    """Seconds since creation, strictly increasing across all threads (ties are broken by
    one nanosecond), so that an event recorded after another always has a larger time."""

    def __init__(self) -> None:
        self._t0 = time.monotonic_ns()
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            t = max(time.monotonic_ns() - self._t0, self._last + 1)
            self._last = t
        return t / 1e9


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One client operation with its outcome (see the module docstring).

    ``call``/``end`` are :class:`Clock` times of the invoke and of the completion (for
    ``info`` the moment the client gave up). ``value`` is the written value (write), the
    pair's new value (cas) or None (read); ``old`` is the cas's expected value. ``output``
    is the value read (read ok), the swap result (cas ok/fail) or None.
    """

    process: int
    worker: int
    node: str
    f: OpFunction
    key: str
    value: int | None
    old: int | None
    call: float
    end: float
    type: OpType
    output: int | str | bool | None
    error: str
    phase: Phase

    @property
    def answered(self) -> bool:
        """The cluster gave a definite answer (ok, or a cas comparison that failed)."""
        return self.type == "ok" or (self.f == "cas" and self.type == "fail" and not self.error)

    def to_op(self) -> Op | None:
        """The checker's view, or None for ops that certainly had no effect (and for reads
        without a result, which constrain nothing)."""
        if self.f == "read":
            if self.type != "ok":
                return None
            out = self.output
            if isinstance(out, bool):
                raise ValueError(f"read output {out!r}")
            return read_op(self.process, self.key, out, self.call, self.end)
        if self.f == "write":
            if self.type == "fail":
                return None
            ret = self.end if self.type == "ok" else None
            return write_op(self.process, self.key, self.value, self.call, ret)
        if self.type == "info":
            return cas_op(self.process, self.key, self.old, self.value, None, self.call, None)
        if self.type == "fail" and self.error:
            return None
        return cas_op(
            self.process, self.key, self.old, self.value, self.type == "ok", self.call, self.end
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Recorder:
    """Thread-safe list of :class:`OpRecord` plus the clock they are timed with."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._lock = threading.Lock()
        self._records: list[OpRecord] = []

    def add(self, rec: OpRecord) -> None:
        with self._lock:
            self._records.append(rec)

    def records(self) -> list[OpRecord]:
        with self._lock:
            return list(self._records)


def checker_ops(records: Iterable[OpRecord]) -> list[Op]:
    """The checker ops of ``records``, in invoke order."""
    ops = [op for op in (r.to_op() for r in records) if op is not None]
    ops.sort(key=lambda op: op.call)
    return ops


def write_jsonl(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """One JSON object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":"), default=str) + "\n")
