"""Layers import downward only, harness modules import no cycle, and no locustfile folder shadows a module.

Every import is read from the source with `ast` (nothing is imported): module-level imports, imports
inside functions, and imports under `if TYPE_CHECKING:` all count, because a cycle or an upward
dependency hidden in a function is still one. Importing `a.b.c` also runs `a/b/__init__.py`, so for
cycles an import of a submodule counts as an import of its package too (while the nemesis imports
harness.testbed.proxies, a harness/testbed/__init__.py importing bed.py would make
`import harness.scenario` fail half-way).

The checker functions are tested on synthetic modules at the bottom, so the rules are shown to catch
what they claim.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import itertools
import os
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "mock_switch")

# Rank of each part, low to high. A module may import modules of its own part, and of parts of
# strictly lower rank: never a part of a higher rank, nor another part of the same rank.
RANKS: dict[str, int] = {
    # The system under test: anyone may use its configuration and codes; it knows nothing of the harness.
    "mock_switch": -1,
    # Data: the top-level harness modules (errors, scenario, links, history, timeline, rundir, procs ...),
    # the words and files every part shares. Every top-level module but runner, cli and pytest_plugin.
    "harness": 0,
    # Parts that need only data: the nemesis breaks things it knows as protocols; checkers are pure
    # (a run directory in, verdicts out), so a saved run can be checked again.
    "harness.nemesis": 1,
    "harness.checkers": 1,
    # Parts that run or show things: the testbed hands the nemesis what to break; the load and the
    # report use the checkers' one definition of a percentile and of availability.
    "harness.testbed": 2,
    "harness.load": 2,
    "harness.report": 2,
    # The live side: watches a running testbed and judges it with the checkers while the run goes.
    "harness.observe": 3,
    # The conformance run: checks a live target against the contract (data) without faults.
    "harness.conform": 3,
    # The runner composes every part into one run.
    "harness.runner": 4,
    # Front ends: browsers (web: the chaos session, its control API, `harness ui` / `up`) and CI
    # (pytest_plugin). Nothing below imports them.
    "harness.web": 5,
    "harness.pytest_plugin": 5,
    # The `harness` command is the outermost entry point: it dispatches to every front end.
    "harness.cli": 6,
}

# Locust puts the locustfile's folder first on sys.path, so a module there named like another
# importable module would replace it for everything Locust imports.
LOCUSTFILE_FOLDERS = ("harness/load", "harness/web")


# Violations that exist today in files edited elsewhere: rule and import (or cycle) -> why, and what
# it waits for. The test fails on any violation not listed here, and on an entry that no longer
# occurs, so this list only shrinks.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


# -- reading imports ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str  # harness.testbed.bed
    path: Path
    is_package: bool  # an __init__.py


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module imported: `from harness.observe import snapshot` is harness.observe.snapshot
    path: Path
    line: int
    where: str  # "module level", "in make_testbed()", "under TYPE_CHECKING" ...

    def at(self) -> str:
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}, {self.where}"


def read_modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportReader(ast.NodeVisitor):
    def __init__(self, module: Module, known: Collection[str]) -> None:
        self.module = module
        self.known = known
        self.context: list[str] = []
        self.found: list[Import] = []

    def _within(self, label: str, nodes: Iterable[ast.AST]) -> None:
        self.context.append(label)
        for node in nodes:
            self.visit(node)
        self.context.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._within(f"in {node.name}()", node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._within("under TYPE_CHECKING", node.body)
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = self.module.name if self.module.is_package else self.module.name.rpartition(".")[0]
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else base, node.lineno)

    def _add(self, target: str, line: int) -> None:
        if target.split(".")[0] in PACKAGES:
            where = " ".join(reversed(self.context)) or "module level"
            self.found.append(Import(self.module.name, target, self.module.path, line, where))


def read_imports(modules: Mapping[str, Module]) -> list[Import]:
    found: list[Import] = []
    for module in modules.values():
        reader = _ImportReader(module, modules)
        reader.visit(ast.parse(module.path.read_text(), str(module.path)))
        found += reader.found
    return found


# -- the rules --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    rule: str  # cycle | upward | sideways | unranked | shadow
    subject: str  # "a -> b" for an import, "a -> b -> a" for a cycle, a file name for a shadow
    detail: str

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.subject

    def __str__(self) -> str:
        return f"[{self.rule}] {self.subject}\n    {self.detail}"


def part_of(module: str, packages: Collection[str]) -> str | None:
    """The RANKS entry a module belongs to; None for a sub-package nobody ranked yet."""
    if module == "mock_switch" or module.startswith("mock_switch."):
        return "mock_switch"
    for part in RANKS:
        if part not in ("harness", "mock_switch") and (module == part or module.startswith(part + ".")):
            return part
    if module == "harness" or (module.count(".") == 1 and module not in packages):
        return "harness"
    return None


def _label(part: str) -> str:
    return "data (top-level harness modules)" if part == "harness" else part


def layer_violations(imports: Iterable[Import], packages: Collection[str]) -> list[Violation]:
    """Imports of a part of higher rank (upward), of another part of the same rank (sideways), or of
    or from a module in no rank (unranked). One violation per importer and target."""
    found: dict[tuple[str, str], list[Import]] = {}
    rules: dict[tuple[str, str], tuple[str, str]] = {}
    for imp in imports:
        mine, theirs = part_of(imp.importer, packages), part_of(imp.target, packages)
        if mine is None or theirs is None:
            unranked = imp.importer if mine is None else imp.target
            rule, why = "unranked", f"{unranked} belongs to no part of RANKS: give its package a rank"
        elif mine == theirs or RANKS[theirs] < RANKS[mine]:
            continue
        else:
            rule = "upward" if RANKS[theirs] > RANKS[mine] else "sideways"
            why = (
                f"{_label(mine)} (rank {RANKS[mine]}) may import only its own part and parts of rank"
                f" < {RANKS[mine]}; {_label(theirs)} is rank {RANKS[theirs]}"
            )
        subject = f"{imp.importer} -> {imp.target}"
        found.setdefault((rule, subject), []).append(imp)
        rules[(rule, subject)] = (rule, why)
    return [
        Violation(rule, subject, f"{rules[(rule, subject)][1]} ({'; '.join(dict.fromkeys(i.at() for i in imps))})")
        for (rule, subject), imps in found.items()
    ]


def import_graph(imports: Iterable[Import], known: Collection[str]) -> dict[str, dict[str, Import]]:
    """Module -> module it makes Python import -> the import statement responsible. Importing a.b.c
    runs a/__init__.py and a/b/__init__.py first, unless the importer is inside them (they have run);
    a module that names its own package explicitly still depends on it."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        parts = imp.target.split(".")
        implied = [".".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
        for target in [imp.target, *(p for p in implied if not imp.importer.startswith(p + "."))]:
            if target in known and target != imp.importer:
                graph.setdefault(imp.importer, {}).setdefault(target, imp)
    return graph


def find_cycles(graph: Mapping[str, Collection[str]]) -> list[tuple[str, ...]]:
    """Every elementary cycle once, as a path from its smallest module back to it (so it reads the
    same on every run)."""
    cycles: list[tuple[str, ...]] = []

    def walk(start: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                cycles.append((*path, start))
            elif nxt > start and nxt not in path:
                walk(start, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return cycles


def cycle_violations(imports: Iterable[Import], known: Collection[str]) -> list[Violation]:
    harness = {m for m in known if m.split(".")[0] == "harness"}
    graph = import_graph(imports, harness)
    found = []
    for cycle in find_cycles(graph):
        steps = []
        for a, b in itertools.pairwise(cycle):
            imp = graph[a][b]
            how = f"imports {b}" if imp.target == b else f"runs {b} by importing {imp.target}"
            steps.append(f"{a} {how} ({imp.at()})")
        found.append(Violation("cycle", " -> ".join(cycle), "; ".join(steps)))
    return found


def shadowing_violations(folder: Path, search_path: Iterable[str]) -> list[Violation]:
    """Modules of `folder` named like a standard-library module or a module importable from
    `search_path` without that folder (found without importing anything)."""
    here = folder.resolve()
    path = [p for p in search_path if Path(p or ".").resolve() != here]
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    names += sorted(d.name for d in folder.iterdir() if (d / "__init__.py").is_file())
    found = []
    for name in names:
        if name in sys.stdlib_module_names:
            other = "the standard library"
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None:
                continue
            other = spec.origin or ", ".join(spec.submodule_search_locations or ()) or "a namespace package"
        found.append(
            Violation("shadow", f"{folder.name}/{name}", f"Locust puts {folder} on sys.path; {name} hides {other}")
        )
    return found


@functools.cache
def current_violations() -> tuple[Violation, ...]:
    modules = read_modules(ROOT)
    imports = read_imports(modules)
    packages = {m.name for m in modules.values() if m.is_package}
    found = cycle_violations(imports, modules) + layer_violations(imports, packages)
    for folder in LOCUSTFILE_FOLDERS:
        found += shadowing_violations(ROOT / folder, sys.path)
    return tuple(found)


def _unexpected(rules: Collection[str]) -> list[str]:
    return [str(v) for v in current_violations() if v.rule in rules and v.key not in KNOWN_VIOLATIONS]


# -- the project's own imports ----------------------------------------------------------------------------


def test_harness_modules_import_no_cycle() -> None:
    unexpected = _unexpected({"cycle"})
    assert not unexpected, "import cycles (break them; see RANKS):\n" + "\n".join(unexpected)


def test_layers_import_downward_only() -> None:
    unexpected = _unexpected({"upward", "sideways", "unranked"})
    assert not unexpected, "imports against the layers (see RANKS):\n" + "\n".join(unexpected)


def test_no_module_in_a_locustfile_folder_shadows_another() -> None:
    unexpected = _unexpected({"shadow"})
    assert not unexpected, "rename these modules:\n" + "\n".join(unexpected)


def test_every_known_violation_still_occurs() -> None:
    occurring = {v.key for v in current_violations()}
    gone = [f"[{rule}] {subject}" for rule, subject in KNOWN_VIOLATIONS if (rule, subject) not in occurring]
    assert not gone, "fixed: delete these from KNOWN_VIOLATIONS (and any shim kept for them):\n" + "\n".join(gone)


# Imports each module named on the command line first, into an interpreter holding no project module.
_IMPORT_EACH_FIRST = """
import importlib, sys
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.partition(".")[0] in ("harness", "mock_switch")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")
"""


def test_every_module_can_be_imported_first() -> None:
    """The rules above cannot tell an import deferred into a function from one that runs at import
    time; this catches the cycle that bites (a name asked of a half-initialised module), whichever
    module a program happens to import first."""
    modules = read_modules(ROOT)
    # Not __main__ (it runs the program). Those that import Locust go first, as inside Locust: it
    # monkey-patches ssl, which fails once anything else has imported ssl.
    names = [m.name for m in sorted(modules.values(), key=_not_locust) if not m.name.endswith("__main__")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _IMPORT_EACH_FIRST, *names],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", "these modules fail when imported first:\n" + proc.stdout


def _not_locust(module: Module) -> bool:
    source = module.path.read_text()
    return "\nfrom locust" not in source and "\nimport locust" not in source


def test_the_reader_sees_the_project() -> None:
    """Guards the checks above against passing on an empty or misread tree."""
    modules = read_modules(ROOT)
    assert {"harness.runner", "harness.testbed", "harness.testbed.bed", "mock_switch.config"} <= set(modules)
    imports = {(i.importer, i.target) for i in read_imports(modules)}
    assert ("harness.testbed.containers", "harness.testbed.bed") in imports
    assert ("harness.runner", "harness.observe.snapshot") in imports  # `from harness.observe import snapshot`


# -- the checkers, on synthetic modules -------------------------------------------------------------------


def _tree(tmp_path: Path, files: Mapping[str, str]) -> tuple[dict[str, Module], list[Import]]:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    modules = read_modules(tmp_path)
    return modules, read_imports(modules)


def test_reader_finds_imports_at_module_level_in_functions_and_under_type_checking(tmp_path: Path) -> None:
    _, imports = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/errors.py": "",
            "harness/testbed/__init__.py": "",
            "harness/testbed/bed.py": "",
            "harness/testbed/local.py": (
                "from typing import TYPE_CHECKING\nimport json\nfrom harness import errors\n"
                "if TYPE_CHECKING:\n    from harness.web.ui import x\n"
                "def f():\n    from . import bed\n    from ..runner import run\n"
            ),
        },
    )
    found = {(i.target, i.line, i.where) for i in imports}
    assert found == {
        ("harness.errors", 3, "module level"),  # a submodule named in `from package import name`
        ("harness.web.ui", 5, "under TYPE_CHECKING"),
        ("harness.testbed.bed", 7, "in f()"),  # relative
        ("harness.runner", 8, "in f()"),
    }  # json: not a project module


def test_cycle_is_found_with_its_path_even_behind_a_function_level_import(tmp_path: Path) -> None:
    modules, imports = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/a.py": "import harness.b\n",
            "harness/b.py": "def f():\n    import harness.c\n",
            "harness/c.py": "from harness.a import x\n",
            "harness/d.py": "import harness.a\n",  # imports the cycle, is not in it
        },
    )
    [cycle] = cycle_violations(imports, modules)
    assert cycle.subject == "harness.a -> harness.b -> harness.c -> harness.a"
    assert "in f()" in cycle.detail and "harness/b.py:2" in cycle.detail


