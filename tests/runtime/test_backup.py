"""Backup and restore: save a consistent snapshot, restore it into a fresh 3-node cluster,
compare every key."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from raftd.app.backup import BackupError, restore_backup, verify_backup, write_backup
from raftd.kv import commands
from raftd.kv.machine import KVStateMachine
from raftd.testing.inproc import NS, cluster
from raftd.transport.host import load_or_create_identity, peer_id_of


async def test_save_restore_into_fresh_cluster(tmp_path: Path) -> None:
    backup = tmp_path / "backup.bak"
    expected: dict[bytes, bytes] = {}
    (tmp_path / "old").mkdir()
    async with cluster(tmp_path / "old") as (c, _):
        with trio.fail_after(30):
            ld = await c.leader()
            for i in range(300):
                key, value = b"key/%03d" % i, b"value-%d" % (i * 7)
                await ld.group().propose(commands.put(key, value))
                expected[key] = value
            await ld.group().propose(commands.delete(b"key/000"))
            del expected[b"key/000"]
            follower = c.other(ld)
            await follower.group().read_barrier()  # a backup taken on a follower
            chunks: list[bytes] = []
            info = write_backup(follower.group().sm, NS, chunks.append)
    backup.write_bytes(b"".join(chunks))
    assert verify_backup(backup).index == info.index
    new = tmp_path / "new"
    new.mkdir()
    dirs = [new / f"n{i}" for i in range(3)]
    ids = []
    for d in dirs:
        d.mkdir()
        ids.append(peer_id_of(load_or_create_identity(d)))
    for d in dirs:
        restore_backup(backup, d, peers=ids)
    async with cluster(new, n=3) as (c2, _):
        with trio.fail_after(30):
            ld = await c2.leader()
            await ld.group().propose(commands.put(b"new", b"write"))
            for n in c2.nodes:
                g = n.group()
                await g.wait_applied(ld.group().applied_index())
                got = {kv.key: kv.value for kv in g.sm.range(b"key/", b"key0").kvs}
                assert got == expected
                assert g.sm.get(b"new") is not None


def test_corrupt_backup_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "b.bak"
    p.write_bytes(b'RAFTDBAK1\n{"index": 3}\n' + b"x" * 100 + b"\x00" * 32)
    with pytest.raises(BackupError, match="checksum"):
        verify_backup(p)
    p.write_bytes(b"garbage" * 20)
    with pytest.raises(BackupError, match="magic"):
        verify_backup(p)


def test_restore_reports_progress_to_the_end(tmp_path: Path) -> None:
    """``progress(done, total)`` while reading the file: ``done`` never goes back, the
    total is both passes (checksum, then load), and the last call is ``done == total``."""
    sm = KVStateMachine.memory()
    sm.apply_many(
        [(1, b"")] + [(i + 2, commands.put(b"k/%05d" % i, b"v" * 200)) for i in range(2000)]
    )
    backup = tmp_path / "b.bak"
    with open(backup, "wb") as f:
        info = write_backup(sm, "/raft/bak", f.write)
    size = backup.stat().st_size
    assert size == info.size > 256 * 1024  # more than one chunk per pass
    calls: list[tuple[int, int]] = []
    restored, _ = restore_backup(
        backup, tmp_path / "d", progress=lambda done, total: calls.append((done, total))
    )
    assert restored.index == info.index
    assert {total for _, total in calls} == {2 * size - 32}
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and dones[0] > 0
    assert len(set(dones)) >= 4  # chunk by chunk, in both passes
    assert calls[-1] == (2 * size - 32, 2 * size - 32)
    # A corrupt file fails in the first pass: never reported as done.
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.write_bytes(bytes(data))
    calls.clear()
    with pytest.raises(BackupError, match="checksum"):
        restore_backup(backup, tmp_path / "e", progress=lambda d, t: calls.append((d, t)))
    assert calls and all(done < total for done, total in calls)
