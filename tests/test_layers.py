"""The package's layers, read from its own imports (lazy ones inside functions included: they tie
modules together just the same when they run).

Build side above device side: the CLI and commands on top, then auto/matrix, the pipeline, the
targets, then the runtimes, then bundle reading and the small shared modules. The only import
circles allowed are registrations (a command module registering on the CLI app it imports; a
model file registering in the model registry that imports it to fill itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "vitedge"

REGISTRATION_CIRCLES = [
    {"vitedge.cli.main", "vitedge.cli.device_cmd", "vitedge.cli.export_cmd", "vitedge.cli.matrix_cmd",
     "vitedge.cli.models_cmd", "vitedge.cli.pretrain_cmd", "vitedge.cli.train_cmd"},
    {"vitedge.models.registry", "vitedge.models.vit", "vitedge.models.convnext"},
]

# (importer prefix, imported prefixes it must not reach directly): device side below build side.
FORBIDDEN = [
    ("vitedge.runtimes", ("vitedge.targets", "vitedge.pipeline", "vitedge.auto", "vitedge.fallback",
                          "vitedge.export", "vitedge.matrix", "vitedge.diagnose", "vitedge.cli")),
    ("vitedge.bundle.manifest", ("vitedge.runtimes", "vitedge.targets", "vitedge.pipeline")),
    ("vitedge.targets", ("vitedge.auto", "vitedge.pipeline", "vitedge.matrix", "vitedge.cli", "vitedge.fallback")),
    ("vitedge.diagnose.readers", ("vitedge.targets",)),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` names a module when pkg.mod is one
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            for t in targets:
                while t and t not in modules:  # a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t and t != name and t != "vitedge":
                    graph[name].add(t)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    g = import_graph()
    assert "vitedge.targets.registry" in g["vitedge.targets.ort_int8"]  # a top-level import
    assert "vitedge.pipeline" in g["vitedge.cli.export_cmd"]  # a lazy one inside a function


def test_no_import_circle_beyond_registration():
    circles = strongly_connected(import_graph())
    assert any("vitedge.cli.main" in c for c in circles)  # the detector sees the registration circle
    extra = [c for c in circles if not any(c <= allowed for allowed in REGISTRATION_CIRCLES)]
    assert not extra, f"import circles: {[sorted(c) for c in extra]}"


def test_device_side_and_bundle_reading_stay_below_the_build_side():
    g = import_graph()
    bad = [(m, t) for m, deps in g.items() for prefix, banned in FORBIDDEN if m.startswith(prefix)
           for t in deps if t.startswith(banned)]
    assert not bad, bad


def test_no_module_over_400_lines_and_commands_that_only_parse_and_print():
    """Issue 23's size rules: a module stays readable (<= 400 lines), and a command function's body
    (after its declared parameters and docstring) stays <= 40 lines: the policy lives in
    vitedge.plan / vitedge.policy, which both export and matrix use."""
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
    commands = 0
    for path in (PKG / "cli").glob("*_cmd.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_command"):
                commands += 1
                body = node.body[1:] if ast.get_docstring(node) else node.body
                lines = body[-1].end_lineno - body[0].lineno + 1
                assert lines <= 40, f"{path.name}: {node.name} has a {lines}-line body"
    assert commands >= 10  # the walk found the command functions
