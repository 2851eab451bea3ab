"""The layer rule: ``raftd/core`` is pure.

It may import only the standard library, and not its impure parts: no clock, no global
RNG, no sockets, files, threads or processes. ``random`` is allowed only for the
``random.Random`` type a config carries (no module-level calls such as
``random.random()``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

FORBIDDEN_STDLIB = frozenset(
    {
        "time",
        "datetime",
        "socket",
        "select",
        "selectors",
        "threading",
        "multiprocessing",
        "subprocess",
        "asyncio",
        "os",
        "io",
        "shutil",
        "tempfile",
        "signal",
        "secrets",
        "uuid",
    }
)

# Module-level functions of ``random`` that use the hidden global generator.
GLOBAL_RANDOM_CALLS = frozenset(
    {
        "random",
        "randint",
        "randrange",
        "choice",
        "choices",
        "shuffle",
        "sample",
        "uniform",
        "seed",
        "getrandbits",
        "gauss",
    }
)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def file_violations(path: Path) -> list[str]:
    """Forbidden imports and global-RNG uses in one source file, as messages."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[str] = []
    stdlib = sys.stdlib_module_names
    for node in ast.walk(tree):
        names: list[str] = []
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import within raftd.core
                continue
            mod = node.module or ""
            if mod == "random":
                out.extend(
                    f"{path}:{node.lineno}: global RNG function random.{a.name}"
                    for a in node.names
                    if a.name in GLOBAL_RANDOM_CALLS
                )
            names = [mod]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr in GLOBAL_RANDOM_CALLS
        ):
            out.append(f"{path}:{node.lineno}: global RNG call random.{node.attr}()")
        for n in names:
            top = _top(n)
            if n.startswith("raftd.core") or n == "__future__":
                continue
            if top == "raftd":
                out.append(f"{path}:{line}: imports {n} (core may not import raftd.*)")
            elif top not in stdlib:
                out.append(f"{path}:{line}: imports third-party module {n}")
            elif top in FORBIDDEN_STDLIB:
                out.append(f"{path}:{line}: imports impure stdlib module {n}")
    return out


def core_violations(core_dir: Path) -> list[str]:
    """All violations of the layer rule under ``core_dir``."""
    out: list[str] = []
    for p in sorted(core_dir.rglob("*.py")):
        out.extend(file_violations(p))
    return out


def main(argv: list[str] | None = None) -> int:
    """Check ROOT (default: this checkout); exit status 1 on any violation."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[2]
    bad = core_violations(root / "raftd" / "core")
    for v in bad:
        print(v, file=sys.stderr)
    if bad:
        print(f"layer rule broken: {len(bad)} forbidden import(s) in raftd/core", file=sys.stderr)
        return 1
    print("layer rule ok: raftd/core imports only the pure standard library")
    return 0
