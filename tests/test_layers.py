"""The package layers depend only downward, without cycles and without reaching into private names.

Layers, bottom to top: zoo.core < zoo.properties < zoo.data < zoo.nn < zoo.release < the top (zoo/__init__.py,
zoo/cli.py, zoo/datasets.py). Read from the code (AST), every import statement counted wherever it stands.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("zoo.core", "zoo.properties", "zoo.data", "zoo.nn", "zoo.release")
TOP = len(LAYERS)
# What a property module may import besides zoo.core and the standard library.
PROPERTY_LIBRARIES = {"numpy", "pymatgen"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted((REPO / "zoo").rglob("*.py"))}


def _layer(module: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return rank
    return TOP


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name refers to (a module, or the module defining the name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[int, str, str | None]]:
    """(line, project module imported, name taken from it or None) of every import statement of `module`."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, _resolve(alias.name), None) for alias in node.names if _resolve(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in MODULES:
                    out.append((node.lineno, submodule, None))
                elif _resolve(base):
                    out.append((node.lineno, _resolve(base), alias.name))
    return out


def test_imports_go_only_downward():
    upward = [f"{MODULES[module].relative_to(REPO)}:{line}: {module} imports {target}"
              for module in MODULES for line, target, _ in _imports(module) if _layer(target) > _layer(module)]
    assert upward == []


def test_property_modules_import_zoo_core_numpy_and_pymatgen_only():
    allowed = set(sys.stdlib_module_names) | PROPERTY_LIBRARIES | {"zoo"}
    found = []
    for module, path in MODULES.items():
        if _layer(module) != LAYERS.index("zoo.properties"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            found += [f"{module} imports {name}" for name in names if name.split(".")[0] not in allowed]
        found += [f"{module} imports {target}" for _, target, _ in _imports(module)
                  if _layer(target) > LAYERS.index("zoo.properties")]
    assert found == []


def test_no_import_cycle():
    graph = {module: {target for _, target, _ in _imports(module) if target != module} for module in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]) if target in path
                              else f"{module} -> {target}")
            elif target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_no_module_takes_another_module_s_private_name():
    """No `from zoo.x import _name`, no `module._name` on an imported project module, and no reaching through a
    module for a module it imported (`training.zoo_datasets`)."""
    found = []
    for module, path in MODULES.items():
        imports = _imports(module)
        found += [f"{module}:{line}: from {target} import {name}" for line, target, name in imports
                  if name and name.startswith("_") and not name.startswith("__")]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    full = alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
                    if full in MODULES and (alias.asname or isinstance(node, ast.ImportFrom)):
                        aliases[bound] = full
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                target = aliases[node.value.id]
                if node.attr.startswith("_") and not node.attr.startswith("__"):
                    found.append(f"{module}:{node.lineno}: {target}.{node.attr}")
                elif f"{target}.{node.attr}" not in MODULES and _reexported_module(target, node.attr):
                    found.append(f"{module}:{node.lineno}: {target}.{node.attr} is a module {target} imported")
    assert found == []


def _reexported_module(module: str, name: str) -> bool:
    """Whether `name` in `module` is a project module that `module` imported (not one of its own definitions)."""
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    full = alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
                    return full in MODULES
    return False


def test_the_import_paths_the_shipped_model_cards_print_still_resolve():
    # The shipped cards (zoo/releases/*/*/README.md) cite these paths; the names moved to other modules, and these
    # modules keep them importable so that a reader of a card finds the class or function where the card says.
    import importlib

    cards = "".join(path.read_text(encoding="utf-8") for path in sorted((REPO / "zoo/releases").glob("*/*/README.md")))
    for dotted in ("zoo.core.config.TrainSettings", "zoo.core.derived.heat_capacity_cv",
                   "zoo.core.derived.mean_frequency", "zoo.nn.models.ModelConfig"):
        module, name = dotted.rsplit(".", 1)
        assert dotted in cards, dotted
        assert hasattr(importlib.import_module(module), name), dotted
