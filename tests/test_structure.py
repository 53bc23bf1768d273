"""The package's import structure: imports flow one way, from the command line down to the data,
and no module imports one that (directly or not) imports it back.

Every ``import`` and ``from ... import`` in ``evalkit/`` counts, at module level or inside a
function, except those under ``if TYPE_CHECKING:`` (type hints only, never run). Each top-level
part of the package has a layer (``LAYERS``); a module may import its own layer and those below.
``docs/architecture.md`` draws the same picture.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each top-level module or sub-package of evalkit, highest first.
LAYERS = {
    "__main__": 7, "cli": 7, "cli_eval": 7, "cli_common": 7, "cli_compare": 7,
    "runner": 6, "report": 6, "reproduce": 6,
    "benchmarks": 5,
    "protocols": 4,
    "training": 3, "evaluation": 3, "features": 3, "feature_net": 3, "fid_inception": 3, "compare": 3,
    "checkpoints": 2, "results": 2, "locks": 2, "capabilities": 2,
    "data": 1, "metrics": 1, "baselines": 1, "hmc": 1, "paths": 1, "errors": 1, "devices": 1, "images": 1, "image_files": 1, "measurement": 1,
    "distributed": 1,
    "": 0,  # evalkit/__init__.py: the version, nothing else
}


def module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                out |= {id(n) for n in ast.walk(child)}
    return out


def import_graph(package_root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import sub`` counts as ``pkg.sub``
    when ``sub`` is a module)."""
    files = {module_name(p, package_root): p for p in package_root.rglob("*.py")}
    top = package_root.name
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_nodes(tree)
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in files else base_name for a in node.names]
            for t in targets:
                while t and t not in files and "." in t:  # a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t in files and t.split(".")[0] == top and t != mod:
                    graph[mod].add(t)
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else ""]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                  for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


GRAPH = import_graph(ROOT / "evalkit")


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in GRAPH if "." in m} - set(LAYERS))
    assert not missing, f"add these parts of evalkit to LAYERS (and to docs/architecture.md): {missing}"


def test_imports_flow_down_the_layers():
    assert upward_imports(GRAPH) == []


def test_no_import_circles():
    assert cycles(GRAPH) == []


def test_reference_models_import_only_evalkits_metrics():
    """The reference models sit below evalkit; the one exception is the Parzen estimator of
    ``evalkit.metrics`` (layer 1, pure numerics), which a sampler uses to choose its settings on
    the validation split (``reference_models.autoencoders``)."""
    for path in (ROOT / "reference_models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] == "evalkit" and not n.startswith("evalkit.metrics")]
                assert not bad, f"{path} imports {bad}"


def test_the_checks_catch_a_circle_and_an_upward_import():
    """The checks can fail: a made-up graph with both faults."""
    fake = {"evalkit.data.core": {"evalkit.runner"}, "evalkit.runner": {"evalkit.training"}, "evalkit.training": {"evalkit.runner"}}
    assert upward_imports(fake) == ["evalkit.data.core (layer 1) imports evalkit.runner (layer 6)",
                                    "evalkit.training (layer 3) imports evalkit.runner (layer 6)"]
    assert cycles(fake) == [["evalkit.runner", "evalkit.training"]]


@pytest.mark.parametrize("module", ["evalkit.runner", "evalkit.report", "evalkit.cli", "evalkit.cli_eval"])
def test_generic_modules_name_no_protocol(module):
    """The runner, the report and the command line ask the protocol; they do not test which one it is."""
    path = ROOT / (module.replace(".", "/") + ("/__init__.py" if module == "evalkit.report" else ".py"))
    paths = list(path.parent.glob("*.py")) if module == "evalkit.report" else [path]
    for p in paths:
        text = p.read_text()
        assert "bench.metric ==" not in text and "bench.metric in (" not in text, f"{p} tests a benchmark's metric"
