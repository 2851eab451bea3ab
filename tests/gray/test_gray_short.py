"""``scripts/bench gray --short --systems raftd``: three real daemons on slowfs through
every fault. Only the harness's outputs are checked (counts, faults applied, no
acknowledged write lost), never timings. Skips without FUSE (fails under
``RAFTD_REQUIRE_FUSE=1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.bench.load import REQUIRED_KEYS
from harness.gray import FAULTS, cgroup_unavailable
from harness.slowfs import fuse_or_skip

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_gray_short_on_raftd() -> None:
    fuse_or_skip()
    p = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "gray", "--short", "--systems", "raftd", "--no-install"],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = f"exit {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-3000:]}"
    assert p.returncode == 0, out
    docs: list[dict[str, Any]] = [json.loads(x) for x in p.stdout.splitlines() if x[:1] == "{"]
    *rows, summary = docs
    assert summary["op"] == "gray-summary", out
    assert [d["op"] for d in rows] == [f"gray-{f}" for f in FAULTS], out
    for d in rows:
        assert all(k in d for k in REQUIRED_KEYS), d
        assert d["system"] == "raftd"
        assert d["ok"] > 0, d
        assert d["acked"] == d["ok"], d
        assert d["lost"] == 0, d
        assert d["worst_stall_s"] > 0, d
        assert d["p50_ms"] is not None and d["p99_ms"] >= d["p50_ms"], d
        assert d["elections"] >= 0 and d["term_delta"] >= 0, d
    by = {d["op"]: d for d in rows}
    # The disk faults bit (slowfs delayed fsyncs of the target), the others did not.
    assert by["gray-leader-disk"]["delayed_fsyncs"] > 0, by["gray-leader-disk"]
    assert by["gray-follower-disk"]["delayed_fsyncs"] > 0, by["gray-follower-disk"]
    for f in ("gray-baseline", "gray-cpu-busy", "gray-cpu-quota"):
        assert by[f]["delayed_fsyncs"] == 0, by[f]
    assert by["gray-follower-disk"]["writer_via"].startswith("leader"), out
    assert by["gray-leader-disk"]["writer_via"].startswith("follower"), out
    quota = by["gray-cpu-quota"]
    if cgroup_unavailable() is None:
        assert quota["skipped"] is None, quota
        assert "cgroup" in quota["target"], quota
    else:
        assert quota["skipped"], quota
    assert "system fault" in p.stdout and "stall s" in p.stdout, out
    assert "raftd: leader slow disk: worst stall" in p.stdout, out
    assert "raftd: follower slow disk: p99" in p.stdout, out
