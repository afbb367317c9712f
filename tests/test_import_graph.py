"""The package's import graph: no cycles, and no module imports a higher floor.

Floors, lowest first: `zoom_refine.tools` < `zoom_refine.agent` (with `agent.local`) <
`zoom_refine.graphs` < `zoom_refine.evals` < the rest (`zoom_refine` itself, `cli`, `testing`).
A module may import its own floor or lower ones, never a higher one.

Every import statement counts, wherever it stands: at the top, inside a function (a lazy import),
under `if TYPE_CHECKING:`. `from zoom_refine.x import y` is an edge to `zoom_refine.x.y` when that
is a module, else to `zoom_refine.x`. An edge goes to the module named, not to the packages above
it that Python also runs: those `__init__` files are checked as modules of their own.
Source files are found through pyproject's `[tool.setuptools]` packages and package-dir, the way
they are installed (`tools/` is `zoom_refine.tools`, …).
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zoom_refine"
FLOORS = (
    "zoom_refine.tools",
    "zoom_refine.agent",
    "zoom_refine.graphs",
    "zoom_refine.evals",
)
"""Lowest first; every other `zoom_refine` module is on the floor above the last."""

Graph = Mapping[str, Mapping[str, list[str]]]
"""module -> imported module -> where ("path:line") each import of it stands."""


@dataclass(frozen=True)
class ModuleFile:
    name: str
    path: Path
    is_package: bool


def package_folders(root: Path = ROOT) -> dict[str, Path]:
    """Each package's folder: those pyproject lists, where its package-dir says (or its dotted
    path), and any folder with an `__init__.py` below one of them (as `parent.folder`)."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    folders = {
        package: root / package_dir.get(package, package.replace(".", "/"))
        for package in setuptools["packages"]
    }
    pending = list(folders.items())
    while pending:
        package, folder = pending.pop()
        for child in sorted(folder.iterdir()):
            name = f"{package}.{child.name}"
            if (child / "__init__.py").is_file() and name not in folders:
                folders[name] = child
                pending.append((name, child))
    return folders


def unlisted_packages(root: Path = ROOT) -> list[str]:
    """Package folders that pyproject's `packages` leaves out (a wheel would not install them)."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return sorted(set(package_folders(root)) - set(setuptools["packages"]))


def module_files(root: Path = ROOT) -> dict[str, ModuleFile]:
    """Every module of the package, by dotted name, from pyproject's packages and package-dir."""
    modules: dict[str, ModuleFile] = {}
    for package, folder in package_folders(root).items():
        for path in sorted(folder.glob("*.py")):
            if path.stem == "__init__":
                modules[package] = ModuleFile(package, path, is_package=True)
            else:
                name = f"{package}.{path.stem}"
                modules[name] = ModuleFile(name, path, is_package=False)
    return modules


def imported_names(module: ModuleFile, source: str) -> Iterable[tuple[str, int, list[str]]]:
    """(module or package imported from, line, names imported) for every import statement.

    `import a.b` gives ("a.b", line, []); `from a import b, c` gives ("a", line, ["b", "c"]);
    relative imports are resolved against the module's package."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename=str(module.path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield base, node.lineno, [alias.name for alias in node.names]


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def edges_of(
    module: ModuleFile, source: str, known: Iterable[str], root: Path = ROOT
) -> dict[str, list[str]]:
    """The `zoom_refine` modules `module` imports, each with where ("path:line")."""
    known = set(known)
    where = module.path.relative_to(root) if module.path.is_relative_to(root) else module.path
    edges: dict[str, list[str]] = {}
    for base, line, names in imported_names(module, source):
        targets = [f"{base}.{name}" if f"{base}.{name}" in known else base for name in names]
        for target in targets or [base]:
            if not _in_package(target) or target == module.name:
                continue
            places = edges.setdefault(target, [])
            if f"{where}:{line}" not in places:  # `from m import a, b`: one edge, one place
                places.append(f"{where}:{line}")
    return edges


def import_graph(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    modules = module_files(root)
    return {
        name: edges_of(module, module.path.read_text(encoding="utf-8"), modules, root)
        for name, module in modules.items()
    }


def floor(module: str) -> int:
    for level, prefix in enumerate(FLOORS):
        if module == prefix or module.startswith(prefix + "."):
            return level
    return len(FLOORS)


def floor_name(module: str) -> str:
    level = floor(module)
    return FLOORS[level] if level < len(FLOORS) else f"{PACKAGE} (top)"


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle (first module repeated at the end) per strongly connected group of modules."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the package is small enough to recurse
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, {})):
            if target not in index:
                connect(target)
                lowlink[node] = min(lowlink[node], lowlink[target])
            elif target in on_stack:
                lowlink[node] = min(lowlink[node], index[target])
        if lowlink[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_through(graph, group) for group in sorted(groups)]


def _cycle_through(graph: Graph, group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to it, inside the group."""
    start, members = group[0], set(group)
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph.get(node, {})):
            if target == start:
                return [*paths[node], start]
            if target in members and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strong component


def upward_edges(graph: Graph) -> list[tuple[str, str]]:
    return sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if floor(source) < floor(target)
    )


def describe_cycles(graph: Graph) -> str:
    lines = []
    for cycle in find_cycles(graph):
        steps = [
            f"    {source} -> {target}  ({', '.join(graph[source][target])})"
            for source, target in itertools.pairwise(cycle)
        ]
        lines.append("  cycle: " + " -> ".join(cycle) + "\n" + "\n".join(steps))
    return "import cycles in zoom_refine:\n" + "\n".join(lines) if lines else ""


