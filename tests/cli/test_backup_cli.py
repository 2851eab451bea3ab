"""`raftd snapshot save` through a real daemon, `raftd snapshot restore` into three fresh
data dirs, then a new cluster on them holds every key (real processes, real sockets)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raftd.app.backup import verify_backup
from raftd.testing.cluster import LocalCluster, make_identity

pytestmark = pytest.mark.slow


def raftd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_save_restore_compare_every_key(tmp_path: Path) -> None:
    backup = tmp_path / "cluster.bak"
    expected: dict[bytes, bytes] = {}
    with LocalCluster(3, base_dir=tmp_path / "old") as old:
        leader = old.wait_leader()
        follower = next(n for n in old.nodes if n is not leader)
        with follower.client() as c:
            for i in range(150):
                key, value = b"k/%03d" % i, b"v%d" % (i * i)
                c.put(key, value)
                expected[key] = value
        r = raftd("snapshot", "save", str(backup), "--socket", str(follower.socket))
        assert r.returncode == 0, r.stderr
        assert "saved" in r.stdout
    info = verify_backup(backup)
    assert info.index > 150
    new_base = tmp_path / "new"
    dirs = [new_base / f"n{i}" for i in range(1, 4)]
    for d in dirs:
        d.mkdir(parents=True)
    ids = [make_identity(d) for d in dirs]
    for d in dirs:
        peers = [x for pid in ids for x in ("--peer", pid)]
        r = raftd("snapshot", "restore", str(backup), "--data-dir", str(d), *peers)
        assert r.returncode == 0, r.stderr
    with LocalCluster(3, base_dir=new_base, keep=True) as new:
        new.wait_leader()
        for node in new.nodes:
            with node.client() as c:
                got = {kv.key: kv.value for kv in c.range(b"k/", b"k0").kvs}
            assert got == expected, node.name
    r = raftd("snapshot", "save", str(tmp_path / "x.bak"), "--socket", str(tmp_path / "nope.sock"))
    assert r.returncode == 3  # unavailable: no daemon there
