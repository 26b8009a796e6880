"""The dielectric tensor: electronic, ionic and total relative permittivity, 3x3 (Petousis et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.core import derived, tensor_checks, tensors
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
    PublishedResult,
    TensorPart,
    derived_column,
    mae_where_defined,
    tensor_errors,
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
# AnisoNet's data set keeps eps_poly (electronic) <= 15 (Lou & Ganose 2024): metrics on that subset carry this suffix.
ANISONET_MAX_EPS_POLY = 15.0
COMPARABLE_SUFFIX = "_eps15"
# An eigenvalue more than this below its floor (eps >= 1, ionic >= 0) counts as a violation (float32 rounding).
FLOOR_SLACK = 1e-6
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
        if info is not None and out["dielectric_asymmetry"] <= tensor_checks.SYMMETRY_RTOL:
            out["neumann_residual"] = record_neumann_residual(list(symmetric.values()), info)
        return out

    def derived_quantities(self, *values: np.ndarray) -> dict[str, Any]:
        return derived.dielectric_properties(*values)

    def part_suffix(self, part: str) -> str:
        """'' for the target (headline) part, '_<part>' for the others: the names of per-part quantities and
        metrics (unsuffixed names are the electronic part's, as in release 1.0.0 and AnisoNet)."""
        return "" if part == self.target_part else f"_{part}"

    def prediction_quantities(self, values, structures, forms) -> dict[str, np.ndarray]:
        """Per part of forms['parts'] (and the summed total when both summands are there; names: ``part_suffix``):
        the Cartesian tensor, its Voigt form, eps_poly, a_r (NaN where lambda_min <= 0) and the smallest eigenvalue's
        margin over the part's floor; 'cartesian_parts' stacks every part's tensor for the symmetry check."""
        parts, cartesian = forms["parts"], forms["cartesian_parts"]
        by_part = {part: cartesian[:, k] for k, part in enumerate(parts)}
        total, summands = self.summed_part
        if set(summands) <= set(parts):
            by_part[total] = sum(by_part[part] for part in summands)
        out: dict[str, np.ndarray] = {"cartesian_parts": np.stack(list(by_part.values()), axis=1)}
        for part, tensor in by_part.items():
            suffix = self.part_suffix(part)
            eigenvalues = np.linalg.eigvalsh(tensor)
            positive = eigenvalues[:, 0] > 0
            out[f"cartesian{suffix}"] = tensor
            out[f"voigt{suffix}"] = tensors.cartesian_to_voigt(tensor, self.voigt_kind)
            out[f"eps_poly{suffix}"] = eigenvalues.mean(axis=1)
            out[f"anisotropy_ratio{suffix}"] = np.where(
                positive, eigenvalues[:, -1] / np.where(positive, eigenvalues[:, 0], 1.0), np.nan)
            out[f"floor_margin{suffix}"] = eigenvalues[:, 0] - self.eigenvalue_floor(part)
        return out

    def group_metrics(self, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                      pick: Callable[[Mapping[str, np.ndarray], str], np.ndarray], mask: np.ndarray) -> dict[str, Any]:
        """Per part: eps_poly and a_r MAEs, component and relative Frobenius errors (the headline part's come from
        the evaluation's shared tensor errors), the eigenvalue floor violation rate; eps_poly and a_r MAEs again
        on the records whose true electronic eps_poly <= 15 (suffix _eps15, AnisoNet's filter)."""
        out: dict[str, Any] = {}
        # (a model of the ionic part alone has no electronic truth to select by: no subset)
        comparable = mask & (np.asarray(true["eps_poly"]) <= ANISONET_MAX_EPS_POLY) if "eps_poly" in true else None
        for part in self.tensor_parts:
            suffix = self.part_suffix(part)
            if f"eps_poly{suffix}" not in pred:
                continue
            # a_r (and the relative error) of a part whose eigenvalues may be 0 (ionic) divide by near-zeros
            with_ratio = self.eigenvalue_floor(part) > 0
            for name, selected in (("", mask), (COMPARABLE_SUFFIX, comparable)):
                if selected is None:
                    continue
                out[f"eps_poly_mae{suffix}{name}"], _ = mae_where_defined(
                    np.asarray(pred[f"eps_poly{suffix}"])[selected], np.asarray(true[f"eps_poly{suffix}"])[selected])
                if with_ratio:
                    out[f"anisotropy_ratio_mae{suffix}{name}"], undefined = mae_where_defined(
                        np.asarray(pred[f"anisotropy_ratio{suffix}"])[selected],
                        np.asarray(true[f"anisotropy_ratio{suffix}"])[selected])
                    if not name:
                        out[f"n_anisotropy_ratio_undefined{suffix}"] = undefined
            if suffix:
                errors = tensor_errors(*(pick(q, f"{key}{suffix}") for key in ("voigt", "cartesian")
                                         for q in (pred, true)))
                out[f"component_mae{suffix}"] = errors["component_mae"]
                if with_ratio:
                    out[f"relative_frobenius_error{suffix}"] = errors["relative_frobenius_error"]
            margins = pick(pred, f"floor_margin{suffix}")
            out[f"eigenvalue_violation_rate{suffix}"] = float(np.mean(margins < -FLOOR_SLACK)) if margins.size else None
        if comparable is not None:
            out[f"n{COMPARABLE_SUFFIX}"] = int(comparable.sum())
        return out

    def prediction_parts(self, value: np.ndarray, structure: Any, parts: tuple[str, ...] | None = None,
                         ) -> tuple[np.ndarray, dict[str, Callable[[], Any]]]:
        """`value`: (n_parts, 3, 3), one tensor per part of `parts` (a 1.0.0 model: the electronic part alone);
        raw: one Voigt row per part."""
        parts = self.output_parts(self.predicted_parts) if parts is None else tuple(parts)

        def tensor(matrix):
            def build():
                from pymatgen.core.tensors import Tensor

                return Tensor(matrix)

            return build

        return (np.asarray(tensors.cartesian_to_voigt(value, self.voigt_kind)),
                {part: tensor(matrix) for part, matrix in zip(parts, value)})

    def prediction_derived(self, raw: np.ndarray, value: np.ndarray, structure: Any,
                           parts: tuple[str, ...] | None = None) -> dict[str, Any]:
        parts = self.output_parts(self.predicted_parts) if parts is None else tuple(parts)
        if set(self.tensor_parts) <= set(parts):
            return derived.dielectric_properties(*(value[parts.index(part)] for part in self.tensor_parts))
        # a model of the electronic part alone (1.0.0): its mean eigenvalue gives the optical index
        quantities = derived.dielectric_tensor_properties(value[0])
        quantities["refractive_index"] = derived.refractive_index(quantities["eps_poly"])
        return quantities

    def prediction_flags(self, derived: Mapping[str, Any], symbols: Sequence[str],
                         raw: np.ndarray | None = None) -> list[tuple[str, str]]:
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
    model_limitations=(
        "**Metals are outside its domain.** It was trained on DFPT results of insulators and semiconductors and sees "
        "only the structure, not a band gap; a metal has no finite dielectric constant, yet the model returns a number "
        "for one. Predictions for a composition made only of metals carry the likely_metal warning "
        "(`Prediction.warnings`; a heuristic that also flags some Zintl and half-Heusler semiconductors). Small-gap "
        "semiconductors, where DFT-PBE's eps diverges, are predicted poorly (compare the metrics with their `_eps15` "
        "forms).",
        "The targets are DFT-PBE values: PBE underestimates band gaps, so its electronic eps is too high where the gap "
        "is small (ZnO: PBE ~6, experiment 3.7).",
    ),
    predicted_parts=("electronic", "ionic"),
    summed_part=("total", ("electronic", "ionic")),
    # relative permittivity >= 1 (vacuum's), ionic contribution positive semidefinite (validate checks the data the
    # same way)
    eigenvalue_floors=(("electronic", 1.0), ("ionic", 0.0), ("total", 1.0)),
    metric_definitions=(
        ("parts", "metric names without a part suffix are of the electronic part (the headline part); _ionic and "
                  "_total of the ionic part and of total = electronic + ionic"),
        ("_eps15", f"on the test records whose true electronic eps_poly <= {ANISONET_MAX_EPS_POLY:g} (n_eps15), "
                   "AnisoNet's data filter"),
        ("eigenvalue_violation_rate", f"fraction of predictions with an eigenvalue below the part's floor (1 for "
                                      f"electronic and total, 0 for ionic) by more than {FLOOR_SLACK:g}"),
    ),
    published=(
        PublishedResult("eps_poly_mae_eps15", 0.311, "AnisoNet (Lou & Ganose, Faraday Discuss. 2025)",
                        "electronic part; 6,706 newer MP tensors with eps_poly <= 15, random 80:10:10 split (5.4k "
                        "for training, ours 839)"),
        PublishedResult("anisotropy_ratio_mae_eps15", 0.078, "AnisoNet (Lou & Ganose, Faraday Discuss. 2025)",
                        "electronic part; same data and split as its eps_poly MAE"),
    ),
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
