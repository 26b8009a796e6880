"""Everything property-specific lives in zoo/properties/<property>.py: no other module branches on a property.

Checked by reading the code (AST), not by running it: outside zoo/properties, no code in zoo/ or stages/ (templates
included) names a property as a string, reaches for a property's spec or constants by name, or compares a spec's
name. A new property therefore needs a new spec only (tests/test_fifth_property.py runs one through the pipeline).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from zoo import properties

REPO = Path(__file__).resolve().parents[1]
NAMES = set(properties.PROPERTIES)
# Module-level names of zoo.properties that belong to one property.
PROPERTY_CONSTANTS = {"ELASTIC", "DIELECTRIC", "PIEZO", "PHONON", "PHONON_GRID_CM", "CM_PER_THZ"}
PROPERTY_MODULES = {f"zoo.properties.{name}" for name in NAMES}


def _python_files() -> list[Path]:
    files = sorted((REPO / "zoo").rglob("*.py")) + sorted((REPO / "stages").glob("*.py"))
    return [path for path in files if "properties" not in path.relative_to(REPO).parts[:2]]


def _findings(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES:
            found.append(f"{where}:{node.lineno}: the property name {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in PROPERTY_CONSTANTS:
            found.append(f"{where}:{node.lineno}: {node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoo.properties"):
            if node.module in PROPERTY_MODULES:
                found.append(f"{where}:{node.lineno}: imports {node.module}")
            found += [f"{where}:{node.lineno}: imports {alias.name}" for alias in node.names
                      if alias.name in PROPERTY_CONSTANTS | NAMES]
        elif isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno}: imports {alias.name}" for alias in node.names
                      if alias.name in PROPERTY_MODULES]
    return found


def test_no_module_outside_zoo_properties_branches_on_a_property():
    findings = [finding for path in _python_files()
                for finding in _findings(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert findings == [], "property-specific code outside zoo/properties:\n" + "\n".join(findings)


@pytest.mark.parametrize("template", sorted((REPO / "zoo" / "templates").glob("*.j2")), ids=lambda p: p.name)
def test_templates_do_not_branch_on_a_property(template):
    text = template.read_text(encoding="utf-8")
    branches = re.findall(r"\{%[^%]*\b(?:" + "|".join(sorted(NAMES)) + r")\b[^%]*%\}", text)
    assert branches == []


def test_the_check_sees_a_property_branch():
    """The AST check is not blind: the branches it exists to forbid are found."""
    source = 'from zoo.properties import PHONON\ndef f(spec):\n    return spec.name == "phonon"\n'
    assert _findings(source, "probe.py") == ["probe.py:1: imports PHONON", "probe.py:3: the property name 'phonon'"]


def test_each_property_module_defines_its_spec():
    for name, spec in properties.PROPERTIES.items():
        module = __import__(f"zoo.properties.{name}", fromlist=["_"])
        assert getattr(module, name.upper()) is spec
        assert spec.snapshot is not None and spec.mp_api is not None and spec.raw_values


def test_validate_codes_and_thresholds_of_a_property_live_in_its_spec():
    """A property's own reason codes (PropertySpec.value_codes, physics_codes) and the keys of params.yaml's validate
    section its checks read (validate_thresholds) are named in its module only; each key by one property."""
    from zoo.core import config

    own_codes = {code for spec in properties.PROPERTIES.values() for code in spec.value_codes + spec.physics_codes}
    keys = [key for spec in properties.PROPERTIES.values() for key in spec.validate_thresholds]
    assert len(keys) == len(set(keys)) and set(keys) == set(config.load().validate.thresholds)
    found = [f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}" for path in _python_files()
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Constant) and node.value in own_codes | set(keys)]
    assert found == []
