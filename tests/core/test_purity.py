"""The layer rule: raftd/core imports only the pure standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.layers import core_violations, file_violations

ROOT = Path(__file__).resolve().parents[2]


def test_core_is_pure() -> None:
    assert core_violations(ROOT / "raftd" / "core") == []


def test_rule_catches_trio(tmp_path: Path) -> None:
    core = tmp_path / "raftd" / "core"
    core.mkdir(parents=True)
    (core / "bad.py").write_text("import trio\n")
    bad = core_violations(core)
    assert len(bad) == 1 and "trio" in bad[0]


def test_rule_catches_impure_stdlib_and_global_rng(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text(
        "import time\nimport random\nfrom os import path\nx = random.random()\n"
        "from random import choice\nimport raftd.storage\nr = random.Random(1)\n"
    )
    bad = file_violations(p)
    text = "\n".join(bad)
    assert "time" in text
    assert "random.random" in text
    assert "os" in text
    assert "random.choice" in text
    assert "raftd.storage" in text
    assert len(bad) == 5  # random.Random(1) is allowed


def test_check_script_fails_when_trio_is_imported(tmp_path: Path) -> None:
    """scripts/check-layers exits non-zero on a tree whose core imports trio."""
    core = tmp_path / "raftd" / "core"
    core.mkdir(parents=True)
    (core / "x.py").write_text("import trio\n")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-layers"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1
    assert "trio" in r.stderr
