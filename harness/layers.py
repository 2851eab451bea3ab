"""The layer rules of the raftd source tree, checked from the source with :mod:`ast`.

Two rules, both run by ``scripts/check-layers`` (and so by ``scripts/check``):

1. **The core is pure.** ``raftd/core`` may import only the standard library, and not its
   impure parts: no clock, no global RNG, no sockets, files, threads or processes.
   ``random`` is allowed only for the ``random.Random`` type a config carries (no
   module-level calls such as ``random.random()``).

2. **Dependencies point one way.** Every module under ``raftd/`` is parsed and every
   import counted: at module level, inside functions and under ``if TYPE_CHECKING:``
   alike (a deferred or type-only import is still a dependency, and is where cycles
   hide). Relative imports are resolved. The imports are folded into a graph of
   packages (``raftd.api``, ``raftd.app``, ...; a top-level module such as
   ``raftd/cli.py`` counts as a package of its own), and then:

   - each edge must be allowed by :data:`LAYERS` (which package may import which);
     a package missing from the table is an error, so a new one gets a place in it;
   - ``raftd.app`` is the composition root: only ``cli`` and the test support
     (``raftd.testing``, home of the in-process cluster helper) import it;
   - no production package imports ``raftd.testing``, and nothing under ``raftd/``
     imports the repository's ``harness`` or ``tests`` folders;
   - there is no cycle between packages; each cycle is reported as a path with the
     ``file:line`` of every edge, even where the table would allow every edge.

Edges listed in :data:`TEMPORARY_EXCEPTIONS` are left out (and said so on stdout); an
exception that no longer matches any import is reported too ("remove it"), as a warning
so that moving a file out does not break the check on its own.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# -- rule 1: the pure core --------------------------------------------------------------

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
    """Forbidden imports and global-RNG uses in one core source file, as messages."""
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
    """All violations of the purity rule under ``core_dir``."""
    out: list[str] = []
    for p in sorted(core_dir.rglob("*.py")):
        out.extend(file_violations(p))
    return out


# -- rule 2: the package graph ----------------------------------------------------------

#: Test support inside the wheel: it may import anything, production may not import it.
TEST_SUPPORT = "testing"

#: Folders of the repository that no module under ``raftd/`` may import.
OUTSIDE_THE_WHEEL = frozenset({"harness", "tests"})

_BASE = frozenset({"core", "wire", "netio"})
_NET = _BASE | {"security", "transport"}
_DATA = _BASE | {"storage", "kv"}
_GROUP = _NET | _DATA | {"runtime"}
_BELOW_APP = _GROUP | {"discovery", "api", "etcd", "ops", "formation", "client"}

LAYERS: dict[str, frozenset[str]] = {
    # package (under raftd/): the packages it may import. Lower layers first.
    "raftd": frozenset(),  # raftd/__init__.py: imported by everything, imports nothing
    "core": frozenset(),  # pure: see rule 1
    "wire": frozenset({"core"}),
    "netio": frozenset(),  # socket I/O for trio streams: imports no raftd package
    "security": _BASE,
    "storage": _BASE,
    "kv": _BASE | {"storage"},
    "transport": _BASE | {"security"},
    "discovery": _NET,
    "client": _BASE,
    "runtime": _NET | _DATA,
    "api": _GROUP,
    "etcd": _GROUP | {"api"},
    "ops": _GROUP,
    "formation": _GROUP | {"discovery"},
    # The composition root: builds every service from its parts.
    "app": _BELOW_APP,
    # In-process clusters, the simulator, the linearizability checker: a library for
    # users' own tests, shipped in the wheel (the harnesses live outside it).
    TEST_SUPPORT: _BELOW_APP | {"app"},
    # The command line: runs the app, talks to daemons through the client; ``raftd
    # dev`` runs the local cluster helper of the testing library.
    "cli": _BELOW_APP | {"app", TEST_SUPPORT},
    "__main__": frozenset({"cli"}),
}

#: Imports tolerated for now, by (importing file, imported package), with the reason.
#: Each names a harness that still lives inside the wheel and is on its way out to the
#: top-level ``harness/`` folder; delete the entry when the file moves.
TEMPORARY_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True, slots=True)
class Edge:
    """One import of package ``dst`` by a module of package ``src``."""

    src: str
    dst: str
    file: str  # relative to the checked root
    line: int
    where: str  # "module level", "in a function", "under TYPE_CHECKING"

    @property
    def site(self) -> str:
        return f"{self.file}:{self.line}"


def module_of(root: Path, path: Path) -> tuple[str, bool]:
    """(dotted module name, is a package ``__init__``) of ``path`` under ``root``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts.pop()
    return ".".join(parts), is_pkg


