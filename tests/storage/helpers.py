"""Small helpers shared by the storage and KV tests."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from raftd.kv.machine import KVStateMachine

ROOT = Path(__file__).resolve().parents[2]


def seed_from_env() -> int:
    """A fresh random seed, or ``RAFTD_SEED`` to replay a failure. Printed either way."""
    env = os.environ.get("RAFTD_SEED")
    seed = int(env) if env else random.randrange(1 << 32)
    print(f"seed={seed} (replay with RAFTD_SEED={seed})")
    return seed


def state_of(sm: KVStateMachine) -> bytes:
    """The whole state of ``sm`` as its snapshot image (equal images: equal states)."""
    buf = io.BytesIO()
    sm.snapshot_data(buf)
    return buf.getvalue()


def export_release(commit: str, dest: Path) -> Path:
    """Export the ``raftd`` package of ``commit`` from this clone's history into ``dest``
    (to run an earlier release's code). Skips the test if git or the commit is missing."""
    git = shutil.which("git")
    if git is None:
        pytest.skip(f"git is not installed: cannot export {commit}")
    p = subprocess.run(
        [git, "-C", str(ROOT), "archive", "--format=tar", commit, "raftd"],
        capture_output=True,
        timeout=60,
    )
    if p.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone: {p.stderr.decode()[-200:]}")
    with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest
