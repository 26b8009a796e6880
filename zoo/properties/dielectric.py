"""The dielectric tensor: electronic, ionic and total relative permittivity, 3x3 (Petousis et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.core import derived, tensors
from zoo.properties.spec import (
    MATERIALS_PROJECT,
    NEUMANN_METRIC,
    NEUMANN_TEXT,
    Citation,
    MPSource,
    MPValue,
    PropertySpec,
    RawValue,
    SnapshotField,
    SnapshotSource,
    TensorPart,
    derived_column,
    mae_where_defined,
    record_neumann_residual,
    relative_asymmetry,
)

PETOUSIS_2017 = Citation(
    "petousis2017dielectric",
    "Petousis et al., Sci. Data 4, 160134 (2017): the DFPT-PBE dielectric tensors",
    """@article{petousis2017dielectric,
  author  = {Petousis, Ioannis and Mrdjenovich, David and Ballouz, Eric and Liu, Miao and Winston, Donald and
             Chen, Wei and Graf, Tanja and Schladt, Thomas D. and Persson, Kristin A. and Prinz, Fritz B.},
  title   = {High-throughput screening of inorganic compounds for the discovery of novel dielectric and optical
             materials},
  journal = {Scientific Data},
  volume  = {4},
  pages   = {160134},
  year    = {2017},
  doi     = {10.1038/sdata.2016.134}
}""",
)

PARTS = ("electronic", "ionic", "total")
# validate's slack on eps >= 1 (electronic, total) and on ionic >= 0, for rounding (params.yaml): the snapshot prints 8
# decimals and ionic = total - electronic carries both roundings (after clean, the snapshot's smallest ionic
# eigenvalue is 0.0, electronic 1.63). Reason codes dielectric_eigenvalue_below_one, dielectric_ionic_not_psd.
EIGENVALUE_ATOL = "dielectric_eigenvalue_atol"

# The dielectric CSV states no frame.
SNAPSHOT = SnapshotSource(
    file="matminer-0.4.1/dielectric_constant.csv",
    layout="matminer",
    values=(SnapshotField("electronic", "e_electronic", "tensor", (3, 3)),
            SnapshotField("total", "e_total", "tensor", (3, 3))),
    frames={"electronic": "unknown", "total": "unknown"},
    reported=(
        *(SnapshotField(name, name) for name in ("poly_electronic", "poly_total", "n", "band_gap", "volume")),
        *(SnapshotField(name, name, "integer") for name in ("space_group", "nsites")),
        SnapshotField("pot_ferroelectric", "pot_ferroelectric", "boolean"),
        SnapshotField("point_group", "meta", "meta_point_group"),
    ),
)

MP_FIELDS = (
    "material_id", "formula_pretty", "symmetry", "deprecated", "electronic", "total", "e_electronic",
    "e_ionic", "e_total", "n",
)
# emmet rotates both parts into the IEEE frame (Tensor.convert_to_ieee); its documents carry no structure.
MP_API = MPSource(
    route="materials/dielectric",
    fields=MP_FIELDS,
    values=(MPValue("electronic", "electronic", (3, 3)), MPValue("total", "total", (3, 3))),
    frames={"electronic": "ieee", "total": "ieee"},
    reported={
        "poly_electronic": "e_electronic", "poly_ionic": "e_ionic", "poly_total": "e_total", "n": "n",
        "space_group": "symmetry.number", "deprecated": "deprecated", "material_id_as_served": "material_id",
    },
    structure_from_summary=True,
)

_PER_PART = (
    ("eps_poly", "polycrystalline average of {part} (mean eigenvalue)", "float"),
    ("eigenvalues", "eigenvalues of {part}, ascending", "vector3"),
    ("anisotropy_ratio", "anisotropy ratio lambda_max/lambda_min of {part} (null if lambda_min <= 0)", "float"),
)
_DERIVED_COLUMNS = (
    *(derived_column(f"{key}_{part}", text.format(part=f"eps_{part}"), kind, units_key=key)
      for part in PARTS for key, text, kind in _PER_PART),
    derived_column("refractive_index", "refractive index n = sqrt(eps_poly_electronic)"),
)


@dataclass(frozen=True)
class DielectricSpec(PropertySpec):
    """The ionic part is derived (total - electronic); validate: eigenvalues of each part; evaluate: eps_poly and
    the anisotropy ratio of the target part."""

    def derived_parts(self, parts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"ionic": parts["total"] - parts["electronic"]} if {"electronic", "total"} <= set(parts) else {}

    def suite_parameters(self, thresholds: Mapping[str, Any]) -> dict[str, float]:
        # eps >= 1 (electronic, total) and ionic >= 0, each with the slack for rounding.
        return {"eps_min_eigenvalue": 1.0 - thresholds[EIGENVALUE_ATOL],
                "ionic_min_eigenvalue": -thresholds[EIGENVALUE_ATOL]}

    def record_metrics(self, values, info, params) -> dict[str, Any]:
        parts = dict(zip(self.tensor_parts, values))
        symmetric = {name: 0.5 * (a + a.T) for name, a in parts.items()}
        out: dict[str, Any] = {"dielectric_asymmetry": max(relative_asymmetry(a) for a in parts.values())}
        for name, matrix in symmetric.items():
            out[f"{name}_min_eig"] = float(np.linalg.eigvalsh(matrix)[0])
        out["neumann_residual"] = None
        if info is not None and out["dielectric_asymmetry"] <= tensors.SYMMETRY_RTOL:
            out["neumann_residual"] = record_neumann_residual(list(symmetric.values()), info)
        return out

    def derived_quantities(self, *values: np.ndarray) -> dict[str, Any]:
        return derived.dielectric_properties(*values)

    def prediction_quantities(self, values, structures, forms) -> dict[str, np.ndarray]:
        eigenvalues = np.linalg.eigvalsh(forms["cartesian"])
        positive = eigenvalues[:, 0] > 0
        return {"eps_poly": eigenvalues.mean(axis=1),
                "anisotropy_ratio": np.where(positive, eigenvalues[:, -1] / np.where(positive, eigenvalues[:, 0], 1.0),
                                             np.nan)}

    def group_metrics(self, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                      pick: Callable[[Mapping[str, np.ndarray], str], np.ndarray], mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["eps_poly_mae"], _ = mae_where_defined(pick(pred, "eps_poly"), pick(true, "eps_poly"))
        out["anisotropy_ratio_mae"], out["n_anisotropy_ratio_undefined"] = mae_where_defined(
            pick(pred, "anisotropy_ratio"), pick(true, "anisotropy_ratio"))
        return out

    def prediction_derived(self, raw: np.ndarray, value: np.ndarray, structure: Any) -> dict[str, Any]:
        quantities = derived.dielectric_tensor_properties(value)
        # the model predicts the electronic part: its mean eigenvalue gives the optical index
        quantities["refractive_index"] = derived.refractive_index(quantities["eps_poly"])
        return quantities

    def prediction_flags(self, derived: Mapping[str, Any], symbols: Sequence[str]) -> list[tuple[str, str]]:
        metal = likely_metal(symbols)
        if metal:
            return [("likely_metal", f"{metal}; the dielectric model was trained on materials with a band gap, and a "
                     "metal's electronic permittivity diverges: the number is meaningless")]
        return []

    def row_value(self, row: Mapping[str, Any], part: str | None):
        from pymatgen.core.tensors import SquareTensor

        part = "total" if part is None else part
        if part not in self.tensor_parts:
            raise ValueError(f"part must be one of {list(self.tensor_parts)}, got {part!r}")
        return SquareTensor(np.asarray(row[f"eps_{part}_cartesian"], dtype=np.float64))

    @property
    def row_marker(self) -> str:
        return "eps_total_cartesian"


DIELECTRIC = DielectricSpec(
    name="dielectric",
    title="Dielectric tensor (electronic, ionic, total)",
    units="dimensionless (relative permittivity)",
    cartesian_shape=(3, 3),
    voigt_shape=(6,),
    voigt_kind="symmetric2",
    formula="ij=ji",
    irreps="1x0e+1x2e",
    tensor_parts=PARTS,
    target_part="electronic",
    mp_endpoint=MP_API.route,
    mp_fields=MP_FIELDS,
    derived=("eps_poly", "eigenvalues", "anisotropy_ratio", "refractive_index"),
    citations=(PETOUSIS_2017, MATERIALS_PROJECT),
    raw_values=(
        RawValue("electronic", (3, 3),
                 "3x3 high-frequency (electronic) relative permittivity; the ionic part is total - electronic."),
        RawValue("total", (3, 3), "3x3 static (electronic + ionic) relative permittivity."),
    ),
    source_keys=("electronic", "total"),
    stored_columns=PARTS,
    stored_form="cartesian",
    symmetric_value=True,
    metric_columns=(
        ("dielectric_asymmetry", "float", "max over the parts of max |a - a^T| / max |a|"),
        ("electronic_min_eig", "float", "smallest eigenvalue of the symmetric part of the electronic eps"),
        ("ionic_min_eig", "float", "smallest eigenvalue of the symmetric part of the ionic eps"),
        ("total_min_eig", "float", "smallest eigenvalue of the symmetric part of the total eps"),
    ),
    physics_codes=("dielectric_asymmetric", "dielectric_eigenvalue_below_one", "dielectric_ionic_not_psd"),
    validate_thresholds=(EIGENVALUE_ATOL,),
    dataset_parts=tuple(TensorPart(part, "cartesian", f"eps_{part}", f"{part} part of the relative permittivity eps_ij")
                        for part in PARTS),
    derived_columns=_DERIVED_COLUMNS,
    derived_form="cartesian",
    validation_facts=(
        (NEUMANN_METRIC[0], "1", NEUMANN_TEXT.format(floor="")),
        *((f"{part}_min_eig", "1", f"smallest eigenvalue of eps_{part} (validate: >= 1 for electronic and total, "
           ">= 0 for ionic, within the stated slack)") for part in PARTS),
    ),
    headline="eps_poly_mae",
    parity=("eps_poly", "eps_poly (electronic)"),
    model_limitations=("Only the electronic (high-frequency) dielectric tensor is predicted; ionic and total parts are "
                       "not.",),
    snapshot=SNAPSHOT,
    mp_api=MP_API,
)


def likely_metal(symbols: Sequence[str]) -> str | None:
    """Why a composition is probably a metal, or None. Conservative rule from the composition alone (no band gap is
    known for a structure given to the model): every element is a metal in pymatgen's classification (alkali,
    alkaline earth, transition, post-transition, lanthanoid, actinoid), i.e. an elemental metal or an intermetallic.
    It misses metallic compounds with a non-metal (TiN, NbSe2, MgB2) and flags the few intermetallic
    semiconductors: 15 of the 1,049 records of the dielectric dataset (Zintl and half-Heusler compounds such as
    NiScBi, all with a band gap)."""
    from pymatgen.core.periodic_table import Element

    elements = sorted(set(symbols))
    if elements and all(Element(symbol).is_metal for symbol in elements):
        what = "an elemental metal" if len(elements) == 1 else "all its elements are metals"
        return f"{'-'.join(elements)} is probably a metal ({what})"
    return None
