"""The layout's rules, read from the source: which part may import which, no import cycles,
no product module over 400 lines, and the two-site feature reached only through its plug-in.

Every import statement counts, including those inside functions: a lazy import is still a
dependency, and a cycle through one is still a cycle."""
import ast
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import REPO

PRODUCT = ("bench", "models", "launchers", "slurm", "reports")
MAX_LINES = 400

# What each part may import (besides itself and the standard library / third-party packages).
ALLOWED = {
    "bench.errors": set(),
    "bench.plugins": set(),
    "bench.config": {"bench.errors"},
    "bench.data": {"bench.errors", "bench.plugins", "bench.config"},
    "bench.measure": {"bench.errors"},
    "bench.record": {"bench.errors", "bench.plugins", "bench.config"},
    "bench.analysis": {"bench.errors", "bench.record"},
    "bench.sweep": {"bench.errors", "bench.plugins", "bench.config", "bench.data",
                    "bench.measure", "bench.record", "launchers", "models", "slurm"},
    "bench.worker": {"bench.errors", "bench.plugins", "bench.config", "bench.data",
                     "bench.measure", "bench.record", "launchers", "models"},
    "bench.twosite": {"bench", "bench.errors", "bench.plugins", "bench.config", "bench.data",
                      "bench.measure", "bench.record", "bench.analysis", "bench.sweep",
                      "bench.worker", "models", "reports"},
    "bench.cli": {"bench", "bench.errors", "bench.plugins", "bench.config", "bench.data",
                  "bench.measure", "bench.record", "bench.analysis", "bench.sweep",
                  "bench.worker", "bench.twosite", "launchers", "models", "slurm", "reports"},
    "bench.__main__": {"bench.cli"},
    "bench": set(),
    "launchers": {"bench.errors", "bench.config", "bench.measure"},
    "models": set(),
    "slurm": set(),
    "reports": {"bench.errors", "bench.plugins", "bench.analysis", "bench.record"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for top in PRODUCT for p in sorted((REPO / top).rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Product modules this file imports, anywhere in it (`from a import b` names a.b when
    b is a module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PRODUCT and n in MODULES)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _part(module: str) -> str:
    """The entry of ALLOWED a module belongs to: the longest matching prefix."""
    candidates = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
    return max(candidates, key=len)


def test_every_part_imports_only_what_the_layout_allows():
    wrong = []
    for module, imported in GRAPH.items():
        part = _part(module)
        for target in imported:
            target_part = _part(target)
            if target_part != part and target_part not in ALLOWED[part]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_only_the_cli_and_the_plugin_import_the_two_site_plugin():
    wrong = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
             if t.startswith("bench.twosite") and not m.startswith(("bench.cli", "bench.twosite"))]
    assert not wrong, "\n".join(wrong)


def test_models_import_nothing_of_bench():
    wrong = [f"{m} imports {t}" for m, targets in GRAPH.items() if m.startswith("models")
             for t in targets if not t.startswith("models")]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    """Tarjan's strongly connected components over every import: each must be one module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in GRAPH[v]:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, cycles


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_product_module_over_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines"


def test_the_rules_cover_every_product_module():
    """A new top-level part must be placed in the layout, not slip past the rules."""
    assert set(GRAPH) and all(_part(m) for m in GRAPH)


def test_the_checker_sees_a_lazy_import(tmp_path):
    """An import inside a function is found, so a lazy import cannot hide a dependency."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from bench.record import store\n    import models\n")
    assert _imports(source) == {"bench.record.store", "models"}
