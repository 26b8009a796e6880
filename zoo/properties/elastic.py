"""The elastic stiffness tensor: 6x6 Voigt stiffness in GPa (de Jong et al. 2015, the Materials Project)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.core import derived, tensor_checks, tensors
from zoo.core.schema_checks import is_real
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
    relative_asymmetry,
)

STRAINTENSORNET = Citation(
    "pakornchote2023straintensornet",
    "Pakornchote et al., Phys. Rev. Research 5, 043198 (2023), repository trachote/predict_elastic_tensor: newer "
    "Materials Project elastic tensors (`mp-elastic-extra/straintensornet_val.jsonl`)",
    """@article{pakornchote2023straintensornet,
  author  = {Pakornchote, Teerachote and Ektarawong, Annop and Chotibut, Thiparat},
  title   = {StrainTensorNet: Predicting crystal structure elastic properties using SE(3)-equivariant graph neural
             networks},
  journal = {Physical Review Research},
  volume  = {5},
  pages   = {043198},
  year    = {2023},
  doi     = {10.1103/PhysRevResearch.5.043198}
}""",
)
ELATBOT = Citation(
    "elatbot",
    "the ElaTBot repository (Grenzlinie/ElaTBot): newer Materials Project elastic tensors, the external split "
    "(`mp-elastic-extra/elatbot_val.jsonl`)",
    """@misc{elatbot,
  title        = {ElaTBot},
  howpublished = {\\url{https://github.com/Grenzlinie/ElaTBot}, commit 7d72cd7,
                  reproduce/data/prompt_type_1/real_val_dataset_with_mpid.json},
  note         = {Materials Project elastic tensors (CC BY 4.0); code Apache-2.0}
}""",
)
DEJONG_2015 = Citation(
    "dejong2015elastic",
    "de Jong et al., Sci. Data 2, 150009 (2015): the DFT-PBE elastic tensors",
    """@article{dejong2015elastic,
  author  = {de Jong, Maarten and Chen, Wei and Angsten, Thomas and Jain, Anubhav and Notestine, Randy and
             Gamst, Anthony and Sluiter, Marcel and Krishna Ande, Chaitanya and van der Zwaag, Sybrand and
             Plata, Jose J. and Toher, Cormac and Curtarolo, Stefano and Ceder, Gerbrand and Persson, Kristin A.
             and Asta, Mark},
  title   = {Charting the complete elastic properties of inorganic crystalline compounds},
  journal = {Scientific Data},
  volume  = {2},
  pages   = {150009},
  year    = {2015},
  doi     = {10.1038/sdata.2015.9}
}""",
)

# The frames the sources claim (matminer's column descriptions), checked by clean, not trusted: elastic_tensor
# "corresponding to IEEE orientation, symmetrized"; elastic_tensor_original "unsymmetrized, corresponding to POSCAR
# conventional standard cell orientation"; compliance_tensor is the inverse of elastic_tensor (S.C = 1 in every row),
# so IEEE too.
SNAPSHOT = SnapshotSource(
    file="matminer-0.4.1/elastic_tensor.csv",
    layout="matminer",
    values=(
        SnapshotField("stiffness_voigt", "elastic_tensor", "tensor", (6, 6)),
        SnapshotField("stiffness_voigt_original", "elastic_tensor_original", "tensor", (6, 6), optional=True),
        SnapshotField("compliance_voigt", "compliance_tensor", "tensor", (6, 6), optional=True),
    ),
    frames={"stiffness_voigt": "ieee", "stiffness_voigt_original": "structure", "compliance_voigt": "ieee"},
    reported=(
        *(SnapshotField(name, name) for name in (
            "K_Voigt", "K_Reuss", "K_VRH", "G_Voigt", "G_Reuss", "G_VRH", "elastic_anisotropy", "poisson_ratio",
            "volume")),
        *(SnapshotField(name, name, "integer") for name in ("space_group", "nsites", "kpoint_density")),
    ),
)

# Both newer files: "6x6 Voigt stiffness in GPa, in the IEEE-standard frame of the structure as MP defines it"
# (mp-elastic-extra/README.md); they have no unsymmetrised or compliance column.
NEWER_SNAPSHOTS = (
    SnapshotSource(
        file="mp-elastic-extra/straintensornet_val.jsonl",
        layout="cif-jsonl",
        values=(SnapshotField("stiffness_voigt", "elastic_tensor_voigt_ieee_gpa", "json_tensor", (6, 6)),),
        frames={"stiffness_voigt": "ieee"},
        reported=(SnapshotField("crystal_system", "crystal_system", "json_text"),),
        record_tag="straintensornet-",
    ),
    SnapshotSource(
        file="mp-elastic-extra/elatbot_val.jsonl",
        layout="sites-jsonl",
        values=(SnapshotField("stiffness_voigt", "elastic_tensor_voigt_ieee_gpa", "json_tensor", (6, 6)),),
        frames={"stiffness_voigt": "ieee"},
        record_tag="elatbot-",
    ),
)

MP_FIELDS = (
    "material_id", "formula_pretty", "structure", "symmetry", "deprecated", "order", "elastic_tensor",
    "compliance_tensor", "bulk_modulus", "shear_modulus", "universal_anisotropy", "homogeneous_poisson",
)
# emmet serves compliance in TPa^-1 (its elastic tensor in GPa times 1000); records hold 1/GPa.
PER_GPA_PER_PER_TPA = 1e-3

MP_API = MPSource(
    route="materials/elasticity",
    fields=MP_FIELDS,
    values=(
        MPValue("stiffness_voigt", "elastic_tensor.ieee_format", (6, 6)),
        MPValue("stiffness_voigt_original", "elastic_tensor.raw", (6, 6), optional=True),
        MPValue("compliance_voigt", "compliance_tensor.raw", (6, 6), scale=PER_GPA_PER_PER_TPA, optional=True),
    ),
    frames={"stiffness_voigt": "ieee", "stiffness_voigt_original": "structure", "compliance_voigt": "structure"},
    reported={
        "K_Voigt": "bulk_modulus.voigt", "K_Reuss": "bulk_modulus.reuss", "K_VRH": "bulk_modulus.vrh",
        "G_Voigt": "shear_modulus.voigt", "G_Reuss": "shear_modulus.reuss", "G_VRH": "shear_modulus.vrh",
        "elastic_anisotropy": "universal_anisotropy", "poisson_ratio": "homogeneous_poisson",
        "space_group": "symmetry.number", "order": "order", "deprecated": "deprecated",
        "material_id_as_served": "material_id",
    },
)

_DERIVED_COLUMNS = (
    derived_column("k_voigt", "Voigt bulk modulus"),
    derived_column("k_reuss", "Reuss bulk modulus"),
    derived_column("k_vrh", "Voigt-Reuss-Hill bulk modulus"),
    derived_column("g_voigt", "Voigt shear modulus"),
    derived_column("g_reuss", "Reuss shear modulus"),
    derived_column("g_vrh", "Voigt-Reuss-Hill shear modulus"),
    derived_column("y_mod", "Young's modulus 9KG/(3K+G) from the Hill moduli"),
    derived_column("homogeneous_poisson", "Poisson ratio (3K-2G)/(6K+2G) from the Hill moduli"),
    derived_column("universal_anisotropy", "universal anisotropy index A_U = 5 G_V/G_R + K_V/K_R - 6"),
    derived_column("youngs_modulus_min",
                   "minimum over directions of the directional Young's modulus (null if unstable)"),
    derived_column("youngs_modulus_max",
                   "maximum over directions of the directional Young's modulus (null if unstable)"),
    derived_column("youngs_modulus_min_direction", "direction of youngs_modulus_min, in the structure's frame", "vector3"),
    derived_column("youngs_modulus_max_direction", "direction of youngs_modulus_max, in the structure's frame", "vector3"),
    derived_column("born_stable", "Born stability: the 6x6 Voigt stiffness is positive definite", "bool"),
)

_MODULI = ("k_vrh", "g_vrh", "y_mod")
# Reuss (hence Hill) bounds need the compliance: a predicted tensor whose smallest eigenvalue is not above this
# times its largest (not positive definite, or nearly singular) has none, is counted in n_moduli_undefined and not
# scored, since one such tensor would dominate a Hill MAE (REFERENCE.md: MatTen's G_VRH MAE 22.5 there, from a few
# of them). Voigt K_V, G_V are linear in the tensor and defined for every prediction.
HILL_EIGENVALUE_FLOOR = 1e-6
# validate's thresholds on the Hill moduli (params.yaml), [min, max] in GPa, checked for SPD stiffness only: the
# suite's k_vrh_min_gpa, k_vrh_max_gpa, ... (reason code modulus_out_of_range).
_MODULUS_RANGES = {"k_vrh_range_gpa": "k_vrh", "g_vrh_range_gpa": "g_vrh"}


@dataclass(frozen=True)
class ElasticSpec(PropertySpec):
    """Validate: Voigt asymmetry, eigenvalues, Hill moduli; evaluate: Voigt K, G, Hill K, G, E and positive
    definiteness."""

    def check_thresholds(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key in _MODULUS_RANGES:
            value = values[key]
            if (not isinstance(value, (tuple, list)) or len(value) != 2 or not all(is_real(v) for v in value)
                    or not value[0] < value[1]):
                raise ValueError(f"validate.{key} must be [min, max] with min < max (GPa), got {value!r}")
            out[key] = (float(value[0]), float(value[1]))
        return out

    def suite_parameters(self, thresholds: Mapping[str, Any]) -> dict[str, float]:
        return {f"{name}_{end}_gpa": thresholds[key][i] for key, name in _MODULUS_RANGES.items()
                for i, end in enumerate(("min", "max"))}

    def record_metrics(self, values, info, params) -> dict[str, Any]:
        (c,) = values
        symmetric = 0.5 * (c + c.T)
        out = {"voigt_asymmetry": relative_asymmetry(c), "min_eigenvalue": float(np.linalg.eigvalsh(symmetric)[0]),
               "k_vrh": None, "g_vrh": None, "neumann_residual": None}
        if out["voigt_asymmetry"] > tensor_checks.SYMMETRY_RTOL:
            return out
        if out["min_eigenvalue"] > 0.0:  # Hill moduli of an unstable (non-SPD) stiffness mean nothing
            from pymatgen.analysis.elasticity import ElasticTensor

            elastic = ElasticTensor.from_voigt(symmetric)
            out["k_vrh"], out["g_vrh"] = float(elastic.k_vrh), float(elastic.g_vrh)
        if info is not None:
            out["neumann_residual"] = record_neumann_residual([tensors.stiffness_voigt_to_cartesian(symmetric)], info)
        return out

    def derived_quantities(self, *values: np.ndarray) -> dict[str, Any]:
        return derived.elastic_properties(*values)

    def prediction_quantities(self, values, structures, forms) -> dict[str, np.ndarray]:
        n = len(values)
        moduli = {key: np.full(n, np.nan) for key in _MODULI}
        eigenvalues = np.linalg.eigvalsh(forms["voigt"])
        for i, c in enumerate(forms["voigt"]):
            if not eigenvalues[i, 0] > HILL_EIGENVALUE_FLOOR * np.abs(eigenvalues[i]).max():
                continue  # not positive definite, or nearly singular: no meaningful Reuss bound (HILL_EIGENVALUE_FLOOR)
            hill = derived.hill_moduli(c, np.linalg.inv(c))
            for key in moduli:
                moduli[key][i] = hill[key]
        k_voigt, g_voigt = derived.voigt_moduli(forms["voigt"])
        return {**moduli, "k_voigt": k_voigt, "g_voigt": g_voigt, "min_eigenvalue": eigenvalues[:, 0]}

    def group_metrics(self, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                      pick: Callable[[Mapping[str, np.ndarray], str], np.ndarray], mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("k_voigt", "g_voigt", *_MODULI):
            truth = pick(true, key)
            mae, undefined = mae_where_defined(pick(pred, key), truth)
            mad = float(np.abs(truth - truth.mean()).mean()) if truth.size else 0.0
            out[f"{key}_mae"] = mae
            out[f"{key}_mae_over_mad"] = mae / mad if mae is not None and mad > 0 else None
        out["n_moduli_undefined"] = undefined  # of the Hill moduli (y_mod, the last: undefined where K or G is)
        out["fraction_not_positive_definite"] = float(np.mean(pick(pred, "min_eigenvalue") <= 0)) \
            if mask.any() else None
        return out

    def prediction_parts(self, value: np.ndarray, structure: Any, parts: tuple[str, ...] | None = None,
                         ) -> tuple[np.ndarray, dict[str, Callable[[], Any]]]:
        def stiffness():
            from pymatgen.analysis.elasticity import ElasticTensor

            return ElasticTensor(value)

        return np.asarray(tensors.cartesian_to_voigt(value, self.voigt_kind)), {"total": stiffness}

    def prediction_derived(self, raw: np.ndarray, value: np.ndarray, structure: Any,
                           parts: tuple[str, ...] | None = None) -> dict[str, Any]:
        return derived.elastic_properties(raw)

    def prediction_flags(self, derived: Mapping[str, Any], symbols: Sequence[str],
                         raw: np.ndarray | None = None) -> list[tuple[str, str]]:
        if derived.get("born_stable") is False:
            return [("not_born_stable", "the predicted stiffness is not positive definite (smallest eigenvalue "
                     f"{derived['min_eigenvalue']:.3g} GPa): not mechanically (Born) stable; the derived moduli "
                     "describe no stable crystal")]
        return []

    def row_value(self, row: Mapping[str, Any], part: str | None):
        from pymatgen.analysis.elasticity import ElasticTensor

        return ElasticTensor.from_voigt(np.asarray(row["stiffness_voigt"], dtype=np.float64))


ELASTIC = ElasticSpec(
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
    mp_endpoint=MP_API.route,
    mp_fields=MP_FIELDS,
    derived=(
        "k_voigt", "k_reuss", "k_vrh", "g_voigt", "g_reuss", "g_vrh", "y_mod", "homogeneous_poisson",
        "universal_anisotropy", "youngs_modulus_min", "youngs_modulus_max", "born_stable", "min_eigenvalue",
    ),
    citations=(DEJONG_2015, STRAINTENSORNET, ELATBOT, MATERIALS_PROJECT),
    raw_values=(
        RawValue("stiffness_voigt", (6, 6), "6x6 Voigt stiffness c_mn in GPa (zoo.tensors convention, no factors)."),
        RawValue("stiffness_voigt_original", (6, 6),
                 "The source's unsymmetrised stiffness, 6x6 GPa, or null where the source has none.", nullable=True),
        RawValue("compliance_voigt", (6, 6), "6x6 Voigt compliance s_mn in 1/GPa (factors 2 on shear indices, "
                 "zoo.tensors convention), or null.", nullable=True),
    ),
    source_keys=("stiffness_voigt",),
    # The source's unsymmetrised tensor, which the snapshot claims in the structure frame.
    alternative_key="stiffness_voigt_original",
    stored_columns=("stiffness_voigt",),
    stored_form="voigt",
    symmetric_value=True,
    metric_columns=(
        ("voigt_asymmetry", "float", "max |c - c^T| / max |c| of the 6x6 Voigt stiffness"),
        ("min_eigenvalue", "float", "smallest eigenvalue of the symmetric part of the Voigt stiffness, GPa"),
        ("k_vrh", "float", "Hill bulk modulus, GPa (pymatgen ElasticTensor; SPD stiffness only)"),
        ("g_vrh", "float", "Hill shear modulus, GPa (pymatgen ElasticTensor; SPD stiffness only)"),
    ),
    physics_codes=("elastic_asymmetric", "elastic_not_positive_definite", "modulus_out_of_range"),
    validate_thresholds=tuple(_MODULUS_RANGES),
    dataset_parts=(TensorPart("stiffness_voigt", "voigt", "stiffness", "elastic stiffness tensor C_ijkl"),),
    derived_columns=_DERIVED_COLUMNS,
    derived_form="voigt",
    derived_keys_from_validate=("min_eigenvalue",),
    validation_facts=(
        (NEUMANN_METRIC[0], "1", NEUMANN_TEXT.format(floor="")),
        ("min_eigenvalue", "GPa", "smallest eigenvalue of the 6x6 Voigt stiffness (> 0: Born stable)"),
    ),
    headline="k_vrh_mae",
    parity=("k_vrh", "Hill bulk modulus K (GPa)"),
    learning_curve_metrics=("k_voigt_mae", "g_voigt_mae", "component_mae"),
    printed_decimals=1,  # GPa: stiffness components run to hundreds
    snapshot=SNAPSHOT,
    more_snapshots=NEWER_SNAPSHOTS,
    mp_api=MP_API,
)
