"""The environment every command of the project runs with, from the one file that lists it (environment.env).

Telemetry off for every library the project drives, passive OpenMP waiting, and one set of OpenBLAS kernels on
every x86-64 CPU (fewer last-bit differences between AVX2 and AVX-512 machines, not none: environment.env says which
outputs it makes identical). The Makefile includes the file, .ci/run sources it, the tests set it in conftest.py and
the stage scripts apply it by importing zoo.core.stage_cli, before the libraries that read it are imported.
"""

from __future__ import annotations

import functools
import os

from zoo.core import paths


@functools.cache
def variables() -> dict[str, str]:
    """KEY -> value of environment.env (comments and blank lines skipped)."""
    out = {}
    for line in paths.ENVIRONMENT_FILE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def apply() -> None:
    """Set every variable of environment.env that the environment does not set already."""
    for key, value in variables().items():
        os.environ.setdefault(key, value)
