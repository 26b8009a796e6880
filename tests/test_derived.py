"""zoo.core.derived against real matminer-0.4.1 rows, closed-form cases, and bad input.

The real rows are copied into tests/data/derived/matminer_rows.json (with the source file's sha256), so these
tests do not read ../shared.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import constants
from scipy.spatial.transform import Rotation

from zoo import properties
from zoo.core import derived, phonon_derived, tensors

FIXTURE = json.loads((Path(__file__).parent / "data" / "derived" / "matminer_rows.json").read_text())


def _rows(prop: str) -> dict[str, dict]:
    return {key: row for key, row in FIXTURE[prop].items() if not key.startswith("_")}


ELASTIC = _rows("elastic")
DIELECTRIC = _rows("dielectric")
PIEZO = _rows("piezo")
# Rows whose dielectric tensors are symmetric to the printed precision; mp-7812 (GeO2) is not (1.8 %).
SYMMETRIC_DIELECTRIC = ["mp-441", "mp-22998", "mp-7435"]


def _half_unit_of_last_digit(value: float) -> float:
    """Half a unit in the last printed decimal of a CSV number, e.g. 3.44 -> 0.005."""
    text = repr(value)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0**-decimals


def _random_unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(count, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _isotropic_voigt(lam: float, mu: float) -> np.ndarray:
    c = np.zeros((6, 6))
    c[:3, :3] = lam
    c[np.arange(3), np.arange(3)] = lam + 2 * mu
    c[np.arange(3, 6), np.arange(3, 6)] = mu
    return c


# ------------------------------------------------------------------------------------------------ elastic
@pytest.mark.parametrize("material_id", list(ELASTIC))
def test_elastic_moduli_match_snapshot_from_either_tensor_column(material_id):
    """The CSV's moduli are rotation invariants, so both columns must reproduce them (and they do, to ~1e-11)."""
    row = ELASTIC[material_id]
    for column in ("elastic_tensor", "elastic_tensor_original"):
        out = derived.elastic_properties(row[column])
        for ours, theirs in [
            ("k_vrh", "K_VRH"), ("g_vrh", "G_VRH"), ("universal_anisotropy", "elastic_anisotropy"),
            ("k_voigt", "K_Voigt"), ("k_reuss", "K_Reuss"), ("g_voigt", "G_Voigt"), ("g_reuss", "G_Reuss"),
            ("homogeneous_poisson", "poisson_ratio"),
        ]:
            assert out[ours] == pytest.approx(row[theirs], rel=1e-6), (column, ours)


def test_elastic_fixture_includes_rows_whose_two_columns_differ():
    """Guards the test above: the invariance claim is only tested if some rows hold two different frames."""
    differing = [
        key for key, row in ELASTIC.items()
        if np.abs(np.subtract(row["elastic_tensor"], row["elastic_tensor_original"])).max() > 1.0
    ]
    assert len(differing) >= 2


@pytest.mark.parametrize("material_id", list(ELASTIC))
def test_elastic_moduli_match_reference_formulas(material_id):
    """REFERENCE.md's Voigt/Reuss/Hill formulas, written out independently of pymatgen."""
    c = np.array(ELASTIC[material_id]["elastic_tensor"])
    s = np.linalg.inv(c)
    diag, off, shear = np.trace(c[:3, :3]), c[0, 1] + c[1, 2] + c[2, 0], np.trace(c[3:, 3:])
    sdiag, soff, sshear = np.trace(s[:3, :3]), s[0, 1] + s[1, 2] + s[2, 0], np.trace(s[3:, 3:])
    k_v, g_v = (diag + 2 * off) / 9, (diag - off + 3 * shear) / 15
    k_r, g_r = 1 / (sdiag + 2 * soff), 15 / (4 * sdiag - 4 * soff + 3 * sshear)
    k, g = (k_v + k_r) / 2, (g_v + g_r) / 2
    expected = {
        "k_voigt": k_v, "k_reuss": k_r, "k_vrh": k, "g_voigt": g_v, "g_reuss": g_r, "g_vrh": g,
        "y_mod": 9 * k * g / (3 * k + g), "homogeneous_poisson": (3 * k - 2 * g) / (6 * k + 2 * g),
        "universal_anisotropy": 5 * g_v / g_r + k_v / k_r - 6,
        "min_eigenvalue": np.linalg.eigvalsh(c)[0],
    }
    out = derived.elastic_properties(c)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-10), key
    assert out["born_stable"] is True


