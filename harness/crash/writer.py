"""The child process of the crash test: a single-node Raft group's runtime, minus Raft.

It opens the LevelDB storage and the KV state machine, recovers (finishing any interrupted
snapshot install), replays committed entries, becomes "leader" of a new term (appending a
no-op), then loops like the runtime's Ready loop:

    batch proposals into entries -> save(hard state with commit=last, entries) [fsync]
    -> apply to the KV machine (its data and applied index in one batch) -> THEN ack

An ack is a line ``A <index> <key> <value>`` on stdout, flushed; the parent treats those
lines as the only truth about what was acknowledged. Periodically it snapshots and
compacts (:class:`Snapshotter`), and sometimes installs a snapshot of its own state (to
exercise mid-install crashes).

Crash points: ``RAFTD_CRASH_POINT=<name> RAFTD_CRASH_HIT=<n>`` makes it print
``P <name>`` and SIGKILL itself the n-th time it reaches that point (storage fault-hook
points such as ``write:save`` or ``snapfile:chunk``, or its own ``batch.*``/``install.*``
points). The parent also kills it at random moments.

Every command is a transaction ``put k/<run>/<seq> = value; put ctr = k/<run>/<seq>``
with a fresh key, so a key's version must stay 1: applying an entry twice makes it 2.
Even seqs carry a client id (exactly-once session), odd ones do not, so double applies
are not masked by deduplication. ``--retry`` re-proposes commands acknowledged by an
earlier run (a client retrying after a crash); their outcome is printed as
``R <client> <seq> dup|stale|fresh`` and ``fresh`` would be a double apply.

``--bug split-apply`` deliberately breaks atomicity (the applied index is rewound and
rewritten in a separate batch around the point ``bug.between``): the harness must then
find double applies. It exists to prove the check can fail.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import signal
import sys
from collections.abc import Sequence

from raftd.core.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftd.kv import commands as C
from raftd.kv.backend import Meta
from raftd.kv.machine import KVStateMachine
from raftd.storage.leveldb import LevelDB, LevelDBStorage
from raftd.storage.snapshots import (
    SnapshotPolicy,
    Snapshotter,
    finish_pending_install,
    recover,
)
from raftd.wire.pb import kv_pb2 as pb

NS = "/raft/crash"
NODE = "n1"
# Points that only happen around snapshots and installs: when one is the target, make
# them frequent so the child gets there quickly.
SNAPSHOT_POINTS = (
    "snapfile:",
    "install.",
    "write:kv.restore",
    "write:snapshot",
    "write:flush",
    "write:compact",
    "write:install",
)


class CrashPoints:
    """The fault hook: counts hits of the target point and dies at the n-th."""

    def __init__(self, point: str | None, hit: int) -> None:
        self.point = point
        self.hit = hit
        self.count = 0

    def __call__(self, name: str) -> None:
        if name != self.point:
            return
        self.count += 1
        if self.count >= self.hit:
            out(f"P {name}")
            os.kill(os.getpid(), signal.SIGKILL)


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def key_of(run: int, seq: int) -> bytes:
    return b"k/%05d/%06d" % (run, seq)


def command(key: bytes, value: bytes, client: bytes, seq: int) -> bytes:
    return C.txn([], [C.op_put(key, value), C.op_put(b"ctr", key)], client_id=client, seq=seq)


def state_digest(sm: KVStateMachine) -> str:
    buf = io.BytesIO()
    sm.snapshot_data(buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


class Writer:
    def __init__(self, args: argparse.Namespace) -> None:
        point = os.environ.get("RAFTD_CRASH_POINT") or None
        self.hook = CrashPoints(point, int(os.environ.get("RAFTD_CRASH_HIT", "1")))
        self.args = args
        self.run: int = args.run
        self.rng = random.Random(args.seed * 1_000_003 + self.run)
        self.db = LevelDB(args.dir, fault_hook=self.hook, keep_snapshots=3)
        self.storage: LevelDBStorage = self.db.group(NS)
        self.sm = KVStateMachine.leveldb(self.db, NS)
        focus = point is not None and point.startswith(SNAPSHOT_POINTS)
        self.snap_every = 20 if focus else 150
        self.install_every = 50 if focus else 400
        self.snapper = Snapshotter(
            self.storage,
            self.sm,
            # By count alone (no byte rule): the point is to reach the snapshot and
            # compaction crash points often, in every run, restarts included.
            SnapshotPolicy(
                entries=self.snap_every, interval_s=3600.0, trailing=50, keep=3, growth=0.0
            ),
            now=0.0,
        )
        self.client = b"w%05d" % self.run
        self.seq = 0
        self.term = 0
        self.since_install = 0

    def point(self, name: str) -> None:
        self.hook(name)

    # -- startup -----------------------------------------------------------------------
    def start(self) -> None:
        recovered = recover(self.storage, self.sm)
        hs, cs = self.storage.initial_state()
        if not cs.voters:
            self.storage.set_conf_state(ConfState(voters=(NODE,)))
        replayed = 0
        # Re-apply committed entries after the applied index, as the runtime would.
        while self.sm.applied_index() < hs.commit:
            lo = self.sm.applied_index() + 1
            es = self.storage.entries(lo, min(hs.commit, lo + 499) + 1)
            self.apply(es)
            replayed += len(es)
        self.term = hs.term + 1
        # A new leader appends an empty entry of its term (Raft §8).
        last = self.storage.last_index()
        self.append_and_apply([Entry(self.term, last + 1)])
        out(
            "READY "
            + json.dumps(
                {
                    "first": self.storage.first_index(),
                    "last": self.storage.last_index(),
                    "commit": hs.commit,
                    "applied": self.sm.applied_index(),
                    "revision": self.sm.revision(),
                    "snapshot": self.storage.snapshot_metadata().index,
                    "recovered": recovered,
                    "replayed": replayed,
                    "term": self.term,
                }
            )
        )

    def apply(self, es: Sequence[Entry]) -> list[pb.CommandResult | None]:
        before = Meta(self.sm.applied_index(), self.sm.revision())
        results = self.sm.apply_many([(e.index, e.data) for e in es])
        if self.args.bug == "split-apply" and es:
            # The deliberate bug: the applied index lands in a separate batch.
            self.sm._b.commit({}, {}, before)
            self.point("bug.between")
            self.sm._b.commit({}, {}, Meta(self.sm.applied_index(), self.sm.revision()))
        return [r.result for r in results]

    def append_and_apply(self, es: list[Entry]) -> list[pb.CommandResult | None]:
        last = es[-1].index
        self.point("batch.before-save")
        self.storage.save(HardState(self.term, NODE, last), es, None)
        self.point("batch.after-save")
        cut = self.rng.randint(0, len(es))
        results = self.apply(es[:cut])
        self.point("batch.mid-apply")
        results += self.apply(es[cut:])
        self.point("batch.after-apply")
        return results

    # -- the loop ----------------------------------------------------------------------
    def retries(self) -> None:
        for spec in self.args.retry:
            client, seq, key, value = spec.split(":")
            data = command(key.encode(), value.encode(), client.encode(), int(seq))
            e = Entry(self.term, self.storage.last_index() + 1, data=data)
            before = self.sm.get(key.encode())
            (res,) = self.append_and_apply([e])
            after = self.sm.get(key.encode())
            assert res is not None
            if res.status == pb.CommandResult.STALE_SEQUENCE:
                outcome = "stale"
            elif before is not None and after is not None and after.version == before.version:
                outcome = "dup"
            else:
                outcome = "fresh"
            out(f"R {client} {seq} {outcome}")

    def drop_old_runs(self) -> None:
        """Keep the state small: delete the keys of runs older than run-2 (the parent
        has verified them after those runs died)."""
        if self.run < 3:
            return
        data = C.txn(
            [], [C.op_delete_range(b"k/", b"k/%05d/" % (self.run - 2)), C.op_put(b"ctr", b"drop")]
        )
        self.append_and_apply([Entry(self.term, self.storage.last_index() + 1, data=data)])

    def batch(self) -> None:
        n = self.rng.choice([1, 1, 2, 4, 8, 16, 32, 64])
        base = self.storage.last_index()
        es, keys = [], []
        for i in range(1, n + 1):
            self.seq += 1
            key = key_of(self.run, self.seq)
            value = b"%d.%d.%08x" % (self.run, self.seq, self.rng.getrandbits(32))
            client = self.client if self.seq % 2 == 0 else b""
            es.append(Entry(self.term, base + i, data=command(key, value, client, self.seq)))
            keys.append((base + i, key, value, client, self.seq))
        results = self.append_and_apply(es)
        lines = []
        for (index, key, value, client, seq), res in zip(keys, results, strict=True):
            if res is None or res.status != pb.CommandResult.OK or not res.txn.succeeded:
                out(f"E command at {index} did not apply cleanly: {res}")
                sys.exit(4)
            c = client.decode() or "-"
            lines.append(f"A {index} {key.decode()} {value.decode()} {c} {seq}\n")
        half = len(lines) // 2
        sys.stdout.write("".join(lines[:half]))
        sys.stdout.flush()
        self.point("ack.mid")
        sys.stdout.write("".join(lines[half:]))
        sys.stdout.flush()
        self.since_install += n

    def maybe_snapshot(self) -> None:
        """In turn: a snapshot without an image (as a daemon's policy takes them), one
        given its image right after (as a leader makes one for a follower), and one
        taken with its image at once."""
        if not self.snapper.due(now=0.0):
            return
        kind = self.rng.randrange(3)
        if kind == 2:
            meta = self.snapper.take(now=0.0)
        else:
            meta = self.snapper.take_state(now=0.0)
            if kind == 1:
                meta = self.snapper.take(now=0.0)
        image = self.storage.image_metadata() == meta
        out(f"S {meta.index} first={self.storage.first_index()} image={int(image)}")

    def maybe_install(self) -> None:
        if self.since_install < self.install_every:
            return
        self.since_install = 0
        idx = self.sm.applied_index()
        if idx <= self.storage.snapshot_metadata().index:
            return
        buf = io.BytesIO()
        assert self.sm.snapshot_data(buf) == idx == self.storage.last_index()
        before = hashlib.sha256(buf.getvalue()).hexdigest()
        meta = SnapshotMetadata(idx, self.storage.term(idx), ConfState(voters=(NODE,)))
        self.point("install.before")
        self.storage.save(HardState(self.term, NODE, idx), [], Snapshot(meta, buf.getvalue()))
        self.point("install.after-save")
        finish_pending_install(self.storage, self.sm)
        self.point("install.after-finish")
        if state_digest(self.sm) != before:
            out(f"E state after installing snapshot {idx} differs from before")
            sys.exit(4)
        out(f"I {idx}")

    def loop(self) -> None:
        self.retries()
        self.drop_old_runs()
        batches = 0
        while self.args.batches <= 0 or batches < self.args.batches:
            self.batch()
            self.maybe_snapshot()
            self.maybe_install()
            batches += 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--retry", action="append", default=[], help="client:seq:key:value")
    ap.add_argument("--batches", type=int, default=0, help="stop after N batches (0: never)")
    ap.add_argument("--bug", choices=["split-apply"], default=None)
    args = ap.parse_args(argv)
    w = Writer(args)
    try:
        w.start()
        w.loop()
    except Exception as e:
        out(f"E {type(e).__name__}: {e}")
        raise
    finally:
        w.db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
