"""What ships: the wheel holds the ``raftd`` package only, and nothing in it imports the
repository's harnesses (``harness/``) or tests."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = ("harness", "tests")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (inside functions and
    ``TYPE_CHECKING`` too)."""
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module)
    return mods


def harness_imports(package: Path) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        for mod in sorted(imported_modules(path)):
            if mod.split(".")[0] in NOT_SHIPPED:
                bad.append(f"{path.relative_to(package.parent)} imports {mod}")
    return bad


def test_no_production_module_imports_the_harness() -> None:
    assert harness_imports(ROOT / "raftd") == []


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "raftd"
    pkg.mkdir()
    (pkg / "ok.py").write_text("import raftd.core\n")
    (pkg / "bad.py").write_text("def f():\n    from harness.netns import Topology\n")
    assert harness_imports(pkg) == ["raftd/bad.py imports harness.netns"]


@pytest.mark.slow
def test_the_wheel_holds_raftd_only(tmp_path: Path) -> None:
    # A fresh copy of the tree: setuptools builds in place and never empties its build/
    # directory, so an old build could hide a packaging mistake (or invent one).
    src = tmp_path / "raftd-src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("raftd", "harness", "tests"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("raftd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"raftd", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "raftd/testing/cluster.py" in names  # what raftd dev needs stays
    assert "raftd/cli/__init__.py" in names
