"""The client workload: ``clients`` threads issuing reads, writes and compare-and-sets on a
few keys, each op to a random node's API socket, every op recorded (see
:mod:`harness.chaos.history`).

* Values are integers unique per write (a shared counter), stored as decimal strings.
* Mix: 40% linearizable reads (``get``), 30% writes (``put``), 30% cas (``cas`` with
  ``value=OLD``, or ``absent`` when OLD is nil). OLD is, 3 times in 4, the last value any
  client saw for the key (so many cas succeed), else a random recent one.
* Every request carries a 2 s daemon deadline; the harness waits 3 s at most.
* After an ``info`` outcome the client continues as a new process (Jepsen semantics). After
  any failure it backs off 50-150 ms, so a dead node does not turn into a busy loop.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.chaos.cluster import Api
from harness.chaos.history import OpFunction, OpRecord, OpType, Recorder
from raftd.client import CasResult, FailedPrecondition, KeyValue, RaftdError
from raftd.client import _proto as P

__all__ = ["Workload", "decode_value", "final_read"]


def decode_value(kv: KeyValue | None) -> int | str | None:
    """The register value of a stored key (int when it is one)."""
    if kv is None:
        return None
    text = kv.value.decode("utf-8", errors="backslashreplace")
    try:
        return int(text)
    except ValueError:
        return text


@dataclass(frozen=True, slots=True)
class Target:
    """A node as the workload sees it: a name and an API socket."""

    name: str
    socket: Path


class Workload:
    """``clients`` worker threads (see the module docstring). :meth:`start`, then
    :meth:`stop` (bounded: each worker finishes its current op, at most ~3 s)."""

    def __init__(
        self,
        targets: Sequence[Target],
        recorder: Recorder,
        *,
        clients: int,
        keys: int,
        seed: int,
        timeout: float = 2.0,
        hard_timeout: float = 3.0,
    ) -> None:
        self.targets = list(targets)
        self.recorder = recorder
        self.clients = clients
        self.keys = [f"k{i}" for i in range(keys)]
        self.seed = seed
        self.timeout = timeout
        self.hard_timeout = hard_timeout
        self._values = itertools.count(1)
        self._pids = itertools.count(clients)
        self._lock = threading.Lock()
        self._seen: dict[str, list[int | str | None]] = {k: [None] for k in self.keys}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        """Unexpected exceptions in workers (harness bugs), for the report."""

    # -- shared state ------------------------------------------------------------------
    def _next_value(self) -> int:
        with self._lock:
            return next(self._values)

    def new_process(self) -> int:
        with self._lock:
            return next(self._pids)

    def _saw(self, key: str, value: int | str | None) -> None:
        with self._lock:
            seen = self._seen[key]
            if seen[-1] != value:
                seen.append(value)
                del seen[:-8]

    def _pick_old(self, rng: random.Random, key: str) -> int | str | None:
        with self._lock:
            seen = list(self._seen[key])
        return seen[-1] if rng.random() < 0.75 else rng.choice(seen)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for w in range(self.clients):
            th = threading.Thread(target=self._worker, args=(w,), name=f"chaos-client-{w}")
            th.daemon = True
            self._threads.append(th)
            th.start()

    def request_stop(self) -> None:
        """Ask the workers to stop after their current op (see :meth:`stop`)."""
        self._stop.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
        alive = [th.name for th in self._threads if th.is_alive()]
        if alive:
            self.errors.append(f"workers still running after {timeout:.0f}s: {alive}")

    # -- the worker --------------------------------------------------------------------
    def _worker(self, w: int) -> None:
        rng = random.Random(f"{self.seed}/client/{w}")
        apis = {
            t.name: Api(t.socket, timeout=self.timeout, hard_timeout=self.hard_timeout)
            for t in self.targets
        }
        process = w
        try:
            while not self._stop.is_set():
                target = rng.choice(self.targets)
                key = rng.choice(self.keys)
                r = rng.random()
                if r < 0.4:
                    rec = self._read(apis[target.name], process, w, target.name, key)
                elif r < 0.7:
                    rec = self._write(apis[target.name], process, w, target.name, key)
                else:
                    old = self._pick_old(rng, key)
                    rec = self._cas(apis[target.name], process, w, target.name, key, old)
                self.recorder.add(rec)
                if rec.type == "info":
                    process = self.new_process()
                if not rec.answered:
                    self._stop.wait(rng.uniform(0.05, 0.15))
        except Exception as exc:  # a harness bug: report it, do not hide it
            self.errors.append(f"client {w}: {exc!r}")
            raise
        finally:
            for api in apis.values():
                api.close()

    def _record(
        self,
        process: int,
        w: int,
        node: str,
        f: OpFunction,
        key: str,
        value: int | None,
        old: int | str | None,
        call: float,
        typ: OpType,
        output: int | str | bool | None,
        error: str,
    ) -> OpRecord:
        old_v = old if not isinstance(old, str) else None
        return OpRecord(
            process=process,
            worker=w,
            node=node,
            f=f,
            key=key,
            value=value,
            old=old_v,
            call=call,
            end=self.recorder.clock.now(),
            type=typ,
            output=output,
            error=error,
            phase="load",
        )

    def _read(self, api: Api, process: int, w: int, node: str, key: str) -> OpRecord:
        req = P.req_get(key, stale=False, min_revision=0)
        call = self.recorder.clock.now()
        try:
            kv = api.call(req, P.parse_get)
        except (RaftdError, OSError) as exc:
            return self._record(
                process, w, node, "read", key, None, None, call, "fail", None, _err(exc)
            )
        value = decode_value(kv)
        rec = self._record(process, w, node, "read", key, None, None, call, "ok", value, "")
        self._saw(key, value)
        return rec

    def _write(self, api: Api, process: int, w: int, node: str, key: str) -> OpRecord:
        value = self._next_value()
        req = P.req_put(key, str(value), lease=0, prev_kv=False)
        call = self.recorder.clock.now()
        try:
            api.call(req, P.parse_put)
        except (RaftdError, OSError) as exc:
            typ: OpType = "info" if _indeterminate(exc) else "fail"
            return self._record(
                process, w, node, "write", key, value, None, call, typ, None, _err(exc)
            )
        rec = self._record(process, w, node, "write", key, value, None, call, "ok", None, "")
        self._saw(key, value)
        return rec

    def _cas(
        self, api: Api, process: int, w: int, node: str, key: str, old: int | str | None
    ) -> OpRecord:
        if isinstance(old, str):
            old = None  # never happens with this workload's values
        new = self._next_value()
        req = P.req_cas(
            key,
            str(new),
            value=None if old is None else str(old),
            mod_revision=None,
            absent=old is None,
        )
        call = self.recorder.clock.now()
        try:
            res: CasResult = api.call(req, P.parse_cas)
        except FailedPrecondition as exc:
            typ: OpType = "info" if exc.indeterminate else "fail"
            return self._record(process, w, node, "cas", key, new, old, call, typ, None, _err(exc))
        except (RaftdError, OSError) as exc:
            typ = "info" if _indeterminate(exc) else "fail"
            return self._record(process, w, node, "cas", key, new, old, call, typ, None, _err(exc))
        if res.succeeded:
            rec = self._record(process, w, node, "cas", key, new, old, call, "ok", True, "")
            self._saw(key, new)
        else:
            rec = self._record(process, w, node, "cas", key, new, old, call, "fail", False, "")
            self._saw(key, decode_value(res.current))
        return rec


def _indeterminate(exc: BaseException) -> bool:
    """Whether a write that raised ``exc`` may have been applied. Anything but a
    :class:`RaftdError` flagged definite counts as indeterminate (to be safe)."""
    if isinstance(exc, RaftdError):
        return exc.indeterminate
    return True


def _err(exc: BaseException) -> str:
    if isinstance(exc, RaftdError):
        tag = " (indeterminate)" if exc.indeterminate else ""
        return f"{exc.code}: {exc.message}{tag}"
    return repr(exc)


def final_read(api: Api, recorder: Recorder, process: int, node: str, key: str) -> OpRecord:
    """One linearizable read for the end of the run (phase ``final``)."""
    req = P.req_get(key, stale=False, min_revision=0)
    call = recorder.clock.now()
    outcome: OpType = "ok"
    value: int | str | None = None
    error = ""
    try:
        value = decode_value(api.call(req, P.parse_get))
    except (RaftdError, OSError) as exc:
        outcome, error = "fail", _err(exc)
    return OpRecord(
        process,
        -1,
        node,
        "read",
        key,
        None,
        None,
        call,
        recorder.clock.now(),
        outcome,
        value,
        error,
        "final",
    )
