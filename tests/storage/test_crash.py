"""Crash tests with real processes: SIGKILL the writer at random moments and at named
points (mid-batch, mid-snapshot, mid-install), restart it, and check that no
acknowledged write is lost, nothing is applied twice, and the log stays consistent.

The long run is ``scripts/crash-test --kills 200``; CI runs 20 kill points here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.crash.run import Harness, run
from harness.crash.writer import NS
from raftd.kv.backend import KeyRecord, LevelDBKVBackend
from raftd.storage.leveldb import LevelDB

from .helpers import seed_from_env


@pytest.mark.slow
def test_twenty_kill_points() -> None:
    seed = seed_from_env()
    rep = run(20, seed)
    print(rep.summary())
    assert rep.problems == [], f"seed={seed}"
    assert rep.ok and rep.kills == 20 and rep.acks > 0
    assert rep.modes["point"] > 0 and sum(rep.points_hit.values()) > 0


@pytest.mark.slow
def test_the_check_can_fail_on_a_real_double_apply() -> None:
    """A writer that persists the applied index in a separate batch (the bug the single
    batch prevents) is killed between the two batches: replay then applies entries
    twice, and the harness must say so."""
    seed = seed_from_env()
    rep = run(3, seed, bug="split-apply", points=["bug.between"], hits=(4, 8), point_share=1.0)
    assert rep.points_hit["bug.between"] >= 1, rep.summary()
    assert rep.double_applies > 0 and not rep.ok, rep.summary()


def test_the_verifier_notices_lost_and_doubled_writes(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        seed_from_env(),
        points=["batch.after-apply"],
        hits=(5, 5),
        point_share=1.0,
        log=False,
    )
    h.one_run(0)
    assert h.report.ok and len(h.acks) > 2, h.report.summary()
    lost, doubled = sorted(h.acks)[:2]

    db = LevelDB(h.dir)
    backend = LevelDBKVBackend(db, NS)
    rec = backend.get(doubled.encode())
    assert rec is not None
    again = KeyRecord(rec.value, rec.create_revision, rec.mod_revision + 1, rec.version + 1)
    backend.commit({lost.encode(): None, doubled.encode(): again}, {}, backend.load_meta())
    db.close()

    h.verify(0, final=False)
    assert h.report.lost_acks == 1
    assert h.report.double_applies >= 1
    assert any("missing" in p for p in h.report.problems)
    assert any("applied twice" in p for p in h.report.problems)
