"""The architecture as a test: every import of an mpcnp module goes down the layers of
docs/architecture.md (or sideways within a layer, without cycles), none happens inside a function
except in the command line's entry point, and only the protocol layer's ``families`` reads which
protocol a run uses. Reintroducing an upward or circular import fails here."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "mpcnp"

# The layer of every module, by longest matching prefix; mirrors docs/architecture.md.
LAYERS = {
    "mpcnp._ring_build": 1, "mpcnp.ring": 1, "mpcnp.zp": 1,
    "mpcnp.fixedpoint": 2,
    "mpcnp.net": 3,
    "mpcnp.runtime": 4,
    "mpcnp.protocols": 5,
    "mpcnp.tracing": 6, "mpcnp.tensor": 6, "mpcnp.functions": 6, "mpcnp.approx": 6, "mpcnp.program": 6, "mpcnp": 6,
    "mpcnp.nn": 7, "mpcnp.demo": 7, "mpcnp.__main__": 7,
}
ENTRY_POINTS = {"mpcnp.__main__"}        # may import lazily: the command line starts fast
READS_THE_PROTOCOL = {"mpcnp.protocols.families", "mpcnp.runtime.context"}  # context: checks it is a name


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def imports(path: Path):
    """(imported mpcnp module, line, inside a function?) for every import of an mpcnp module."""
    tree = ast.parse(path.read_text())
    nested = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            nested.update(id(child) for child in ast.walk(node) if child is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "mpcnp":
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                yield (target if target in MODULES else node.module), node.lineno, id(node) in nested
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mpcnp":
                    yield alias.name, node.lineno, id(node) in nested


GRAPH = {name: list(imports(path)) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        assert layer(name) in range(1, 8), name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_the_layers(name):
    for target, line, _ in GRAPH[name]:
        if name.startswith(target + ".") and target in MODULES:
            continue  # a package's own __init__ runs first anyway
        assert layer(target) <= layer(name), f"{name}:{line} imports {target}, a higher layer"


@pytest.mark.parametrize("name", sorted(set(MODULES) - ENTRY_POINTS))
def test_no_import_inside_a_function(name):
    lazy = [f"{name}:{line} imports {target}" for target, line, inside in GRAPH[name] if inside]
    assert not lazy, lazy


def test_no_import_cycle():
    edges = defaultdict(set)
    for name, found in GRAPH.items():
        for target, _, _ in found:
            if target != name and not name.startswith(target + "."):
                edges[name].add(target)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [name])


def test_only_the_families_read_the_protocol():
    readers = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "protocol" and isinstance(node.ctx, ast.Load):
                readers.add(name)
    assert readers <= READS_THE_PROTOCOL, readers - READS_THE_PROTOCOL


def test_the_layer_table_is_the_documented_one():
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    for prefix, number in LAYERS.items():
        path = prefix.replace(".", "/") + ("/" if (ROOT.parent / prefix.replace(".", "/")).is_dir() else ".py")
        assert path in doc, f"docs/architecture.md does not place {path}"
