"""One chaos run: start the cluster, run clients and nemesis, heal, final reads, checks."""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.chaos.checks import (
    KeyVerdict,
    KvTuple,
    NemesisAvailability,
    availability,
    check_linearizable,
    compare_states,
    find_lost_writes,
    unavailability_windows,
)
from harness.chaos.cluster import Api, ChaosCluster
from harness.chaos.history import Recorder, checker_ops, write_jsonl
from harness.chaos.nemesis import KindPicker, Nemesis, NemesisTiming, epochs_of
from harness.chaos.workload import Target, Workload, final_read
from raftd.client import RaftdError
from raftd.client import _proto as P
from raftd.testing.linearizability import Value, write_history

__all__ = ["RunConfig", "RunResult", "run_once"]

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RunConfig:
    nodes: int = 5
    clients: int = 10
    keys: int = 5
    duration: float = 60.0
    nemeses: tuple[str, ...] = ()
    keep: bool = False
    key_file: Path | None = None
    preset: str = "chaos"
    timing: NemesisTiming = field(default_factory=NemesisTiming)
    start_timeout: float = 90.0
    recovery_timeout: float = 90.0
    check_timeout: float = 600.0


@dataclass(slots=True)
class RunResult:
    index: int
    seed: int
    run_dir: Path
    ops: int = 0
    answered: int = 0
    infos: int = 0
    anomalies: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """Checks that reached no verdict (checker time budget)."""
    harness_errors: list[str] = field(default_factory=list)
    unavailable_s: float = 0.0
    windows: list[tuple[float, float]] = field(default_factory=list)
    availability: dict[str, NemesisAvailability] = field(default_factory=dict)
    verdicts: list[KeyVerdict] = field(default_factory=list)
    snapshots_installed: int = 0
    snapshots_taken: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.lost

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "seed": self.seed,
            "run_dir": str(self.run_dir),
            "ok": self.ok,
            "ops": self.ops,
            "answered": self.answered,
            "infos": self.infos,
            "anomalies": self.anomalies,
            "lost_writes": self.lost,
            "unknown": self.unknown,
            "harness_errors": self.harness_errors,
            "unavailable_s": round(self.unavailable_s, 3),
            "longest_unavailable_s": round(max((b - a for a, b in self.windows), default=0.0), 3),
            "windows": [[round(a, 3), round(b, 3)] for a, b in self.windows],
            "availability": {k: v.as_dict() for k, v in sorted(self.availability.items())},
            "keys": [
                {
                    "key": v.key,
                    "ops": v.ops,
                    "linearizable": v.linearizable,
                    "explanation": v.explanation,
                }
                for v in self.verdicts
            ],
            "snapshots_installed": self.snapshots_installed,
            "snapshots_taken": self.snapshots_taken,
            "elapsed_s": round(self.elapsed_s, 1),
        }


_SNAP_IN = re.compile(rb"snapshot index=\d+ term=\d+ \(\d+ bytes\) from \S+ accepted")
_SNAP_TAKEN = re.compile(rb": snapshot at index \d+")