def package_of(module: str) -> str | None:
    """The graph node of a dotted name: ``raftd.api.service`` -> ``api``, ``raftd`` ->
    ``raftd``, ``harness.x`` -> ``harness``; None for anything else (stdlib, third
    party)."""
    parts = module.split(".")
    if parts[0] == "raftd":
        return parts[1] if len(parts) > 1 else "raftd"
    if parts[0] in OUTSIDE_THE_WHEEL:
        return parts[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in ``tree`` with where it sits."""

    def walk(node: ast.AST, where: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, where
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, "in a function" if where == "module level" else where)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "under TYPE_CHECKING")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), where)
            else:
                yield from walk(child, where)

    yield from walk(tree, "module level")


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool) -> list[str]:
    """Absolute dotted names an import statement brings in (relative ones resolved).
    ``from pkg import name`` yields ``pkg.name``: a submodule or an attribute of ``pkg``,
    in the same package either way."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base)
        mod = f"{prefix}.{node.module}" if node.module else prefix
    else:
        mod = node.module or ""
    return [f"{mod}.{a.name}" for a in node.names if a.name != "*"] or [mod]


def collect_edges(root: Path) -> list[Edge]:
    """Every import between two different packages in ``root/raftd``."""
    out: list[Edge] = []
    for path in sorted((root / "raftd").rglob("*.py")):
        module, is_pkg = module_of(root, path)
        src = package_of(module)
        assert src is not None
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, where in _imports(tree):
            seen: set[str] = set()
            for name in imported_names(node, module, is_pkg):
                dst = package_of(name)
                if dst is None or dst == src or dst in seen:
                    continue
                seen.add(dst)
                out.append(Edge(src, dst, rel, node.lineno, where))
    return out


def split_exceptions(
    edges: Iterable[Edge], exceptions: Mapping[tuple[str, str], str] = TEMPORARY_EXCEPTIONS
) -> tuple[list[Edge], list[Edge], list[tuple[str, str]]]:
    """(checked edges, excepted edges, exceptions that matched nothing)."""
    kept: list[Edge] = []
    excepted: list[Edge] = []
    used: set[tuple[str, str]] = set()
    for e in edges:
        key = (e.file, e.dst)
        if key in exceptions:
            excepted.append(e)
            used.add(key)
        else:
            kept.append(e)
    return kept, excepted, [k for k in exceptions if k not in used]


def layer_violations(
    edges: Iterable[Edge], layers: Mapping[str, frozenset[str]] = LAYERS
) -> list[str]:
    """Messages for every edge the table does not allow, and unknown packages."""
    out: list[str] = []
    unknown: set[str] = set()
    for e in edges:
        if e.src not in layers:
            unknown.add(e.src)
            continue
        if e.dst in OUTSIDE_THE_WHEEL:
            out.append(f"{e.site}: {e.src} imports {e.dst} ({e.where}): outside the wheel")
        elif e.dst not in layers:
            unknown.add(e.dst)
        elif e.dst not in layers[e.src]:
            why = ""
            if e.dst == "app":
                why = ": app is the composition root, only cli and testing import it"
            elif e.dst == TEST_SUPPORT:
                why = ": production code does not import the test support"
            out.append(f"{e.site}: {e.src} may not import {e.dst} ({e.where}){why}")
    out.extend(
        f"raftd/{u}: package {u} is not in the layer table (harness/layers.py LAYERS)"
        for u in sorted(unknown)
    )
    return out


def graph_of(edges: Iterable[Edge]) -> dict[str, dict[str, list[Edge]]]:
    """src -> dst -> the import sites of that edge (in file order)."""
    g: dict[str, dict[str, list[Edge]]] = defaultdict(dict)
    for e in edges:
        g[e.src].setdefault(e.dst, []).append(e)
    return g


def find_cycles(
    graph: Mapping[str, Mapping[str, Sequence[Edge]]], limit: int = 1000
) -> list[list[str]]:
    """The elementary cycles of ``graph`` (at most ``limit``), each as a list of
    packages starting from its smallest name, sorted."""
    nodes = sorted(set(graph) | {d for ds in graph.values() for d in ds})
    cycles: list[list[str]] = []
    for start in nodes:
        # Only cycles whose smallest node is ``start``: each cycle is found once.
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, {}))))]
        path = [start]
        on_path = {start}
        while stack and len(cycles) < limit:
            _, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                on_path.discard(path.pop())
                continue
            if nxt == start:
                cycles.append(list(path))
            elif nxt > start and nxt not in on_path:
                stack.append((nxt, iter(sorted(graph.get(nxt, {})))))
                path.append(nxt)
                on_path.add(nxt)
    return sorted(cycles)


