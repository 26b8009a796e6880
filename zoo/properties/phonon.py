"""The phonon density of states: an invariant (51x0e) on a fixed frequency grid (Petretto et al. 2018, Chen et al.
2021).

The one property that is not a tensor: its spec overrides the tensor defaults of ``PropertySpec`` wherever a stage
handles the values (clean's grid, validate's DOS checks, the dataset's DOS columns, the evaluation's DOS metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.core import phonon_derived
from zoo.properties.source_fields import (
    MATERIALS_PROJECT,
    Citation,
    MPSource,
    MPSpectrum,
    RawValue,
    SnapshotField,
    SnapshotSource,
)
from zoo.properties.spec import (
    DerivedColumn,
    PropertySpec,
    PublishedResult,
    as_float_array,
    derived_column,
    finite_mean,
    is_missing,
    mae_where_defined,
)

# 1 THz in cm^-1: 1e12 Hz / (c in cm/s) = 33.35641 (REFERENCE.md). The one place the phonon unit conversion lives.
CM_PER_THZ = 1e12 / (299_792_458.0 * 100.0)

# Chen et al. 2021 / Petretto et al. 2018: 51 points, 0..1000 cm^-1, DOS max-normalised.
PHONON_GRID_CM = np.arange(0.0, 1001.0, 20.0)
PHONON_GRID_CM.setflags(write=False)
GRID_POINTS = len(PHONON_GRID_CM)

# clean: a grid matches when every point is within this fraction of the grid's top (1000 cm^-1): 33.35641 itself is
# given to 7 figures, so a THz grid made with it differs from the exact conversion by ~1.4e-8 relative.
GRID_RTOL = 1e-6
# validate: the frequency grid is printed as integers in every source; anything off by more than rounding is
# another grid.
PHONON_GRID_ATOL_CM = 1e-6
# evaluate: Chen et al.'s figure, the share of records whose mean frequency is within 10%.
MEAN_FREQUENCY_TOLERANCE = 0.10

PETRETTO_2018 = Citation(
    "petretto2018phonon",
    "Petretto et al., Sci. Data 5, 180065 (2018): the DFPT phonon densities of states",
    """@article{petretto2018phonon,
  author  = {Petretto, Guido and Dwaraknath, Shyam and Miranda, Henrique P. C. and Winston, Donald and
             Giantomassi, Matteo and van Setten, Michiel J. and Gonze, Xavier and Persson, Kristin A. and
             Hautier, Geoffroy and Rignanese, Gian-Marco},
  title   = {High-throughput density-functional perturbation theory phonons for inorganic materials},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180065},
  year    = {2018},
  doi     = {10.1038/sdata.2018.65}
}""",
)
CHEN_2021 = Citation(
    "chen2021phonon",
    "Chen et al., Adv. Sci. 8, 2004214 (2021): the 51-point, max-normalised DOS representation",
    """@article{chen2021phonon,
  author  = {Chen, Zhantao and Andrejevic, Nina and Smidt, Tess and Ding, Zhiwei and Xu, Qian and Chi, Yen-Ting
             and Nguyen, Quynh T. and Alatas, Ahmet and Kong, Jing and Li, Mingda},
  title   = {Direct Prediction of Phonon Density of States With Euclidean Neural Networks},
  journal = {Advanced Science},
  volume  = {8},
  pages   = {2004214},
  year    = {2021},
  doi     = {10.1002/advs.202004214}
}""",
)

SNAPSHOT = SnapshotSource(
    file="phonon-petretto/data_union.csv",
    layout="ase-table",
    ids_file="phonon-petretto/mp_ids.csv",
    values=(SnapshotField("frequencies_cm", "phfreq", "tensor", (GRID_POINTS,)),
            SnapshotField("dos", "phdos", "tensor", (GRID_POINTS,))),
)

MP_FIELDS = (
    "identifier", "phonon_method", "formula_pretty", "symmetry", "structure", "phonon_dos.frequencies",
    "phonon_dos.densities",
)
# Phonon documents are tasks: materials/summary lists each material's phonon_IDs by method.
MP_API = MPSource(
    route="materials/phonon",
    fields=MP_FIELDS,
    reported={"phonon_method": "phonon_method", "space_group": "symmetry.number",
              "point_group": "symmetry.point_group"},
    spectrum=MPSpectrum(frequencies="phonon_dos.frequencies", densities="phonon_dos.densities",
                        grid_key="frequencies_cm", values_key="dos", grid=PHONON_GRID_CM, to_grid_units=CM_PER_THZ),
    task_ids_field="phonon_IDs",
    has_props="phonon",
    method_criterion="phonon_method",
)

_METRICS = (
    ("values_present", "flag", "frequencies_cm and dos are non-null"),
    ("grid_matches", "flag", f"frequencies_cm is the {GRID_POINTS}-point grid 0..1000 cm^-1"),
    ("dos_nonempty", "flag", "the DOS has at least one point and is not all zero"),
    ("values_shape_ok", "flag", "the DOS has one value per grid point"),
    ("dos_finite", "flag", "no NaN or infinity in the DOS"),
    ("dos_min", "float", "smallest DOS value"),
    ("dos_max", "float", "largest DOS value"),
)


def grid_in_cm(grid: np.ndarray) -> np.ndarray:
    """The project's grid when `grid` is it, in cm^-1 or in THz; ValueError otherwise."""
    atol = GRID_RTOL * float(PHONON_GRID_CM[-1])
    if np.allclose(grid, PHONON_GRID_CM, rtol=0, atol=atol):
        return np.array(PHONON_GRID_CM)
    if np.allclose(grid * CM_PER_THZ, PHONON_GRID_CM, rtol=0, atol=atol):
        return np.array(PHONON_GRID_CM)  # the same grid given in THz
    raise ValueError(f"frequencies are not the {GRID_POINTS}-point grid 0..{PHONON_GRID_CM[-1]:g} cm^-1 "
                     f"(nor that grid in THz): first values {grid[:3].tolist()}")


