"""Where the project's files are: the one place that turns the package's location into paths.

The package lives in ``<checkout>/zoo``; the schemas, the pipeline outputs and the code-shipped releases are found
from there, so every module (and a stage run from any directory) agrees on them.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
PARAMS_FILE = PROJECT_ROOT / "params.yaml"
# The environment every command of the project runs with (telemetry off, passive OpenMP waiting): read by the
# Makefile, .ci/run, the tests and zoo.core.environment.
ENVIRONMENT_FILE = PROJECT_ROOT / "environment.env"
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
RAW_RECORD_SCHEMA = SCHEMAS_DIR / "raw-record.schema.json"
SNAPSHOT_MANIFEST = SCHEMAS_DIR / "snapshot-manifest.json"
EXPECTATION_SUITES_DIR = SCHEMAS_DIR / "expectations"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
REGISTRY_PATH = PACKAGE_DIR / "registry.json"
DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_STORE = DATA_DIR / "zoo"