def run_once(
    cfg: RunConfig,
    index: int,
    seed: int,
    run_dir: Path,
    picker: KindPicker,
    log: Log = print,
) -> RunResult:
    """Run ``index`` with ``seed`` in ``run_dir`` (created); see :mod:`harness.chaos`."""
    t_begin = time.monotonic()
    run_dir.mkdir(parents=True, exist_ok=True)
    res = RunResult(index=index, seed=seed, run_dir=run_dir)
    recorder = Recorder()
    clock = recorder.clock
    rng = random.Random(f"{seed}/nemesis")
    nemesis: Nemesis | None = None
    final: dict[str, Value] | None = None
    load_start = load_end = 0.0
    with ChaosCluster(
        cfg.nodes,
        run_dir,
        preset=cfg.preset,
        key_file=cfg.key_file,
        slow_disk="slow-disk" in cfg.nemeses,
    ) as cluster:
        try:
            lead, _ = cluster.wait_stable(cfg.start_timeout)
        except TimeoutError as exc:
            res.harness_errors.append(f"cluster did not start: {exc}")
            res.anomalies.append(f"startup: {exc}")
            _finish(res, cfg, run_dir, recorder, [], t_begin, log)
            return res
        log(f"  cluster up: {cfg.nodes} nodes, leader {lead.name} ({clock.now():.1f}s)")
        targets = [Target(n.name, n.socket) for n in cluster.nodes]
        workload = Workload(targets, recorder, clients=cfg.clients, keys=cfg.keys, seed=seed)
        nemesis = Nemesis(cluster, picker, rng, clock, timing=cfg.timing, log=log)
        load_start = clock.now()
        try:
            workload.start()
            if cfg.nemeses:
                nemesis.start()
            deadline = time.monotonic() + cfg.duration
            while time.monotonic() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        finally:  # also on Ctrl-C: stop the threads before the cluster goes away
            nemesis.request_stop()
            workload.request_stop()
            nemesis.stop()
            workload.stop()
        load_end = clock.now()
        res.harness_errors += workload.errors + nemesis.errors
        log(f"  load done ({load_end:.1f}s): healing")

        # Heal, restart every node, wait for recovery.
        cluster.heal()
        _restart_all(cluster)
        try:
            done = _recover(cluster, cfg.recovery_timeout)
            if done:
                log(f"  membership restored: {', '.join(done)}")
            lead, _ = cluster.wait_stable(cfg.recovery_timeout)
            log(f"  recovered: leader {lead.name} ({clock.now():.1f}s)")
        except TimeoutError as exc:
            res.anomalies.append(f"no recovery after healing: {exc}")
            log(f"  NO RECOVERY: {exc}")

        # Final linearizable reads of every key through every node (part of the history).
        final = _final_reads(cluster, recorder, workload, cfg, res)
        # Convergence: every node's full state machine.
        problems = _converge(cluster, cfg.recovery_timeout)
        for p in problems:
            res.anomalies.append(f"divergence: {p}")
    # (cluster torn down)
    _finish(
        res,
        cfg,
        run_dir,
        recorder,
        nemesis.events if nemesis else [],
        t_begin,
        log,
        final=final,
        load=(load_start, load_end),
    )
    return res


def _restart_all(cluster: ChaosCluster) -> None:
    """Every daemon restarted (graceful SIGTERM, kill -9 after 10 s)."""
    for n in cluster.nodes:
        n.note("final restart")
        n.send_term()
    for n in cluster.nodes:
        n.terminate(10.0, send=False)
    for n in cluster.nodes:
        n.start()


def _recover(cluster: ChaosCluster, timeout: float) -> list[str]:
    """Wait for a leader, then make every node a voter again."""
    deadline = time.monotonic() + timeout
    while cluster.leader() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader within {timeout:.0f}s after the final restart")
        time.sleep(0.2)
    return cluster.restore_membership(max(1.0, deadline - time.monotonic()))


def _final_reads(
    cluster: ChaosCluster, recorder: Recorder, workload: Workload, cfg: RunConfig, res: RunResult
) -> dict[str, Value]:
    final: dict[str, Value] = {}
    deadline = time.monotonic() + cfg.recovery_timeout
    for node in cluster.nodes:
        api = Api(node.socket, timeout=2.0, hard_timeout=3.0)
        try:
            for key in workload.keys:
                while True:
                    rec = final_read(api, recorder, workload.new_process(), node.name, key)
                    recorder.add(rec)
                    if rec.type == "ok":
                        out = rec.output
                        assert not isinstance(out, bool)
                        final[key] = out
                        break
                    if time.monotonic() > deadline:
                        res.anomalies.append(
                            f"final read of {key} on {node.name} failed: {rec.error}"
                        )
                        break
                    time.sleep(0.2)
        finally:
            api.close()
    return final


