"""slowfs: a real FUSE mount passes every operation through to its backing directory and
delays fsync only while armed. Skips without FUSE (fails under ``RAFTD_REQUIRE_FUSE=1``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.slowfs import SlowMount, clear_delay, fuse_or_skip, is_mounted, set_delay

pytestmark = pytest.mark.slow


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[SlowMount]:
    fuse_or_skip()
    m = SlowMount(tmp_path / "mnt", tmp_path / "backing")
    m.start()
    try:
        yield m
    finally:
        m.close()
    assert not is_mounted(m.mount)


def test_operations_pass_through_to_the_backing_directory(mount: SlowMount) -> None:
    mnt, back = mount.mount, mount.backing
    (mnt / "d").mkdir()
    (mnt / "d" / "f").write_bytes(b"hello world")
    assert (back / "d" / "f").read_bytes() == b"hello world"
    with open(mnt / "d" / "f", "r+b") as f:
        f.seek(6)
        f.write(b"slowfs")
        f.flush()
        os.fsync(f.fileno())
        f.truncate(9)
    assert (back / "d" / "f").read_bytes() == b"hello slo"
    with open(mnt / "d" / "f", "ab") as f:
        f.write(b"!")
    assert (mnt / "d" / "f").read_bytes() == b"hello slo!"
    os.rename(mnt / "d" / "f", mnt / "d" / "g")
    os.symlink("g", mnt / "d" / "s")
    os.link(mnt / "d" / "g", mnt / "d" / "h")
    assert sorted(os.listdir(mnt / "d")) == ["g", "h", "s"]
    assert os.readlink(back / "d" / "s") == "g"
    assert (mnt / "d" / "s").read_bytes() == b"hello slo!"
    assert os.stat(back / "d" / "g").st_nlink == 2
    os.chmod(mnt / "d" / "g", 0o600)
    assert os.stat(back / "d" / "g").st_mode & 0o777 == 0o600
    os.unlink(mnt / "d" / "h")
    os.unlink(mnt / "d" / "s")
    os.unlink(mnt / "d" / "g")
    os.rmdir(mnt / "d")
    assert os.listdir(back) == []
    # Written from the backing side, read through the mount (a fresh name: not cached).
    (back / "outside").write_bytes(b"x" * 100_000)
    assert (mnt / "outside").read_bytes() == b"x" * 100_000


def _fsync_time(path: Path) -> float:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x")
        t = time.perf_counter()
        os.fdatasync(fd)
        return time.perf_counter() - t
    finally:
        os.close(fd)


def test_fsync_sleeps_only_while_armed(mount: SlowMount) -> None:
    f = mount.mount / "wal"
    _fsync_time(f)
    assert mount.delayed_calls() == 0
    set_delay(mount.control, 0.3, 30.0)
    took = _fsync_time(f)
    assert took >= 0.3, took  # the delay is a lower bound, whatever the machine
    assert mount.delayed_calls() == 1
    fd = os.open(mount.mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # a directory fsync is delayed too
    finally:
        os.close(fd)
    assert mount.delayed_calls() == 2
    clear_delay(mount.control)
    _fsync_time(f)
    assert mount.delayed_calls() == 2
    # An armed delay that has run out no longer applies.
    set_delay(mount.control, 5.0, 0.0)
    _fsync_time(f)
    assert mount.delayed_calls() == 2


def test_leveldb_works_on_slowfs(mount: SlowMount) -> None:
    import plyvel

    path = str(mount.mount / "db")
    db = plyvel.DB(path, create_if_missing=True)
    for i in range(200):
        db.put(f"k{i:04d}".encode(), b"v" * 100, sync=True)
    with db.write_batch(sync=True) as wb:
        wb.delete(b"k0000")
    db.compact_range()
    db.close()
    db = plyvel.DB(path)
    try:
        assert db.get(b"k0000") is None
        assert db.get(b"k0199") == b"v" * 100
        assert sum(1 for _ in db.iterator()) == 199
    finally:
        db.close()
    assert any(p.suffix == ".log" for p in (mount.backing / "db").iterdir())


def test_a_second_mount_on_the_same_point_is_refused(mount: SlowMount, tmp_path: Path) -> None:
    other = SlowMount(mount.mount, tmp_path / "other")
    with pytest.raises(RuntimeError, match="already a mount point"):
        other.start()
