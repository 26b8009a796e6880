"""The piezoelectric stress tensor e_ijk: 3x6 Voigt form in C/m^2 (de Jong et al. 2015)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.core import derived, polarity, tensors
from zoo.properties.source_fields import (
    MATERIALS_PROJECT,
    Citation,
    MPSource,
    MPValue,
    RawValue,
    SnapshotField,
    SnapshotSource,
)
from zoo.properties.spec import (
    NEUMANN_METRIC,
    NEUMANN_TEXT,
    PropertySpec,
    TensorPart,
    derived_column,
    mae_where_defined,
    record_neumann_residual,
)

DEJONG_2015 = Citation(
    "dejong2015piezo",
    "de Jong et al., Sci. Data 2, 150053 (2015): the DFPT-PBE piezoelectric tensors",
    """@article{dejong2015piezo,
  author  = {de Jong, Maarten and Chen, Wei and Geerlings, Henry and Asta, Mark and Persson, Kristin A.},
  title   = {A database to enable discovery and design of piezoelectric materials},
  journal = {Scientific Data},
  volume  = {2},
  pages   = {150053},
  year    = {2015},
  doi     = {10.1038/sdata.2015.53}
}""",
)

# matminer: the piezoelectric tensor is in the IEEE frame.
SNAPSHOT = SnapshotSource(
    file="matminer-0.4.1/piezoelectric_tensor.csv",
    layout="matminer",
    values=(SnapshotField("piezo_voigt", "piezoelectric_tensor", "tensor", (3, 6)),),
    frames={"piezo_voigt": "ieee"},
    reported=(
        SnapshotField("eij_max", "eij_max"),
        SnapshotField("v_max", "v_max", "tensor", (3,), optional=True),
        SnapshotField("point_group", "point_group", "text"),
        SnapshotField("volume", "volume"),
        *(SnapshotField(name, name, "integer") for name in ("space_group", "nsites")),
    ),
)

MP_FIELDS = ("material_id", "formula_pretty", "symmetry", "deprecated", "total", "e_ij_max", "max_direction")
# emmet: PiezoTensor.convert_to_ieee; its documents carry no structure.
# validate's largest |e_ij| (C/m^2) that counts as zero (params.yaml): such a tensor obeys every point group, and a
# centrosymmetric crystal's tensor must be one (reason code piezo_nonzero_centrosymmetric).
ZERO_ATOL = "piezo_zero_atol_c_m2"
# validate's largest plausible |e_ij| (C/m^2; reason code implausible_magnitude). The largest well-established bulk
# stress constants are 10-20 C/m^2 (poled PZT and PMN-PT, e33 ~ 15-20); DFPT gives larger ones where a soft polar mode
# or a vanishing gap makes the response diverge. In the snapshot after clean: median 0.41, 99th percentile 7.2 C/m^2;
# above 20 only BaNiO3 (27.5, a nickelate with a PBE gap near zero) and two triclinic records (Pr3NF6 45, SiO2 41)
# that a per-source convention settles.
MAX_ABS = "piezo_max_abs_c_m2"
# validate's |e_long| along a tetrahedral binary's bond (C/m^2) at most which it has no sign (the DFPT precision of
# e_ij; reason code polarity_inconsistent, zoo.core.polarity).
POLARITY_MIN_ABS = "polarity_min_abs_c_m2"

MP_API = MPSource(
    route="materials/piezoelectric",
    fields=MP_FIELDS,
    values=(MPValue("piezo_voigt", "total", (3, 6)),),
    frames={"piezo_voigt": "ieee"},
    reported={
        "eij_max": "e_ij_max", "max_direction": "max_direction", "space_group": "symmetry.number",
        "point_group": "symmetry.point_group", "deprecated": "deprecated", "material_id_as_served": "material_id",
    },
    structure_from_summary=True,
)


@dataclass(frozen=True)
class PiezoSpec(PropertySpec):
    """Validate: a tensor within piezo_zero_atol_c_m2 of zero has residual 0, and centrosymmetric crystals must
    have a zero tensor (the suite's row condition on is_centrosymmetric); evaluate: the largest longitudinal
    coefficient."""

    def suite_parameters(self, thresholds: Mapping[str, Any]) -> dict[str, float]:
        return {key: thresholds[key] for key in (ZERO_ATOL, MAX_ABS, POLARITY_MIN_ABS)}

    def record_metrics(self, values, info, params) -> dict[str, Any]:
        (e,) = values
        cartesian = tensors.piezo_voigt_to_cartesian(e)
        out = {"piezo_max_abs": float(np.abs(e).max()), "neumann_residual": None}
        if info is not None:
            # A tensor within the data's precision of zero obeys every point group; its sign pattern is noise.
            is_zero = out["piezo_max_abs"] <= params.thresholds[ZERO_ATOL]
            out["neumann_residual"] = 0.0 if is_zero else record_neumann_residual([cartesian], info)
        return out

    def structure_metrics(self, values, structure, info, params) -> dict[str, Any]:
        """The polarity of a tetrahedral binary (zoo.core.polarity): compound and e_long along its bond."""
        compound, e_long = polarity.piezo_bond_longitudinal(values[0], structure, info)
        return {"polarity_compound": compound, "bond_longitudinal_e": e_long}

    def derived_quantities(self, *values: np.ndarray) -> dict[str, Any]:
        return derived.piezo_properties(*values)

    def prediction_quantities(self, values, structures, forms) -> dict[str, np.ndarray]:
        return {"max_longitudinal": np.array([derived.piezo_properties(e)["max_longitudinal"]
                                              for e in forms["voigt"]])}

    def group_metrics(self, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                      pick: Callable[[Mapping[str, np.ndarray], str], np.ndarray], mask: np.ndarray) -> dict[str, Any]:
        mae, _ = mae_where_defined(pick(pred, "max_longitudinal"), pick(true, "max_longitudinal"))
        return {"max_longitudinal_mae": mae}

    def prediction_parts(self, value: np.ndarray, structure: Any, parts: tuple[str, ...] | None = None,
                         ) -> tuple[np.ndarray, dict[str, Callable[[], Any]]]:
        def piezo_tensor():
            from pymatgen.analysis.piezo import PiezoTensor

            return PiezoTensor(value)

        return np.asarray(tensors.cartesian_to_voigt(value, self.voigt_kind)), {"total": piezo_tensor}

    def prediction_derived(self, raw: np.ndarray, value: np.ndarray, structure: Any,
                           parts: tuple[str, ...] | None = None) -> dict[str, Any]:
        return derived.piezo_properties(raw)

    def row_value(self, row: Mapping[str, Any], part: str | None):
        from pymatgen.analysis.piezo import PiezoTensor

        return PiezoTensor.from_voigt(np.asarray(row["piezo_voigt"], dtype=np.float64))


PIEZO = PiezoSpec(
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
    mp_endpoint=MP_API.route,
    mp_fields=MP_FIELDS,
    derived=("max_longitudinal", "max_longitudinal_direction"),
    citations=(DEJONG_2015, MATERIALS_PROJECT),
    raw_values=(RawValue("piezo_voigt", (3, 6), "3x6 Voigt piezoelectric stress constants e_im in C/m^2 (no factor 2)."),),
    source_keys=("piezo_voigt",),
    stored_columns=("piezo_voigt",),
    stored_form="voigt",
    metric_columns=(
        ("piezo_max_abs", "float", "largest |e_ij| of the Voigt (= Cartesian) components, C/m^2"),
        ("polarity_compound", "text", "reduced formula of a tetrahedral binary (wurtzite, zinc blende), else null"),
        ("bond_longitudinal_e", "float", "e_long along its cation->anion bond, C/m^2 (zoo.core.polarity)"),
    ),
    suite_columns=("is_centrosymmetric",),
    physics_codes=("piezo_nonzero_centrosymmetric", "implausible_magnitude", "polarity_inconsistent"),
    validate_thresholds=(ZERO_ATOL, MAX_ABS, POLARITY_MIN_ABS),
    dataset_parts=(TensorPart("piezo_voigt", "voigt", "piezo", "piezoelectric stress tensor e_ijk"),),
    derived_columns=(
        derived_column("max_longitudinal", "largest longitudinal coefficient max_n |e_ijk n_i n_j n_k|"),
        derived_column("max_longitudinal_direction",
                       "a unit direction where e_ijk n_i n_j n_k = +max_longitudinal (null for e = 0)", "vector3"),
        derived_column("eij_max_matminer",
                       "matminer / de Jong et al. (2015) eij_max definition (frame dependent; cross-check)"),
        derived_column("v_max_matminer", "direction of eij_max_matminer, largest component 1", "vector3"),
    ),
    derived_form="voigt",
    validation_facts=(
        (NEUMANN_METRIC[0], "1", NEUMANN_TEXT.format(floor="; 0 for a tensor whose components are all within "
                                                          "validate's piezo_zero_atol_c_m2 of zero")),
    ),
    headline="component_mae",
    parity=("voigt", "piezo components e_ij (C/m^2)"),
    # The exact answer for every centrosymmetric crystal and the null model a piezo model must beat; the sign of a
    # piezo tensor (which way the polar axis points) is physics, not convention.
    zero_baseline=True,
    signed=True,
    snapshot=SNAPSHOT,
    mp_api=MP_API,
)
