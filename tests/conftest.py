"""Test-wide settings: telemetry off and no network beyond loopback, set before any library is imported."""

import json
import os

import pytest

for _name, _value in {
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",
    "DO_NOT_TRACK": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    "OMP_WAIT_POLICY": "PASSIVE",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ[_name] = _value


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
