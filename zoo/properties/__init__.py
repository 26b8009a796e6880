"""One frozen spec per property: the single place that says what each property is.

Every stage loops over ``PROPERTIES``; adding a property is one new spec plus its source adapters.
Tensor conventions (Voigt order and factors, irreps basis) live in ``zoo.core.tensors``; this module only names
which of them a property uses.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

# 1 THz in cm^-1: 1e12 Hz / (c in cm/s) = 33.35641 (REFERENCE.md). The one place the phonon unit conversion lives.
CM_PER_THZ = 1e12 / (299_792_458.0 * 100.0)

# Chen et al. 2021 / Petretto et al. 2018: 51 points, 0..1000 cm^-1, DOS max-normalised.
PHONON_GRID_CM = np.arange(0.0, 1001.0, 20.0)
PHONON_GRID_CM.setflags(write=False)


@dataclass(frozen=True)
class PropertySpec:
    """Everything the pipeline needs to know about one property.

    name             short key used in file names, params and the CLI
    title            human-readable name
    units            units of the canonical value
    cartesian_shape  shape of one canonical Cartesian value (per part)
    voigt_shape      shape of its Voigt form, or None
    voigt_kind       which ``zoo.core.tensors`` Voigt convention applies: 'stiffness', 'piezo_stress', 'symmetric2'
    formula          e3nn CartesianTensor formula, or None for an invariant (phonon DOS)
    irreps           irreps string of one part (e3nn order)
    tensor_parts     the parts stored per record (dielectric keeps electronic, ionic and total)
    target_part      the part the model predicts
    mp_endpoint      Materials Project REST route
    mp_fields        fields the fetch requests from mp_endpoint (checked against emmet-core's document models
                     in the tests; dielectric and piezo documents carry no structure, which the fetch takes
                     from materials/summary)
    derived          names of the derived quantities ``zoo.core.derived`` computes for it
    sources          bibliography keys of the data's source papers
    """

    name: str
    title: str
    units: str
    cartesian_shape: tuple[int, ...]
    voigt_shape: tuple[int, ...] | None
    voigt_kind: str | None
    formula: str | None
    irreps: str
    tensor_parts: tuple[str, ...]
    target_part: str
    mp_endpoint: str
    mp_fields: tuple[str, ...]
    derived: tuple[str, ...]
    sources: tuple[str, ...] = field(default=())

    @property
    def dataset_name(self) -> str:
        return f"mp-{self.name}-irreps"

    @property
    def model_name(self) -> str:
        return f"matten-{self.name}"

    @property
    def is_tensor(self) -> bool:
        return self.formula is not None

    @property
    def rank(self) -> int:
        return len(self.cartesian_shape) if self.is_tensor else 0


ELASTIC = PropertySpec(
    name="elastic",
    title="Elastic stiffness tensor",
    units="GPa",
    cartesian_shape=(3, 3, 3, 3),
    voigt_shape=(6, 6),
    voigt_kind="stiffness",
    formula="ijkl=jikl=klij",
    irreps="2x0e+2x2e+1x4e",
    tensor_parts=("total",),
    target_part="total",
    mp_endpoint="materials/elasticity",
    mp_fields=(
        "material_id", "formula_pretty", "structure", "symmetry", "deprecated", "order", "elastic_tensor",
        "compliance_tensor", "bulk_modulus", "shear_modulus", "universal_anisotropy", "homogeneous_poisson",
    ),
    derived=(
        "k_voigt", "k_reuss", "k_vrh", "g_voigt", "g_reuss", "g_vrh", "y_mod", "homogeneous_poisson",
        "universal_anisotropy", "youngs_modulus_min", "youngs_modulus_max", "born_stable", "min_eigenvalue",
    ),
    sources=("dejong2015elastic", "pakornchote2023straintensornet", "elatbot", "materialsproject2013"),
)

DIELECTRIC = PropertySpec(
    name="dielectric",
    title="Dielectric tensor (electronic, ionic, total)",
    units="dimensionless (relative permittivity)",
    cartesian_shape=(3, 3),
    voigt_shape=(6,),
    voigt_kind="symmetric2",
    formula="ij=ji",
    irreps="1x0e+1x2e",
    tensor_parts=("electronic", "ionic", "total"),
    target_part="electronic",
    mp_endpoint="materials/dielectric",
    mp_fields=(
        "material_id", "formula_pretty", "symmetry", "deprecated", "electronic", "total", "e_electronic",
        "e_ionic", "e_total", "n",
    ),
    derived=("eps_poly", "eigenvalues", "anisotropy_ratio", "refractive_index"),
    sources=("petousis2017dielectric", "materialsproject2013"),
)

PIEZO = PropertySpec(
    name="piezo",
    title="Piezoelectric stress tensor",
    units="C/m^2",
    cartesian_shape=(3, 3, 3),
    voigt_shape=(3, 6),
    voigt_kind="piezo_stress",
    formula="ijk=ikj",
    irreps="2x1o+1x2o+1x3o",
    tensor_parts=("total",),
    target_part="total",
    mp_endpoint="materials/piezoelectric",
    mp_fields=("material_id", "formula_pretty", "symmetry", "deprecated", "total", "e_ij_max", "max_direction"),
    derived=("max_longitudinal", "max_longitudinal_direction"),
    sources=("dejong2015piezo", "materialsproject2013"),
)

PHONON = PropertySpec(
    name="phonon",
    title="Phonon density of states",
    units="states/cm^-1 (max-normalised), grid in cm^-1",
    cartesian_shape=(len(PHONON_GRID_CM),),
    voigt_shape=None,
    voigt_kind=None,
    formula=None,
    irreps=f"{len(PHONON_GRID_CM)}x0e",
    tensor_parts=("total",),
    target_part="total",
    mp_endpoint="materials/phonon",
    mp_fields=(
        "identifier", "phonon_method", "formula_pretty", "symmetry", "structure", "phonon_dos.frequencies",
        "phonon_dos.densities",
    ),
    derived=("mean_frequency_cm", "cv_300k_per_atom_kb", "cv_300k_j_per_kg_k"),
    sources=("petretto2018phonon", "chen2021phonon", "materialsproject2013"),
)

PROPERTIES: dict[str, PropertySpec] = {spec.name: spec for spec in (ELASTIC, DIELECTRIC, PIEZO, PHONON)}


def get(name: str) -> PropertySpec:
    """The spec called `name`; a ValueError with the known names (and a close match) otherwise."""
    try:
        return PROPERTIES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), PROPERTIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown property {name!r}; known: {', '.join(PROPERTIES)}.{hint}") from None