def test_directional_youngs_modulus_of_isotropic_tensor_is_hill_modulus():
    c = _isotropic_voigt(lam=80.0, mu=45.0)  # c11 = c12 + 2 c44
    out = derived.elastic_properties(c)
    hill = out["y_mod"]
    assert hill == pytest.approx(45.0 * (3 * 80.0 + 2 * 45.0) / (80.0 + 45.0), rel=1e-12)  # mu(3 lam + 2 mu)/(lam + mu)
    assert out["youngs_modulus_min"] == pytest.approx(hill, rel=1e-10)
    assert out["youngs_modulus_max"] == pytest.approx(hill, rel=1e-10)
    assert out["universal_anisotropy"] == pytest.approx(0.0, abs=1e-12)


def test_directional_youngs_modulus_of_cubic_tensor_has_closed_form_extremes():
    """Cubic: 1/E(n) = s11 - 2 (s11 - s12 - s44/2)(n1^2 n2^2 + n2^2 n3^2 + n3^2 n1^2); extremes on <100>, <111>."""
    ir = np.array(ELASTIC["mp-101"]["elastic_tensor"])  # Ir, Fm-3m; idealised to exact cubic symmetry
    c11, c12, c44 = ir[[0, 1, 2], [0, 1, 2]].mean(), ir[[0, 0, 1], [1, 2, 2]].mean(), ir[[3, 4, 5], [3, 4, 5]].mean()
    c = np.zeros((6, 6))
    c[:3, :3] = c12
    c[np.arange(3), np.arange(3)] = c11
    c[np.arange(3, 6), np.arange(3, 6)] = c44
    s = np.linalg.inv(c)
    e_100, e_111 = 1 / s[0, 0], 1 / (s[0, 0] - 2 * (s[0, 0] - s[0, 1] - s[3, 3] / 2) / 3)
    out = derived.elastic_properties(c)
    assert out["youngs_modulus_min"] == pytest.approx(min(e_100, e_111), rel=1e-10)
    assert out["youngs_modulus_max"] == pytest.approx(max(e_100, e_111), rel=1e-10)
    # Ir is stiffest along <111> (2 c44 > c11 - c12): the max direction is a body diagonal.
    assert np.abs(out["youngs_modulus_max_direction"]) == pytest.approx(np.full(3, 3**-0.5), abs=1e-5)


@pytest.mark.parametrize("material_id", ["mp-11697", "mp-104"])  # monoclinic TaSb2, trigonal Sb (frame-rotated)
def test_directional_youngs_modulus_extremes_bound_dense_sampling(material_id):
    c = ELASTIC[material_id]["elastic_tensor_original"]
    out = derived.elastic_properties(c)
    sampled = derived.directional_youngs_modulus(c, _random_unit_vectors(100_000))
    # Never worse than 100k random directions, and no further from them than their spacing allows.
    assert out["youngs_modulus_min"] <= sampled.min() * (1 + 1e-12)
    assert out["youngs_modulus_max"] >= sampled.max() * (1 - 1e-12)
    assert out["youngs_modulus_min"] == pytest.approx(sampled.min(), rel=1e-3)
    assert out["youngs_modulus_max"] == pytest.approx(sampled.max(), rel=1e-3)
    at_directions = derived.directional_youngs_modulus(
        c, [out["youngs_modulus_min_direction"], out["youngs_modulus_max_direction"]]
    )
    assert at_directions == pytest.approx([out["youngs_modulus_min"], out["youngs_modulus_max"]], rel=1e-12)


