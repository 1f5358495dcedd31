"""The package's import graph, read from the source: no cycles, and imports run one way.

Every ``import`` statement counts, those inside functions too (a lazy import is still a dependency: the old
``create_model(pretrained=True)`` closed a 9-module cycle through one). Dynamic re-exports through
``importlib.import_module`` (``fusionjax.pretrained``) are deliberate and not statements.
"""

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGES = ("fusionjax", "fusionjax.train", "fusionjax.configs")


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (``train/`` and ``configs/`` install under it)."""
    found = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None:
            continue
        for location in spec.submodule_search_locations or ():
            root = Path(location)
            for path in root.rglob("*.py"):
                parts = path.relative_to(root).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found.setdefault(".".join((package, *parts)), path)
    return found


MODULES = _modules()


def _imports(name: str, path: Path, top_level_only: bool = False) -> set[str]:
    """The package's modules that ``name`` imports, resolved (``from X import Y`` names X.Y when it is a module);
    with ``top_level_only``, only those imported when ``name`` itself is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in (_top_level_statements(tree) if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in MODULES:  # `import fusionjax.layers.x` → the module that exists
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def _top_level_statements(tree: ast.Module):
    """Statements that run on import: the module body and the bodies of its top-level if/try blocks."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            pending += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                        *(statement for handler in getattr(node, "handlers", []) for statement in handler.body)]


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    assert {"fusionjax.layers", "fusionjax.blocks", "fusionjax.models.registry", "fusionjax.convert"} <= set(MODULES)
    assert "fusionjax.layers" in GRAPH["fusionjax.blocks"]


def test_cycle_detection_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


# What each layer of the library may import from the package (besides itself and the top-level `fusionjax`,
# whose __init__ imports only the core). Models → blocks → fusion/layers → kernels, each checking its arguments
# with fusionjax.arguments; the converter, exporters and analysis read the core; the trainer reads the library;
# nothing reads the trainer.
CORE = ("fusionjax.arguments", "fusionjax.kernels", "fusionjax.layers", "fusionjax.fusion", "fusionjax.blocks",
        "fusionjax.models")
ALLOWED = {
    "fusionjax.arguments": (),
    "fusionjax.kernels": ("fusionjax.kernels",),
    "fusionjax.layers": ("fusionjax.kernels", "fusionjax.arguments"),
    "fusionjax.fusion": ("fusionjax.layers",),
    "fusionjax.blocks": ("fusionjax.fusion", "fusionjax.layers", "fusionjax.arguments"),
    "fusionjax.models": CORE,
}


def _layer(module: str, prefixes) -> str | None:
    return next((p for p in prefixes if module == p or module.startswith(p + ".")), None)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_the_core_imports_only_what_is_below_it(layer):
    wrong = {(module, target) for module, targets in GRAPH.items() if _layer(module, [layer])
             for target in targets
             if target != "fusionjax" and not _layer(target, (layer, *ALLOWED[layer]))}
    assert not wrong


TRAINER = ("fusionjax.train", "fusionjax.configs")
# Modules that read what the trainer writes, on use only: fusionjax-export accepts a training workdir (its
# checkpoint, config, data pipeline for calibration). Importing them never imports the trainer.
TRAINER_READERS = {"fusionjax.export.sources"}


def test_nothing_outside_the_trainer_imports_it():
    wrong = {(module, target) for module, targets in GRAPH.items()
             if not _layer(module, TRAINER) and module not in TRAINER_READERS
             for target in targets if _layer(target, TRAINER)}
    assert not wrong


@pytest.mark.parametrize("module", sorted(TRAINER_READERS))
def test_trainer_readers_import_the_trainer_only_on_use(module):
    assert any(_layer(target, TRAINER) for target in GRAPH[module])  # else it belongs in no exception list
    assert not [target for target in _imports(module, MODULES[module], top_level_only=True)
                if _layer(target, TRAINER)]
