"""The corpus of tests/test_validation.py: corrupt records mixed into real-looking good ones, in the clean format.

Good records are built on the real Materials Project structures of tests/data/structures/ (see test_symmetry.py),
with random tensors projected onto the structure's point-group-invariant subspace by zoo.core.symmetry.symmetrize, so
they obey Neumann's principle, and with physical values (positive definite stiffness, eps >= 1, PSD ionic part,
non-negative DOS on the standard grid). Each corrupt record breaks one thing and names the reason code it must be
quarantined with. The frames are in the clean record format, built here directly (not by the clean stage).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation

from zoo import properties
from zoo.core import symmetry, tensors
from zoo.core.io import canonical_json
from zoo.data import validation

# The checkout's params, computed in this process (workers 1).
PARAMS = dataclasses.replace(validation.ValidationParams.from_params(), workers=1)

REPO = Path(__file__).resolve().parent.parent
STRUCTURES = Path(__file__).parent / "data" / "structures"
STEMS = sorted(path.stem for path in STRUCTURES.glob("*.cif"))
REQUIRED_REPORT_KEYS = {"n_raw", "n_accepted", "n_quarantined", "reasons", "neumann_tolerance",
                        "neumann_pass_fraction", "expectations"}


# --------------------------------------------------------------------------------------------- building records
@functools.cache
def structure(stem: str) -> Structure:
    return Structure.from_file(STRUCTURES / f"{stem}.cif")


@functools.cache
def info(stem: str) -> symmetry.SymmetryInfo:
    return symmetry.analyze(structure(stem))


def structure_json(stem: str) -> str:
    return canonical_json(structure(stem).as_dict())


def clean_row(prop: str, name: str, stem: str, values: dict[str, Any], *, clean_issue: str | None = None,
              structure_text: str | None | bool = True, material_id: str | None = None) -> dict[str, Any]:
    """One record in the clean format; `structure_text` True means the stem's own structure."""
    sym = info(stem)
    row = {
        "record_id": f"test:{prop}:{name}",
        "property": prop,
        "material_id": material_id or "mp-" + stem.split("-mp-")[1],
        "formula": structure(stem).composition.reduced_formula,
        "structure_json": structure_json(stem) if structure_text is True else structure_text,
        "n_sites": len(structure(stem)),
        "volume": structure(stem).volume,
        "crystal_system": sym.crystal_system,
        "space_group_number": sym.space_group_number,
        "space_group_symbol": sym.space_group_symbol,
        "point_group": sym.point_group,
        "laue_class": sym.laue_class,
        "is_centrosymmetric": sym.is_centrosymmetric,
        "original_frame": "structure",
        "frame_action": "none",
        "frame_rotation": np.eye(3).tolist(),
        "frame_residual_before": 0.0,
        "frame_residual_after": 0.0,
        "clean_issue": clean_issue,
        "provenance_json": canonical_json({"source": "test", "row": name}),
        "reported_json": canonical_json({}),
    }
    row.update(values)
    return row


def good_stiffness(stem: str, rng: np.random.Generator) -> np.ndarray:
    """A Born-stable 6x6 Voigt stiffness (GPa) obeying the structure's point group.

    Positive definite before the group average, and still after: a rotation acts on the Voigt matrix by a
    congruence, so every rotated copy is positive definite and so is their mean.
    """
    k, g = 120.0, 70.0  # an isotropic solid, plus an anisotropic positive semi-definite part
    isotropic = np.zeros((6, 6))
    isotropic[:3, :3] = k - 2 * g / 3
    isotropic += np.diag([2 * g] * 3 + [g] * 3)
    a = rng.normal(size=(6, 6))
    voigt = isotropic + 10.0 * a @ a.T / 6
    cartesian = symmetry.symmetrize(tensors.stiffness_voigt_to_cartesian(voigt), info(stem))
    return tensors.stiffness_cartesian_to_voigt(cartesian)


def psd(rng: np.random.Generator, scale: float) -> np.ndarray:
    a = rng.normal(size=(3, 3))
    return scale * a @ a.T / 3


def good_dielectric(stem: str, rng: np.random.Generator) -> dict[str, list]:
    electronic = symmetry.symmetrize(np.eye(3) * 2.0 + psd(rng, 1.0), info(stem))
    ionic = symmetry.symmetrize(psd(rng, 3.0), info(stem))
    return {"electronic": electronic.tolist(), "ionic": ionic.tolist(), "total": (electronic + ionic).tolist()}


def random_piezo(rng: np.random.Generator) -> np.ndarray:
    """A random Cartesian e_ijk, symmetric in jk, components of order 0.5 C/m^2."""
    e = rng.normal(scale=0.5, size=(3, 3, 3))
    return 0.5 * (e + e.transpose(0, 2, 1))


def good_piezo(stem: str, rng: np.random.Generator) -> list:
    e = symmetry.symmetrize(random_piezo(rng), info(stem))
    e[np.abs(e) < 1e-12] = 0.0  # components the group forbids come out at rounding level (~1e-17): zero them
    return tensors.piezo_cartesian_to_voigt(e).tolist()


