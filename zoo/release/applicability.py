"""Applicability warnings: what a user must see next to a number that is an extrapolation or physically suspect.

Every `zoo.release.loading.Prediction` carries ``warnings``, a tuple of `Flag` (a short ``code`` and a one-line
``message``), also in ``as_dict()`` / ``zoo predict --json`` and printed by ``zoo predict``. An empty tuple means
none of the checks below fired, not that the number is right. Codes:

    rare_element             an element in fewer than `ApplicabilityLimits.min_element_count` training structures
                             (0: never seen; its embedding is untrained)
    element_outside_mp       (only when the training domain is unknown) an element beyond plutonium (Z > 94): no
                             Materials Project calculation, the source of every training set, contains one
    training_domain_unknown  the model's config records no training domain (the 1.0.0 releases predate it) and the
                             dataset it names is not built locally with the same fingerprint: element coverage and
                             the volume and density ranges could not be checked
    volume_out_of_range      volume per atom outside the [min, max] of the training structures
    density_out_of_range     density outside the [min, max] of the training structures
    derived_undefined        derived quantities could not be computed from the predicted value (e.g. singular)
  and each property's own (``PropertySpec.prediction_flags``, in zoo/properties/<property>.py), e.g.
    likely_metal             (dielectric) every element is a metal (zoo.properties.dielectric.likely_metal): the
                             training data are materials with a band gap, and a metal's permittivity diverges
    not_born_stable          (elastic) the predicted stiffness is not positive definite: not mechanically stable
    beyond_phonon_grid       (phonon) the spectrum likely extends past the 0-1000 cm^-1 grid (hydrogen, or a predicted
                             DOS still high at the edge: zoo.properties.phonon.beyond_phonon_grid), so modes are missing

The training domain (``zoo.nn.model_files.training_domain``: structures per element, ranges of volume per atom and
density) comes from config.json's ``training_data``; for a config without it, from the training split of the
dataset the config names, if a local build (the checkout's ``data/hub/datasets``, the working directory's, or
the local store) has exactly that fingerprint; otherwise it is unknown, and every prediction says so.

A Flag is just (code, message): a property module, or another check, adds its own codes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fewer training structures than this with an element: its embedding rests on too few examples to trust.
MIN_ELEMENT_COUNT = 10
# Plutonium: the heaviest element in Materials Project calculations.
MP_MAX_ATOMIC_NUMBER = 94


@dataclass(frozen=True)
class Flag:
    """One warning attached to a prediction."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class ApplicabilityLimits:
    min_element_count: int = MIN_ELEMENT_COUNT


@dataclass(frozen=True)
class TrainingDomain:
    """A model's training domain (``zoo.nn.model_files.DOMAIN_KEYS``), or None with the reason it is unknown."""

    data: dict[str, Any] | None
    source: str


# ----------------------------------------------------------------------------------------- training domain
def training_domain(info: dict[str, Any], builds: list[Path]) -> TrainingDomain:
    """The domain config.json records, else the one computed from the first of the `builds` (dataset folders) that
    holds the dataset it names with the same fingerprint."""
    if "training_data" in info:
        return TrainingDomain(info["training_data"], "config.json training_data")
    dataset = info["dataset"]
    seen = []
    for folder in dict.fromkeys(builds):
        version_file = folder / "dataset_version.json"
        if not version_file.is_file():
            continue
        try:
            found = json.loads(version_file.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            continue
        if found == dataset["fingerprint"]:
            try:
                return TrainingDomain(_domain_of_build(folder), f"training split of {folder}")
            # pyarrow's errors are ValueErrors and OSErrors; an unreadable build leaves the domain unknown
            except (OSError, ValueError, KeyError) as err:
                seen.append(f"{folder} has the fingerprint but its training split cannot be read "
                            f"({str(err).splitlines()[0][:120]})")
                continue
        seen.append(f"{folder} has {str(found)[:19]}...")
    return TrainingDomain(None, f"config.json records no training domain, and no local build of {dataset['name']} "
                          f"has the training data's fingerprint {dataset['fingerprint'][:19]}..."
                          + (f" ({'; '.join(seen)})" if seen else ""))


@functools.cache
def _domain_of_build(folder: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from zoo.nn import model_files

    table = pq.read_table(folder / "data" / "train-00000-of-00001.parquet", columns=["lattice", "species"])
    columns = table.to_pydict()
    return model_files.training_domain(zip(columns["lattice"], columns["species"]))


# -------------------------------------------------------------------------------------------------- checks
def element_flags(symbols: list[str], domain: TrainingDomain, limits: ApplicabilityLimits) -> list[Flag]:
    from pymatgen.core.periodic_table import Element

    flags = []
    elements = sorted(set(symbols), key=lambda symbol: Element(symbol).Z)
    if domain.data is None:
        flags.append(Flag("training_domain_unknown", f"training domain unknown: {domain.source}; element coverage "
                          "and the volume and density ranges were not checked"))
        heavy = [symbol for symbol in elements if Element(symbol).Z > MP_MAX_ATOMIC_NUMBER]
        if heavy:
            flags.append(Flag("element_outside_mp", f"{', '.join(heavy)} lies beyond plutonium (Z > "
                              f"{MP_MAX_ATOMIC_NUMBER}): no Materials Project calculation, the source of the training "
                              "data, contains it, so the model has never seen it"))
        return flags
    counts, total = domain.data["element_counts"], domain.data["n_structures"]
    rare = [f"{symbol} ({counts.get(symbol, 0)})" for symbol in elements
            if counts.get(symbol, 0) < limits.min_element_count]
    if rare:
        flags.append(Flag("rare_element", f"elements in fewer than {limits.min_element_count} of the {total} "
                          f"training structures: {', '.join(rare)}; the prediction extrapolates"))
    return flags


def range_flags(volume_per_atom: float, density: float, domain: TrainingDomain) -> list[Flag]:
    if domain.data is None:
        return []
    flags = []
    for code, name, value, unit, key in (
            ("volume_out_of_range", "volume per atom", volume_per_atom, "A^3", "volume_per_atom_a3"),
            ("density_out_of_range", "density", density, "g/cm^3", "density_g_cm3")):
        low, high = domain.data[key]
        if not low <= value <= high:
            flags.append(Flag(code, f"{name} {value:.3g} {unit} lies outside the training range "
                              f"[{low:.3g}, {high:.3g}] {unit}"))
    return flags


def prediction_flags(spec, structure, derived: dict[str, Any], derived_error: str | None, domain: TrainingDomain,
                     limits: ApplicabilityLimits = ApplicabilityLimits(), raw=None) -> tuple[Flag, ...]:
    """Every flag of one prediction (spec: its zoo.properties spec; raw: the prediction's raw form), in the order:
    elements, ranges, the property's own (``PropertySpec.prediction_flags``), undefined derived quantities."""
    from zoo.nn import model_files

    symbols = [site.specie.symbol for site in structure]
    volume, density = model_files.cell_volume_and_density(structure.lattice.matrix, symbols)
    own = [Flag(code, message) for code, message in spec.prediction_flags(derived, symbols, raw)]
    undefined = [Flag("derived_undefined", f"derived quantities are undefined: {derived_error}")] if derived_error else []
    return tuple(element_flags(symbols, domain, limits) + range_flags(volume, density, domain) + own + undefined)