def describe_upward_edges(graph: Graph) -> str:
    lines = [
        f"  {source} [{floor_name(source)}] imports {target} [{floor_name(target)}]"
        f"  ({', '.join(graph[source][target])})"
        for source, target in upward_edges(graph)
    ]
    order = " < ".join([*FLOORS, f"{PACKAGE} (top)"])
    return f"imports of a higher floor ({order}):\n" + "\n".join(lines) if lines else ""


# --- the package --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, list[str]]]:
    return import_graph()


def test_every_installed_module_is_in_the_graph(graph: Graph) -> None:
    for name in ("zoom_refine", "zoom_refine.cli", "zoom_refine.tools.boxes"):
        assert name in graph
    assert "zoom_refine.agent.local.model" in graph  # a nested package, through package-dir
    assert graph["zoom_refine.agent.local.model"], "the parser found no imports"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    missing = unlisted_packages()
    assert not missing, f"add to [tool.setuptools] packages (and package-dir): {missing}"


def test_every_package_import_names_a_module(graph: Graph) -> None:
    unknown = [
        f"  {source} imports {target}  ({', '.join(where)})"
        for source, targets in graph.items()
        for target, where in targets.items()
        if target not in graph
    ]
    assert not unknown, "imports of no module of the package:\n" + "\n".join(unknown)


def test_no_import_cycles(graph: Graph) -> None:
    message = describe_cycles(graph)
    print(message or "no import cycles")
    assert not message, message


def test_no_module_imports_a_higher_floor(graph: Graph) -> None:
    message = describe_upward_edges(graph)
    print(message or "no imports of a higher floor")
    assert not message, message


# --- the checker itself -------------------------------------------------------------------------


def test_checker_reports_a_planted_cycle_and_upward_edge() -> None:
    planted: dict[str, dict[str, list[str]]] = {
        "zoom_refine.agent.a": {"zoom_refine.agent.local.b": ["agent/a.py:3"]},
        "zoom_refine.agent.local.b": {"zoom_refine.agent.a": ["agent/local/b.py:40"]},
        "zoom_refine.tools.c": {"zoom_refine.graphs.d": ["tools/c.py:7"]},
        "zoom_refine.graphs.d": {"zoom_refine.tools.c": ["graphs/d.py:1"]},
        "zoom_refine.evals.e": {"zoom_refine": ["evals/e.py:9"], "zoom_refine.tools.c": []},
        "zoom_refine": {"zoom_refine.evals.e": ["zoom_refine/__init__.py:2"]},
        "zoom_refine.graphs.f": {"zoom_refine.agent.local.b": ["graphs/f.py:5"]},
    }
    assert find_cycles(planted) == [
        ["zoom_refine", "zoom_refine.evals.e", "zoom_refine"],
        ["zoom_refine.agent.a", "zoom_refine.agent.local.b", "zoom_refine.agent.a"],
        ["zoom_refine.graphs.d", "zoom_refine.tools.c", "zoom_refine.graphs.d"],
    ]
    assert upward_edges(planted) == [
        ("zoom_refine.evals.e", "zoom_refine"),
        ("zoom_refine.tools.c", "zoom_refine.graphs.d"),
    ]
    cycles, upward = describe_cycles(planted), describe_upward_edges(planted)
    print(f"{cycles}\n{upward}")
    assert "zoom_refine.agent.local.b -> zoom_refine.agent.a  (agent/local/b.py:40)" in cycles
    assert (
        "zoom_refine.tools.c [zoom_refine.tools] imports zoom_refine.graphs.d "
        "[zoom_refine.graphs]  (tools/c.py:7)" in upward
    )
    assert (
        "zoom_refine.evals.e [zoom_refine.evals] imports zoom_refine [zoom_refine (top)]" in upward
    )


def test_checker_sees_lazy_relative_and_module_imports(tmp_path: Path) -> None:
    source = (
        "from __future__ import annotations\n"
        "import zoom_refine.tools.boxes\n"
        "from zoom_refine.agent import families, NOT_A_MODULE\n"
        "from . import prompts\n"
        "from .local.model import LocalVisionChatModel\n"
        "import json\n"
        "def later():\n"
        "    from zoom_refine.graphs.calls import resolve_family\n"
        "    from zoom_refine import __version__\n"
    )
    module = ModuleFile("zoom_refine.agent.example", tmp_path / "example.py", is_package=False)
    known = [
        "zoom_refine",
        "zoom_refine.agent",
        "zoom_refine.agent.families",
        "zoom_refine.agent.prompts",
        "zoom_refine.agent.local.model",
        "zoom_refine.graphs.calls",
        "zoom_refine.tools.boxes",
    ]
    edges = edges_of(module, source, known, root=tmp_path)
    assert edges == {
        "zoom_refine.tools.boxes": ["example.py:2"],
        "zoom_refine.agent.families": ["example.py:3"],
        "zoom_refine.agent": ["example.py:3"],
        "zoom_refine.agent.prompts": ["example.py:4"],
        "zoom_refine.agent.local.model": ["example.py:5"],
        "zoom_refine.graphs.calls": ["example.py:8"],
        "zoom_refine": ["example.py:9"],
    }
    assert upward_edges({module.name: edges}) == [
        (module.name, "zoom_refine"),
        (module.name, "zoom_refine.graphs.calls"),
    ]