def checked_grids(values: Sequence, record_ids: Sequence[str]) -> np.ndarray:
    """The frequency grids of accepted records, each equal to PHONON_GRID_CM (the dataset's fixed grid)."""
    grids = np.asarray(values, dtype=np.float64)
    if grids.shape != (len(record_ids), GRID_POINTS):
        raise ValueError(f"column 'frequencies_cm' must hold {GRID_POINTS}-point grids, got {grids.shape[1:]}")
    off = np.flatnonzero(np.abs(grids - PHONON_GRID_CM).max(axis=1) > 1e-9)
    if off.size:
        raise ValueError(f"record {record_ids[off[0]]}: frequencies_cm is not the grid 0, 20, ..., 1000 cm^-1")
    return grids


@dataclass(frozen=True)
class PhononSpec(PropertySpec):
    """The DOS: no frame, no Voigt form; its own checks, columns and metrics."""

    @property
    def target_column(self) -> str:
        return "dos"

    @property
    def row_marker(self) -> str:
        return "dos_3n"

    def clean_values(self, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"frequencies_cm": grid_in_cm(parts["frequencies_cm"]), "dos": parts["dos"]}

    def record_metrics(self, values, info, params) -> dict[str, Any]:
        out: dict[str, Any] = {name: None for name, _, _ in _METRICS}
        out["values_present"] = not (is_missing(values["frequencies_cm"]) or is_missing(values["dos"]))
        if not out["values_present"]:
            return out
        try:
            grid = as_float_array(values["frequencies_cm"])
            out["grid_matches"] = grid.shape == PHONON_GRID_CM.shape and bool(
                np.allclose(grid, PHONON_GRID_CM, rtol=0.0, atol=PHONON_GRID_ATOL_CM))
        except (TypeError, ValueError):
            out["grid_matches"] = False
        try:
            dos = as_float_array(values["dos"])
        except (TypeError, ValueError):
            out["values_shape_ok"] = False
            return out
        out["dos_nonempty"] = dos.size > 0 and bool(np.any(dos != 0.0))  # NaN != 0: a NaN DOS is not "empty"
        if not out["dos_nonempty"]:
            return out
        out["values_shape_ok"] = dos.shape == PHONON_GRID_CM.shape
        if not out["values_shape_ok"]:
            return out
        out["dos_finite"] = bool(np.isfinite(dos).all())
        if out["dos_finite"]:
            out["dos_min"], out["dos_max"] = float(dos.min()), float(dos.max())
        return out

    # ---- build
    @property
    def invariant_columns(self) -> tuple[tuple[str, tuple[int, ...], str, str], ...]:
        """The dataset's value columns: (name, shape, units, description)."""
        return (
            ("frequencies_cm", (GRID_POINTS,), "cm^-1", f"frequency grid, {GRID_POINTS} points 0..1000"),
            ("dos", (GRID_POINTS,), "1 (maximum 1)", f"phonon DOS on the grid, maximum 1 (irreps {self.irreps})"),
            ("dos_3n", (GRID_POINTS,), "states/cm^-1 per cell", "phonon DOS on the grid, integral 3N (trapezoid)"),
        )

    @property
    def invariant_column_map(self) -> dict[str, dict[str, Any]]:
        """The tensor_columns entry of the DOS: its own irreps vector, with the identity as change of basis."""
        return {"dos": {"cartesian_column": "dos", "voigt_column": None, "formula": None, "irreps": self.irreps,
                        "units": "1 (maximum 1)", "change_of_basis": "identity (invariant scalars)"}}

    def invariant_rows(self, accepted: Mapping[str, list], structures: Sequence[Mapping[str, Any]],
                       record_ids: Sequence[str]) -> tuple[dict[str, list], list[tuple]]:
        """The value columns of the dataset's rows and each record's ``derived_quantities`` arguments."""
        frequencies = checked_grids(accepted["frequencies_cm"], record_ids)
        dos = np.asarray(accepted["dos"], dtype=np.float64)
        n = len(record_ids)
        columns = {
            "frequencies_cm": frequencies.tolist(),
            "dos": dos.tolist(),
            "dos_3n": [phonon_derived.normalise_dos_to_3n(frequencies[i], dos[i], structures[i]["n_sites"]).tolist()
                       for i in range(n)],
        }
        args = [(frequencies[i], dos[i], structures[i]["n_sites"], structures[i]["cell_mass_amu"]) for i in range(n)]
        return columns, args

    def derived_quantities(self, *values) -> dict[str, Any]:
        return phonon_derived.phonon_properties(*values)

    # ---- evaluate
    def prediction_quantities(self, values, structures, forms) -> dict[str, np.ndarray]:
        """Per record: the DOS (clipped at 0), mean frequency (cm^-1), C_V at 300 K (k_B per atom and J/(K mol of
        atoms); NaN for an all-zero DOS, no spectrum to average) and whether the grid warning fires."""
        n = len(values)
        dos = np.clip(values, 0.0, None)
        mean_frequency, cv_kb, cv_molar = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        for i, (g, structure) in enumerate(zip(dos, structures)):
            if np.trapezoid(g, PHONON_GRID_CM) <= 0.0:
                continue  # an all-zero DOS has no mean frequency
            mean_frequency[i] = phonon_derived.mean_frequency(PHONON_GRID_CM, g)
            cv = phonon_derived.heat_capacity_cv(PHONON_GRID_CM, g, len(structure),
                                                 phonon_derived.CV_REFERENCE_TEMPERATURE_K,
                                                 float(structure.composition.weight))
            cv_kb[i], cv_molar[i] = cv["cv_per_atom_kb"], cv["cv_j_per_mol_atoms_k"]
        warned = np.array([beyond_phonon_grid([site.specie.symbol for site in structure], g) is not None
                           for structure, g in zip(structures, dos)], dtype=bool)
        return {"dos": dos, "mean_frequency_cm": mean_frequency, "cv_300k_per_atom_kb": cv_kb,
                "cv_300k_j_per_mol_atoms_k": cv_molar, "grid_warning": warned}

    def group_metrics(self, pred: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray],
                      pick: Callable[[Mapping[str, np.ndarray], str], np.ndarray], mask: np.ndarray) -> dict[str, Any]:
        """The DOS metrics the literature reports (metric_definitions): MSE, R^2, Wasserstein distance, mean
        frequency and C_V errors; and how well the grid warning finds the spectra that reach the grid's end."""
        dos_true, dos_pred = pick(true, "dos"), pick(pred, "dos")
        out: dict[str, Any] = {"dos_mse": finite_mean(((dos_pred - dos_true) ** 2).mean(axis=1))}
        out["r2_max_normalised"] = phonon_derived.dos_r2(dos_true, dos_pred)
        out["wasserstein_cm"] = finite_mean([phonon_derived.dos_wasserstein(PHONON_GRID_CM, g, h)
                                             for g, h in zip(dos_true, dos_pred)])
        mean_true, mean_pred = pick(true, "mean_frequency_cm"), pick(pred, "mean_frequency_cm")
        out["mean_frequency_mae_cm"], _ = mae_where_defined(mean_pred, mean_true)
        relative = np.abs(mean_pred - mean_true) / mean_true
        out["mean_frequency_relative_error"] = finite_mean(relative)
        out["fraction_mean_frequency_error_below_10pct"] = float(np.mean(np.nan_to_num(relative, nan=np.inf)
                                                                         < MEAN_FREQUENCY_TOLERANCE)) \
            if relative.size else None
        for key, unit in (("cv_300k_per_atom_kb", "kb_per_atom"), ("cv_300k_j_per_mol_atoms_k", "j_per_mol_k")):
            out[f"cv_300k_mae_{unit}"], _ = mae_where_defined(pick(pred, key), pick(true, key))
        # the grid warning (beyond_phonon_grid) against the truth: a true DOS non-zero at the grid's end
        reaches = dos_true[:, -1] > 0
        warned = pick(pred, "grid_warning")
        out["grid_warning_recall"] = float((warned & reaches).sum() / reaches.sum()) if reaches.any() else None
        out["grid_warning_precision"] = float((warned & reaches).sum() / warned.sum()) if warned.any() else None
        return out

    # ---- predictions
    def prediction_parts(self, value: np.ndarray, structure: Any, parts: tuple[str, ...] | None = None,
                         ) -> tuple[np.ndarray, dict[str, Callable[[], Any]]]:
        def dos():
            from pymatgen.phonon.dos import PhononDos

            dos_3n = phonon_derived.normalise_dos_to_3n(PHONON_GRID_CM, value, len(structure))
            return PhononDos(PHONON_GRID_CM / CM_PER_THZ, dos_3n * CM_PER_THZ)

        return value, {"dos": dos}

    def prediction_derived(self, raw: np.ndarray, value: np.ndarray, structure: Any,
                           parts: tuple[str, ...] | None = None) -> dict[str, Any]:
        return phonon_derived.phonon_properties(PHONON_GRID_CM, value, len(structure),
                                                float(structure.composition.weight))

    def prediction_flags(self, derived: Mapping[str, Any], symbols: Sequence[str],
                         raw: np.ndarray | None = None) -> list[tuple[str, str]]:
        message = None if raw is None else beyond_phonon_grid(symbols, raw)
        return [("beyond_phonon_grid", message)] if message else []

    def prediction_dict(self, raw: np.ndarray) -> dict[str, Any]:
        return {"frequencies_cm": PHONON_GRID_CM.tolist(), "dos_max_normalised": raw.tolist()}

    def row_value(self, row: Mapping[str, Any], part: str | None):
        from pymatgen.phonon.dos import PhononDos

        frequencies_thz = np.asarray(row["frequencies_cm"], dtype=np.float64) / CM_PER_THZ
        return PhononDos(frequencies_thz, np.asarray(row["dos_3n"], dtype=np.float64) * CM_PER_THZ)


