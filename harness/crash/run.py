"""The parent side of the crash test: kill the writer (:mod:`harness.crash.writer`) at random and
at chosen points with SIGKILL, restart it, and check after every death that

- every acknowledged write is present with its value (no lost acks),
- nothing was applied twice (every ``k/...`` key has version 1, created and last
  modified by the same revision, all revisions distinct; retried commands were deduped),
- the log is consistent (opening validates contiguity and every checksum; first/last
  index, commit, applied index and snapshot index are in order; every retained entry and
  the snapshot file read back with good checksums),
- the storage recovers: each restart reports ``commit >= every acked index``.

Used by ``scripts/crash-test`` and ``tests/storage/test_crash.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.crash.writer import NS
from raftd.kv.machine import KVStateMachine
from raftd.storage.leveldb import LevelDB
from raftd.wire.ranges import prefix_end

REPO = Path(__file__).resolve().parents[2]

# Named kill points, most important first (CI's 20 kills cover the first dozen or so).
POINTS = [
    "batch.after-save",  # entries durable, not applied, not acked
    "write:kv.apply",  # about to write an apply batch
    "snapfile:chunk",  # in the middle of writing a snapshot file
    "install.after-save",  # log replaced + install marker set, state machine not restored
    "write:kv.restore",  # in the middle of a restore (data cleared, partly loaded)
    "batch.mid-apply",  # between the two apply batches of one Ready
    "ack.mid",  # half of a batch's acks printed
    "write:save",  # about to write a save batch
    "snapfile:after-rename",  # snapshot file complete, database not updated yet
    "write:compact",
    "write:kv.restore-end",
    "write:install",  # restore done, install marker not cleared yet
    "write:snapshot",  # snapshot file done (or state flushed), about to record it
    "write:flush",  # about to flush the state machine for a snapshot without an image
    "write:kv.restore-begin",
    "write:kv.restore-clear",
    "snapfile:before-rename",
    "install.after-finish",
    "batch.before-save",
    "batch.after-apply",
]


@dataclass(frozen=True, slots=True)
class Ack:
    index: int
    key: str
    value: str
    run: int
    client: str
    seq: int


@dataclass
class Report:
    seed: int
    kills: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    points_hit: Counter[str] = field(default_factory=Counter)
    acks: int = 0
    lost_acks: int = 0
    double_applies: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    recoveries: int = 0
    replayed: int = 0
    snapshots: int = 0
    installs: int = 0
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    final: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost_acks == 0 and self.double_applies == 0

    def summary(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "kills": self.kills,
            "kill_modes": dict(self.modes),
            "points_hit": dict(sorted(self.points_hit.items())),
            "acks": self.acks,
            "lost_acks": self.lost_acks,
            "double_applies": self.double_applies,
            "retries": dict(self.retries),
            "recoveries": self.recoveries,
            "replayed_entries": self.replayed,
            "snapshots": self.snapshots,
            "installs": self.installs,
            "problems": self.problems[:20],
            "elapsed_s": round(self.elapsed_s, 1),
            "final": self.final,
            "ok": self.ok,
        }


class Child:
    """One writer process; its stdout is read by a thread into ``lines``."""

    def __init__(self, args: list[str], env: dict[str, str], errfile: Path) -> None:
        self.err = open(errfile, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.crash.writer", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.err,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # a line cut by the kill: never an ack
            line = raw.decode()[:-1]
            self.lines.append(line)
            if line.startswith("READY "):
                self.ready.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> tuple[int, bool]:
        """Wait for the exit, killing the child after ``timeout`` seconds. Returns the
        exit code and whether the timeout struck."""
        timed_out = False
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            rc = self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()
        return rc, timed_out


class Harness:
    def __init__(
        self,
        workdir: Path,
        seed: int,
        *,
        bug: str | None = None,
        points: list[str] | None = None,
        hits: tuple[int, int] = (1, 3),
        point_share: float = 0.6,
        log: bool = True,
    ) -> None:
        self.hits = hits
        self.point_share = point_share
        self.dir = workdir / "data"
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.report = Report(seed=seed)
        self.acks: dict[str, Ack] = {}
        self.bug = bug
        self.points = points or POINTS
        self.log = log
        self.max_acked_index = 0
        self.retry_next: list[Ack] = []
        self.run_no = 0

    def say(self, msg: str) -> None:
        if self.log:
            print(msg, flush=True)

    def problem(self, msg: str) -> None:
        self.report.problems.append(msg)
        self.say(f"PROBLEM: {msg}")

    # -- one run of the child ----------------------------------------------------------
    def one_run(self, kill_no: int, *, final: bool = False) -> None:
        run = self.run_no
        self.run_no += 1
        env = dict(os.environ)
        env.pop("RAFTD_CRASH_POINT", None)
        args = ["--dir", str(self.dir), "--run", str(run), "--seed", str(self.report.seed)]
        for a in self.retry_next:
            args += ["--retry", f"{a.client}:{a.seq}:{a.key}:{a.value}"]
        if self.bug:
            args += ["--bug", self.bug]
        if final:
            mode = "final"
            args += ["--batches", "20"]
        else:
            r = self.rng.random()
            timer_share = (1 - self.point_share) * 0.75
            mode = (
                "point"
                if r < self.point_share
                else "timer"
                if r < self.point_share + timer_share
                else "startup"
            )
        if mode == "point":
            point = self.points[self.report.modes["point"] % len(self.points)]
            hit = self.rng.randint(*self.hits)
            env["RAFTD_CRASH_POINT"] = point
            env["RAFTD_CRASH_HIT"] = str(hit)
            mode_desc = f"point {point}#{hit}"
        else:
            mode_desc = mode
        self.report.modes[mode] += 1
        child = Child(args, env, self.workdir / f"stderr.{run}")
        if mode == "timer":
            if not child.ready.wait(timeout=20):
                self.problem(f"run {run}: no READY within 20 s")
            time.sleep(self.rng.uniform(0.0, 0.25))  # the random kill moment itself
            child.kill()
        elif mode == "startup":
            time.sleep(self.rng.uniform(0.0, 0.3))
            child.kill()
        # A point-mode child kills itself; if the point is rare, stop it after a while.
        rc, timed_out = child.wait(timeout=8.0 if mode == "point" else 30.0)
        if timed_out and mode != "point":
            self.problem(f"run {run}: did not exit within 30 s")
        self.digest(run, mode_desc, child, rc, final)

    def digest(self, run: int, mode: str, child: Child, rc: int, final: bool) -> None:
        rep = self.report
        new_acks: list[Ack] = []
        hit = None
        for line in child.lines:
            tag, _, rest = line.partition(" ")
            if tag == "A":
                idx, key, value, client, seq = rest.split(" ")
                a = Ack(int(idx), key, value, run, client, int(seq))
                new_acks.append(a)
                self.acks[key] = a
                self.max_acked_index = max(self.max_acked_index, a.index)
            elif tag == "READY":
                info = json.loads(rest)
                rep.recoveries += int(info["recovered"])
                rep.replayed += int(info["replayed"])
                if info["applied"] < self.max_acked_index:
                    self.problem(
                        f"run {run}: restarted with applied {info['applied']} < acked index "
                        f"{self.max_acked_index}"
                    )
            elif tag == "R":
                client, seq, outcome = rest.split(" ")
                rep.retries[outcome] += 1
                if outcome == "fresh":
                    rep.double_applies += 1
                    self.problem(f"run {run}: retry {client}/{seq} was applied again")
            elif tag == "P":
                hit = rest
                rep.points_hit[rest] += 1
            elif tag == "S":
                rep.snapshots += 1
            elif tag == "I":
                rep.installs += 1
            elif tag == "E":
                self.problem(f"run {run}: writer error: {rest}")
        rep.acks += len(new_acks)
        if final:
            if rc != 0:
                self.problem(f"final run exited with {rc}: {self.stderr_tail(run)}")
        elif rc != -signal.SIGKILL:
            self.problem(f"run {run}: exited with {rc}, not SIGKILL: {self.stderr_tail(run)}")
        else:
            rep.kills += 1
        if mode.startswith("point") and hit is None and rc == -signal.SIGKILL:
            mode += " (not reached)"
        # Retry the last acknowledged deduplicated commands next time (client retries).
        dedup = [a for a in new_acks if a.client != "-"]
        self.retry_next = dedup[-2:] if dedup else self.retry_next[:0]
        self.say(f"run {run:4d}: {mode:34s} acks={len(new_acks):5d} total={len(self.acks)} rc={rc}")
        self.verify(run, final)

    def stderr_tail(self, run: int) -> str:
        p = self.workdir / f"stderr.{run}"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    # -- verification ------------------------------------------------------------------
    def verify(self, run: int, final: bool) -> None:
        """Open the data dir as a restarting node would and check everything."""
        rep = self.report
        try:
            db = LevelDB(self.dir)  # opening validates the whole log (CorruptionError)
        except Exception as e:
            self.problem(f"after run {run}: cannot open: {e!r}")
            return
        try:
            st = db.group(NS)
            sm = KVStateMachine.leveldb(db, NS)
            hs, _ = st.initial_state()
            first, last = st.first_index(), st.last_index()
            snap = st.snapshot_metadata()
            if st.pending_install() or sm.needs_restore() or sm.applied_index() < snap.index:
                # An install was interrupted: the next start restores from the snapshot.
                # Do that into a memory twin, leaving the data dir for the writer's own
                # recovery to handle.
                sm = KVStateMachine.memory()
                with st.open_snapshot_data() as f:
                    sm.restore(f, index=snap.index)
            applied = sm.applied_index()
            if not (snap.index >= first - 1 and snap.index <= last and hs.commit <= last):
                self.problem(
                    f"after run {run}: bad bounds first={first} last={last} "
                    f"snapshot={snap.index} commit={hs.commit}"
                )
            if not (first - 1 <= applied <= hs.commit):
                self.problem(
                    f"after run {run}: applied {applied} outside [{first - 1}, {hs.commit}]"
                )
            if final and applied != hs.commit:
                self.problem(f"final: applied {applied} != commit {hs.commit}")
            if hs.commit < self.max_acked_index:
                self.problem(f"after run {run}: commit {hs.commit} < acked {self.max_acked_index}")
            st.entries(first, last + 1)  # every checksum
            if snap.index and st.image_metadata() == snap:
                st.snapshot()  # the file's sha256
            # State machine content.
            rng = sm.range(b"k/", prefix_end(b"k/"))
            revs: set[int] = set()
            present: dict[str, tuple[str, int]] = {}
            for kv in rng.kvs:
                k = kv.key.decode()
                present[k] = (kv.value.decode(), kv.version)
                if kv.version != 1 or kv.create_revision != kv.mod_revision:
                    rep.double_applies += 1
                    self.problem(
                        f"after run {run}: {k} version {kv.version} "
                        f"create {kv.create_revision} mod {kv.mod_revision}: applied twice"
                    )
                if kv.mod_revision in revs:
                    rep.double_applies += 1
                    self.problem(f"after run {run}: revision {kv.mod_revision} reused by {k}")
                revs.add(kv.mod_revision)
                a = self.acks.get(k)
                if a is not None and a.value != present[k][0]:
                    rep.lost_acks += 1
                    self.problem(f"after run {run}: {k} = {present[k][0]}, acked {a.value}")
            # Every acked key of the runs that cannot have been dropped yet is present.
            # (Run r drops runs < r-2 as its first command.)
            keep_from = max(0, run - 2)
            for k, a in self.acks.items():
                if a.run >= keep_from and k not in present:
                    rep.lost_acks += 1
                    self.problem(f"after run {run}: acked {k} (index {a.index}) is missing")
            ctr = sm.get(b"ctr")
            if ctr is not None and ctr.mod_revision != sm.revision():
                self.problem(
                    f"after run {run}: ctr mod {ctr.mod_revision} != revision {sm.revision()}"
                )
            rep.final = {
                "first": first,
                "last": last,
                "commit": hs.commit,
                "applied": applied,
                "snapshot": snap.index,
                "revision": sm.revision(),
                "keys": len(present),
            }
        except Exception as e:
            self.problem(f"after run {run}: verification failed: {e!r}")
        finally:
            db.close()


def run(
    kills: int,
    seed: int,
    workdir: Path | None = None,
    *,
    bug: str | None = None,
    points: list[str] | None = None,
    hits: tuple[int, int] = (1, 3),
    point_share: float = 0.6,
    log: bool = True,
) -> Report:
    """Run ``kills`` kill/restart cycles, then a final clean run; return the report."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="raftd-crash-") as tmp:
        h = Harness(
            workdir or Path(tmp),
            seed,
            bug=bug,
            points=points,
            hits=hits,
            point_share=point_share,
            log=log,
        )
        h.say(f"crash test: seed={seed} kills={kills} dir={h.dir}")
        while h.report.kills < kills and h.run_no < kills * 2 + 5:
            h.one_run(h.report.kills)
            if h.report.problems and bug is None:
                break
        h.one_run(0, final=True)
        h.report.elapsed_s = time.monotonic() - t0
        return h.report
