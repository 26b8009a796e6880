# The README's two commands: `make repro` (the pipeline) and `make test` (the test suite).
# Each creates .venv and installs the pinned dependencies on first use; later runs reuse it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Telemetry off for every library the project drives: nothing may reach a non-loopback address.
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export HF_HUB_DISABLE_TELEMETRY := 1
export HF_HUB_DISABLE_XET := 1
export DO_NOT_TRACK := 1
export HF_UPDATE_DOWNLOAD_COUNTS := 0
# Busy-waiting OpenMP threads slow training 5-20x when another job shares the 2 cores.
export OMP_WAIT_POLICY := PASSIVE
# dvc.yaml's stage commands say `python`: make it the venv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: repro data test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

# The pipeline up to the datasets (no model training): what CI needs before the tests.
data: $(STAMP)
	$(BIN)/dvc repro build

test: $(STAMP)
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)
