"""The pipelines' deps are true: every project file a stage executes or reads is covered by the stage's deps.

For each stage, the stage script's module-level imports are followed through the project's modules by reading the
code (AST, not by running it), transitively, with each package's __init__.py. (An import inside a function is not
followed: zoo.load's import of the release layer runs only when it is called. The deps are whole layer folders, so a
function's import within them is covered too.) The files a module reads at run time (schemas, templates, the
environment file) are listed in DATA_FILES. A file is covered when the stage lists it or a folder above it. An edit
to an uncovered file would leave `dvc repro` reporting "up to date" over outputs that code no longer makes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Files outside the Python modules that a module reads while a stage runs, by module.
DATA_FILES: dict[str, tuple[str, ...]] = {
    "zoo/core/environment.py": ("environment.env",),
    "zoo/core/templates.py": ("zoo/templates/dataset_card.md.j2", "zoo/templates/model_card.md.j2"),
    "zoo/data/records.py": ("schemas/raw-record.schema.json",),
    "zoo/data/sources/snapshot.py": ("schemas/snapshot-manifest.json",),
    "zoo/data/validation/suites.py": ("schemas/expectations/${item}.json",),  # PropertySpec.expectation_suite
}
# Read at run time but deliberately not a dependency, each with the reason.
NOT_DEPENDENCIES = {
    # The publish stage reads dvc.lock for the model card's lineage: DVC cannot depend on its own lock file.
    "dvc.lock",
    # Read and written by the release stages (zoo.release.shipping), each adding its own entry: shared by the four, so
    # no stage's dependency or output (tests/test_releases.py checks every entry against its shipped folder).
    "zoo/registry.json",
}


def _module_file(module: str) -> Path | None:
    """The project file of a dotted module name (a package's __init__.py), or None outside the project."""
    base = REPO / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_level(node: ast.AST):
    """The statements that run when a module is imported: all but those inside function bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield child
        yield from _module_level(child)


def _imported_modules(path: Path) -> set[str]:
    """Every module a module-level import of `path` names (relative imports resolved), with its parent packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in _module_level(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from package import module`
    parents = {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 1)}
    return names | parents


def executed_files(script: Path) -> set[str]:
    """Project files (relative paths) a stage script executes or reads, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            found = _module_file(module)
            if found is not None and found not in seen:
                todo.append(found)
    files = {str(path.relative_to(REPO)) for path in seen}
    return files | {data for path in list(files) for data in DATA_FILES.get(path, ())}


# Every pipeline file of the project: `dvc repro` runs ./dvc.yaml, `make release` releases/dvc.yaml.
PIPELINES = ("dvc.yaml", "releases/dvc.yaml")


def _pipeline_stages() -> list[tuple[str, dict, Path]]:
    """(address, body, wdir) of every stage of every pipeline: a foreach stage by its `do` body, ${item} or ${key}
    left in."""
    out = []
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load((REPO / pipeline).read_text(encoding="utf-8"))["stages"].items():
            body = stage.get("do", stage)
            out.append((f"{pipeline}:{name}", body, (REPO / pipeline).parent / body.get("wdir", ".")))
    return out


PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def _stages() -> list[tuple[str, str, list[str]]]:
    """(stage, script, deps) of every stage of every pipeline; paths relative to the repository, as the stage's wdir
    resolves them."""
    out = []
    for address, body, wdir in _pipeline_stages():
        script = next(word for word in body["cmd"].split() if word.endswith(".py"))
        deps = [str((wdir / str(dep)).resolve().relative_to(REPO)) for dep in body.get("deps", [])]
        out.append((address, str((wdir / script).resolve().relative_to(REPO)), deps))
    return out


STAGES = _stages()


def test_every_pipeline_file_is_checked():
    found = {str(path.relative_to(REPO)) for path in REPO.rglob("dvc.yaml")
             if not {".venv", "data", ".git"} & set(path.relative_to(REPO).parts)}
    assert found == set(PIPELINES)


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize(("stage", "script", "deps"), STAGES, ids=[stage for stage, _, _ in STAGES])
def test_every_file_a_stage_executes_is_one_of_its_deps(stage, script, deps):
    files = executed_files(REPO / script)
    assert script in files
    uncovered = sorted(path for path in files - NOT_DEPENDENCIES if not _covered(path, deps))
    assert uncovered == [], f"stage {stage} executes or reads files its dvc.yaml deps do not cover: {uncovered}"


def test_the_walk_follows_imports_into_the_packages():
    """The check is not blind: the clean stage reaches the cleaning module, the specs and the packages' inits."""
    files = executed_files(REPO / "stages" / "clean.py")
    for expected in ("zoo/__init__.py", "zoo/data/__init__.py", "zoo/data/cleaning/frames.py", "zoo/properties/elastic.py",
                     "zoo/core/tensors.py", "schemas/raw-record.schema.json"):
        assert expected in files
    assert not _covered("zoo/nn/training/loop.py", ["zoo/data", "zoo/core"])


# --- params: a stage that trains depends on the profile it trains with, not on every profile ----------------------


def _params_deps() -> list[tuple[str, list[str]]]:
    """(stage, params keys) of every stage of every pipeline, `${...}` interpolations of params.yaml resolved."""
    def lookup(match: re.Match) -> str:
        value = PARAMS
        for part in match.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                return match.group(0)  # a foreach variable (${item}, ${key}): left in
            value = value[part]
        return str(value)

    def resolve(key: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lookup, key)

    out = []
    for address, body, _ in _pipeline_stages():
        keys = [key for entry in body.get("params", [])
                for key in ([entry] if isinstance(entry, str) else [k for value in entry.values() for k in value])]
        out.append((address, [resolve(key) for key in keys]))
    return out


PARAMS_DEPS = _params_deps()


def profiles_not_covered(keys: list[str], profiles: dict) -> list[str]:
    """The profiles whose settings a stage uses but its params keys do not cover: for each `train.profiles.<name>`
    key, <name> and every profile it `extends`, transitively (zoo.core.train_config.TrainConfig resolves them so)."""
    def covered(key: str) -> bool:
        return any(key == dep or key.startswith(dep + ".") for dep in keys)

    missing = []
    for key in keys:
        if not key.startswith("train.profiles."):
            continue
        name = key.removeprefix("train.profiles.")
        while name is not None:
            if not covered(f"train.profiles.{name}"):
                missing.append(name)
            name = profiles[name].get("extends")
    return missing


@pytest.mark.parametrize(("stage", "keys"), PARAMS_DEPS, ids=[stage for stage, _ in PARAMS_DEPS])
def test_a_stage_depends_on_every_profile_it_trains_with(stage, keys):
    assert profiles_not_covered(keys, PARAMS["train"]["profiles"]) == [], stage


def test_the_training_stages_depend_on_their_profile_alone():
    """A change to the release profile must not put `dvc repro`'s models out of date (~30 min to retrain), nor one
    to the cpu profile the releases (hours)."""
    keys = dict(PARAMS_DEPS)
    for stage in ("dvc.yaml:train", "dvc.yaml:evaluate"):
        assert f"train.profiles.{PARAMS['train']['profile']}" in keys[stage] and "train" not in keys[stage], stage
    assert f"train.profiles.{PARAMS['release']['profile']}" in keys["releases/dvc.yaml:release"]


def test_the_profile_check_follows_extends():
    profiles = {"gpu": {"extends": "release"}, "release": {}, "cpu": {}}
    assert profiles_not_covered(["train.profiles.gpu"], profiles) == ["release"]
    assert profiles_not_covered(["train.profiles.gpu", "train.profiles.release"], profiles) == []
    assert profiles_not_covered(["train.profiles"], profiles) == []
    assert profiles_not_covered(["train"], profiles) == []
