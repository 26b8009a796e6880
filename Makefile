# The README's two commands: `make repro` (the pipeline) and `make test` (the test suite); `make release` ships the
# releases.
# Each creates .venv and installs the pinned dependencies on first use; later runs reuse it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Telemetry off, passive OpenMP waiting: the one list, shared with .ci/run, the tests and the stage scripts.
include environment.env
export $(shell sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' environment.env)
# dvc.yaml's stage commands say `python`: make it the venv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: repro data release test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

# The pipeline as one `dvc repro` per property, REPRO_JOBS at a time (one per core), then a plain `dvc repro`, which
# finds nothing left to do (it would run a stage that serves no single property). The properties' stage chains share
# nothing and DVC locks only a running stage's dependencies and outputs, so this writes the bytes and dvc.lock of one
# serial `dvc repro` (README, 'Per-property stages in parallel'; tests/test_parallel_pipeline.py) in about half the
# time. params.yaml lists elastic, the longest chain, first.
REPRO_JOBS ?= 2
repro: $(STAMP)
	set -o pipefail; $(BIN)/python -c 'from zoo.core import config; print(*config.load().properties, sep="\n")' \
	  | xargs -P $(REPRO_JOBS) -I{} $(BIN)/dvc --wait-for-lock repro publish@{}
	$(BIN)/dvc repro

# The pipeline up to the datasets (no model training): what CI needs before the tests.
data: $(STAMP)
	$(BIN)/dvc repro build

# The releases shipped with the code (releases/dvc.yaml; `dvc repro` alone never runs them): each property's model
# trained with params.yaml's release.profile, evaluated and shipped under release.versions.<property> into
# zoo/releases/ and zoo/registry.json. Hours of CPU; an interrupted run resumes when rerun. Only the stages
# release.versions lists (zoo.release.shipping: with none it stops, since `dvc repro` of a target naming no stage
# would reproduce the whole default pipeline).
release: $(STAMP)
	targets="$$($(BIN)/python -m zoo.release.shipping)" && $(BIN)/dvc repro $$targets

test: $(STAMP)
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