def good_phonon(rng: np.random.Generator) -> dict[str, list]:
    dos = rng.uniform(0.0, 1.0, size=len(properties.PHONON_GRID_CM))
    dos[0] = 0.0
    return {"frequencies_cm": properties.PHONON_GRID_CM.tolist(), "dos": (dos / dos.max()).tolist()}


def with_structure(stem: str, change) -> str:
    """The stem's structure as a dict, changed by `change(dict)`, as clean's canonical JSON."""
    as_dict = structure(stem).as_dict()
    change(as_dict)
    return canonical_json(as_dict)


def add_close_site(as_dict: dict) -> None:
    """A second copy of site 0, 0.2 A away: two atoms on top of each other."""
    site = json.loads(json.dumps(as_dict["sites"][0]))
    site["xyz"] = (np.array(site["xyz"]) + [0.2, 0.0, 0.0]).tolist()
    lattice = np.array(as_dict["lattice"]["matrix"])
    site["abc"] = np.linalg.solve(lattice.T, site["xyz"]).tolist()
    as_dict["sites"].append(site)


def flatten_lattice(as_dict: dict) -> None:
    """Make the third lattice vector the sum of the first two: zero cell volume."""
    matrix = as_dict["lattice"]["matrix"]
    matrix[2] = (np.array(matrix[0]) + np.array(matrix[1])).tolist()


def unknown_element(as_dict: dict) -> None:
    as_dict["sites"][0]["species"][0]["element"] = "Xx"
    as_dict["sites"][0]["label"] = "Xx"


@dataclass(frozen=True)
class Corpus:
    prop: str
    frame: pd.DataFrame
    expected: dict[str, str | None]  # record_id -> primary reason code (None: accepted)


def rotated_about_z(tensor: np.ndarray, degrees: float) -> np.ndarray:
    return tensors.rotate(tensor, Rotation.from_euler("z", degrees, degrees=True).as_matrix())


