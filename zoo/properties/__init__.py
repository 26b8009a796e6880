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
class PublishedResult:
    """A published test result on the same data, printed beside ours (model cards, metrics JSON).

    metric   the name of our metric that measures the same quantity (zoo.nn.evaluation)
    value    the published number, as printed in the paper
    source   who, where
    setting  what differs from our evaluation (split, data filter, normalisation)
    """

    metric: str
    value: float
    source: str
    setting: str


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
    predicted_parts  the parts a model of the property predicts by default (a ModelConfig may choose fewer);
                     () -> (target_part,)
    summed_part      (part, (summands...)): a stored part that is the sum of others, which a model derives from its
                     predictions instead of predicting it (dielectric total = electronic + ionic), or None
    eigenvalue_floors  part -> the lower bound of its eigenvalues (physics: eps >= 1 for electronic and total, the
                     ionic part >= 0), for the output map that guarantees them (ModelConfig.output_map 'spd_log')
    published        published results on the same data (PublishedResult), the anchors our metrics are compared to
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
    predicted_parts: tuple[str, ...] = ()
    summed_part: tuple[str, tuple[str, ...]] | None = None
    eigenvalue_floors: tuple[tuple[str, float], ...] = ()
    published: tuple[PublishedResult, ...] = ()

    def __post_init__(self):
        if not self.predicted_parts:
            object.__setattr__(self, "predicted_parts", (self.target_part,))

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

    @property
    def has_parts(self) -> bool:
        """Several stored tensor parts (dielectric): predictions carry a parts axis and per-part metrics."""
        return len(self.tensor_parts) > 1

    def output_parts(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """The parts a model predicting `parts` returns: those, then the summed part when all its summands are."""
        if self.summed_part is not None and set(self.summed_part[1]) <= set(parts):
            return (*parts, self.summed_part[0])
        return tuple(parts)

    def eigenvalue_floor(self, part: str) -> float:
        """The lower bound of `part`'s eigenvalues; ValueError when the property states none."""
        floors = dict(self.eigenvalue_floors)
        if part not in floors:
            raise ValueError(f"{self.name} states no eigenvalue floor for part {part!r} (known: {sorted(floors)})")
        return floors[part]


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
    sources=("dejong2015elastic", "materialsproject2013"),
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
    predicted_parts=("electronic", "ionic"),
    summed_part=("total", ("electronic", "ionic")),
    # relative permittivity >= 1 (vacuum's), ionic contribution positive semidefinite (zoo.data.validation checks
    # the data the same way)
    eigenvalue_floors=(("electronic", 1.0), ("ionic", 0.0), ("total", 1.0)),
    published=(
        PublishedResult("eps_poly_mae_eps15", 0.311, "AnisoNet (Lou & Ganose, Faraday Discuss. 2025)",
                        "electronic part; 6,706 newer MP tensors with eps_poly <= 15, random 80:10:10 split (5.4k "
                        "for training, ours 839)"),
        PublishedResult("anisotropy_ratio_mae_eps15", 0.078, "AnisoNet (Lou & Ganose, Faraday Discuss. 2025)",
                        "electronic part; same data and split as its eps_poly MAE"),
    ),
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
    published=(
        PublishedResult("fraction_mean_frequency_error_below_10pct", 0.70,
                        "Chen et al., Adv. Sci. 2021 (e3nn)", "same 1,522 Petretto materials, their own random "
                        "split (~1,200 for training)"),
        PublishedResult("r2_max_normalised", 0.56, "Chen et al.'s e3nn as retrained by Kong et al. 2022 (Mat2Spec)",
                        "same data, 51 bins, max-normalised, MSE loss; Mat2Spec's split"),
        PublishedResult("r2_max_normalised", 0.63, "Mat2Spec (Kong et al., Nat. Commun. 2022)",
                        "same data, 51 bins, max-normalised, MSE loss; their split"),
        PublishedResult("wasserstein_cm", 21.0, "Mat2Spec (Kong et al., Nat. Commun. 2022)",
                        "trained on sum-normalised DOS (Wasserstein / KL losses); we score our max-normalised model "
                        "after sum-normalising, which the distance does anyway"),
        PublishedResult("cv_300k_mae_j_per_mol_k", 1.32, "Mat2Spec (Kong et al., Nat. Commun. 2022)",
                        "sum-normalised setting; their temperature and per-mole convention are assumed to be 300 K "
                        "and per mole of atoms (ours)"),
        PublishedResult("mean_frequency_mae_cm", 10.6, "Mat2Spec (Kong et al., Nat. Commun. 2022)",
                        "sum-normalised setting"),
    ),
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
