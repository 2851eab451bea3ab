"""The package-graph layer check (harness/layers.py) on small fake trees, and on this
checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.layers import LAYERS, Edge, check, collect_edges, find_cycles, graph_of

ROOT = Path(__file__).resolve().parents[2]

#: A layer table for the fake trees: low <- mid <- top.
TABLE = {
    "raftd": frozenset[str](),
    "low": frozenset[str](),
    "mid": frozenset({"low"}),
    "top": frozenset({"low", "mid"}),
    "testing": frozenset({"low", "mid", "top"}),
}


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path under raftd/ -> source) plus the packages' __init__.py."""
    pkg = tmp_path / "raftd"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("low", "mid", "top", "testing"):
        (pkg / name).mkdir()
        (pkg / name / "__init__.py").write_text("")
    for rel, src in files.items():
        (pkg / rel).write_text(src)
    return tmp_path


def run(root: Path) -> list[str]:
    r = check(root, layers=TABLE, exceptions={})
    return [*r.purity, *r.layers, *r.cycles, *r.stale_exceptions]


CLEAN = {
    "low/a.py": "import os\n",
    "mid/b.py": "from raftd.low.a import x\nfrom . import c\n",
    "mid/c.py": "",
    "top/d.py": "from ..mid import b\nimport raftd.low\n",
    "testing/t.py": "from raftd.low.a import y\n",
}


def test_clean_tree_passes(tmp_path: Path) -> None:
    root = tree(tmp_path, CLEAN)
    assert run(root) == []
    g = graph_of(collect_edges(root))
    assert set(g["top"]) == {"mid", "low"}  # the relative import resolved to raftd.mid


def test_cycle_at_module_level(tmp_path: Path) -> None:
    root = tree(tmp_path, {**CLEAN, "low/a.py": "from raftd.mid.b import z\n"})
    bad = run(root)
    cycles = [m for m in bad if m.startswith("cycle:")]
    assert cycles == [
        "cycle: low -> mid -> low\n"
        "  low -> mid: raftd/low/a.py:1 (module level)\n"
        "  mid -> low: raftd/mid/b.py:1 (module level)"
    ]
    assert "raftd/low/a.py:1: low may not import mid (module level)" in bad


def test_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    src = "def f():\n    from raftd.top import d\n    return d\n"
    root = tree(tmp_path, {**CLEAN, "mid/c.py": src})
    bad = run(root)
    assert any(
        m.startswith("cycle: mid -> top -> mid") and "raftd/mid/c.py:2 (in a function)" in m
        for m in bad
    ), bad


def test_cycle_under_type_checking(tmp_path: Path) -> None:
    src = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from raftd.top.d import Thing\n"
        "def f(t: Thing) -> None: ...\n"
    )
    root = tree(tmp_path, {**CLEAN, "low/a.py": src})
    bad = run(root)
    cycles = [m for m in bad if m.startswith("cycle:")]
    assert cycles and all("raftd/low/a.py:4 (under TYPE_CHECKING)" in m for m in cycles)
    # low -> top -> low and low -> top -> mid -> low
    assert [c.splitlines()[0] for c in cycles] == [
        "cycle: low -> top -> low",
        "cycle: low -> top -> mid -> low",
    ]


def test_relative_import_cycle(tmp_path: Path) -> None:
    root = tree(tmp_path, {**CLEAN, "low/a.py": "from .. import top\n"})
    assert any(m.startswith("cycle: low -> top -> low") for m in run(root))


def test_forbidden_edge_without_a_cycle(tmp_path: Path) -> None:
    """top is allowed nothing from testing: reported though the graph has no cycle."""
    root = tree(tmp_path, {**CLEAN, "top/e.py": "import raftd.testing.t as t\n"})
    bad = run(root)
    assert not any(m.startswith("cycle:") for m in bad)
    assert bad == [
        "raftd/top/e.py:1: top may not import testing (module level): production code "
        "does not import the test support"
    ]


def test_unknown_package_and_harness_import(tmp_path: Path) -> None:
    root = tree(tmp_path, {**CLEAN, "new.py": "import harness.layers\n"})
    bad = run(root)
    assert "raftd/new: package new is not in the layer table (harness/layers.py LAYERS)" in bad
    root2 = tree(tmp_path / "x", {**CLEAN, "top/f.py": "from harness import layers\n"})
    assert run(root2) == ["raftd/top/f.py:1: top imports harness (module level): outside the wheel"]


def test_temporary_exception_is_skipped_and_stale_ones_named(tmp_path: Path) -> None:
    root = tree(tmp_path, {**CLEAN, "low/a.py": "import raftd.mid.b\n"})
    r = check(root, layers=TABLE, exceptions={("raftd/low/a.py", "mid"): "why"})
    assert r.ok and [e.site for e in r.excepted] == ["raftd/low/a.py:1"]
    assert not r.cycles and not r.layers
    r = check(root, layers=TABLE, exceptions={("raftd/low/gone.py", "mid"): "why"})
    assert not r.ok and r.cycles  # the real edge is checked again
    assert r.stale_exceptions == [
        "raftd/low/gone.py: temporary exception for importing mid matches no import: remove it"
    ]


def test_find_cycles_lists_each_cycle_once() -> None:
    g: dict[str, dict[str, list[Edge]]] = {"a": {"b": []}, "b": {"a": [], "c": []}, "c": {"a": []}}
    assert find_cycles(g) == [["a", "b"], ["a", "b", "c"]]


def test_layer_table_is_acyclic_and_app_is_the_root() -> None:
    graph: dict[str, dict[str, list[Edge]]] = {
        src: {dst: [] for dst in dsts} for src, dsts in LAYERS.items()
    }
    assert find_cycles(graph) == []
    importers_of_app = sorted(src for src, dsts in LAYERS.items() if "app" in dsts)
    assert importers_of_app == ["cli", "testing"]
    # The testing library (in-process clusters for users' tests) is used by the command
    # line's `raftd dev` only: no daemon code depends on it.
    assert [src for src, dsts in LAYERS.items() if "testing" in dsts] == ["cli"]


def test_this_checkout_passes() -> None:
    r = check(ROOT)
    assert r.ok, [*r.purity, *r.layers, *r.cycles, *r.stale_exceptions]


def test_script_fails_on_an_added_cycle(tmp_path: Path) -> None:
    """scripts/check-layers exits 1 and names the cycle when kv imports runtime (which
    imports kv), in a function body where it would otherwise hide."""
    dst = tmp_path / "raftd"
    subprocess.run(["cp", "-r", str(ROOT / "raftd"), str(dst)], check=True)
    with (dst / "kv" / "commands.py").open("a") as f:
        f.write("\n\ndef _late() -> None:\n    from raftd.runtime import group  # noqa\n")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check-layers"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1, r.stdout
    assert "cycle: kv -> runtime -> kv" in r.stderr
    assert "kv may not import runtime (in a function)" in r.stderr
