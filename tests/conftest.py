"""Test-wide settings: telemetry off and no network beyond loopback, set before any library is imported."""

import json
import os

import pytest

from zoo.core import environment  # imports nothing heavy

# environment.env: telemetry off and passive OpenMP waiting, set (overriding the caller's) before any library import.
os.environ.update(environment.variables())


@pytest.fixture
def empty_registry(tmp_path_factory, monkeypatch):
    """zoo.release.registry.REGISTRY_PATH pointed at a registry that names the four models with no releases, so that
    tests of the store and the Hub are not answered by the releases shipped in zoo/releases/."""
    from zoo import properties  # here, not at the top: the environment above must be set first
    from zoo.release import registry

    path = tmp_path_factory.mktemp("registry") / "registry.json"
    path.write_text(json.dumps({"format": registry.REGISTRY_FORMAT, "hub_organisation": "mp-tensor-zoo", "models": {
        spec.model_name: {"property": spec.name, "repo_id": f"mp-tensor-zoo/{spec.model_name}", "releases": {}}
        for spec in properties.PROPERTIES.values()}}))
    monkeypatch.setattr(registry, "REGISTRY_PATH", path)
    return path
