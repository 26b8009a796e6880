"""The rows of a dataset repository ``mp-<property>-irreps`` (zoo.data.datasets writes them): one per accepted
record, in the columns of ``zoo.data.dataset_schema``, with each record's split.

Stored tensors are exactly symmetric: a square Voigt matrix or rank-2 tensor from the source is replaced by
(a + a^T)/2 (zoo.data.datasets' docstring says why). The derived quantities (zoo.core.derived) are computed in a
process pool when there are enough records to pay for starting it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from zoo import properties
from zoo.core import tensors
from zoo.data import splits
from zoo.data.dataset_schema import dataset_columns
from zoo.properties.spec import PropertySpec, TensorPart


def split_key(material_id: str | None, record_id: str) -> str:
    """The key a record's split hangs on: its material id, or its record id where the material is unknown."""
    return material_id if material_id else record_id


def _first_bad_record(check: Callable[[np.ndarray], Any], array: np.ndarray, record_ids: Sequence[str]) -> str:
    """Re-run a batched check one record at a time to name the first record it refuses."""
    for record_id, item in zip(record_ids, array):
        try:
            check(item)
        except ValueError as err:
            return f"record {record_id}: {err}"
    return "no single record fails on its own"


def _checked(check: Callable[[np.ndarray], Any], array: np.ndarray, record_ids: Sequence[str], column: str) -> Any:
    """check(array) for the whole batch; a ValueError names the column and the first offending record."""
    try:
        return check(array)
    except ValueError:
        raise ValueError(f"column {column!r}: {_first_bad_record(check, array, record_ids)}") from None


def _symmetrised(array: np.ndarray) -> np.ndarray:
    """(a + a^T)/2 over the last two axes; exact for entries that were already symmetric."""
    return 0.5 * (array + np.swapaxes(array, -1, -2))


def tensor_forms(spec: PropertySpec, part: TensorPart, values: Sequence, record_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Cartesian, Voigt and irreps arrays (batched) of one tensor part, from the accepted records' column."""
    shape = spec.voigt_shape if part.source_form == "voigt" else spec.cartesian_shape
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"column {part.source_column!r} must hold {shape} arrays of numbers") from None
    if array.shape[1:] != tuple(shape):
        raise ValueError(f"column {part.source_column!r} must hold arrays of shape {shape}, got {array.shape[1:]}")
    square = len(shape) >= 2 and shape[-1] == shape[-2]
    if part.source_form == "voigt":
        # Refuse asymmetry beyond rounding before removing the rounding.
        _checked(lambda a: tensors.voigt_to_cartesian(a, spec.voigt_kind), array, record_ids, part.source_column)
        voigt = _symmetrised(array) if square else array
        cartesian = tensors.voigt_to_cartesian(voigt, spec.voigt_kind)
    else:
        _checked(lambda a: tensors.cartesian_to_voigt(a, spec.voigt_kind), array, record_ids, part.source_column)
        cartesian = _symmetrised(array) if square else array
        voigt = tensors.cartesian_to_voigt(cartesian, spec.voigt_kind)
    irreps = tensors.cartesian_to_irreps(cartesian, spec.formula)
    return {"cartesian": np.asarray(cartesian), "voigt": np.asarray(voigt), "irreps": np.asarray(irreps)}


def _structure_fields(structure_json: str, record_id: str) -> dict[str, Any]:
    from pymatgen.core import Structure

    try:
        structure = Structure.from_dict(json.loads(structure_json))
    except Exception as exc:  # pymatgen raises assorted errors for a malformed dict
        raise ValueError(f"record {record_id}: structure_json is not a pymatgen Structure: {exc}") from None
    if not structure.is_ordered:
        raise ValueError(f"record {record_id}: the structure is disordered; the dataset stores one species per site")
    return {
        "lattice": structure.lattice.matrix.tolist(),
        "species": [str(site.specie) for site in structure],
        "frac_coords": structure.frac_coords.tolist(),
        "cart_coords": structure.cart_coords.tolist(),
        "n_sites": len(structure),
        "volume": float(structure.volume),
        "cell_mass_amu": float(structure.composition.weight),
    }


# Records timed before deciding on worker processes, and the measured cost of starting one (forkserver, importing
# this module: ~3 s on an idle 2-core machine, twice that under load).
_PROBE_RECORDS = 8
_POOL_START_S = 6.0


def _derived_row(task: tuple[str, str, tuple]) -> dict[str, Any]:
    """zoo.core.derived for one record (a top-level function so that worker processes can run it)."""
    prop, record_id, args = task
    try:
        return properties.get(prop).derived_quantities(*args)
    except ValueError as err:
        raise ValueError(f"record {record_id}: zoo.core.derived refused its value: {err}") from None


