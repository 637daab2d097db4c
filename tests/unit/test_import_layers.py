"""The library's import structure, checked from outside: no import cycles, the layers of the
architecture respected, and the WAL archiver's entry point lean.

Layers, bottom to top (a module may import its own layer's modules where the table allows, and
any layer below; never a layer above):

    errors          imports nothing of ours; importable by every layer
    config          config.defaults imports nothing of ours at all
    clients, postgres   postgres may use clients (the runner), never the other way round
    catalog
    procedures      backup, restore, wal, retention, failover, monitoring, drills: they may
                    import each other, but the graph between them has no cycle
    entry points    cli, airflow_support, manager, the package itself and its __main__:
                    nothing below may import them
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import disaster_recovery

PACKAGE = "disaster_recovery"
SOURCE = Path(disaster_recovery.__file__).resolve().parent
PROCEDURES = ("backup", "restore", "wal", "retention", "failover", "monitoring", "drills")
ENTRY_POINTS = ("cli", "airflow_support", "manager", "console", "__main__", "")  # "" is the package
LAYER_OF = {
    "errors": 0,
    "config": 1,
    "clients": 2,
    "postgres": 2,
    "catalog": 3,
    **dict.fromkeys(PROCEDURES, 4),
    **dict.fromkeys(ENTRY_POINTS, 5),
}
LAYER_NAMES = {
    0: "errors",
    1: "config",
    2: "clients/postgres",
    3: "catalog",
    4: "procedures",
    5: "entry points",
}
# Imports inside one layer between different parts, besides the procedures' (which need only be
# acyclic) and the entry points' (nothing imports those from below anyway).
ALLOWED_SIDEWAYS = {("postgres", "clients")}
# Modules that must not import anything of the package.
LEAVES = ("disaster_recovery.errors", "disaster_recovery.config.defaults")
# The third-party packages the archiver must never load (start-up cost per WAL segment).
HEAVY_FOR_THE_ARCHIVER = ("pydantic", "psycopg", "redis", "airflow")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> list[str]:
    return sorted(module_name(path) for path in SOURCE.rglob("*.py"))


MODULES = all_modules()


def part_of(module: str) -> str:
    """The top-level part of the package a module belongs to ("" for the package itself).
    A ``__main__`` module is a command-line entry point wherever it sits (``python -m
    disaster_recovery.failover`` is ``dr failover``)."""
    parts = module.split(".")
    if parts[-1] == "__main__" and len(parts) > 2:
        return "cli"
    return parts[1] if len(parts) > 1 else ""


def existing_module(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is one of our modules (``from a.b import name``
    names either the module ``a.b.name`` or an attribute of ``a.b``)."""
    while dotted:
        if dotted in MODULES:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def imports_in(path: Path) -> Iterator[Import]:
    """Every import of our package in a module's source, at any depth (inside functions and
    ``if TYPE_CHECKING:`` blocks too), resolved to the module it loads."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for name in names:
            target = existing_module(name) if name.startswith(PACKAGE) else None
            if target is not None and target != module:
                yield Import(module, target, node.lineno, id(node) in inside)


def import_graph() -> list[Import]:
    return [found for path in sorted(SOURCE.rglob("*.py")) for found in imports_in(path)]


def layer_violation(edge: Import) -> str | None:
    """Why an import breaks the layer rules, or None."""
    here, there = part_of(edge.importer), part_of(edge.imported)
    if here == there:
        return None
    where = f"{edge.importer} (line {edge.line}) imports {edge.imported}"
    if edge.importer in LEAVES:
        return f"{where}: {edge.importer} must import nothing of the package"
    low, high = LAYER_OF[here], LAYER_OF[there]
    if high > low:
        return (
            f"{where}: {LAYER_NAMES[low]} ({here}) must not import the higher layer "
            f"{LAYER_NAMES[high]} ({there})"
        )
    if high == low and low not in (4, 5) and (here, there) not in ALLOWED_SIDEWAYS:
        return f"{where}: {here} and {there} share a layer; only {sorted(ALLOWED_SIDEWAYS)} may"
    return None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for following in sorted(graph.get(node, ())):
            if state.get(following) == 1:
                return [*path[path.index(following) :], following]
            if following not in state and (cycle := visit(following)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


# -- (a) each module imports first, in a fresh interpreter ----------------------------------------

# One interpreter loads the third-party packages the library uses (nothing of ours), then forks
# a child per module: each child is a fresh interpreter as far as the package is concerned, and
# the module it imports is the first of ours it loads, so a cycle through that module meets a
# half-initialised one and fails, whichever side of the cycle is named. Forking saves the
# second or so per module that loading pydantic, boto3 and Airflow again would cost.
FORK_PER_MODULE = r"""
import importlib, json, os, sys, traceback
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # the child that needs it reports the failure
assert not any(m.startswith("disaster_recovery") for m in sys.modules), "preloaded ours"
failures = {}
for module in json.loads(sys.argv[2]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc(limit=-3).encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failures[module] = message or f"exit status {status}"
print(json.dumps(failures))
"""
# ``python -m disaster_recovery`` runs the CLI when its __main__ is imported, as __main__
# modules may; it imports only the cli package, which is imported on its own here.
NOT_IMPORTED_ALONE = {"disaster_recovery.__main__"}


def third_party_imports() -> list[str]:
    """Every absolute import outside the package in its source (what the children share)."""
    names: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    ours = (PACKAGE, "dr_sandbox", "__future__")  # dr_sandbox: the development package, ours too
    return sorted(n for n in names if n.split(".")[0] not in ours)


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    import json

    modules = [m for m in MODULES if m not in NOT_IMPORTED_ALONE]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            FORK_PER_MODULE,
            json.dumps(third_party_imports()),
            json.dumps(modules),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"{m}:\n{why}" for m, why in failures.items())


def test_a_cycle_fails_the_fresh_import(tmp_path: Path) -> None:
    """The probe itself catches a cycle: two modules importing a name from each other."""
    import json

    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic.b import B\nA = 1\n")
    (package / "b.py").write_text("from cyclic.a import A\nB = 2\n")
    result = subprocess.run(
        [sys.executable, "-c", FORK_PER_MODULE, "[]", json.dumps(["cyclic.a", "cyclic.b"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(failures) == {"cyclic.a", "cyclic.b"}
    assert "partially initialized" in failures["cyclic.a"]


def test_the_module_list_covers_the_package() -> None:
    # A wrong SOURCE or a glob that finds nothing would make every test here vacuous.
    assert len(MODULES) > 50
    assert {"disaster_recovery.wal.__main__", "disaster_recovery.config.defaults"} <= set(MODULES)


# -- (b) the import graph against the layers -----------------------------------------------------


def test_every_part_of_the_package_has_a_layer() -> None:
    unknown = {part_of(m) for m in MODULES} - set(LAYER_OF)
    assert not unknown, f"give these parts a layer in LAYER_OF: {sorted(unknown)}"


def test_no_module_imports_a_higher_layer() -> None:
    problems = [why for edge in import_graph() if (why := layer_violation(edge))]
    assert not problems, "\n".join(problems)


def test_the_leaves_import_nothing_of_the_package() -> None:
    for leaf in LEAVES:
        found = [e for e in import_graph() if e.importer == leaf]
        assert not found, f"{leaf} imports {[e.imported for e in found]}"


def test_the_procedures_do_not_import_each_other_in_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for edge in import_graph():
        here, there = part_of(edge.importer), part_of(edge.imported)
        if here != there and here in PROCEDURES and there in PROCEDURES:
            graph.setdefault(here, set()).add(there)
    assert find_cycle(graph) is None, find_cycle(graph)


def test_no_module_cycle_even_through_imports_inside_functions() -> None:
    graph: dict[str, set[str]] = {}
    for edge in import_graph():
        graph.setdefault(edge.importer, set()).add(edge.imported)
    # A package imports its own modules only to re-export; a module importing its package's
    # __init__ is Python's mechanics, not a dependency: both left out.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


# The rules themselves must be able to fail: fabricated imports they have to catch.
@pytest.mark.parametrize(
    ("importer", "imported", "complaint"),
    [
        ("disaster_recovery.config.model", "disaster_recovery.wal.archive", "higher layer"),
        ("disaster_recovery.postgres.db", "disaster_recovery.catalog.listing", "higher layer"),
        ("disaster_recovery.backup.logical", "disaster_recovery.manager", "higher layer"),
        ("disaster_recovery.failover.steps", "disaster_recovery.cli.common", "higher layer"),
        ("disaster_recovery.clients.runner", "disaster_recovery.postgres.db", "share a layer"),
        ("disaster_recovery.errors", "disaster_recovery.config.model", "must import nothing"),
        ("disaster_recovery.config.defaults", "disaster_recovery.errors", "must import nothing"),
    ],
)
def test_the_layer_rule_catches(importer: str, imported: str, complaint: str) -> None:
    why = layer_violation(Import(importer, imported, 1, False))
    assert why is not None and complaint in why and importer in why and imported in why


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_inside_functions_are_seen() -> None:
    found = [e for e in import_graph() if e.importer == "disaster_recovery.wal.archive"]
    assert any(e.in_function and e.imported == "disaster_recovery.clients.s3" for e in found)


# -- (c) the archiver's entry point stays lean ----------------------------------------------------

ARCHIVER_PROBE = r"""
import json, os, sys, tempfile
folder = tempfile.mkdtemp()
config = os.path.join(folder, "dr_config.yaml")
with open(config, "w") as f:
    f.write("storage:\n  prefix: probe\n  buckets:\n    us-east-1: a\n    us-west-2: b\n")
os.environ["DR_CONFIG"] = config
for conn in ("DR_AWS_PRIMARY", "DR_AWS_SECONDARY"):
    os.environ["AIRFLOW_CONN_" + conn] = "aws://key:secret@?endpoint_url=http%3A%2F%2F127.0.0.1%3A1"
import disaster_recovery.wal.__main__
from disaster_recovery.wal.archive import WalArchive
# What a push loads before its first upload: the lean policy, both regions' S3 clients.
archive = WalArchive.from_environment()
stores = [archive.store(region) for region in archive.regions]
ours = sorted(m for m in sys.modules if m.startswith("disaster_recovery"))
print(json.dumps({"modules": sorted({m.split(".")[0] for m in sys.modules}), "ours": ours,
                  "regions": archive.regions, "buckets": [s.bucket for s in stores]}))
"""


def test_the_wal_archiver_loads_no_heavy_package() -> None:
    import json

    result = subprocess.run(
        [sys.executable, "-c", ARCHIVER_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # The probe really went down the push path (both regions' stores built).
    assert loaded["regions"] == ["us-east-1", "us-west-2"] and loaded["buckets"] == ["a", "b"]
    assert "disaster_recovery.clients.s3" in loaded["ours"]
    heavy = sorted(set(loaded["modules"]) & set(HEAVY_FOR_THE_ARCHIVER))
    assert heavy == [], f"the WAL archiver imports {heavy}: {loaded['ours']}"