def _converge(cluster: ChaosCluster, timeout: float) -> list[str]:
    """Wait until every node reports the same revision, then compare full stale ranges."""
    deadline = time.monotonic() + timeout
    last: list[str] = ["no attempt"]
    while time.monotonic() < deadline:
        sts = cluster.statuses(timeout=2.0)
        revs = {s.revision for s in sts.values()}
        if len(sts) != len(cluster.nodes) or len(revs) != 1:
            last = [f"revisions {sorted((k, s.revision) for k, s in sts.items())}"]
            time.sleep(0.3)
            continue
        states: dict[str, tuple[int, list[KvTuple]]] = {}
        try:
            for n in cluster.nodes:
                req = P.req_range(
                    b"\x00", b"\x00", limit=0, keys_only=False, stale=True, min_revision=0
                )
                r = n.call(req, P.parse_range, 5.0)
                states[n.name] = (
                    r.revision,
                    [
                        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
                        for kv in r.kvs
                    ],
                )
        except RaftdError as exc:
            last = [f"range read failed: {exc}"]
            time.sleep(0.3)
            continue
        if len({rev for rev, _ in states.values()}) != 1:
            last = [f"revisions moved: {sorted((k, v[0]) for k, v in states.items())}"]
            continue
        return compare_states(states)
    return [f"nodes did not converge within {timeout:.0f}s: {'; '.join(last)}"]


def _log_counts(run_dir: Path) -> tuple[int, int]:
    installed = taken = 0
    for p in sorted((run_dir / "logs").glob("*.log")):
        data = p.read_bytes()
        installed += len(_SNAP_IN.findall(data))
        taken += len(_SNAP_TAKEN.findall(data))
    return installed, taken


def _finish(
    res: RunResult,
    cfg: RunConfig,
    run_dir: Path,
    recorder: Recorder,
    events: Sequence[dict[str, object]],
    t_begin: float,
    log: Log,
    *,
    final: dict[str, Value] | None = None,
    load: tuple[float, float] = (0.0, 0.0),
) -> None:
    records = recorder.records()
    ops = checker_ops(records)
    write_history(run_dir / "history.txt", ops)
    write_jsonl(run_dir / "ops.jsonl", [r.as_dict() for r in records])
    write_jsonl(run_dir / "nemesis.jsonl", list(events))
    load_recs = [r for r in records if r.phase == "load"]
    res.ops = len(load_recs)
    res.answered = sum(r.answered for r in load_recs)
    res.infos = sum(r.type == "info" for r in load_recs)
    start, end = load
    if end > start:
        res.windows = unavailability_windows((r.end for r in load_recs if r.answered), start, end)
        res.unavailable_s = sum(b - a for a, b in res.windows)
        res.availability = availability(
            load_recs, epochs_of(events, start, end), res.windows, (start, end)
        )
    res.snapshots_installed, res.snapshots_taken = _log_counts(run_dir)
    t0 = time.monotonic()
    res.verdicts = check_linearizable(ops, timeout=cfg.check_timeout)
    for v in res.verdicts:
        if v.linearizable is False:
            res.anomalies.append(f"key {v.key}: not linearizable: {v.explanation}")
        elif v.linearizable is None:
            res.unknown.append(f"key {v.key}: {v.explanation}")
    if final is not None:
        lw = find_lost_writes(ops, final)
        res.lost += [line for line in lw.describe() if line.startswith("lost")]
        res.anomalies += [line for line in lw.describe() if line.startswith("phantom")]
    log(f"  checked {len(ops)} ops in {time.monotonic() - t0:.1f}s")
    shutil.rmtree(run_dir / "sock", ignore_errors=True)
    if not cfg.keep:
        shutil.rmtree(run_dir / "data", ignore_errors=True)
    res.elapsed_s = time.monotonic() - t_begin
    (run_dir / "result.json").write_text(json.dumps(res.as_dict(), indent=2) + "\n")