def test_elastic_scalars_are_rotation_invariant():
    c = np.array(ELASTIC["mp-11697"]["elastic_tensor"])
    rotation = Rotation.from_euler("zxz", [0.3, 1.1, -0.7]).as_matrix()
    rotated = tensors.stiffness_cartesian_to_voigt(tensors.rotate(tensors.stiffness_voigt_to_cartesian(c), rotation))
    before, after = derived.elastic_properties(c), derived.elastic_properties(rotated)
    for key in ("k_vrh", "g_vrh", "universal_anisotropy", "youngs_modulus_min", "youngs_modulus_max"):
        assert after[key] == pytest.approx(before[key], rel=1e-9), key
    # The stiffest direction turns with the tensor (up to symmetry-equivalent choices, hence compare E there).
    turned = rotation @ np.asarray(before["youngs_modulus_max_direction"])
    assert derived.directional_youngs_modulus(rotated, [turned])[0] == pytest.approx(before["youngs_modulus_max"], rel=1e-9)


def test_unstable_elastic_tensor_is_flagged_and_its_unbounded_youngs_modulus_is_none():
    c = _isotropic_voigt(lam=80.0, mu=45.0)
    c[3, 3] = -10.0  # negative shear stiffness c44
    out = derived.elastic_properties(c)
    assert out["born_stable"] is False
    assert out["min_eigenvalue"] == pytest.approx(-10.0)
    assert out["youngs_modulus_min"] is None and out["youngs_modulus_max_direction"] is None
    json.dumps(out, allow_nan=False)