def build_corpus(prop: str, seed: int = 7) -> Corpus:
    # Longer than ~60 lines: a table of cases, one line per good or corrupt record (with its reason code), grouped by
    # property; splitting it would scatter the table the corpus is.
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    expected: dict[str, str | None] = {}

    def add(name: str, stem: str, values: dict, code: str | None, **kwargs) -> None:
        rows.append(clean_row(prop, name, stem, values, **kwargs))
        expected[rows[-1]["record_id"]] = code

    if prop == "elastic":
        for stem in STEMS:
            add(f"good-{stem}", stem, {"stiffness_voigt": good_stiffness(stem, rng).tolist()}, None)
        stem = "orthorhombic-mp-1042"
        c = good_stiffness(stem, rng)
        nan = c.copy()
        nan[0, 0] = math.nan
        add("bad-nan", stem, {"stiffness_voigt": nan.tolist()}, "nan_value")
        add("bad-wrong-shape", stem, {"stiffness_voigt": c[:5].tolist()}, "wrong_shape")
        add("bad-ragged", stem, {"stiffness_voigt": [list(r) for r in c[:5]] + [list(c[5, :4])]}, "wrong_shape")
        asymmetric = c.copy()
        asymmetric[0, 1] += 5.0
        add("bad-asymmetric", stem, {"stiffness_voigt": asymmetric.tolist()}, "elastic_asymmetric")
        add("bad-not-positive-definite", stem, {"stiffness_voigt": (-c).tolist()}, "elastic_not_positive_definite")
        add("bad-modulus-units", stem, {"stiffness_voigt": (100.0 * c).tolist()}, "modulus_out_of_range")
        turned = tensors.stiffness_cartesian_to_voigt(rotated_about_z(tensors.stiffness_voigt_to_cartesian(c), 30.0))
        add("bad-neumann", stem, {"stiffness_voigt": turned.tolist()}, "neumann_violation")
        add("bad-missing", stem, {"stiffness_voigt": None}, "missing_field")
        add("bad-unparsable-cif", stem, {"stiffness_voigt": c.tolist()}, "unparsable_structure",
            clean_issue="unparsable_structure", structure_text=None)
        add("bad-garbage-structure", stem, {"stiffness_voigt": c.tolist()}, "unparsable_structure",
            structure_text="{not json")
        add("bad-duplicate-a", stem, {"stiffness_voigt": c.tolist()}, "duplicate_conflict",
            clean_issue="duplicate_conflict", material_id="mp-999999")
        add("bad-duplicate-b", stem, {"stiffness_voigt": (1.1 * c).tolist()}, "duplicate_conflict",
            clean_issue="duplicate_conflict", material_id="mp-999999")
        add("bad-overlapping-atoms", stem, {"stiffness_voigt": c.tolist()}, "structure_overlapping_atoms",
            structure_text=with_structure(stem, add_close_site))
        add("bad-zero-volume", stem, {"stiffness_voigt": c.tolist()}, "structure_nonpositive_volume",
            structure_text=with_structure(stem, flatten_lattice))
        add("bad-unknown-element", stem, {"stiffness_voigt": c.tolist()}, "unknown_element",
            structure_text=with_structure(stem, unknown_element))
    elif prop == "dielectric":
        for stem in STEMS:
            add(f"good-{stem}", stem, good_dielectric(stem, rng), None)
        stem = "tetragonal-mp-140"
        good = {key: np.array(value) for key, value in good_dielectric(stem, rng).items()}
        low = {"electronic": 0.5 * np.eye(3), "ionic": good["ionic"], "total": 0.5 * np.eye(3) + good["ionic"]}
        add("bad-eps-below-one", stem, {k: v.tolist() for k, v in low.items()}, "dielectric_eigenvalue_below_one")
        negative = {"electronic": 3.0 * np.eye(3), "ionic": -0.5 * np.eye(3), "total": 2.5 * np.eye(3)}
        add("bad-ionic-not-psd", stem, {k: v.tolist() for k, v in negative.items()}, "dielectric_ionic_not_psd")
        asymmetric = {k: v.copy() for k, v in good.items()}
        asymmetric["electronic"][0, 1] += 0.1
        asymmetric["total"][0, 1] += 0.1
        add("bad-asymmetric", stem, {k: v.tolist() for k, v in asymmetric.items()}, "dielectric_asymmetric")
        infinite = {k: v.copy() for k, v in good.items()}
        infinite["total"][2, 2] = math.inf
        add("bad-infinite", stem, {k: v.tolist() for k, v in infinite.items()}, "nan_value")
        add("bad-wrong-shape", stem, {**{k: v.tolist() for k, v in good.items()}, "ionic": [[1.0, 0.0], [0.0, 1.0]]},
            "wrong_shape")
        # A uniaxial tensor along x in a tetragonal crystal whose four-fold axis is not x.
        uniaxial = np.diag([6.0, 3.0, 3.0])
        add("bad-neumann", stem, {"electronic": uniaxial.tolist(), "ionic": np.zeros((3, 3)).tolist(),
                                  "total": uniaxial.tolist()}, "neumann_violation")
        add("bad-duplicate-identical", stem, {k: v.tolist() for k, v in good.items()}, "duplicate_identical",
            clean_issue="duplicate_identical")
    elif prop == "piezo":
        for stem in STEMS:
            add(f"good-{stem}", stem, {"piezo_voigt": good_piezo(stem, rng)}, None)
        # Below piezo_zero_atol_c_m2 a tensor is zero: an unsymmetrised noise-level one is accepted.
        noise = rng.uniform(-1e-5, 1e-5, size=(3, 6))
        add("good-noise-level", "monoclinic-mp-12177", {"piezo_voigt": noise.tolist()}, None)
        nonzero = tensors.piezo_cartesian_to_voigt(random_piezo(rng)).tolist()
        add("bad-centrosymmetric", "cubic-mp-101", {"piezo_voigt": nonzero}, "piezo_nonzero_centrosymmetric")
        add("bad-neumann", "orthorhombic-mp-27724", {"piezo_voigt": nonzero}, "neumann_violation")
        stem = "cubic-mp-1156"
        e = np.array(good_piezo(stem, rng))
        nan = e.copy()
        nan[0, 3] = math.nan
        add("bad-nan", stem, {"piezo_voigt": nan.tolist()}, "nan_value")
        add("bad-wrong-shape", stem, {"piezo_voigt": e[:, :3].tolist()}, "wrong_shape")
        add("bad-unparsable-tensor", stem, {"piezo_voigt": None}, "unparsable_tensor", clean_issue="unparsable_tensor")
        add("bad-frame-ambiguous", stem, {"piezo_voigt": e.tolist()}, "frame_ambiguous", clean_issue="frame_ambiguous")
        add("bad-implausible-magnitude", stem, {"piezo_voigt": (30.0 * e / np.abs(e).max()).tolist()},
            "implausible_magnitude")
    elif prop == "phonon":
        for stem in STEMS:
            add(f"good-{stem}", stem, good_phonon(rng), None)
        stem = "cubic-mp-1156"
        good = good_phonon(rng)
        n = len(good["dos"])
        add("bad-empty-dos", stem, {**good, "dos": []}, "dos_empty")
        add("bad-zero-dos", stem, {**good, "dos": [0.0] * n}, "dos_empty")
        add("bad-negative-dos", stem, {**good, "dos": [-0.2] + good["dos"][1:]}, "dos_negative")
        add("bad-wrong-grid", stem, {**good, "frequencies_cm": np.linspace(0.0, 500.0, n).tolist()}, "dos_wrong_grid")
        add("bad-nan-dos", stem, {**good, "dos": good["dos"][:10] + [math.nan] + good["dos"][11:]}, "dos_not_finite")
        add("bad-missing-dos", stem, {**good, "dos": None}, "missing_field")
        add("bad-short-dos", stem, {**good, "dos": good["dos"][:-1]}, "wrong_shape")
        add("bad-no-material-id", stem, good, "no_material_id", clean_issue="no_material_id")
        add("bad-overlapping-atoms", stem, good, "structure_overlapping_atoms",
            structure_text=with_structure(stem, add_close_site))
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # unsorted on purpose
    return Corpus(prop, frame, expected)