def compute_derived(
    tasks: list[tuple[str, str, tuple]], workers: int, pool_start_s: float = _POOL_START_S
) -> list[dict[str, Any]]:
    """zoo.core.derived for every record, in order; in `workers` processes where that is faster.

    The first few records are computed here and timed; worker processes are started only if the rest would take
    longer than starting them (`pool_start_s` each; elastic and piezo tensors need ~0.1-0.2 s each, dielectric and phonon records
    ~1 ms). Workers are forked from a fork server that has imported this module once: forking the parent itself
    is unsafe (it runs torch and Arrow thread pools), and 'spawn' would import torch, pymatgen and datasets again
    in every worker. The results do not depend on where they were computed.
    """
    started = time.perf_counter()
    results = [_derived_row(task) for task in tasks[:_PROBE_RECORDS]]
    rest = tasks[_PROBE_RECORDS:]
    per_record = (time.perf_counter() - started) / max(len(results), 1)
    if workers <= 1 or per_record * len(rest) < pool_start_s * workers:
        return results + [_derived_row(task) for task in rest]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return results + list(pool.map(_derived_row, rest, chunksize=max(1, len(rest) // (8 * workers))))


def _provenance_fields(provenance_json: str, record_id: str) -> dict[str, Any]:
    try:
        provenance = json.loads(provenance_json)
        return {
            "source": provenance["source"],
            "source_file": provenance["file"],
            "source_row": provenance.get("row"),
            "source_sha256": provenance["sha256"],
            "retrieved_with": provenance.get("retrieved_with"),
            "merged_sources": [
                {"record_id": merged["record_id"], "source_file": merged["file"], "source_row": merged.get("row"),
                 "source_sha256": merged["sha256"], "relation": merged["relation"],
                 "largest_invariant_difference": merged["largest_invariant_difference"]}
                for merged in provenance.get("merged", [])],
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"record {record_id}: provenance_json lacks {err} or is not JSON") from None


def build_rows(
    spec: PropertySpec,
    accepted: Mapping[str, list],
    *,
    salt: str,
    fractions: Mapping[str, float] = splits.DEFAULT_FRACTIONS,
    pinned: Mapping[str, str] | None = None,
    workers: int = 1,
) -> dict[str, list]:
    """The dataset's columns ({name: list}, in dataset_columns order) from the accepted records."""
    # Longer than ~60 lines: one column block per group of the schema, in file order; each block is a few lines.
    record_ids = accepted["record_id"]
    n = len(record_ids)
    out: dict[str, list] = {
        "material_id": list(accepted["material_id"]),
        "record_id": list(record_ids),
        "formula": list(accepted["formula"]),
    }
    structures = [_structure_fields(s, rid) for s, rid in zip(accepted["structure_json"], record_ids)]
    for name in ("lattice", "species", "frac_coords", "cart_coords", "n_sites", "volume"):
        out[name] = [s[name] for s in structures]
    out["crystal_system"] = list(accepted["crystal_system"])
    out["space_group"] = [int(v) for v in accepted["space_group_number"]]
    for name in ("space_group_symbol", "point_group", "laue_class"):
        out[name] = list(accepted[name])
    out["is_centrosymmetric"] = [bool(v) for v in accepted["is_centrosymmetric"]]

    if spec.is_tensor:
        parts = {}
        for part in spec.dataset_parts:
            forms = tensor_forms(spec, part, accepted[part.source_column], record_ids)
            parts[part.source_column] = forms
            for form, array in forms.items():
                out[f"{part.prefix}_{form}"] = array.tolist()
        args = [tuple(parts[p.source_column][spec.derived_form][i] for p in spec.dataset_parts) for i in range(n)]
    else:
        values, args = spec.invariant_rows(accepted, structures, record_ids)
        out.update(values)

    tasks = [(spec.name, record_ids[i], args[i]) for i in range(n)]
    derived_rows = compute_derived(tasks, workers)
    expected = [column.name for column in spec.derived_columns]
    returned = sorted(expected + list(spec.derived_keys_from_validate))
    for record_id, row in zip(record_ids, derived_rows):
        if sorted(row) != returned:
            raise ValueError(
                f"record {record_id}: zoo.core.derived returned the keys {sorted(row)}, the {spec.dataset_name} schema "
                f"expects {returned}; update zoo.data.datasets (a schema change needs a new dataset version)"
            )
    for key in expected:
        out[key] = [row[key] for row in derived_rows]
    for name, _, _ in spec.validation_facts:
        out[name] = [float(value) for value in accepted[name]]

    out["split"] = _splits(accepted, salt, fractions, pinned)
    provenance = [_provenance_fields(p, rid) for p, rid in zip(accepted["provenance_json"], record_ids)]
    for name in ("source", "source_file", "source_row", "source_sha256", "retrieved_with", "merged_sources"):
        out[name] = [p[name] for p in provenance]
    out["original_frame"] = list(accepted["original_frame"])
    out["frame_action"] = list(accepted["frame_action"])
    out["frame_evidence"] = list(accepted["frame_evidence"])
    rotations = np.asarray(accepted["frame_rotation"], dtype=np.float64)
    if rotations.shape != (n, 3, 3):
        raise ValueError(f"column 'frame_rotation' must hold 3x3 matrices, got shape {rotations.shape[1:]}")
    out["frame_rotation"] = rotations.tolist()

    order = [column.name for column in dataset_columns(spec)]
    return {name: out[name] for name in order}


def _splits(accepted: Mapping[str, list], salt: str, fractions: Mapping[str, float],
            pinned: Mapping[str, str] | None) -> list[str]:
    """Each record's split: 'external' for a holdout record, else by the rule of ``zoo.data.splits``."""
    keys = [split_key(m, r) for m, r in zip(accepted["material_id"], accepted["record_id"])]
    repeated = sorted(key for key, count in collections.Counter(keys).items() if count > 1)
    if repeated:
        raise ValueError(f"materials with more than one accepted record (a material would be in two splits): "
                         f"{repeated[:5]}; validate merges them (zoo.data.merging)")
    holdout = [bool(flag) for flag in accepted["holdout"]]
    pinned_external = sorted(key for key, flag in zip(keys, holdout) if flag and pinned and key in pinned)
    if pinned_external:
        raise ValueError(f"holdout materials {pinned_external[:5]} have a pinned split of a previous release: "
                         "the external split must hold only materials no training source has")
    assigned = iter(splits.assign_splits([k for k, flag in zip(keys, holdout) if not flag],
                                         [s for s, flag in zip(accepted["crystal_system"], holdout) if not flag],
                                         salt, fractions, pinned))
    return [splits.EXTERNAL if flag else next(assigned) for flag in holdout]
