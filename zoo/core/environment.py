"""The environment every command of the project runs with, from the one file that lists it (environment.env).

Telemetry off for every library the project drives, passive OpenMP waiting, and one set of OpenBLAS kernels on
every x86-64 CPU (the same datasets, byte for byte, on AVX2 and AVX-512 machines). The Makefile includes the file,
.ci/run sources it, the tests and the stage scripts call ``apply`` before importing the libraries that read it.
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