def describe_cycle(cycle: Sequence[str], graph: Mapping[str, Mapping[str, Sequence[Edge]]]) -> str:
    """``a -> b -> a`` and, per edge, its first import sites."""
    ring = [*cycle, cycle[0]]
    lines = ["cycle: " + " -> ".join(ring)]
    for a, b in itertools.pairwise(ring):
        sites = graph[a][b]
        shown = ", ".join(f"{e.site} ({e.where})" for e in sites[:3])
        more = f" and {len(sites) - 3} more" if len(sites) > 3 else ""
        lines.append(f"  {a} -> {b}: {shown}{more}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Report:
    """What :func:`check` found; ``ok`` when there is nothing to fix."""

    purity: list[str]
    layers: list[str]
    cycles: list[str]
    stale_exceptions: list[str]
    excepted: list[Edge]
    packages: int
    edges: int

    @property
    def ok(self) -> bool:
        """No violation (stale exceptions are warnings)."""
        return not (self.purity or self.layers or self.cycles)


def check(
    root: Path,
    *,
    layers: Mapping[str, frozenset[str]] = LAYERS,
    exceptions: Mapping[tuple[str, str], str] = TEMPORARY_EXCEPTIONS,
) -> Report:
    """Run both rules on the tree at ``root`` (the directory holding ``raftd/``)."""
    core = root / "raftd" / "core"
    purity = core_violations(core) if core.is_dir() else []
    kept, excepted, stale = split_exceptions(collect_edges(root), exceptions)
    graph = graph_of(kept)
    cycles = [describe_cycle(c, graph) for c in find_cycles(graph)]
    return Report(
        purity=purity,
        layers=layer_violations(kept, layers),
        cycles=cycles,
        stale_exceptions=[
            f"{f}: temporary exception for importing {d} matches no import: remove it"
            for f, d in stale
        ],
        excepted=excepted,
        packages=len(set(graph) | {d for ds in graph.values() for d in ds}),
        edges=sum(len(ds) for ds in graph.values()),
    )


def main(argv: list[str] | None = None) -> int:
    """Check ROOT (default: this checkout); exit status 1 on any violation."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1]
    r = check(root)
    for msg in [*r.purity, *r.layers, *r.cycles]:
        print(msg, file=sys.stderr)
    for e in r.excepted:
        reason = TEMPORARY_EXCEPTIONS[(e.file, e.dst)]
        print(f"note: {e.site}: {e.src} -> {e.dst} tolerated for now ({reason})")
    for msg in r.stale_exceptions:
        print(f"warning: {msg}")
    if not r.ok:
        print(
            f"layer rules broken: {len(r.purity)} impure import(s) in raftd/core, "
            f"{len(r.layers)} forbidden import(s), {len(r.cycles)} package cycle(s)",
            file=sys.stderr,
        )
        return 1
    print(
        f"layer rules ok: raftd/core is pure; {r.packages} packages, {r.edges} "
        "package edges, all allowed, no cycle"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