# --------------------------------------------------------------------------------------------- dielectric
def _dielectric_parts(row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    electronic, total = np.array(row["e_electronic"]), np.array(row["e_total"])
    # The printed tensors are symmetric only to ~1e-7 relative; the project's tolerance (1e-6) accepts that.
    return electronic, total - electronic, total


@pytest.mark.parametrize("material_id", SYMMETRIC_DIELECTRIC)
def test_dielectric_matches_snapshot_to_printed_precision(material_id):
    row = DIELECTRIC[material_id]
    out = derived.dielectric_properties(*_dielectric_parts(row))
    assert out["eps_poly_electronic"] == pytest.approx(row["poly_electronic"], abs=_half_unit_of_last_digit(row["poly_electronic"]))
    assert out["eps_poly_total"] == pytest.approx(row["poly_total"], abs=_half_unit_of_last_digit(row["poly_total"]))
    assert out["refractive_index"] == pytest.approx(row["n"], abs=_half_unit_of_last_digit(row["n"]))
    assert out["refractive_index"] == pytest.approx(math.sqrt(out["eps_poly_electronic"]), rel=1e-15)


def test_dielectric_eigenvalues_and_anisotropy_of_a_uniaxial_crystal():
    """KCuSe (P6_3/mmc) is strongly uniaxial: two equal eigenvalues e_xx = e_yy and e_zz, ratio ~17."""
    electronic = np.array(DIELECTRIC["mp-7435"]["e_electronic"])
    out = derived.dielectric_tensor_properties(electronic)
    eig = out["eigenvalues"]
    assert eig == sorted(eig)
    assert eig[1] == pytest.approx(eig[2], rel=1e-6)
    assert sorted([eig[0], eig[2]]) == pytest.approx(sorted([electronic[2, 2], electronic[0, 0]]), rel=1e-6)
    assert out["anisotropy_ratio"] == pytest.approx(eig[2] / eig[0], rel=1e-15)
    assert out["anisotropy_ratio"] > 10


def test_dielectric_scalars_are_rotation_invariant():
    electronic, ionic, total = _dielectric_parts(DIELECTRIC["mp-22998"])
    rotation = Rotation.from_euler("zyz", [0.4, -1.2, 2.0]).as_matrix()
    rotated = [tensors.rotate(part, rotation) for part in (electronic, ionic, total)]
    before, after = derived.dielectric_properties(electronic, ionic, total), derived.dielectric_properties(*rotated)
    for key, value in before.items():
        assert after[key] == pytest.approx(value, rel=1e-10), key


def test_zero_ionic_part_has_no_anisotropy_ratio():
    electronic = np.diag([2.0, 3.0, 4.0])
    out = derived.dielectric_properties(electronic, np.zeros((3, 3)), electronic)
    assert out["anisotropy_ratio_ionic"] is None
    assert out["anisotropy_ratio_electronic"] == pytest.approx(2.0)
    assert out["eigenvalues_ionic"] == [0.0, 0.0, 0.0]


# -------------------------------------------------------------------------------------------------- piezo
@pytest.mark.parametrize("material_id", list(PIEZO))
def test_piezo_reproduces_matminer_eij_max_and_v_max(material_id):
    """eij_max = max over integer [uvw] (|u|,|v|,|w| <= 7) of |n . (e_Voigt m(n))|, m = Voigt(n n^T) without
    the shear factor 2; v_max is that [uvw] scaled to a largest component of 1."""
    row = PIEZO[material_id]
    tolerance = _half_unit_of_last_digit(row["eij_max"]) + 1e-12
    out = derived.piezo_properties(row["piezoelectric_tensor"])
    assert out["eij_max_matminer"] == pytest.approx(row["eij_max"], abs=tolerance)
    at_csv_direction = derived.matminer_longitudinal_piezo(row["piezoelectric_tensor"], [row["v_max"]])
    # v_max is printed to 5 decimals (e.g. -2.33333 for -7/3), hence the relative slack.
    assert abs(at_csv_direction[0]) == pytest.approx(row["eij_max"], rel=1e-5, abs=tolerance)
    at_our_direction = derived.matminer_longitudinal_piezo(row["piezoelectric_tensor"], [out["v_max_matminer"]])
    assert abs(at_our_direction[0]) == pytest.approx(out["eij_max_matminer"], rel=1e-12)
    assert max(out["v_max_matminer"]) == 1.0


def test_piezo_max_longitudinal_of_43m_crystal_is_twice_matminer_value():
    """-43m (AgI): e_l(n) = 6 e14 n1 n2 n3, so max |e_l| = 2|e14|/sqrt(3) on <111>; matminer's eij_max, which
    weights the shear terms by 1/2, is |e14|/sqrt(3)."""
    row = PIEZO["mp-22925"]
    e14 = row["piezoelectric_tensor"][0][3]
    out = derived.piezo_properties(row["piezoelectric_tensor"])
    assert out["max_longitudinal"] == pytest.approx(2 * abs(e14) / math.sqrt(3), rel=1e-10)
    assert row["eij_max"] == pytest.approx(abs(e14) / math.sqrt(3), abs=5e-7)
    direction = np.array(out["max_longitudinal_direction"])
    assert np.abs(direction) == pytest.approx(np.full(3, 3**-0.5), abs=1e-5)
    value = derived.longitudinal_piezo(row["piezoelectric_tensor"], [direction])[0]
    assert value == pytest.approx(out["max_longitudinal"], rel=1e-10)  # positive along the reported direction


@pytest.mark.parametrize("material_id", ["mp-33319", "mp-755256", "mp-39249"])  # point groups 1, 2, -4
def test_piezo_max_longitudinal_bounds_dense_sampling_and_is_rotation_invariant(material_id):
    e = np.array(PIEZO[material_id]["piezoelectric_tensor"])
    out = derived.piezo_properties(e)
    sampled = np.abs(derived.longitudinal_piezo(e, _random_unit_vectors(100_000)))
    assert out["max_longitudinal"] >= sampled.max() * (1 - 1e-12)
    assert out["max_longitudinal"] == pytest.approx(sampled.max(), rel=1e-3)
    rotation = Rotation.from_euler("xyz", [0.9, -0.2, 1.7]).as_matrix()
    rotated = tensors.piezo_cartesian_to_voigt(tensors.rotate(tensors.piezo_voigt_to_cartesian(e), rotation))
    assert derived.piezo_properties(rotated)["max_longitudinal"] == pytest.approx(out["max_longitudinal"], rel=1e-9)


def test_zero_piezo_tensor_has_no_direction():
    out = derived.piezo_properties(np.zeros((3, 6)))
    assert out["max_longitudinal"] == 0.0 and out["max_longitudinal_direction"] is None
    assert out["eij_max_matminer"] == 0.0


# ------------------------------------------------------------------------------------------------- phonon
GRID = np.asarray(properties.PHONON_GRID_CM)


def _einstein_cv_per_atom_kb(w_cm: float, temperature_k: float) -> float:
    x = constants.h * constants.c * 100.0 * w_cm / (constants.k * temperature_k)
    return 3.0 * (x / 2) ** 2 / math.sinh(x / 2) ** 2


@pytest.mark.parametrize("temperature_k", [50.0, 300.0, 1000.0])
def test_heat_capacity_of_einstein_spike_on_the_project_grid(temperature_k):
    """All weight at one grid point: the trapezoid rule then gives the Einstein C_V exactly."""
    dos = np.where(GRID == 300.0, 0.37, 0.0)
    out = phonon_derived.heat_capacity_cv(GRID, dos, n_atoms=4, temperature_k=temperature_k, cell_mass_amu=100.0)
    assert out["cv_per_atom_kb"] == pytest.approx(_einstein_cv_per_atom_kb(300.0, temperature_k), rel=1e-12)
    assert out["cv_j_per_mol_atoms_k"] == pytest.approx(out["cv_per_atom_kb"] * constants.R, rel=1e-12)


@pytest.mark.parametrize("temperature_k", [50.0, 300.0, 1000.0])
def test_heat_capacity_of_narrow_gaussian_is_einstein_within_one_percent(temperature_k):
    w = np.arange(0.0, 1000.5, 0.5)
    dos = np.exp(-0.5 * ((w - 300.0) / 2.0) ** 2)
    out = phonon_derived.heat_capacity_cv(w, dos, n_atoms=3, temperature_k=temperature_k, cell_mass_amu=90.0)
    assert out["cv_per_atom_kb"] == pytest.approx(_einstein_cv_per_atom_kb(300.0, temperature_k), rel=1e-2)


def test_heat_capacity_tends_to_dulong_petit_and_vanishes_at_zero_temperature():
    dos = np.exp(-0.5 * ((GRID - 350.0) / 120.0) ** 2)  # a broad band, non-zero at w = 0
    si_mass_amu = 28.0855
    hot = phonon_derived.heat_capacity_cv(GRID, dos, n_atoms=2, temperature_k=1e5, cell_mass_amu=2 * si_mass_amu)
    assert hot["cv_per_atom_kb"] == pytest.approx(3.0, rel=1e-4)
    assert hot["cv_j_per_mol_atoms_k"] == pytest.approx(3 * constants.R, rel=1e-4)
    assert hot["cv_j_per_kg_k"] == pytest.approx(3 * constants.R / (si_mass_amu * 1e-3), rel=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / division warnings at either end
        cold = phonon_derived.heat_capacity_cv(GRID, dos, n_atoms=2, temperature_k=0.0, cell_mass_amu=2 * si_mass_amu)
        kernel = phonon_derived.einstein_cv_kernel(np.array([0.0, 1e-9, 800.0, 1e6]))
        assert kernel == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert cold["cv_per_atom_kb"] == 0.0
    temperatures = [10.0, 100.0, 300.0, 1000.0]
    values = [phonon_derived.heat_capacity_cv(GRID, dos, 2, t, 2 * si_mass_amu)["cv_per_atom_kb"] for t in temperatures]
    assert values == sorted(values) and values[-1] < 3.0


def test_mean_frequency_of_symmetric_dos_is_its_centre_whatever_the_normalisation():
    dos = np.exp(-0.5 * ((GRID - 400.0) / 60.0) ** 2)
    assert phonon_derived.mean_frequency(GRID, dos) == pytest.approx(400.0, rel=1e-9)
    assert phonon_derived.mean_frequency(GRID, 7.0 * dos / dos.max()) == pytest.approx(400.0, rel=1e-9)
    triangle = np.clip(1.0 - np.abs(GRID - 500.0) / 200.0, 0.0, None)
    assert phonon_derived.mean_frequency(GRID, triangle) == pytest.approx(500.0, rel=1e-12)


def test_normalise_dos_to_3n_and_phonon_properties():
    dos = np.exp(-0.5 * ((GRID - 250.0) / 80.0) ** 2)
    normalised = phonon_derived.normalise_dos_to_3n(GRID, dos, 5)
    assert np.trapezoid(normalised, GRID) == pytest.approx(15.0, rel=1e-12)
    out = phonon_derived.phonon_properties(GRID, dos, n_atoms=5, cell_mass_amu=250.0)
    cv = phonon_derived.heat_capacity_cv(GRID, dos, 5, 300.0, 250.0)
    assert out["mean_frequency_cm"] == pytest.approx(phonon_derived.mean_frequency(GRID, dos))
    assert out["cv_300k_per_atom_kb"] == cv["cv_per_atom_kb"]
    assert out["cv_300k_j_per_kg_k"] == cv["cv_j_per_kg_k"]


# --------------------------------------------------------------------------------- outputs and the specs
def _outputs() -> dict[str, dict]:
    return {
        "elastic": derived.elastic_properties(ELASTIC["mp-10021"]["elastic_tensor"]),
        "dielectric": derived.dielectric_properties(*_dielectric_parts(DIELECTRIC["mp-441"])),
        "piezo": derived.piezo_properties(PIEZO["mp-7375"]["piezoelectric_tensor"]),
        "phonon": phonon_derived.phonon_properties(GRID, np.exp(-(((GRID - 300.0) / 90.0) ** 2)), 2, 60.0),
    }


def test_outputs_are_strict_json_with_spec_names_and_documented_units():
    for name, out in _outputs().items():
        json.dumps(out, allow_nan=False)
        spec = properties.get(name)
        for quantity in spec.derived:
            per_part = [f"{quantity}_{part}" for part in spec.tensor_parts]
            assert quantity in out or all(key in out for key in per_part), (name, quantity)
        for key in out:
            base = next((key[: -len(part) - 1] for part in spec.tensor_parts if key.endswith(f"_{part}")), key)
            assert key in derived.UNITS or base in derived.UNITS, (name, key)


# ---------------------------------------------------------------------------------------------- bad input
_C_OK = _isotropic_voigt(80.0, 45.0)
_ASYMMETRIC_C = _C_OK.copy()
_ASYMMETRIC_C[0, 1] += 1.0
_NAN_C = _C_OK.copy()
_NAN_C[2, 2] = np.nan
_E_OK = np.array(PIEZO["mp-7375"]["piezoelectric_tensor"])
_EPS = np.diag([2.0, 3.0, 4.0])
_DOS = np.exp(-(((GRID - 300.0) / 90.0) ** 2))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: derived.elastic_properties(_C_OK[:, :5]), r"c_voigt must have shape"),
        (lambda: derived.elastic_properties(np.stack([_C_OK, _C_OK])), r"c_voigt must have shape \(6, 6\)"),
        (lambda: derived.elastic_properties(_NAN_C), r"c_voigt contains NaN"),
        (lambda: derived.elastic_properties(_ASYMMETRIC_C), r"c_voigt must be symmetric"),
        (lambda: derived.elastic_properties(np.zeros((6, 6))), r"c_voigt is singular"),
        (lambda: derived.elastic_properties("not a tensor"), r"c_voigt must be an array of numbers"),
        (lambda: derived.directional_youngs_modulus(_C_OK, [[0.0, 0.0, 0.0]]), r"directions contains a zero"),
        (lambda: derived.dielectric_tensor_properties(np.ones((3, 2))), r"eps must have shape"),
        (lambda: derived.dielectric_properties(*_dielectric_parts(DIELECTRIC["mp-7812"])), r"electronic must be symmetric"),
        (lambda: derived.dielectric_properties(_EPS, _EPS, 3 * _EPS), r"total must equal electronic \+ ionic"),
        (lambda: derived.dielectric_properties(_EPS, np.zeros((3, 3)), np.full((3, 3), np.nan)), r"total contains NaN"),
        (lambda: derived.dielectric_properties(-_EPS, 2 * _EPS, _EPS), r"electronic has mean eigenvalue"),
        (lambda: derived.piezo_properties(_E_OK.T), r"e_voigt must have shape"),
        (lambda: derived.piezo_properties(np.where(_E_OK == 0, np.inf, _E_OK)), r"e_voigt contains NaN or infinite"),
        (lambda: derived.longitudinal_piezo(_E_OK, [[1.0, 2.0]]), r"directions must have shape"),
        (lambda: phonon_derived.mean_frequency(GRID[::-1], _DOS), r"freq_cm must be strictly increasing"),
        (lambda: phonon_derived.mean_frequency(GRID, -_DOS), r"dos must be non-negative"),
        (lambda: phonon_derived.mean_frequency(GRID, _DOS[:-1]), r"dos must have the shape of freq_cm"),
        (lambda: phonon_derived.mean_frequency(GRID - 20.0, _DOS), r"freq_cm must be >= 0"),
        (lambda: phonon_derived.mean_frequency(np.stack([GRID, GRID]), _DOS), r"freq_cm must be a 1-D grid"),
        (lambda: phonon_derived.mean_frequency(GRID, np.zeros_like(GRID)), r"dos must have a positive integral"),
        (lambda: phonon_derived.mean_frequency(GRID, np.where(GRID == 40.0, np.nan, _DOS)), r"dos contains NaN"),
        (lambda: phonon_derived.mean_frequency("0 20 40", _DOS), r"freq_cm must be an array of numbers"),
        (lambda: phonon_derived.normalise_dos_to_3n(GRID, _DOS, 0), r"n_atoms must be a positive integer"),
        (lambda: phonon_derived.normalise_dos_to_3n(GRID, _DOS, 2.5), r"n_atoms must be a positive integer"),
        (lambda: phonon_derived.heat_capacity_cv(GRID, _DOS, 2, -1.0, 50.0), r"temperature_k must be >= 0"),
        (lambda: phonon_derived.heat_capacity_cv(GRID, _DOS, 2, float("nan"), 50.0), r"temperature_k must be a finite"),
        (lambda: phonon_derived.heat_capacity_cv(GRID, _DOS, 2, 300.0, 0.0), r"cell_mass_amu must be > 0"),
        (lambda: derived.fibonacci_sphere(5), r"n_points must be an integer >= 12"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_hill_moduli_equal_pymatgens_on_real_rows():
    """zoo.core.derived writes the formulas out for speed; pymatgen's ElasticTensor is the reference."""
    from pymatgen.analysis.elasticity import ElasticTensor

    for row in ELASTIC.values():
        c = np.asarray(row["elastic_tensor"], dtype=float)
        ours = derived.elastic_properties(c)
        theirs = ElasticTensor.from_voigt(c)
        for key, value in [("k_voigt", theirs.k_voigt), ("k_reuss", theirs.k_reuss), ("k_vrh", theirs.k_vrh),
                           ("g_voigt", theirs.g_voigt), ("g_reuss", theirs.g_reuss), ("g_vrh", theirs.g_vrh),
                           ("y_mod", theirs.y_mod / 1e9), ("homogeneous_poisson", theirs.homogeneous_poisson),
                           ("universal_anisotropy", theirs.universal_anisotropy)]:
            assert ours[key] == pytest.approx(float(value), rel=1e-10, abs=1e-12), key