_DERIVED_COLUMNS: tuple[DerivedColumn, ...] = (
    derived_column("mean_frequency_cm", "mean phonon frequency int g w dw / int g dw"),
    derived_column("cv_300k_per_atom_kb", "harmonic heat capacity C_V at 300 K per atom"),
    derived_column("cv_300k_j_per_mol_atoms_k", "harmonic heat capacity C_V at 300 K per mole of atoms"),
    derived_column("cv_300k_j_per_kg_k", "harmonic heat capacity C_V at 300 K per unit mass"),
)

PHONON = PhononSpec(
    name="phonon",
    title="Phonon density of states",
    units="states/cm^-1 (max-normalised), grid in cm^-1",
    cartesian_shape=(GRID_POINTS,),
    voigt_shape=None,
    voigt_kind=None,
    formula=None,
    irreps=f"{GRID_POINTS}x0e",
    tensor_parts=("total",),
    target_part="total",
    spectrum_grid=tuple(float(w) for w in PHONON_GRID_CM),
    mp_endpoint=MP_API.route,
    mp_fields=MP_FIELDS,
    derived=("mean_frequency_cm", "cv_300k_per_atom_kb", "cv_300k_j_per_kg_k"),
    citations=(PETRETTO_2018, CHEN_2021, MATERIALS_PROJECT),
    raw_values=(
        RawValue("frequencies_cm", (GRID_POINTS,), "One value per point of the 51-point grid 0, 20, ..., 1000 cm^-1."),
        RawValue("dos", (GRID_POINTS,),
                 "Phonon DOS on frequencies_cm, as normalised by the source (the snapshot: maximum 1)."),
    ),
    source_keys=("frequencies_cm", "dos"),
    stored_columns=("frequencies_cm", "dos"),
    stored_form="cartesian",
    metric_columns=_METRICS,
    value_codes=("dos_not_finite", "dos_empty", "dos_wrong_grid"),
    physics_codes=("dos_negative",),
    derived_columns=_DERIVED_COLUMNS,
    validation_facts=(("dos_min", "1", "smallest value of dos (validate: >= 0)"),),
    headline="dos_mse",
    parity=("mean_frequency_cm", "mean phonon frequency (cm^-1)"),
    metric_definitions=(
        ("r2_max_normalised", "sklearn r2_score(true, predicted max-normalised DOS, multioutput='variance_weighted')"),
        ("wasserstein_cm", "mean over records of scipy.stats.wasserstein_distance on the grid, DOS as weights "
                           "(sum-normalised), cm^-1"),
        ("cv_300k_mae_j_per_mol_k", "MAE of C_V(300 K) in J/(K mol of atoms), DOS normalised to 3N states "
                                    "(zoo.core.derived.heat_capacity_cv)"),
        ("mean_frequency_mae_cm", "MAE of the mean frequency int g w / int g (zoo.core.derived.mean_frequency), "
                                  "cm^-1"),
        ("fraction_mean_frequency_error_below_10pct", "share of records whose mean frequency is within 10% of the "
                                                      "true one (Chen et al.'s figure)"),
        ("grid_warning_recall", "share of the records whose true DOS is non-zero at 1000 cm^-1 that get the grid "
                                "warning (zoo.properties.phonon.beyond_phonon_grid) from the predicted DOS"),
        ("grid_warning_precision", "share of the warned records whose true DOS is non-zero at 1000 cm^-1"),
    ),
    model_limitations=(
        f"**The grid ends at {PHONON_GRID_CM[-1]:g} cm^-1.** Many spectra extend higher (diamond's optical phonons "
        "reach 1332 cm^-1, X-H stretches 2000-3700 cm^-1; 100 of the 1,522 DOS of the dataset are non-zero at 1000 "
        "cm^-1): modes above it are missing from the prediction and from the mean frequency and heat capacity derived "
        "from it. Predictions of a structure with hydrogen, or whose predicted DOS is still high at the grid's end, "
        "carry the beyond_phonon_grid warning (`Prediction.warnings`; its recall and precision on the test split are "
        "in the metrics).",
    ),
    snapshot=SNAPSHOT,
    mp_api=MP_API,
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


# Predicted max-normalised DOS at the grid's last point from which a spectrum is taken to continue past the grid. How
# well the warning finds the test records whose true DOS is non-zero there is in the phonon metrics
# (grid_warning_recall, grid_warning_precision).
GRID_EDGE_THRESHOLD = 0.05


def beyond_phonon_grid(symbols: Sequence[str], dos: np.ndarray) -> str | None:
    """Why the phonon DOS of a structure (its element symbols; `dos`: predicted, max-normalised on PHONON_GRID_CM)
    likely extends past the grid's end, or None: the structure contains hydrogen (X-H stretching modes lie far
    above), or the predicted DOS at the last grid point is at least GRID_EDGE_THRESHOLD."""
    top = f"{PHONON_GRID_CM[-1]:g} cm^-1"
    edge = float(np.asarray(dos)[-1])
    if "H" in symbols:
        reason = "it contains hydrogen (X-H stretching modes lie far above)"
    elif edge >= GRID_EDGE_THRESHOLD:
        reason = f"the predicted DOS is still {edge:.2f} of its maximum at {top}"
    else:
        return None
    return (f"the phonon spectrum likely extends beyond the model's grid (0-{top}): {reason}; modes above {top} are "
            "missing from the predicted DOS and from its mean frequency and heat capacity")