def test_cycle_through_a_package_init_run_by_importing_its_submodule(tmp_path: Path) -> None:
    modules, imports = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/nemesis/__init__.py": "",
            "harness/nemesis/injector.py": "from harness.testbed.proxies import Link\n",
            "harness/testbed/__init__.py": "from harness.testbed.bed import Testbed\n",
            "harness/testbed/bed.py": "from harness.nemesis.injector import Nemesis\n",
            "harness/testbed/proxies.py": "",
        },
    )
    [cycle] = cycle_violations(imports, modules)
    assert (
        cycle.subject
        == "harness.nemesis.injector -> harness.testbed -> harness.testbed.bed -> harness.nemesis.injector"
    )
    assert "runs harness.testbed by importing harness.testbed.proxies" in cycle.detail


def test_no_cycle_for_a_package_importing_its_submodules(tmp_path: Path) -> None:
    modules, imports = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/testbed/__init__.py": "from harness.testbed.bed import Testbed\n",
            "harness/testbed/bed.py": "from harness.testbed.local import x\n",
            "harness/testbed/local.py": "",
        },
    )
    assert cycle_violations(imports, modules) == []


def test_upward_sideways_and_unranked_imports_are_found(tmp_path: Path) -> None:
    modules, imports = _tree(
        tmp_path,
        {
            "harness/__init__.py": "",
            "harness/history.py": "import harness.errors\nimport mock_switch.config\n",  # data -> data, -> SUT
            "harness/errors.py": "",
            "harness/runner.py": "",
            "harness/checkers/__init__.py": "",
            "harness/checkers/availability.py": "def f():\n    import harness.runner\n",  # 1 -> 4
            "harness/load/__init__.py": "",
            "harness/load/control.py": "import harness.checkers.availability\nimport harness.testbed.bed\n",
            "harness/testbed/__init__.py": "",
            "harness/testbed/bed.py": "from harness.testbed import local\n",  # its own part
            "harness/testbed/local.py": "",
            "harness/extra/__init__.py": "",
            "harness/extra/thing.py": "",
            "harness/cli.py": "import harness.extra.thing\n",
            "mock_switch/__init__.py": "",
            "mock_switch/config.py": "from harness import errors\n",  # the system under test knows no harness
        },
    )
    packages = {m.name for m in modules.values() if m.is_package}
    found = {v.key for v in layer_violations(imports, packages)}
    assert found == {
        ("upward", "harness.checkers.availability -> harness.runner"),
        ("sideways", "harness.load.control -> harness.testbed.bed"),
        ("unranked", "harness.cli -> harness.extra.thing"),
        ("upward", "mock_switch.config -> harness.errors"),
    }


def test_a_module_named_like_another_importable_module_is_found(tmp_path: Path) -> None:
    folder = tmp_path / "load"
    folder.mkdir()
    for name in ("json", "pytest", "customers", "__init__"):  # stdlib, installed, fine, ignored
        (folder / f"{name}.py").write_text("")
    (folder / "yaml").mkdir()  # a package (shadows PyYAML) ...
    (folder / "yaml" / "__init__.py").write_text("")
    (folder / "templates").mkdir()  # ... but a folder without __init__.py imports as nothing
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    (elsewhere / "customers.py").write_text("")
    found = {v.subject for v in shadowing_violations(folder, [str(folder), *sys.path])}
    assert found == {"load/json", "load/pytest", "load/yaml"}  # itself (load/customers) is not a clash
    found = {v.subject for v in shadowing_violations(folder, [str(folder), str(elsewhere), *sys.path])}
    assert "load/customers" in found


@pytest.mark.parametrize(
    ("part", "module"),
    [("harness", "harness.links"), ("harness.testbed", "harness.testbed"), ("harness.web", "harness.web.ui")],
)
def test_part_of(part: str, module: str) -> None:
    assert part_of(module, {"harness", "harness.testbed", "harness.web"}) == part
